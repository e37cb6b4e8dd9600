//! What auth does: registration, login, refresh, logout. The HTTP and gRPC layers only
//! translate to and from these.

use std::net::IpAddr;
use std::sync::Arc;

use chrono::{TimeDelta, Utc};
use tessera_domain::{Email, Role};
use tessera_errors::Error;
use tessera_jwt::{Denylist, IssuedToken, Principal, Signer, Verifier};
use tessera_runtime::Detacher;
use uuid::Uuid;

use crate::domain::{
    ABANDONED_AFTER, AccessGrant, NewAccount, Password, RefreshToken, Rotation, SessionPolicy,
};
use crate::hashing::{Hasher, Verdict};
use crate::limiter::Limiter;
use crate::repository::AccountRepository;
use crate::users::{UsersClient, UsersError};

/// A logged-in session's tokens.
#[derive(Debug)]
pub struct Tokens {
    /// The access token.
    pub access: IssuedToken,
    /// The refresh token that replaces the one presented, if any.
    pub refresh: RefreshToken,
}

/// The auth service's behaviour over its repository, the users service and Redis. Built
/// once, by the service's wiring.
pub struct Accounts<R> {
    /// Credentials and sessions.
    pub(crate) repository: R,
    /// Password hashing.
    pub(crate) hasher: Hasher,
    /// Signs access tokens.
    pub(crate) signer: Arc<Signer>,
    /// Verifies them, denylist included.
    pub(crate) verifier: Verifier,
    /// Creates profiles.
    pub(crate) users: UsersClient,
    /// Revokes access tokens.
    pub(crate) denylist: Denylist,
    /// Limits logins and registrations.
    pub(crate) limiter: Limiter,
    /// How long refresh tokens live.
    pub(crate) refresh_ttl: TimeDelta,
    /// How long a session lives from its login, and the grace for a refresh token
    /// presented twice.
    pub(crate) sessions: SessionPolicy,
    /// Runs registrations to their end, whatever happens to the request.
    pub(crate) detacher: Detacher,
}

/// The one answer to every failed login and refresh, so none tells more than another.
fn wrong_credentials() -> Error {
    Error::Unauthenticated("wrong email or password".to_owned())
}

fn invalid_refresh_token() -> Error {
    Error::Unauthenticated("the refresh token is invalid, expired or revoked".to_owned())
}

impl<R: AccountRepository> Accounts<R> {
    /// Registers `account` for a client at `client`, unless that address registered too
    /// many accounts lately (429).
    pub async fn register_from(
        self: &Arc<Self>,
        client: IpAddr,
        account: NewAccount,
    ) -> Result<Uuid, Error> {
        self.limiter
            .registration(client)
            .await
            .map_err(|retry_after| Error::RateLimited { retry_after })?;
        self.register(account).await
    }

    /// Registers `account`: a pending credential, then the profile in the users service,
    /// then the credential becomes active. If the profile cannot be made, the credential is
    /// deleted again. Returns the user id.
    ///
    /// The password is hashed as part of the request (shed with it under load); the steps
    /// after that run in a task of their own, so a client that hangs up (or a request that
    /// times out) cannot stop the saga half-way and leave the email blocked.
    pub async fn register(self: &Arc<Self>, account: NewAccount) -> Result<Uuid, Error> {
        let hash = self
            .hasher
            .hash(&account.password)
            .await
            .map_err(Error::internal)?;
        let accounts = Arc::clone(self);
        self.detacher
            .spawn(async move { accounts.run_registration(account, hash).await })
            .await
            .map_err(Error::internal)?
    }

    async fn run_registration(&self, account: NewAccount, hash: String) -> Result<Uuid, Error> {
        let taken = || Error::AlreadyExists("an account with this email exists".to_owned());
        let pending = self
            .repository
            .reserve(&account.email, &hash, account.role, ABANDONED_AFTER)
            .await?
            .ok_or_else(taken)?;
        let profile = match self
            .users
            .create_user(pending, &account.email, &account.display_name, account.role)
            .await
        {
            Ok(profile) => profile,
            Err(error) => {
                self.compensate(pending).await;
                return Err(match error {
                    UsersError::Unavailable(_) => {
                        tracing::warn!(%error, "registration failed: no profile");
                        Error::Unavailable(
                            "cannot create the profile now; try again later".to_owned(),
                        )
                    }
                    UsersError::Refused(_) => Error::internal(error),
                });
            }
        };
        // The profile may exist already: made for this pending id by an attempt that died
        // half-way, or under another id by one whose caller gave up waiting. Either is
        // adopted, but only with the role asked for, so nobody registers into an admin profile.
        if profile.role != account.role {
            self.compensate(pending).await;
            return Err(taken());
        }
        match self
            .repository
            .activate(pending, profile.id, profile.role)
            .await
        {
            Ok(true) => Ok(profile.id),
            Ok(false) => Err(Error::Unavailable(
                "the registration took too long; try again".to_owned(),
            )),
            Err(error) => {
                self.compensate(pending).await;
                Err(error.into())
            }
        }
    }

    /// Deletes a pending credential; if even that fails, the janitor removes it later (it can
    /// never log in meanwhile).
    async fn compensate(&self, pending: Uuid) {
        if let Err(error) = self.repository.discard(pending).await {
            tracing::error!(%error, %pending, "cannot delete a failed registration's credential; the janitor will");
        }
    }

