//! Work the service does on its own: the admin bootstrap and the janitor.

use std::sync::Arc;
use std::time::Duration;

use tessera_domain::Role;
use tessera_errors::Error;
use tokio_util::sync::CancellationToken;

use crate::accounts::{ABANDONED_AFTER, Accounts, NewAccount};
use crate::store::Store;

/// How often the janitor runs.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Makes sure `admin` exists, retrying while the users service or the database cannot be
/// reached, until it does or the service stops. An email already held by a non-admin account
/// is left alone (and logged): the bootstrap never promotes anyone.
pub async fn bootstrap_admin(accounts: Arc<Accounts>, admin: NewAccount, stop: CancellationToken) {
    let mut delay = Duration::from_millis(500);
    loop {
        let outcome = match accounts.register(admin.clone()).await {
            Ok(user_id) => {
                tracing::info!(%user_id, "admin account created");
                return;
            }
            Err(Error::AlreadyExists(_)) => accounts.role_of(&admin.email).await,
            Err(error) => Err(error),
        };
        match outcome {
            Ok(Some(Role::Admin)) => {
                tracing::info!("admin account present");
                return;
            }
            Ok(Some(Role::User)) => {
                tracing::error!("the admin email belongs to a user account; it is not promoted");
                return;
            }
            Ok(None) => tracing::warn!(
                retry_in = ?delay,
                "cannot bootstrap the admin account: its email is taken by a registration in \
                 progress or by a profile with another role"
            ),
            Err(error) => {
                tracing::warn!(error = %error, retry_in = ?delay, "cannot bootstrap the admin account yet");
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// Deletes abandoned registrations and dead sessions every minute until the service stops.
pub async fn janitor(store: Store, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(SWEEP_EVERY) => {}
        }
        match store.sweep(ABANDONED_AFTER).await {
            Ok(0) => {}
            Ok(removed) => {
                tracing::info!(removed, "janitor removed dead sessions and registrations")
            }
            Err(error) => tracing::warn!(%error, "janitor failed; trying again later"),
        }
    }
}
