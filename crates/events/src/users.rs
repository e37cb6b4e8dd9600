//! Events published by the users service.

use crate::Event;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tessera_domain::Role;
use uuid::Uuid;

/// A profile was created (`user.created`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserCreated {
    /// The user's id.
    pub id: Uuid,
    /// Normalised email.
    pub email: String,
    /// Display name.
    pub display_name: String,
    /// Role.
    pub role: Role,
    /// When the profile was created.
    pub created_at: DateTime<Utc>,
}

impl Event for UserCreated {
    const TYPE: &'static str = "user.created";

    fn aggregate_id(&self) -> String {
        self.id.to_string()
    }
}

/// A profile changed (`user.updated`); carries the whole profile as it now is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserUpdated {
    /// The user's id.
    pub id: Uuid,
    /// Normalised email.
    pub email: String,
    /// Display name.
    pub display_name: String,
    /// Role.
    pub role: Role,
    /// When the change was made.
    pub updated_at: DateTime<Utc>,
    /// The profile's version: 1 at creation, one more per change, in commit order. A
    /// consumer keeps the change with the highest version it has seen; 0 in events from a
    /// publisher before versions.
    #[serde(default)]
    pub version: i64,
}

impl Event for UserUpdated {
    const TYPE: &'static str = "user.updated";

    fn aggregate_id(&self) -> String {
        self.id.to_string()
    }
}

/// A profile was deleted (`user.deleted`): other services drop or close what belongs to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserDeleted {
    /// The user's id.
    pub id: Uuid,
}

impl Event for UserDeleted {
    const TYPE: &'static str = "user.deleted";

    fn aggregate_id(&self) -> String {
        self.id.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_from_before_versions_decodes_as_version_0() {
        let json = r#"{"id":"0190b5c4-8a5e-7cc1-b6a4-2f6f5a0f4f11","email":"a@example.com",
            "display_name":"A","role":"user","updated_at":"2026-01-01T00:00:00Z"}"#;
        let event: UserUpdated = serde_json::from_str(json).unwrap();
        assert_eq!(event.version, 0);
    }

    #[test]
    fn payloads_from_a_newer_publisher_still_decode() {
        let json = r#"{"id":"0190b5c4-8a5e-7cc1-b6a4-2f6f5a0f4f11","reason":"gdpr"}"#;
        let event: UserDeleted = serde_json::from_str(json).unwrap();
        assert_eq!(event.id.to_string(), "0190b5c4-8a5e-7cc1-b6a4-2f6f5a0f4f11");
    }
}
