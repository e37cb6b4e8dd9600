//! Who may see and change which profile: the rules every REST call goes through.

use tessera_domain::{Cursor, PageSize};
use tessera_errors::Error;
use tessera_jwt::Principal;
use uuid::Uuid;

use crate::domain::{User, UserChanges};
use crate::repository::UserRepository;

/// One page of a listing.
#[derive(Debug)]
pub struct Page {
    /// The profiles, in id order.
    pub items: Vec<User>,
    /// Where the next page starts; `None` on the last page.
    pub next_cursor: Option<Cursor>,
}

/// The profiles, as seen by an authenticated caller.
///
/// Owners see and change only themselves and admins everyone. A profile the caller may not
/// see is reported as missing, so ids of other users cannot be probed.
pub struct Profiles<R> {
    repository: R,
}

impl<R: UserRepository> Profiles<R> {
    /// Profiles kept in `repository`.
    pub fn new(repository: R) -> Self {
        Self { repository }
    }

    /// The profile `id`, if the caller may see it.
    pub async fn get(&self, caller: &Principal, id: Uuid) -> Result<User, Error> {
        if !caller.may_act_for(id) {
            return Err(Error::NotFound("user"));
        }
        self.repository
            .find(id)
            .await?
            .ok_or(Error::NotFound("user"))
    }

    /// Applies `changes` to profile `id`. Only admins change roles.
    pub async fn update(
        &self,
        caller: &Principal,
        id: Uuid,
        changes: UserChanges,
    ) -> Result<User, Error> {
        if !caller.may_act_for(id) {
            return Err(Error::NotFound("user"));
        }
        if changes.role.is_some() && !caller.is_admin() {
            return Err(Error::PermissionDenied(
                "only an admin may change a role".to_owned(),
            ));
        }
        // An empty patch changes nothing, so it writes nothing and publishes nothing.
        let updated = if changes.is_empty() {
            self.repository.find(id).await?
        } else {
            self.repository.update(id, changes).await?
        };
        updated.ok_or(Error::NotFound("user"))
    }

    /// Deletes profile `id`.
    pub async fn delete(&self, caller: &Principal, id: Uuid) -> Result<(), Error> {
        if !caller.may_act_for(id) || !self.repository.delete(id).await? {
            return Err(Error::NotFound("user"));
        }
        Ok(())
    }

    /// A page of every profile (admins only), starting after `cursor`.
    pub async fn list(
        &self,
        caller: &Principal,
        size: PageSize,
        after: Option<Uuid>,
    ) -> Result<Page, Error> {
        if !caller.is_admin() {
            return Err(Error::PermissionDenied(
                "only an admin may list users".to_owned(),
            ));
        }
        // One extra row says whether another page follows, without a count query.
        let mut items = self.repository.list(after, size.get() + 1).await?;
        let next_cursor = if items.len() > size.get() as usize {
            items.truncate(size.get() as usize);
            items.last().map(|last| Cursor::after(&last.id))
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }
}
