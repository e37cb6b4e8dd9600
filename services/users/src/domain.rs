//! A user profile and the changes one can go through. No I/O.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tessera_domain::{DisplayName, Email, Role};
use uuid::Uuid;

/// A stored profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Its id.
    pub id: Uuid,
    /// Normalised email, unique.
    pub email: Email,
    /// The name shown to others.
    pub display_name: DisplayName,
    /// What the user may do.
    pub role: Role,
    /// When the profile was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// 1 at creation, one more per change, in commit order.
    #[serde(default)]
    pub version: i64,
}

/// A profile to create.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// The id the caller chose.
    pub id: Uuid,
    /// Normalised email.
    pub email: Email,
    /// The name shown to others.
    pub display_name: DisplayName,
    /// What the user may do.
    pub role: Role,
}

/// What a profile update sets; absent fields stay as they are.
#[derive(Debug, Clone, Default)]
pub struct UserChanges {
    /// A new display name.
    pub display_name: Option<DisplayName>,
    /// A new role (admins only).
    pub role: Option<Role>,
}

impl UserChanges {
    /// True when the update would change nothing.
    pub fn is_empty(&self) -> bool {
        self.display_name.is_none() && self.role.is_none()
    }
}

/// The outcome of a create, which is idempotent on email.
#[derive(Debug, Clone)]
pub enum Creation {
    /// A new profile was stored.
    Created(User),
    /// A profile with that email already existed; it is returned unchanged.
    Existing(User),
}

impl Creation {
    /// The profile, new or existing.
    pub fn user(&self) -> &User {
        match self {
            Self::Created(user) | Self::Existing(user) => user,
        }
    }
}