    /// The role of the active account with `email`, if there is one.
    pub async fn role_of(&self, email: &Email) -> Result<Option<Role>, Error> {
        Ok(self.repository.role_of(email).await?)
    }

    /// Logs in with `email` and `password` from `client`. Every failure, whether the email is
    /// unknown, malformed, or the password wrong or oversized, answers the same 401, and an
    /// unknown email costs a password verification like a known one.
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        client: IpAddr,
    ) -> Result<Tokens, Error> {
        // An email that does not parse belongs to nobody, but its attempts count all the same.
        let limit_key = email.trim().to_lowercase();
        let email = Email::parse(email).ok();
        let attempt = self
            .limiter
            .attempt(&limit_key, client)
            .await
            .map_err(|retry_after| Error::RateLimited { retry_after })?;
        let credential = match &email {
            Some(email) => self.repository.find_active(email).await?,
            None => None,
        };
        let verdict = match Password::offered(password) {
            Ok(password) => {
                let stored = credential.as_ref().map(|c| c.password_hash.as_str());
                let verdict = self
                    .hasher
                    .verify(&password, stored)
                    .await
                    .map_err(Error::internal)?;
                if let (Some(credential), Verdict::Match { rehash: true }) = (&credential, verdict)
                {
                    self.rehash(credential.user_id, &password).await;
                }
                verdict
            }
            Err(_) => Verdict::Mismatch,
        };
        match (credential, verdict) {
            (Some(credential), Verdict::Match { .. }) => {
                self.limiter.succeeded(attempt).await;
                self.open_session(credential.user_id, credential.role).await
            }
            // The attempt was counted as it was let through.
            _ => Err(wrong_credentials()),
        }
    }

    /// Stores a hash with the current costs; failing that, the old one keeps working.
    async fn rehash(&self, user_id: Uuid, password: &Password) {
        let outcome = match self.hasher.hash(password).await {
            Ok(hash) => self
                .repository
                .replace_hash(user_id, &hash)
                .await
                .map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        if let Err(error) = outcome {
            tracing::warn!(%error, %user_id, "cannot upgrade a password hash");
        }
    }

    async fn open_session(&self, user_id: Uuid, role: Role) -> Result<Tokens, Error> {
        let access = self.signer.issue(user_id, role)?;
        let refresh = RefreshToken::generate();
        let opened = self
            .repository
            .open_session(
                user_id,
                AccessGrant::from(&access),
                &refresh,
                Utc::now() + self.refresh_ttl.min(self.sessions.lifetime),
            )
            .await?;
        if !opened {
            return Err(wrong_credentials());
        }
        Ok(Tokens { access, refresh })
    }

    /// Exchanges a refresh token for new tokens. A token that was already exchanged revokes
    /// its whole session (it has been copied, and either copy may be the thief's), unless it
    /// was exchanged within the reuse grace: a retry or a second tab gets 409 and keeps the
    /// session.
    pub async fn refresh(&self, presented: &str) -> Result<Tokens, Error> {
        let presented = RefreshToken::parse(presented).ok_or_else(invalid_refresh_token)?;
        let next = RefreshToken::generate();
        let rotation = self
            .repository
            .rotate(
                &presented,
                &next,
                Utc::now() + self.refresh_ttl,
                self.sessions,
                |user, role| self.signer.issue(user, role).map_err(Error::from),
            )
            .await?;
        match rotation {
            Rotation::Rotated(access) => Ok(Tokens {
                access,
                refresh: next,
            }),
            Rotation::Reused(live) => {
                tracing::warn!(
                    access_tokens = live.len(),
                    "a rotated refresh token was presented again: session revoked"
                );
                for grant in live {
                    if let Err(error) = self.denylist.revoke(grant.jti, grant.expires_at).await {
                        tracing::warn!(%error, jti = %grant.jti, "cannot denylist a revoked session's access token");
                    }
                }
                Err(invalid_refresh_token())
            }
            Rotation::JustRotated => Err(Error::Conflict(
                "this refresh token was exchanged moments ago: use the tokens that exchange returned"
                    .to_owned(),
            )),
            Rotation::Refused => Err(invalid_refresh_token()),
        }
    }

    /// The principal of a live access token: what `ValidateToken` tells other services.
    pub async fn validate(&self, token: &str) -> Result<Principal, Error> {
        let token = token.trim();
        if token.is_empty() {
            return Err(Error::Unauthenticated("access_token is empty".to_owned()));
        }
        Ok(self.verifier.verify(token).await?)
    }

    /// Ends the session of `presented` (if it is the caller's) and revokes its access tokens
    /// and the caller's until they expire. Ending an ended session is not an error.
    pub async fn logout(&self, caller: &Principal, presented: &RefreshToken) -> Result<(), Error> {
        let caller_grant = AccessGrant {
            jti: caller.jti,
            expires_at: caller.expires_at,
        };
        let revoke = self
            .repository
            .revoke_session(presented, caller.user_id, caller_grant)
            .await?;
        for grant in revoke {
            self.denylist
                .revoke(grant.jti, grant.expires_at)
                .await
                .map_err(|error| {
                    tracing::warn!(%error, "cannot denylist an access token at logout");
                    Error::Unavailable("cannot revoke the access token now; try again".to_owned())
                })?;
        }
        Ok(())
    }
}
