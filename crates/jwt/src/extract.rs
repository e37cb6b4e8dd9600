//! The axum extractor for authenticated requests.

use axum::extract::{FromRef, FromRequestParts};
use http::request::Parts;
use http::{HeaderMap, header};
use tessera_errors::Error;

use crate::{Principal, Verifier};

/// The caller of a handler, from a verified `Authorization: Bearer <jwt>` header.
///
/// Takes the [`Verifier`] from the router state (`Verifier: FromRef<S>`). A missing header,
/// another scheme or an empty token is a 401, as is any rejected token; unavailable keys are
/// a 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Authenticated(pub Principal);

impl<S> FromRequestParts<S> for Authenticated
where
    S: Send + Sync,
    Verifier: FromRef<S>,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let token = bearer_token(&parts.headers)?;
        let principal = Verifier::from_ref(state).verify(token).await?;
        Ok(Self(principal))
    }
}

/// The token of an `Authorization: Bearer` header (the scheme is case-insensitive).
fn bearer_token(headers: &HeaderMap) -> Result<&str, Error> {
    let missing = || Error::Unauthenticated("a bearer access token is required".to_owned());
    let value = headers.get(header::AUTHORIZATION).ok_or_else(missing)?;
    let (scheme, token) = value
        .to_str()
        .ok()
        .and_then(|value| value.split_once(' '))
        .ok_or_else(missing)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(missing());
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn token(authorization: &str) -> Result<String, String> {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(authorization).unwrap(),
        );
        bearer_token(&headers)
            .map(str::to_owned)
            .map_err(|error| error.to_string())
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        assert_eq!(token("Bearer a.b.c").as_deref(), Ok("a.b.c"));
        assert_eq!(token("bearer a.b.c").as_deref(), Ok("a.b.c"));
        assert_eq!(token("BEARER  a.b.c ").as_deref(), Ok("a.b.c"));
    }

    #[test]
    fn other_schemes_empty_tokens_and_no_header_are_refused() {
        for value in [
            "Basic dXNlcjpwYXNz",
            "Bearer",
            "Bearer ",
            "Bearer    ",
            "a.b.c",
        ] {
            assert!(token(value).is_err(), "{value:?}");
        }
        assert!(bearer_token(&HeaderMap::new()).is_err());
    }
}
