//! Why a key could not be used, and why a token was refused.

/// A key or key set that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The text is not a PKCS#8 PEM Ed25519 private key.
    #[error("not a PKCS#8 PEM Ed25519 private key")]
    Pem(#[source] ed25519_dalek::pkcs8::Error),
    /// A signer needs at least one key.
    #[error("a signer needs at least one signing key")]
    NoSigningKey,
    /// Two keys share a `kid`, so a verifier could not tell them apart.
    #[error("more than one key has the kid {0:?}")]
    DuplicateKid(String),
    /// Token lifetimes must be at least a second and representable as a timestamp.
    #[error("the token lifetime must be at least one second and at most a few centuries")]
    InvalidTtl,
    /// A remote verifier was configured without a JWKS URL.
    #[error("no JWKS URL is configured")]
    NoJwksUrl,
    /// The HTTP client for the JWKS could not be built.
    #[error("cannot build the JWKS HTTP client")]
    HttpClient(#[source] reqwest::Error),
    /// TLS for the JWKS cannot be set up (an unreadable CA certificate).
    #[error("cannot set up TLS for the JWKS: {0}")]
    Tls(String),
}

/// Why an access token was not accepted (or could not be made).
///
/// Converts into [`tessera_errors::Error`]: [`TokenError::KeysUnavailable`] becomes 503,
/// [`TokenError::Signing`] 500, everything else 401 with a short message that never contains
/// the token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Not a JWT: wrong shape, bad base64, or an unreadable header.
    #[error("the token is not a well-formed JWT")]
    Malformed,
    /// The header names a key the verifier does not have, even after refetching the JWKS.
    #[error("the token was signed with an unknown key {kid:?}")]
    UnknownKey {
        /// The `kid` from the token's header.
        kid: String,
    },
    /// Bad signature, algorithm, issuer, audience or claims.
    #[error("the token is invalid: {0}")]
    Invalid(String),
    /// The token is past its `exp`, beyond the allowed leeway.
    #[error("the token has expired")]
    Expired,
    /// The token's `jti` is on the denylist (its session was logged out).
    #[error("the token has been revoked")]
    Revoked,
    /// No verification keys are available: the JWKS could not be fetched.
    #[error("no token verification keys are available: {0}")]
    KeysUnavailable(String),
    /// A token could not be signed.
    #[error("cannot sign the token")]
    Signing(#[source] jsonwebtoken::errors::Error),
}

impl From<TokenError> for tessera_errors::Error {
    fn from(error: TokenError) -> Self {
        let unauthenticated = |message: &str| Self::Unauthenticated(message.to_owned());
        match error {
            TokenError::Malformed => unauthenticated("the access token is malformed"),
            TokenError::UnknownKey { .. } => {
                unauthenticated("the access token was signed with an unknown key")
            }
            TokenError::Invalid(_) => unauthenticated("the access token is invalid"),
            TokenError::Expired => unauthenticated("the access token has expired"),
            TokenError::Revoked => unauthenticated("the access token has been revoked"),
            // The detail (an internal URL, a connection error) was logged where it happened.
            TokenError::KeysUnavailable(_) => {
                Self::Unavailable("access tokens cannot be verified right now".to_owned())
            }
            TokenError::Signing(cause) => Self::internal(cause),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_errors::Error;

    #[test]
    fn token_errors_map_to_401_except_unavailable_keys_and_signing_failures() {
        let status = |error: TokenError| Error::from(error).http_status().as_u16();
        assert_eq!(status(TokenError::Malformed), 401);
        assert_eq!(status(TokenError::UnknownKey { kid: "k".into() }), 401);
        assert_eq!(status(TokenError::Invalid("bad signature".into())), 401);
        assert_eq!(status(TokenError::Expired), 401);
        assert_eq!(status(TokenError::Revoked), 401);
        assert_eq!(status(TokenError::KeysUnavailable("down".into())), 503);
        let signing = jsonwebtoken::errors::ErrorKind::InvalidEddsaKey.into();
        assert_eq!(status(TokenError::Signing(signing)), 500);
    }

    #[test]
    fn client_messages_do_not_echo_details() {
        let error = Error::from(TokenError::Invalid("wrong audience \"x\"".into()));
        assert_eq!(error.public_message(), "the access token is invalid");
        let error = Error::from(TokenError::KeysUnavailable("http://10.0.0.1".into()));
        assert!(!error.public_message().contains("10.0.0.1"));
    }
}
