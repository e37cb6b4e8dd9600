//! Refresh tokens: 256 random bits, handed out once, stored only as their SHA-256.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// Random bytes in a refresh token.
const TOKEN_BYTES: usize = 32;

/// A refresh token as the client holds it (43 base64url characters). Never printed.
pub struct RefreshToken(String);

impl RefreshToken {
    /// A new token from the thread's CSPRNG.
    pub fn generate() -> Self {
        let bytes: [u8; TOKEN_BYTES] = rand::random();
        Self(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// The token a client presented, if it has the shape of one; anything else cannot be a
    /// token this service issued.
    pub fn parse(presented: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(presented).ok()?;
        (bytes.len() == TOKEN_BYTES).then(|| Self(presented.to_owned()))
    }

    /// What the database keeps: the SHA-256 of the token. The token has 256 bits of entropy,
    /// so a fast hash is enough; a stolen table gives no usable token.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.0.as_bytes()).into()
    }

    /// The token, to send to its owner.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefreshToken(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_43_url_safe_characters_and_all_different() {
        let first = RefreshToken::generate();
        let second = RefreshToken::generate();
        assert_eq!(first.expose().len(), 43);
        assert!(
            first
                .expose()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_ne!(first.expose(), second.expose());
        assert_ne!(first.digest(), second.digest());
    }

    #[test]
    fn a_token_parses_back_to_the_same_digest() {
        let token = RefreshToken::generate();
        let parsed = RefreshToken::parse(token.expose()).unwrap();
        assert_eq!(parsed.digest(), token.digest());
    }

    #[test]
    fn anything_not_shaped_like_a_token_is_refused() {
        assert!(RefreshToken::parse("").is_none());
        assert!(RefreshToken::parse("not a token").is_none());
        assert!(RefreshToken::parse(&URL_SAFE_NO_PAD.encode([0u8; 31])).is_none());
        assert!(RefreshToken::parse(&"A".repeat(10_000)).is_none());
    }

    #[test]
    fn tokens_never_print() {
        assert_eq!(
            format!("{:?}", RefreshToken::generate()),
            "RefreshToken(..)"
        );
    }
}
