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
    /// Whether the client address comes from `X-Forwarded-For`.
    pub trust_forwarded_for: bool,
}

impl FromRef<AppState> for Verifier {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

/// The address a request came from: the TCP peer, or behind a trusted reverse proxy the
/// last `X-Forwarded-For` entry (the one that proxy appended; earlier ones are the client's
/// word).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        if state.trust_forwarded_for
            && let Some(addr) = parts
                .headers
                .get_all("x-forwarded-for")
                .iter()
                .next_back()
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.rsplit(',').next())
                .and_then(|last| last.trim().parse().ok())
        {
            return Ok(Self(addr));
        }
        parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| Self(peer.ip()))
            .ok_or_else(|| Error::internal("the server does not record peer addresses"))
    }
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
