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

    /// How many rows to fetch for a page of this size: one extra row says whether another
    /// page follows, without a count query.
    pub fn fetch_limit(self) -> u32 {
        self.0 + 1
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

/// What a listing request asked for: how many items, and after which position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest<P> {
    /// The page size; the default when the client named none.
    pub size: PageSize,
    /// The position the page resumes after; `None` for the first page.
    pub after: Option<P>,
}

/// The part of a page request that was refused, named as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {invalid}")]
pub struct PageRequestError {
    /// The parameter or field: `limit`, `cursor`, `page_size` or `page_token`.
    pub field: &'static str,
    /// Why it was refused.
    pub invalid: Invalid,
}

impl<P: DeserializeOwned> PageRequest<P> {
    /// From the REST query parameters `limit` and `cursor`, either of them absent.
    pub fn from_query(limit: Option<u32>, cursor: Option<&str>) -> Result<Self, PageRequestError> {
        Self::parse(("limit", limit), ("cursor", cursor))
    }

    /// From the gRPC fields `page_size` and `page_token`, where proto3's 0 and empty string
    /// are the only way to say "not set".
    pub fn from_grpc(page_size: u32, page_token: &str) -> Result<Self, PageRequestError> {
        Self::parse(
            ("page_size", (page_size != 0).then_some(page_size)),
            ("page_token", (!page_token.is_empty()).then_some(page_token)),
        )
    }

    fn parse(
        (size_field, size): (&'static str, Option<u32>),
        (cursor_field, cursor): (&'static str, Option<&str>),
    ) -> Result<Self, PageRequestError> {
        let refused = |field| move |invalid| PageRequestError { field, invalid };
        let size = size
            .map(PageSize::new)
            .transpose()
            .map_err(refused(size_field))?
            .unwrap_or_default();
        let after = cursor
            .map(Cursor::position)
            .transpose()
            .map_err(refused(cursor_field))?;
        Ok(Self { size, after })
    }
}

/// One page of a listing, and where the next one starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The items, in the listing's order.
    pub items: Vec<T>,
    /// Where the next page starts; `None` on the last page.
    pub next_cursor: Option<Cursor>,
}

impl<T> Page<T> {
    /// The page of `size` in `rows` (fetched with [`PageSize::fetch_limit`]); the cursor resumes
    /// after the last item kept, at its `position`.
    pub fn from_rows<P: Serialize>(
        mut rows: Vec<T>,
        size: PageSize,
        position: impl Fn(&T) -> P,
    ) -> Self {
        let size = size.get() as usize;
        let next_cursor = if rows.len() > size {
            rows.truncate(size);
            rows.last().map(|last| Cursor::after(&position(last)))
        } else {
            None
        };
        Self {
            items: rows,
            next_cursor,
        }
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
    fn a_page_keeps_its_size_and_resumes_after_its_last_item_only_if_more_follow() {
        let size = PageSize::new(2).unwrap();
        assert_eq!(size.fetch_limit(), 3);
        let full = Page::from_rows(vec![1u32, 2, 3], size, |n| *n);
        assert_eq!(full.items, [1, 2]);
        let cursor = full.next_cursor.unwrap();
        assert_eq!(Cursor::position::<u32>(cursor.as_str()).unwrap(), 2);
        let last = Page::from_rows(vec![1u32, 2], size, |n| *n);
        assert_eq!((last.items, last.next_cursor), (vec![1, 2], None));
    }

    #[test]
    fn a_page_request_defaults_what_is_absent_and_names_what_is_refused() {
        let first = PageRequest::<Uuid>::from_query(None, None).unwrap();
        assert_eq!((first.size, first.after), (PageSize::default(), None));
        assert_eq!(first, PageRequest::<Uuid>::from_grpc(0, "").unwrap());

        let id = Uuid::now_v7();
        let cursor = Cursor::after(&id);
        let next = PageRequest::<Uuid>::from_grpc(5, cursor.as_str()).unwrap();
        assert_eq!((next.size.get(), next.after), (5, Some(id)));

        let field = |result: Result<PageRequest<Uuid>, PageRequestError>| result.unwrap_err().field;
        assert_eq!(field(PageRequest::from_query(Some(0), None)), "limit");
        assert_eq!(field(PageRequest::from_query(None, Some("!!"))), "cursor");
        assert_eq!(field(PageRequest::from_grpc(101, "")), "page_size");
        assert_eq!(field(PageRequest::from_grpc(1, "!!")), "page_token");
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
