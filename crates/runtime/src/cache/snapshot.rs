//! Values as a cache hands them out: shared by every reader, each answered as JSON without
//! being serialised again on every read.

use std::any::TypeId;
use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, OnceLock};

use axum::body::Bytes;
use serde::Serialize;
use tessera_errors::Error;
use tessera_errors::extract::JsonBody;

/// A value as read from a cache or its source: shared by every reader, never changed (a
/// write makes a new one, and invalidation drops the old), and rendered as JSON at most
/// once per value ([`Snapshot::json`]).
pub struct Snapshot<T>(Arc<Inner<T>>);

struct Inner<T> {
    value: T,
    /// The first JSON body rendered from the value, and the view type it was rendered as.
    json: OnceLock<(TypeId, Bytes)>,
}

impl<T> Snapshot<T> {
    /// A snapshot of `value`.
    pub fn new(value: T) -> Self {
        Self(Arc::new(Inner {
            value,
            json: OnceLock::new(),
        }))
    }

    /// The value as the view `V` shows it, as a JSON body.
    ///
    /// The first view rendered is kept with the value, so a hot read costs a reference
    /// count instead of a serialisation. A view is a type and its rendering is its
    /// `From<&T>`, so the kept body is what rendering again would give; a second view type
    /// of the same value is rendered on every call, never answered with the first's body.
    pub fn json<V>(&self) -> Result<JsonBody, Error>
    where
        V: for<'a> From<&'a T> + Serialize + 'static,
    {
        let view = TypeId::of::<V>();
        if let Some((kept, body)) = self.0.json.get()
            && *kept == view
        {
            return Ok(JsonBody(body.clone()));
        }
        let json = serde_json::to_vec(&V::from(&self.0.value)).map_err(Error::internal)?;
        let body = Bytes::from(json);
        // Two first readers may race here: both rendered the same bytes, one is kept.
        let _ = self.0.json.set((view, body.clone()));
        Ok(JsonBody(body))
    }
}

impl<T> Clone for Snapshot<T> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<T> Deref for Snapshot<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0.value
    }
}

impl<T: fmt::Debug> fmt::Debug for Snapshot<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.value.fmt(f)
    }
}

impl<T> From<T> for Snapshot<T> {
    fn from(value: T) -> Self {
        Self::new(value)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use axum::response::IntoResponse;

    use super::*;

    struct Account {
        name: String,
        secret: String,
    }

    #[derive(Serialize)]
    struct Full {
        name: String,
        secret: String,
    }

    impl From<&Account> for Full {
        fn from(account: &Account) -> Self {
            Self {
                name: account.name.clone(),
                secret: account.secret.clone(),
            }
        }
    }

    #[derive(Serialize)]
    struct Public {
        name: String,
    }

    impl From<&Account> for Public {
        fn from(account: &Account) -> Self {
            Self {
                name: account.name.clone(),
            }
        }
    }

    fn account() -> Snapshot<Account> {
        Snapshot::new(Account {
            name: "ada".to_owned(),
            secret: "s3cret".to_owned(),
        })
    }

    async fn text(body: JsonBody) -> (String, String) {
        let response = body.into_response();
        let content_type = response.headers()[http::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (content_type, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn a_view_is_rendered_once_and_answered_from_then_on() {
        let account = account();
        let first = account.json::<Full>().unwrap();
        let again = account.clone().json::<Full>().unwrap();
        assert_eq!(first.0.as_ptr(), again.0.as_ptr(), "rendered twice");
        assert_eq!(
            text(again).await,
            (
                "application/json".to_owned(),
                r#"{"name":"ada","secret":"s3cret"}"#.to_owned()
            )
        );
    }

    #[tokio::test]
    async fn another_view_of_the_same_value_never_gets_the_kept_body() {
        let account = account();
        account.json::<Full>().unwrap();
        for _ in 0..2 {
            let (_, public) = text(account.json::<Public>().unwrap()).await;
            assert_eq!(public, r#"{"name":"ada"}"#);
        }
        let (_, full) = text(account.json::<Full>().unwrap()).await;
        assert_eq!(full, r#"{"name":"ada","secret":"s3cret"}"#);
    }

    #[test]
    fn readers_racing_to_render_first_all_get_the_body() {
        let account = account();
        let bodies: Vec<Bytes> = std::thread::scope(|scope| {
            let readers: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| account.json::<Public>().unwrap().0))
                .collect();
            readers.into_iter().map(|r| r.join().unwrap()).collect()
        });
        assert!(
            bodies
                .iter()
                .all(|body| body == r#"{"name":"ada"}"#.as_bytes())
        );
    }
}
