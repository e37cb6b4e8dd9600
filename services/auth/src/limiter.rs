//! Limits on what costs a password hash, counted in Redis: failed logins per email and per
//! client address, and registrations per client address.
//!
//! Every login attempt is counted before its password is checked, in one atomic step with the
//! limit check, so a burst of parallel guesses cannot all slip past the limit (logins of one
//! email in flight at once count against it too); a successful or refused attempt is taken
//! back off (a success clears the email's counter). Counters expire a window after
//! their first attempt; while one is over its limit, logins for that email or from that
//! address are refused with the counter's remaining lifetime as `Retry-After`.
//! Registrations are counted the same way, per address, whatever their outcome: each one
//! that gets as far as hashing its password costs as much as a login.
//!
//! If Redis cannot be asked, nothing is limited (and a warning says so): an outage of the
//! cache must not lock everyone out.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use deadpool_redis::redis;
use sha2::{Digest, Sha256};
use tessera_observability::trace_context;
use tracing::Instrument;

/// How many attempts are allowed, and over how long.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Failed logins per email within the window.
    pub per_email: u32,
    /// Failed logins per client address within the window.
    pub per_client: u32,
    /// The login window, from the first failure.
    pub window: Duration,
    /// Registrations per client address within their window.
    pub registrations_per_client: u32,
    /// The registration window, from the first registration.
    pub registration_window: Duration,
}

/// The login and registration limiter.
#[derive(Clone)]
pub struct Limiter {
    pool: deadpool_redis::Pool,
    limits: Limits,
    timeout: Duration,
    prefix: String,
}

/// An attempt let through: report how it went with [`Limiter::succeeded`], or drop it
/// as a failure (it is counted already).
#[must_use]
pub struct Attempt {
    email_key: String,
    client_key: String,
}

impl Limiter {
    /// A limiter in the Redis behind `pool` with keys under `prefix`, each call bounded by
    /// `timeout`.
    pub fn new(
        pool: deadpool_redis::Pool,
        limits: Limits,
        timeout: Duration,
        prefix: impl Into<String>,
    ) -> Self {
        Self {
            pool,
            limits,
            timeout,
            prefix: prefix.into(),
        }
    }

    /// Counts an attempt for `email` from `client`; `Err(retry_after)` when that puts either
    /// over its limit.
    pub async fn attempt(&self, email: &str, client: IpAddr) -> Result<Attempt, Duration> {
        let attempt = Attempt {
            email_key: self.email_key(email),
            client_key: self.client_key("client", client),
        };
        let window = self.limits.window;
        let mut pipe = redis::pipe();
        pipe.atomic();
        for key in [&attempt.email_key, &attempt.client_key] {
            count(&mut pipe, key, window);
        }
        let Some((email_count, email_ttl, client_count, client_ttl)) =
            self.run::<(u32, i64, u32, i64)>(&pipe).await
        else {
            return Ok(attempt);
        };
        let waits = [
            over(email_count, self.limits.per_email, email_ttl, window),
            over(client_count, self.limits.per_client, client_ttl, window),
        ];
        match waits.into_iter().flatten().max() {
            Some(wait) => {
                // A refused attempt checks no password: it does not count.
                let mut pipe = redis::pipe();
                take_back(&mut pipe, &attempt.email_key, window);
                take_back(&mut pipe, &attempt.client_key, window);
                let _: Option<()> = self.run(&pipe).await;
                Err(wait)
            }
            None => Ok(attempt),
        }
    }

    /// Counts a registration from `client`; `Err(retry_after)` when that puts it over its
    /// limit (and then it does not count).
    pub async fn registration(&self, client: IpAddr) -> Result<(), Duration> {
        let key = self.client_key("register", client);
        let window = self.limits.registration_window;
        let mut pipe = redis::pipe();
        pipe.atomic();
        count(&mut pipe, &key, window);
        let Some((registrations, ttl)) = self.run::<(u32, i64)>(&pipe).await else {
            return Ok(());
        };
        match over(
            registrations,
            self.limits.registrations_per_client,
            ttl,
            window,
        ) {
            Some(wait) => {
                let mut pipe = redis::pipe();
                take_back(&mut pipe, &key, window);
                let _: Option<()> = self.run(&pipe).await;
                Err(wait)
            }
            None => Ok(()),
        }
    }

    /// Takes a successful attempt back off: the email starts afresh, and the address keeps
    /// only its failures (so many people behind one address can log in).
    pub async fn succeeded(&self, attempt: Attempt) {
        let mut pipe = redis::pipe();
        pipe.cmd("DEL").arg(&attempt.email_key).ignore();
        take_back(&mut pipe, &attempt.client_key, self.limits.window);
        let _: Option<()> = self.run(&pipe).await;
    }

