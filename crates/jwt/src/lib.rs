//! Access tokens for tessera: Ed25519-signed JWTs (`alg: EdDSA`, each with a `kid`).
//!
//! - auth holds [`SigningKey`]s, issues tokens with a [`Signer`] and publishes the public
//!   halves ([`Signer::jwks`]) at `GET /.well-known/jwks.json`.
//! - users and orders verify tokens locally with a [`Verifier`]: keys come from that JWKS over
//!   HTTP, cached, and refetched (rate limited) when a token names an unknown `kid`.
//! - Logout puts a token's `jti` on the [`Denylist`] in Redis until the token would have
//!   expired; every verifier given the denylist rejects it.
//! - Handlers take an [`Authenticated`] argument: the `Authorization: Bearer` token, verified.
//!
//! Only EdDSA is accepted, so `alg: none` and HMAC tokens keyed with a public key are refused
//! before any key is used. Tokens never appear in logs or error messages.

mod claims;
mod crypto;
mod denylist;
mod error;
mod extract;
mod keys;
mod settings;
mod signer;
mod verifier;

pub use claims::{Claims, Principal, Role};
pub use denylist::{Denylist, DenylistError};
pub use error::{KeyError, TokenError};
pub use extract::Authenticated;
pub use jsonwebtoken::jwk::{Jwk, JwkSet};
pub use keys::SigningKey;
pub use settings::RemoteKeys;
pub use signer::{IssuedToken, Signer};
pub use verifier::{Verifier, VerifierSettings};
