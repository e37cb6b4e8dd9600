//! What auth learns from the users service's events: deleted users lose their credential and
//! sessions; a role change ends the sessions whose tokens carry the old role.

use sqlx::PgConnection;
use tessera_errors::BoxError;
use tessera_events::Envelope;
use tessera_events::users::{UserDeleted, UserUpdated};
use tessera_jwt::Denylist;
use tessera_messaging::{Consumer, Handler};
use tessera_runtime::Context;

use uuid::Uuid;

use crate::domain::AccessGrant;
use crate::repository::AccountRepository;

/// The consumer's name: the key of its processed-event records, so it never changes.
const CONSUMER: &str = "auth.users";

/// The service's consumer with the handlers of `user.deleted` and `user.updated`, revoking
/// through `denylist`: the verifier's own, so auth refuses what they revoke at once.
pub fn consumer<R: AccountRepository + Clone>(
    context: &Context,
    repository: &R,
    denylist: &Denylist,
) -> Consumer {
    context
        .consumer(CONSUMER)
        .on::<UserDeleted, _>(ForgetUser {
            repository: repository.clone(),
            denylist: denylist.clone(),
        })
        .on::<UserUpdated, _>(FollowRole {
            repository: repository.clone(),
            denylist: denylist.clone(),
        })
}

/// `user.deleted`: deletes the credential and every session, and denylists the sessions'
/// live access tokens. Repeating it finds nothing left to do.
struct ForgetUser<R> {
    repository: R,
    denylist: Denylist,
}

impl<R: AccountRepository> Handler<UserDeleted> for ForgetUser<R> {
    type Outcome = ();

    async fn handle(
        &self,
        event: UserDeleted,
        _: &Envelope,
        connection: &mut PgConnection,
    ) -> Result<(), BoxError> {
        let live = self.repository.forget_user(connection, event.id).await?;
        revoke(&self.denylist, live, event.id, "who was deleted").await;
        Ok(())
    }
}

/// `user.updated`: the credential takes the profile's role, unless a change of a later
/// version arrived first; a changed role ends the user's sessions and denylists their live access tokens,
/// whose `role` claim is now wrong.
struct FollowRole<R> {
    repository: R,
    denylist: Denylist,
}

impl<R: AccountRepository> Handler<UserUpdated> for FollowRole<R> {
    type Outcome = ();

    async fn handle(
        &self,
        event: UserUpdated,
        _: &Envelope,
        connection: &mut PgConnection,
    ) -> Result<(), BoxError> {
        let live = self
            .repository
            .apply_role(connection, event.id, event.role, event.version)
            .await?;
        revoke(&self.denylist, live, event.id, "whose role changed").await;
        Ok(())
    }
}

/// Denylists `live` until each expires. A token that cannot be denylisted now (Redis down)
/// still dies at its `exp`, within the access-token lifetime; its session is over already.
async fn revoke(denylist: &Denylist, live: Vec<AccessGrant>, user_id: Uuid, whose: &str) {
    for grant in live {
        if let Err(error) = denylist.revoke(grant.jti, grant.expires_at).await {
            tracing::warn!(%error, %user_id, "cannot denylist the access token of a user {whose}");
        }
    }
}
