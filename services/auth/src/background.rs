//! Work the service does on its own: the admin bootstrap, the janitor, and keeping the
//! denylist complete.

use std::sync::Arc;
use std::time::Duration;

use tessera_domain::Role;
use tessera_errors::Error;
use tessera_jwt::Denylist;
use tessera_runtime::Task;
use tokio_util::sync::CancellationToken;

use crate::accounts::Accounts;
use crate::domain::{ABANDONED_AFTER, NewAccount};
use crate::repository::AccountRepository;

/// How often the janitor runs.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// How often revocations Redis has not taken are pushed again (and a Redis that lost its
/// data is noticed): with the time Redis was unreachable, and a verifier's
/// `Denylist::RECHECK_AFTER`, the longest a revoked token can still pass a verifier (never
/// beyond its own expiry). Each round is one `EXISTS` and one indexed query.
pub const DENYLIST_SYNC_EVERY: Duration = Duration::from_millis(500);
/// Revocations pushed per round trip.
const SYNC_BATCH: i64 = 500;

/// The one-off task that makes sure `admin` exists.
pub fn admin_bootstrap<R: AccountRepository>(
    accounts: Arc<Accounts<R>>,
    admin: NewAccount,
    stop: CancellationToken,
) -> Task {
    Task::once("admin-bootstrap", async move {
        bootstrap_admin(&accounts, admin, stop).await;
        Ok(())
    })
}

/// The lifelong task that sweeps dead rows every minute.
pub fn janitor<R: AccountRepository>(repository: R, stop: CancellationToken) -> Task {
    Task::lifelong("janitor", sweep_until_stopped(repository, stop))
}

/// The lifelong task that keeps Redis' denylist complete: every revocation recorded while
/// Redis could not take it is pushed once Redis answers, and all of them again when Redis has
/// lost its data.
pub fn denylist_sync<R: AccountRepository>(
    repository: R,
    denylist: Denylist,
    stop: CancellationToken,
) -> Task {
    Task::lifelong("denylist-sync", async move {
        let mut failing = false;
        loop {
            if stop
                .run_until_cancelled(tokio::time::sleep(DENYLIST_SYNC_EVERY))
                .await
                .is_none()
            {
                return;
            }
            let outcome = push_revocations(&repository, &denylist).await;
            match &outcome {
                Ok(0) => {}
                Ok(pushed) => tracing::info!(pushed, "pushed revocations to the denylist"),
                // Once per outage: the verifiers say it too, on every request.
                Err(error) if !failing => {
                    tracing::warn!(%error, "cannot push revocations to the denylist; retrying");
                }
                Err(_) => {}
            }
            failing = outcome.is_err();
        }
    })
}

/// Pushes the revocations Redis has not taken (all of them, if it lost its data); returns
/// how many.
async fn push_revocations<R: AccountRepository>(
    repository: &R,
    denylist: &Denylist,
) -> Result<usize, String> {
    let complete = denylist.is_complete().await.map_err(|e| e.to_string())?;
    if !complete {
        repository
            .unmark_pushed()
            .await
            .map_err(|e| e.to_string())?;
    }
    let mut pushed = 0;
    loop {
        let batch = repository
            .unpushed_revocations(SYNC_BATCH)
            .await
            .map_err(|e| e.to_string())?;
        if batch.is_empty() {
            break;
        }
        let tokens: Vec<_> = batch.iter().map(|g| (g.jti, g.expires_at)).collect();
        denylist
            .revoke_all(&tokens)
            .await
            .map_err(|e| e.to_string())?;
        let jtis: Vec<_> = batch.iter().map(|g| g.jti).collect();
        repository
            .mark_pushed(&jtis)
            .await
            .map_err(|e| e.to_string())?;
        pushed += batch.len();
    }
    if !complete {
        denylist.mark_complete().await.map_err(|e| e.to_string())?;
    }
    Ok(pushed)
}

/// Makes sure `admin` exists, retrying while the users service or the database cannot be
/// reached, until it does or the service stops. An email already held by a non-admin account
/// is left alone (and logged): the bootstrap never promotes anyone.
async fn bootstrap_admin<R: AccountRepository>(
    accounts: &Arc<Accounts<R>>,
    admin: NewAccount,
    stop: CancellationToken,
) {
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
async fn sweep_until_stopped<R: AccountRepository>(repository: R, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(SWEEP_EVERY) => {}
        }
        match repository.sweep(ABANDONED_AFTER).await {
            Ok(0) => {}
            Ok(removed) => {
                tracing::info!(removed, "janitor removed dead sessions and registrations")
            }
            Err(error) => tracing::warn!(%error, "janitor failed; trying again later"),
        }
    }
}