    /// Emails are hashed so the cache holds no addresses.
    fn email_key(&self, email: &str) -> String {
        let digest = Sha256::digest(email.as_bytes());
        let mut key = format!("{}:email:", self.prefix);
        for byte in &digest[..16] {
            let _ = write!(key, "{byte:02x}");
        }
        key
    }

    /// IPv6 clients are counted per /64, the block one subscriber gets: counting single
    /// addresses would give each of them billions of fresh counters.
    fn client_key(&self, kind: &str, client: IpAddr) -> String {
        match client.to_canonical() {
            IpAddr::V4(v4) => format!("{}:{kind}:{v4}", self.prefix),
            IpAddr::V6(v6) => {
                let [a, b, c, d, ..] = v6.segments();
                format!("{}:{kind}:{a:x}:{b:x}:{c:x}:{d:x}::/64", self.prefix)
            }
        }
    }

    /// Runs `pipe` within the timeout; `None` (and a warning) when Redis cannot answer.
    async fn run<T: redis::FromRedisValue>(&self, pipe: &redis::Pipeline) -> Option<T> {
        let outcome = tokio::time::timeout(self.timeout, async {
            let mut connection = self.pool.get().await.map_err(|e| e.to_string())?;
            pipe.query_async::<T>(&mut connection)
                .await
                .map_err(|e| e.to_string())
        })
        .instrument(trace_context::redis_span("MULTI"))
        .await;
        match outcome {
            Ok(Ok(value)) => Some(value),
            Ok(Err(error)) => {
                tracing::warn!(%error, "login and registration limits unavailable: not limiting");
                None
            }
            Err(_) => {
                tracing::warn!("login and registration limits timed out: not limiting");
                None
            }
        }
    }
}

/// Adds to `pipe` what counts one attempt on `key` and reads the count and its lifetime.
fn count(pipe: &mut redis::Pipeline, key: &str, window: Duration) {
    // The first attempt starts the window; later ones only count.
    pipe.cmd("SET")
        .arg(key)
        .arg(0)
        .arg("EX")
        .arg(window.as_secs().max(1))
        .arg("NX")
        .ignore()
        .cmd("INCR")
        .arg(key)
        .cmd("PTTL")
        .arg(key);
}

/// Adds to `pipe` what uncounts one attempt from `key`.
fn take_back(pipe: &mut redis::Pipeline, key: &str, window: Duration) {
    // A key that expired meanwhile is recreated by DECR: give it the window too.
    pipe.cmd("DECR")
        .arg(key)
        .ignore()
        .cmd("EXPIRE")
        .arg(key)
        .arg(window.as_secs().max(1))
        .arg("NX")
        .ignore();
}

/// How long to wait when `count` is over `limit`: the counter's remaining lifetime `ttl`
/// (milliseconds), or the whole `window` if that is unknown.
fn over(count: u32, limit: u32, ttl: i64, window: Duration) -> Option<Duration> {
    (count > limit).then(|| u64::try_from(ttl).map_or(window, Duration::from_millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter() -> Limiter {
        let pool = deadpool_redis::Config::from_url("redis://127.0.0.1:1/0")
            .create_pool(Some(deadpool_redis::Runtime::Tokio1))
            .unwrap();
        let limits = Limits {
            per_email: 1,
            per_client: 1,
            window: Duration::from_secs(1),
            registrations_per_client: 1,
            registration_window: Duration::from_secs(1),
        };
        Limiter::new(pool, limits, Duration::from_millis(100), "p")
    }

    #[test]
    fn ipv6_clients_share_their_64_and_mapped_ipv4_is_ipv4() {
        let limiter = limiter();
        let key = |ip: &str| limiter.client_key("client", ip.parse().unwrap());
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:bbbb::2"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:203.0.113.7"), key("203.0.113.7"));
        assert_eq!(key("203.0.113.7"), "p:client:203.0.113.7");
    }

    #[test]
    fn email_keys_hold_no_address() {
        let key = limiter().email_key("ada@example.com");
        assert!(!key.contains("ada"), "{key}");
        assert_eq!(key.len(), "p:email:".len() + 32);
    }

    #[tokio::test]
    async fn without_redis_attempts_are_not_limited() {
        let limiter = limiter();
        let client = "203.0.113.7".parse().unwrap();
        for _ in 0..3 {
            assert!(limiter.attempt("ada@example.com", client).await.is_ok());
            assert!(limiter.registration(client).await.is_ok());
        }
    }
}
