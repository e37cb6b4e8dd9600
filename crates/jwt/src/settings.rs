//! The settings every service that verifies tokens against auth's JWKS reads.

use serde::Deserialize;

use crate::VerifierSettings;

/// Where auth publishes its keys and which tokens to take: `<PREFIX>JWKS_URL`,
/// `<PREFIX>JWT_ISSUER` and `<PREFIX>JWT_AUDIENCE`, flattened into a service's settings.
#[derive(Debug, Clone, Deserialize)]
pub struct RemoteKeys {
    /// Where the auth service publishes its signing keys.
    #[serde(default = "defaults::jwks_url")]
    pub jwks_url: String,
    /// The `iss` access tokens must carry.
    #[serde(default = "defaults::jwt_issuer")]
    pub jwt_issuer: String,
    /// The `aud` access tokens must carry.
    #[serde(default = "defaults::jwt_audience")]
    pub jwt_audience: String,
}

impl RemoteKeys {
    /// The token verifier's settings.
    pub fn verifier(&self) -> VerifierSettings {
        VerifierSettings {
            jwks_url: Some(self.jwks_url.clone()),
            ..VerifierSettings::new(&self.jwt_issuer, &self.jwt_audience)
        }
    }
}

mod defaults {
    pub fn jwks_url() -> String {
        "http://127.0.0.1:8081/.well-known/jwks.json".to_owned()
    }
    pub fn jwt_issuer() -> String {
        "tessera-auth".to_owned()
    }
    pub fn jwt_audience() -> String {
        "tessera".to_owned()
    }
}
