//! Conversions between proto messages and the shared domain types, each with one meaning
//! on every side of every call:
//!
//! - an enum value this build does not know is INVALID_ARGUMENT naming the field, never
//!   silently some default;
//! - timestamps keep their nanoseconds;
//! - ids that do not parse are INVALID_ARGUMENT naming the field.

use chrono::{DateTime, Utc};
use tessera_domain::Role;
use tessera_errors::Error;
use uuid::Uuid;

use crate::users::v1 as users;

impl From<Role> for users::Role {
    fn from(role: Role) -> Self {
        match role {
            Role::User => Self::User,
            Role::Admin => Self::Admin,
        }
    }
}

/// The role in the proto field `field`. Unset (`ROLE_UNSPECIFIED`, proto3's default) is
/// [`Role::User`], the role of everyone who is not made an admin.
pub fn role(field: &str, raw: i32) -> Result<Role, Error> {
    match users::Role::try_from(raw) {
        Ok(users::Role::Unspecified | users::Role::User) => Ok(Role::User),
        Ok(users::Role::Admin) => Ok(Role::Admin),
        Err(_) => Err(Error::invalid_field(field, format!("unknown role {raw}"))),
    }
}

/// The UUID in the proto field `field`.
pub fn uuid(field: &str, raw: &str) -> Result<Uuid, Error> {
    Uuid::parse_str(raw).map_err(|_| Error::invalid_field(field, "not a valid uuid"))
}

/// `at` as a protobuf timestamp, to the nanosecond.
pub fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        // chrono counts a leap second as nanoseconds past 1e9; protobuf has no such instant.
        nanos: i32::try_from(at.timestamp_subsec_nanos().min(999_999_999)).unwrap_or(0),
    }
}

/// The time in the proto field `field`; missing or out of range is INVALID_ARGUMENT.
pub fn datetime(field: &str, at: Option<&prost_types::Timestamp>) -> Result<DateTime<Utc>, Error> {
    let at = at.ok_or_else(|| Error::invalid_field(field, "is required"))?;
    u32::try_from(at.nanos)
        .ok()
        .and_then(|nanos| DateTime::from_timestamp(at.seconds, nanos))
        .ok_or_else(|| Error::invalid_field(field, "not a valid timestamp"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn roles_round_trip_and_unknown_values_are_invalid_arguments() {
        for known in [Role::User, Role::Admin] {
            assert_eq!(
                role("role", users::Role::from(known).into()).unwrap(),
                known
            );
        }
        assert_eq!(role("role", 0).unwrap(), Role::User);
        let error = role("user.role", 7).unwrap_err();
        assert_eq!(error.grpc_code(), tonic::Code::InvalidArgument);
        assert!(error.public_message().contains("user.role"), "{error:?}");
    }

    #[test]
    fn timestamps_keep_their_nanoseconds() {
        let at = DateTime::from_timestamp(1_764_000_000, 123_456_789).unwrap();
        let proto = timestamp(at);
        assert_eq!(proto.nanos, 123_456_789);
        assert_eq!(datetime("at", Some(&proto)).unwrap(), at);
    }

    #[test]
    fn missing_or_impossible_timestamps_and_bad_ids_are_invalid_arguments() {
        let negative = prost_types::Timestamp {
            seconds: 0,
            nanos: -1,
        };
        for error in [
            datetime("at", None).unwrap_err(),
            datetime("at", Some(&negative)).unwrap_err(),
            uuid("id", "not-a-uuid").unwrap_err(),
        ] {
            assert_eq!(error.grpc_code(), tonic::Code::InvalidArgument);
        }
    }
}
