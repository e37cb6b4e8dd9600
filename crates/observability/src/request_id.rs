//! Request ids: accept the caller's `x-request-id`, or make a UUIDv7, and echo it back.

use http::{HeaderName, HeaderValue, Request};
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};

/// The header that carries the request id.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest incoming request id that is trusted; longer ones are replaced, so a client
/// cannot make every log line of its request arbitrarily large.
const MAX_INCOMING_LEN: usize = 128;

/// Makes UUIDv7 request ids: unique, and sortable by time in logs.
#[derive(Debug, Clone, Copy, Default)]
pub struct MakeRequestUuidV7;

impl MakeRequestId for MakeRequestUuidV7 {
    fn make_request_id<B>(&mut self, _request: &Request<B>) -> Option<RequestId> {
        let id = uuid::Uuid::now_v7().to_string();
        HeaderValue::from_str(&id).ok().map(RequestId::new)
    }
}

/// Sets `x-request-id` on requests that come without one (or with an unusable one).
pub fn set_layer() -> SetRequestIdLayer<MakeRequestUuidV7> {
    SetRequestIdLayer::new(REQUEST_ID_HEADER, MakeRequestUuidV7)
}

/// Copies the request's `x-request-id` onto the response.
pub fn propagate_layer() -> PropagateRequestIdLayer {
    PropagateRequestIdLayer::new(REQUEST_ID_HEADER)
}

/// Removes an incoming request id that is too long or not printable, so [`set_layer`]
/// replaces it with a fresh one.
pub fn sanitize<B>(mut request: Request<B>) -> Request<B> {
    let usable = request
        .headers()
        .get(&REQUEST_ID_HEADER)
        .is_none_or(|value| {
            value.len() <= MAX_INCOMING_LEN && value.as_bytes().iter().all(|b| b.is_ascii_graphic())
        });
    if !usable {
        request.headers_mut().remove(&REQUEST_ID_HEADER);
    }
    request
}

/// The request id of a request that went through [`set_layer`], for logs.
pub fn of<B>(request: &Request<B>) -> &str {
    request
        .headers()
        .get(&REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
}
