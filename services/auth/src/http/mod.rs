//! The REST API: routes, the JWKS, and the OpenAPI document generated from them.

mod auth;
mod jwks;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use http::request::Parts;
use tessera_errors::Error;
use tessera_jwt::Verifier;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::accounts::Accounts;
use crate::repository::Repository;

pub use jwks::Jwks;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Registration, login, refresh and logout.
    pub accounts: Arc<Accounts<Repository>>,
    /// Verifies access tokens (at logout).
    pub verifier: Verifier,
    /// The public keys, ready to serve.
    pub jwks: Jwks,
    /// How many reverse proxies in front append to `Forwarded`/`X-Forwarded-For`.
    pub trusted_proxy_hops: usize,
}

impl FromRef<AppState> for Verifier {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

/// The address a request came from: the TCP peer, or behind `trusted_proxy_hops` reverse
/// proxies the address the outermost of them appended to `Forwarded` (RFC 7239, preferred)
/// or `X-Forwarded-For`. Entries to the left of it are the client's word, and ignored.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        if let Some(addr) = forwarded_client(&parts.headers, state.trusted_proxy_hops) {
            return Ok(Self(addr));
        }
        parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| Self(peer.ip()))
            .ok_or_else(|| Error::internal("the server does not record peer addresses"))
    }
}

/// The client address `hops` trusted proxies recorded in `headers`: the `hops`-th
/// forwarded-for entry from the right (the leftmost, if the chain is shorter: the request
/// entered at an inner proxy). `None` without trusted proxies or a usable entry.
fn forwarded_client(headers: &http::HeaderMap, hops: usize) -> Option<IpAddr> {
    use forwarded_header_value::ForwardedHeaderValue;
    if hops == 0 {
        return None;
    }
    // Several header lines are one comma-separated list, in order.
    let joined = |name: &str| {
        let values: Vec<&str> = headers
            .get_all(name)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .collect();
        (!values.is_empty()).then(|| values.join(","))
    };
    let chain = match joined("forwarded") {
        Some(value) => ForwardedHeaderValue::from_forwarded(&value).ok()?,
        None => ForwardedHeaderValue::from_x_forwarded_for(&joined("x-forwarded-for")?).ok()?,
    };
    let entries: Vec<_> = chain.iter().collect();
    entries
        .get(entries.len().saturating_sub(hops))?
        .forwarded_for_ip()
}

#[derive(OpenApi)]
#[openapi(
    info(title = "tessera auth", description = "Accounts, sessions and access tokens."),
    tags(
        (name = "auth", description = "Registration, login, token refresh and logout."),
        (name = "keys", description = "The public keys that verify access tokens."),
    )
)]
struct ApiDoc;

/// The REST routes, with `/openapi.json` describing them.
pub fn router(state: AppState) -> Router {
    let (router, api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(auth::register))
        .routes(routes!(auth::login))
        .routes(routes!(auth::refresh))
        .routes(routes!(auth::logout))
        .routes(routes!(jwks::jwks))
        .with_state(state)
        .split_for_parts();
    router.merge(tessera_runtime::openapi::route(api))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, http::HeaderValue::from_static(value));
        }
        headers
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn the_address_the_outermost_trusted_proxy_appended_is_the_client() {
        let xff = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.7")]);
        assert_eq!(forwarded_client(&xff, 0), None, "no proxies trusted");
        assert_eq!(forwarded_client(&xff, 1), ip("203.0.113.7"));
        assert_eq!(forwarded_client(&xff, 2), ip("1.1.1.1"));
        assert_eq!(
            forwarded_client(&xff, 3),
            ip("1.1.1.1"),
            "entered at an inner proxy"
        );
        let lines = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "203.0.113.7"),
        ]);
        assert_eq!(forwarded_client(&lines, 1), ip("203.0.113.7"));
    }

    #[test]
    fn rfc_7239_forwarded_is_read_and_preferred() {
        let both = headers(&[
            (
                "forwarded",
                "for=192.0.2.60;proto=http, for=\"[2001:db8::1]:4711\"",
            ),
            ("x-forwarded-for", "198.51.100.9"),
        ]);
        assert_eq!(forwarded_client(&both, 1), ip("2001:db8::1"));
        assert_eq!(forwarded_client(&both, 2), ip("192.0.2.60"));
    }

    #[test]
    fn unreadable_or_obfuscated_entries_give_no_address() {
        for value in ["not an address", "unknown", ""] {
            let garbage = headers(&[("x-forwarded-for", value)]);
            assert_eq!(forwarded_client(&garbage, 1), None, "{value:?}");
        }
        let hidden = headers(&[("forwarded", "for=_hidden")]);
        assert_eq!(forwarded_client(&hidden, 1), None);
        assert_eq!(forwarded_client(&http::HeaderMap::new(), 1), None);
    }
}
