//! The limits every API request runs under: at most so many in progress (more are shed with
//! 503 at once) and at most so long each (504 beyond).
//!
//! One layer rather than tower's `LoadShed`, `ConcurrencyLimit` and `Timeout` behind axum's
//! `HandleError`: those box the response future, allocate a semaphore future for every
//! clone of the service (axum clones it per request) and turn each refusal into a boxed
//! error only to map it back to a response. Here a slot is a counter, taken and given back.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use tessera_errors::Error;
use tessera_observability::Metrics;
use tower::{Layer, Service};

/// Applies the limits to the service it wraps.
#[derive(Clone)]
pub(crate) struct LimitLayer {
    shared: Arc<Shared>,
}

struct Shared {
    in_progress: AtomicUsize,
    concurrency: usize,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

impl LimitLayer {
    /// At most `concurrency` requests in progress, each for at most `timeout`; refusals are
    /// counted in `metrics`.
    pub(crate) fn new(concurrency: usize, timeout: Duration, metrics: Arc<Metrics>) -> Self {
        Self {
            shared: Arc::new(Shared {
                in_progress: AtomicUsize::new(0),
                concurrency,
                timeout,
                metrics,
            }),
        }
    }
}

impl<S> Layer<S> for LimitLayer {
    type Service = Limit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Limit {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// See [`LimitLayer`].
#[derive(Clone)]
pub(crate) struct Limit<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Service<Request> for Limit<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Limited<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let Some(slot) = Slot::take(&self.shared) else {
            self.shared.metrics.record_rejected("overloaded");
            let refusal = Error::Unavailable("the service is overloaded; retry later".to_owned());
            return Limited::Refused {
                response: Some(refusal.into_response()),
            };
        };
        Limited::Running {
            response: tokio::time::timeout(self.shared.timeout, self.inner.call(request)),
            slot,
        }
    }
}

/// One of the in-progress requests; given back when dropped, answered or not.
struct Slot(Arc<Shared>);

impl Slot {
    fn take(shared: &Arc<Shared>) -> Option<Self> {
        let taken = shared.in_progress.fetch_add(1, Ordering::AcqRel);
        // Made before the check, so the count is given back on either path.
        let slot = Self(Arc::clone(shared));
        (taken < shared.concurrency).then_some(slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.in_progress.fetch_sub(1, Ordering::AcqRel);
    }
}

pin_project_lite::pin_project! {
    /// The response of a [`Limit`]ed service.
    #[project = LimitedProjection]
    pub(crate) enum Limited<F> {
        /// Refused at once; `None` once answered.
        Refused { response: Option<Response> },
        /// In progress, holding its slot.
        Running {
            #[pin]
            response: tokio::time::Timeout<F>,
            slot: Slot,
        },
    }
}

impl<F> Future for Limited<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            LimitedProjection::Refused { response } => Poll::Ready(Ok(response
                .take()
                .unwrap_or_else(|| Error::internal("polled after completion").into_response()))),
            LimitedProjection::Running { response, slot } => match response.poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Ok(answered)) => Poll::Ready(answered),
                Poll::Ready(Err(_elapsed)) => {
                    slot.0.metrics.record_rejected("timeout");
                    Poll::Ready(Ok(Error::Timeout.into_response()))
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::future::pending;

    use axum::body::Body;
    use futures::FutureExt;
    use tower::ServiceExt;

    use super::*;

    fn limited(
        concurrency: usize,
        timeout: Duration,
    ) -> Limit<tower::util::BoxCloneSyncService<Request, Response, Infallible>> {
        let metrics = Metrics::new().unwrap();
        let slow_or_not = tower::service_fn(|request: Request| async move {
            if request.uri().path() == "/never" {
                pending::<()>().await;
            }
            Ok::<_, Infallible>(Response::new(Body::empty()))
        });
        LimitLayer::new(concurrency, timeout, metrics)
            .layer(tower::util::BoxCloneSyncService::new(slow_or_not))
    }

    fn get(path: &str) -> Request {
        Request::get(path).body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn beyond_the_limit_requests_are_shed_until_a_slot_is_given_back() {
        let service = limited(1, Duration::from_secs(60));
        let mut held = service.clone().oneshot(get("/never")).boxed();
        assert!(
            (&mut held).now_or_never().is_none(),
            "the slow request finished"
        );

        let shed = service.clone().oneshot(get("/")).await.unwrap();
        assert_eq!(shed.status(), 503);

        // A request given up (its client gone) gives its slot back.
        drop(held);
        let answered = service.clone().oneshot(get("/")).await.unwrap();
        assert_eq!(answered.status(), 200);
        assert_eq!(service.shared.in_progress.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn a_request_over_the_timeout_is_answered_504_and_gives_its_slot_back() {
        let service = limited(1, Duration::from_millis(100));
        let late = service.clone().oneshot(get("/never")).await.unwrap();
        assert_eq!(late.status(), 504);
        assert_eq!(service.shared.in_progress.load(Ordering::Acquire), 0);
        assert_eq!(
            service.clone().oneshot(get("/")).await.unwrap().status(),
            200
        );
    }
}
