use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{Object, ObjectBuilder, Type};
use uuid::Uuid;

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

/// What a listing request asked for: how many items, and after which id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// The page size; the default when the client named none.
    pub size: PageSize,
    /// The id the page resumes after; `None` for the first page.
    pub after: Option<Uuid>,
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

impl PageRequest {
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
    /// The page of `size` in `rows` (fetched with [`PageSize::fetch_limit`], in `id` order);
    /// the cursor resumes after the last item kept, whose id `id` gives.
    pub fn from_rows(mut rows: Vec<T>, size: PageSize, id: impl Fn(&T) -> Uuid) -> Self {
        let size = size.get() as usize;
        let next_cursor = if rows.len() > size {
            rows.truncate(size);
            rows.last().map(|last| Cursor::after(id(last)))
        } else {
            None
        };
        Self {
            items: rows,
            next_cursor,
        }
    }
}

/// An opaque position in a listing ordered by id: where the next page starts.
///
/// Clients pass it back unchanged; inside, it is the last item's id in unpadded base64url.
/// Every string of that shape is a position (listings page by id, and any id is a place to
/// resume after), so a cursor is refused for its shape only, as [`Cursor::PATTERN`] says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor(String);

impl Cursor {
    /// The shape of every cursor: 16 bytes in 22 base64url characters, the last of which
    /// carries no stray bits. For the API documents.
    pub const PATTERN: &'static str = "^[A-Za-z0-9_-]{21}[AQgw]$";

    /// The cursor that resumes after `id`.
    pub fn after(id: Uuid) -> Self {
        Self(URL_SAFE_NO_PAD.encode(id.as_bytes()))
    }

    /// Reads back the id, refusing anything not shaped like a cursor.
    pub fn position(encoded: &str) -> Result<Uuid, Invalid> {
        let refused =
            || Invalid::new("is not a cursor: 22 base64url characters, as sent in next_cursor");
        // A long string is refused before it is decoded.
        if encoded.len() != 22 {
            return Err(refused());
        }
        let bytes = URL_SAFE_NO_PAD.decode(encoded).map_err(|_| refused())?;
        Uuid::from_slice(&bytes).map_err(|_| refused())
    }

    /// Its schema in the API documents: `#[param(schema_with = Cursor::schema)]`.
    pub fn schema() -> Object {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(22))
            .max_length(Some(22))
            .pattern(Some(Self::PATTERN))
            .description(Some("The `next_cursor` of the previous page."))
            .build()
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
        let ids = [Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7()];
        let full = Page::from_rows(ids.to_vec(), size, |id| *id);
        assert_eq!(full.items, ids[..2]);
        let cursor = full.next_cursor.unwrap();
        assert_eq!(Cursor::position(cursor.as_str()).unwrap(), ids[1]);
        let last = Page::from_rows(ids[..2].to_vec(), size, |id| *id);
        assert_eq!((last.items, last.next_cursor), (ids[..2].to_vec(), None));
    }

    #[test]
    fn a_page_request_defaults_what_is_absent_and_names_what_is_refused() {
        let first = PageRequest::from_query(None, None).unwrap();
        assert_eq!((first.size, first.after), (PageSize::default(), None));
        assert_eq!(first, PageRequest::from_grpc(0, "").unwrap());

        let id = Uuid::now_v7();
        let cursor = Cursor::after(id);
        let next = PageRequest::from_grpc(5, cursor.as_str()).unwrap();
        assert_eq!((next.size.get(), next.after), (5, Some(id)));

        let field = |result: Result<PageRequest, PageRequestError>| result.unwrap_err().field;
        assert_eq!(field(PageRequest::from_query(Some(0), None)), "limit");
        assert_eq!(field(PageRequest::from_query(None, Some("!!"))), "cursor");
        assert_eq!(field(PageRequest::from_query(None, Some(""))), "cursor");
        assert_eq!(field(PageRequest::from_grpc(101, "")), "page_size");
        assert_eq!(field(PageRequest::from_grpc(1, "!!")), "page_token");
    }

    #[test]
    fn a_cursor_round_trips_its_position() {
        let id = Uuid::now_v7();
        let cursor = Cursor::after(id);
        assert_eq!(Cursor::position(cursor.as_str()).unwrap(), id);
        assert_eq!(
            Cursor::position(Cursor::after(Uuid::max()).as_str()).unwrap(),
            Uuid::max()
        );
    }

    #[test]
    fn garbage_is_refused() {
        for raw in [
            "",
            "!!!",
            "bm9wZQ",
            &"A".repeat(21),
            &"A".repeat(23),
            &format!("{}B", "A".repeat(21)),
            &format!("{}==", "A".repeat(22)),
            &"A".repeat(600),
        ] {
            assert!(Cursor::position(raw).is_err(), "{raw:?} was accepted");
        }
    }

    proptest::proptest! {
        /// The documented shape is exactly what is accepted (checked for the last character,
        /// the only one the shape restricts beyond the alphabet).
        #[test]
        fn every_string_of_the_documented_shape_is_a_cursor(
            body in "[A-Za-z0-9_-]{21}",
            last in proptest::char::range('+', 'z'),
        ) {
            let raw = format!("{body}{last}");
            let shaped = last.is_ascii_alphanumeric() || last == '-' || last == '_';
            let documented = shaped && "AQgw".contains(last);
            proptest::prop_assert_eq!(Cursor::position(&raw).is_ok(), documented, "{}", raw);
        }
    }
}
