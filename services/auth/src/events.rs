//! What auth learns from the users service's events: deleted users lose their credential and
//! sessions; role changes reach the tokens issued from then on.

use sqlx::PgConnection;
use tessera_errors::BoxError;
use tessera_events::Envelope;
use tessera_events::users::{UserDeleted, UserUpdated};
use tessera_jwt::Denylist;
use tessera_messaging::{Consumer, Handler};
use tessera_runtime::Context;

use crate::repository::AccountRepository;

/// The consumer's name: the key of its processed-event records, so it never changes.
const CONSUMER: &str = "auth.users";

/// The service's consumer with the handlers of `user.deleted` and `user.updated`.
pub fn consumer<R: AccountRepository + Clone>(context: &Context, repository: &R) -> Consumer {
    context
        .consumer(CONSUMER)
        .on::<UserDeleted, _>(ForgetUser {
            repository: repository.clone(),
            denylist: Denylist::new(context.redis.clone()),
        })
        .on::<UserUpdated, _>(FollowRole {
            repository: repository.clone(),
        })
}

/// `user.deleted`: deletes the credential and every session, and denylists the sessions'
/// live access tokens. Repeating it finds nothing left to do.
struct ForgetUser<R> {
    repository: R,
    denylist: Denylist,
}

impl<R: AccountRepository> Handler<UserDeleted> for ForgetUser<R> {
    async fn handle(
        &self,
        event: UserDeleted,
        _: &Envelope,
        connection: &mut PgConnection,
    ) -> Result<(), BoxError> {
        let live = self.repository.forget_user(connection, event.id).await?;
        for grant in live {
            // The sessions are gone for good with the credential; a token that cannot be
            // denylisted now still dies at its `exp`, within the access-token lifetime.
            if let Err(error) = self.denylist.revoke(grant.jti, grant.expires_at).await {
                tracing::warn!(%error, user_id = %event.id, "cannot denylist a deleted user's access token");
            }
        }
        Ok(())
    }
}

/// `user.updated`: the credential takes the profile's role, unless a later change arrived
/// first.
struct FollowRole<R> {
    repository: R,
}

impl<R: AccountRepository> Handler<UserUpdated> for FollowRole<R> {
    async fn handle(
        &self,
        event: UserUpdated,
        _: &Envelope,
        connection: &mut PgConnection,
    ) -> Result<(), BoxError> {
        self.repository
            .apply_role(connection, event.id, event.role, event.updated_at)
            .await?;
        Ok(())
    }
}
