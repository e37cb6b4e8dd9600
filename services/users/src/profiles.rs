//! Who may see and change which profile: the rules every REST and gRPC call goes through.

use tessera_domain::{Page, PageSize};
use tessera_errors::Error;
use tessera_jwt::Principal;
use tessera_runtime::Snapshot;
use uuid::Uuid;

use crate::domain::{Creation, NewUser, User, UserChanges};
use crate::repository::UserRepository;

/// The profiles, as seen by an authenticated end user or by another service.
///
/// Owners see and change only themselves and admins everyone. A profile the caller may not
/// see is reported as missing, so ids of other users cannot be probed. Other services reach
/// the internal gRPC port only; they create profiles (registration) and read any.
pub struct Profiles<R> {
    repository: R,
}

impl<R: UserRepository> Profiles<R> {
    /// Profiles kept in `repository`.
    pub fn new(repository: R) -> Self {
        Self { repository }
    }

    /// The profile `id`, if the caller may see it.
    pub async fn get(&self, caller: &Principal, id: Uuid) -> Result<Snapshot<User>, Error> {
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
            self.repository
                .find(id)
                .await?
                .map(|user| User::clone(&user))
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
    ) -> Result<Page<User>, Error> {
        if !caller.is_admin() {
            return Err(Error::PermissionDenied(
                "only an admin may list users".to_owned(),
            ));
        }
        let rows = self.repository.list(after, size.fetch_limit()).await?;
        Ok(Page::from_rows(rows, size, |user| user.id))
    }

    /// Creates a profile for another service (registration), or returns the one that has
    /// its email already.
    pub async fn create(&self, user: NewUser) -> Result<Creation, Error> {
        Ok(self.repository.create(user).await?)
    }

    /// The profile `id`, for another service.
    pub async fn find(&self, id: Uuid) -> Result<Snapshot<User>, Error> {
        self.repository
            .find(id)
            .await?
            .ok_or(Error::NotFound("user"))
    }

    /// The profiles that exist among `ids`, each once, for another service.
    pub async fn find_many(&self, mut ids: Vec<Uuid>) -> Result<Vec<User>, Error> {
        ids.sort_unstable();
        ids.dedup();
        Ok(self.repository.find_many(&ids).await?)
    }
}
