//! What auth learns from the users service's events: deleted users lose their credential and
//! sessions; role changes reach the tokens issued from then on.

use std::time::Duration;

use sqlx::PgConnection;
use tessera_events::users::{UserDeleted, UserUpdated};
use tessera_jwt::Denylist;
use tessera_messaging::{Consumer, ConsumerSettings, Envelope, Handler, HandlerError};
use tessera_runtime::Context;

use crate::store;

/// The consumer of `user.deleted` and `user.updated` on `queue`.
pub fn consumer(context: &Context, queue: String, expires: Option<Duration>) -> Consumer {
    Consumer::new(
        ConsumerSettings {
            name: "auth.users".to_owned(),
            exchange: tessera_messaging::topology::EVENTS_EXCHANGE.to_owned(),
            queue,
            prefetch: 32,
            retry_delays: vec![
                Duration::from_secs(1),
                Duration::from_secs(10),
                Duration::from_secs(60),
            ],
            queue_expires: expires,
        },
        context.db.clone(),
        context.broker.clone(),
        context.messaging.clone(),
    )
    .on::<UserDeleted, _>(ForgetUser {
        denylist: Denylist::new(context.redis.clone()),
    })
    .on::<UserUpdated, _>(FollowRole)
}

/// `user.deleted`: deletes the credential and every session, and denylists the sessions'
/// live access tokens. Repeating it finds nothing left to do.
struct ForgetUser {
    denylist: Denylist,
}

impl Handler<UserDeleted> for ForgetUser {
    async fn handle(
        &self,
        event: UserDeleted,
        _: &Envelope,
        connection: &mut PgConnection,
    ) -> Result<(), HandlerError> {
        let live = store::forget_user(connection, event.id).await?;
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
struct FollowRole;

impl Handler<UserUpdated> for FollowRole {
    async fn handle(
        &self,
        event: UserUpdated,
        _: &Envelope,
        connection: &mut PgConnection,
    ) -> Result<(), HandlerError> {
        store::apply_role(connection, event.id, event.role, event.updated_at).await?;
        Ok(())
    }
}
