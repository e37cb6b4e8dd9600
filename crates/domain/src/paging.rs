use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::Invalid;

/// How many items a page holds: 1 to 100, 20 when the client does not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct PageSize(u32);

impl PageSize {
    /// The largest page.
    pub const MAX: u32 = 100;

    /// A page size, if it is within 1..=100.
    pub fn new(size: u32) -> Result<Self, Invalid> {
        if (1..=Self::MAX).contains(&size) {
            Ok(Self(size))
        } else {
            Err(Invalid::new(format!("must be between 1 and {}", Self::MAX)))
        }
    }

    /// The size.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl Default for PageSize {
    fn default() -> Self {
        Self(20)
    }
}

impl TryFrom<u32> for PageSize {
    type Error = Invalid;

    fn try_from(size: u32) -> Result<Self, Self::Error> {
        Self::new(size)
    }
}

impl From<PageSize> for u32 {
    fn from(size: PageSize) -> Self {
        size.0
    }
}

/// An opaque position in a listing: where the next page starts.
///
/// Clients pass it back unchanged; inside, it is the last item's sort key, serialized as
/// JSON and base64url-encoded so that nobody builds one by hand and the encoding can change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor(String);

impl Cursor {
    /// Longest cursor accepted; a real one is far shorter.
    const MAX_LEN: usize = 512;

    /// The cursor that resumes after `position`.
    pub fn after<P: Serialize>(position: &P) -> Self {
        // Serializing a plain key (ids, timestamps) to JSON cannot fail.
        let json = serde_json::to_vec(position).unwrap_or_default();
        Self(URL_SAFE_NO_PAD.encode(json))
    }

    /// Reads back the position, refusing anything this code did not produce.
    pub fn position<P: DeserializeOwned>(encoded: &str) -> Result<P, Invalid> {
        let refused = || Invalid::new("is not a cursor this service issued");
        if encoded.len() > Self::MAX_LEN {
            return Err(refused());
        }
        let json = URL_SAFE_NO_PAD.decode(encoded).map_err(|_| refused())?;
        serde_json::from_slice(&json).map_err(|_| refused())
    }

    /// The encoded form, as sent to clients.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<Cursor> for String {
    fn from(cursor: Cursor) -> Self {
        cursor.0
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    #[test]
    fn page_sizes_outside_one_to_a_hundred_are_refused() {
        assert!(PageSize::new(0).is_err());
        assert!(PageSize::new(101).is_err());
        assert_eq!(PageSize::new(100).unwrap().get(), 100);
        assert_eq!(PageSize::default().get(), 20);
    }

    #[test]
    fn a_cursor_round_trips_its_position() {
        let id = Uuid::now_v7();
        let cursor = Cursor::after(&id);
        assert_eq!(Cursor::position::<Uuid>(cursor.as_str()).unwrap(), id);
    }

    #[test]
    fn garbage_and_foreign_cursors_are_refused() {
        let not_a_uuid = Cursor::after(&"hello");
        for raw in ["", "!!!", "bm9wZQ", not_a_uuid.as_str(), &"A".repeat(600)] {
            assert!(
                Cursor::position::<Uuid>(raw).is_err(),
                "{raw:?} was accepted"
            );
        }
    }
}
