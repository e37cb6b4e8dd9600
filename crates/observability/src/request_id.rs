//! Request ids: accept the caller's `x-request-id`, or make a UUIDv7, and echo it back.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response};
use tower::{Layer, Service};

/// The header that carries the request id.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest incoming request id that is trusted; longer ones are replaced, so a client
/// cannot make every log line of its request arbitrarily large.
const MAX_INCOMING_LEN: usize = 128;

/// Gives every request an `x-request-id`: the caller's when it is printable and at most
/// 128 bytes, else a fresh UUIDv7 (unique, and sortable by time in logs); and puts it on the
/// response unless the response names one itself. One layer and no request extension,
/// where tower-http's pair of layers stores the id a second time in each request.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestIdLayer;

/// A [`RequestIdLayer`] (the stacks' own spelling).
pub fn layer() -> RequestIdLayer {
    RequestIdLayer
}

impl<S> Layer<S> for RequestIdLayer {
    type Service = WithRequestId<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WithRequestId { inner }
    }
}

/// See [`RequestIdLayer`].
#[derive(Debug, Clone)]
pub struct WithRequestId<S> {
    inner: S,
}

impl<S, B, R> Service<Request<B>> for WithRequestId<S>
where
    S: Service<Request<B>, Response = Response<R>>,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = EchoId<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let id = match request.headers().get(&REQUEST_ID_HEADER) {
            Some(incoming) if usable(incoming) => incoming.clone(),
            _ => {
                let id = fresh();
                request.headers_mut().insert(REQUEST_ID_HEADER, id.clone());
                id
            }
        };
        EchoId {
            response: self.inner.call(request),
            id: Some(id),
        }
    }
}

/// Whether an incoming id may be kept: short, and printable ASCII only.
fn usable(id: &HeaderValue) -> bool {
    id.len() <= MAX_INCOMING_LEN && id.as_bytes().iter().all(u8::is_ascii_graphic)
}

/// A new UUIDv7, hyphenated, lower case. Without uuid's shared counter (`Uuid::now_v7`),
/// which is a lock every request would take: ids made in one millisecond are told apart by
/// their random bits rather than ordered by when they were made. The text is owned by the
/// value, so the copy echoed on the response shares it; a value copied into a `Vec` is
/// moved to the heap a second time when first cloned.
fn fresh() -> HeaderValue {
    let mut text = [0; uuid::fmt::Hyphenated::LENGTH];
    uuid::Uuid::new_v7(uuid::Timestamp::now(uuid::NoContext))
        .hyphenated()
        .encode_lower(&mut text);
    HeaderValue::from_maybe_shared(Bytes::from_owner(text))
        .unwrap_or_else(|_| HeaderValue::from_static("unidentified"))
}

pin_project_lite::pin_project! {
    /// The response of a [`WithRequestId`] service.
    pub struct EchoId<F> {
        #[pin]
        response: F,
        id: Option<HeaderValue>,
    }
}

impl<F, R, E> Future for EchoId<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = ready!(this.response.poll(cx))?;
        if let Some(id) = this.id.take() {
            response
                .headers_mut()
                .entry(REQUEST_ID_HEADER)
                .or_insert(id);
        }
        Poll::Ready(Ok(response))
    }
}

/// The request id of a request that went through [`RequestIdLayer`], for logs.
pub fn of<B>(request: &Request<B>) -> &str {
    request
        .headers()
        .get(&REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::convert::Infallible;

    use tower::ServiceExt;

    use super::*;

    /// Answers with the request id the inner service saw, in the body, and `own` as the
    /// response's id when given.
    async fn answer(incoming: Option<&[u8]>, own: Option<&'static str>) -> (String, String) {
        let inner = tower::service_fn(move |request: Request<()>| async move {
            let seen = of(&request).to_owned();
            let mut response = Response::new(seen);
            if let Some(own) = own {
                response
                    .headers_mut()
                    .insert(REQUEST_ID_HEADER, HeaderValue::from_static(own));
            }
            Ok::<_, Infallible>(response)
        });
        let mut request = Request::new(());
        if let Some(incoming) = incoming {
            request.headers_mut().insert(
                REQUEST_ID_HEADER,
                HeaderValue::from_bytes(incoming).unwrap(),
            );
        }
        let response = layer().layer(inner).oneshot(request).await.unwrap();
        let echoed = response.headers()[REQUEST_ID_HEADER]
            .to_str()
            .unwrap()
            .to_owned();
        (response.into_body(), echoed)
    }

    #[tokio::test]
    async fn a_usable_incoming_id_is_kept_and_echoed() {
        let (seen, echoed) = answer(Some(b"abc-123"), None).await;
        assert_eq!((seen.as_str(), echoed.as_str()), ("abc-123", "abc-123"));
    }

    #[tokio::test]
    async fn a_missing_or_unusable_id_is_replaced_by_a_fresh_uuid_v7() {
        let too_long = "x".repeat(MAX_INCOMING_LEN + 1);
        for incoming in [None, Some(too_long.as_bytes()), Some(&b"has space"[..])] {
            let (seen, echoed) = answer(incoming, None).await;
            assert_eq!(seen, echoed);
            let id = uuid::Uuid::parse_str(&seen).unwrap();
            assert_eq!(id.get_version_num(), 7, "{seen}");
            assert_eq!(seen, id.hyphenated().to_string());
        }
    }

    #[tokio::test]
    async fn a_response_naming_its_own_id_keeps_it() {
        let (seen, echoed) = answer(Some(b"abc-123"), Some("downstream-7")).await;
        assert_eq!(
            (seen.as_str(), echoed.as_str()),
            ("abc-123", "downstream-7")
        );
    }

    #[test]
    fn fresh_ids_are_distinct_and_in_time_order_to_the_millisecond() {
        let ids: Vec<uuid::Uuid> = (0..10_000)
            .map(|_| uuid::Uuid::parse_str(fresh().to_str().unwrap()).unwrap())
            .collect();
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        let millis = |id: &uuid::Uuid| id.get_timestamp().unwrap().to_unix();
        assert!(
            ids.windows(2)
                .all(|pair| millis(&pair[0]) <= millis(&pair[1]))
        );
    }
}
