//! The users service's own settings (`USERS_*`), next to the runtime's.

use serde::Deserialize;
use tessera_jwt::RemoteKeys;

/// Settings read from `USERS_*` variables; everything has a default.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// Where the token keys come from (`JWKS_URL`, `JWT_ISSUER`, `JWT_AUDIENCE`).
    #[serde(flatten)]
    pub keys: RemoteKeys,
}
