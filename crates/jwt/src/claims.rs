//! What an access token says, and who it speaks for once verified.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
pub use tessera_domain::Role;
use uuid::Uuid;

/// The claims of a tessera access token. Every field is required.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Who issued the token (auth's issuer name).
    pub iss: String,
    /// Who the token is for (the tessera services' audience name).
    pub aud: String,
    /// The user the token speaks for.
    pub sub: Uuid,
    /// The user's role when the token was issued.
    pub role: Role,
    /// Issued at, in seconds since the Unix epoch.
    pub iat: i64,
    /// Expires at, in seconds since the Unix epoch.
    pub exp: i64,
    /// The token's unique id, the key of the denylist.
    pub jti: Uuid,
}

/// Who a verified token speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    /// The user the token was issued to.
    pub user_id: Uuid,
    /// The user's role when the token was issued.
    pub role: Role,
    /// The token's id, to revoke it at logout.
    pub jti: Uuid,
    /// When the token expires.
    pub expires_at: DateTime<Utc>,
}

impl Principal {
    /// Whether the caller is an administrator.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Whether the caller may act on what `owner` owns: it is theirs, or the caller is an admin.
    pub fn may_act_for(&self, owner: Uuid) -> bool {
        self.user_id == owner || self.is_admin()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_may_act_only_for_themselves_and_an_admin_for_anyone() {
        let me = Uuid::now_v7();
        let someone_else = Uuid::now_v7();
        let principal = |role| Principal {
            user_id: me,
            role,
            jti: Uuid::now_v7(),
            expires_at: Utc::now(),
        };
        assert!(principal(Role::User).may_act_for(me));
        assert!(!principal(Role::User).may_act_for(someone_else));
        assert!(!principal(Role::User).is_admin());
        assert!(principal(Role::Admin).may_act_for(someone_else));
        assert!(principal(Role::Admin).is_admin());
    }
}
