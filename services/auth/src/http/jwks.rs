//! `GET /.well-known/jwks.json`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, header};
use tessera_jwt::JwkSet;

use super::AppState;

/// How long clients and caches may keep the key set (5 minutes). Verifiers also refetch at
/// once when a token names a key they do not have, so a new signing key does not wait for this.
const CACHE_CONTROL: &str = "public, max-age=300";

/// The serialized public keys, made once.
#[derive(Clone)]
pub struct Jwks(Bytes);

impl Jwks {
    /// The JSON of `keys`.
    pub fn new(keys: &JwkSet) -> Result<Self, serde_json::Error> {
        Ok(Self(Bytes::from(serde_json::to_vec(keys)?)))
    }
}

/// The public keys that verify access tokens (RFC 7517); more than one while keys rotate.
#[utoipa::path(
    get, path = "/.well-known/jwks.json", tag = "keys",
    responses(
        (status = 200, description = "The JSON Web Key Set: Ed25519 keys (`kty: OKP`, `crv: Ed25519`), each with its `kid`.",
         body = Object, content_type = "application/json"),
    )
)]
pub async fn jwks(State(state): State<AppState>) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static(CACHE_CONTROL),
            ),
        ],
        state.jwks.0.clone(),
    )
        .into_response()
}
