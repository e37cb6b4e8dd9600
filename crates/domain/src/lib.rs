//! Value types shared by tessera services: who a user is (email, display name, role), how
//! listings page, and how instants are written.
//!
//! Each type's constructor is the only way in, so an invalid value cannot reach a handler's
//! logic or the database: parse at the edge (`Email::parse`, or serde, which goes through
//! the same constructor) and pass the type around.
//!
//! Nothing here does I/O or knows about HTTP; callers name the field when they report an
//! [`Invalid`] value.

mod display_name;
mod email;
mod paging;
mod role;
pub mod timestamp;

pub use display_name::DisplayName;
pub use email::Email;
pub use paging::{Cursor, Page, PageRequest, PageRequestError, PageSize};
pub use role::Role;

/// Why a value was refused, in words fit for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

impl Invalid {
    fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}
