//! Limits on what costs a password hash, counted in Redis: failed logins per email and client
//! address, per email, and per address, and registrations per address.
//!
//! A lockout must not be a weapon: failures lock an email out only *from the address they
//! came from* (`per_email_client`), so guessing at someone's account from one place does not
//! keep its owner out. Failures from many addresses against one email are slowed instead:
//! past `per_email_client` of them, each attempt from an address that never logged in to
//! the account must wait a doubling delay (1 s up to a minute) after the one before, up to
//! the `per_email` ceiling for the window. An address that has logged in to the account in
//! the last 30 days is known to it and passes the delay and the ceiling.
//!
//! Every login attempt is counted before its password is checked, in one atomic step with the
//! limit check (a Lua script), so a burst of parallel guesses cannot all slip past the limit
//! (logins of one email in flight at once count against it too); a successful or refused
//! attempt is taken back off. Counters expire a window after their first attempt; a refused
//! attempt is told how long to wait in `Retry-After`.
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

/// How long an address that logged in to an account stays known to it.
const KNOWN_FOR: Duration = Duration::from_secs(30 * 24 * 3600);
/// The first delay between attempts at a contested email; it doubles up to [`MAX_DELAY`].
const FIRST_DELAY: Duration = Duration::from_secs(1);
/// The longest delay between attempts at a contested email.
const MAX_DELAY: Duration = Duration::from_secs(60);

/// How many attempts are allowed, and over how long.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Failed logins per email from one client address within the window: the lockout.
    pub per_email_client: u32,
    /// Failed logins per email from every address together within the window: the ceiling
    /// for addresses not known to the account.
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
    pair_key: String,
    email_key: String,
    client_key: String,
    known_key: String,
}

/// [`ATTEMPT`], hashed once: Redis runs it by its SHA-1 (loading it when it has not yet).
static ATTEMPT_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(ATTEMPT));

/// The decision on a login attempt, atomically: refused (uncounted) with the wait in
/// milliseconds, or counted.
///
/// KEYS: known, gate, pair, email, client. ARGV: window (s), per_email_client, per_email,
/// per_client, first delay (ms), longest delay (ms). Returns the wait, 0 when let through.
const ATTEMPT: &str = r"
local known = redis.call('EXISTS', KEYS[1]) == 1
if not known then
  local gate = redis.call('PTTL', KEYS[2])
  if gate > 0 then return gate end
end
local counts, ttls = {}, {}
for i = 3, 5 do
  redis.call('SET', KEYS[i], 0, 'EX', ARGV[1], 'NX')
  counts[i] = redis.call('INCR', KEYS[i])
  ttls[i] = redis.call('PTTL', KEYS[i])
end
local wait = 0
local function over(i, limit)
  if counts[i] > tonumber(limit) then wait = math.max(wait, ttls[i], 1) end
end
over(3, ARGV[2])
over(5, ARGV[4])
if not known then over(4, ARGV[3]) end
if wait > 0 then
  for i = 3, 5 do redis.call('DECR', KEYS[i]) end
  return wait
end
local contested = counts[4] - tonumber(ARGV[2])
if not known and contested > 0 then
  local delay = math.min(tonumber(ARGV[5]) * 2 ^ math.min(contested - 1, 16), tonumber(ARGV[6]))
  redis.call('SET', KEYS[2], 1, 'PX', math.floor(delay))
end
return 0
";

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

    /// Counts an attempt for `email` from `client`; `Err(retry_after)` when a limit refuses
    /// it (and then it does not count).
    pub async fn attempt(&self, email: &str, client: IpAddr) -> Result<Attempt, Duration> {
        let email_key = self.email_key(email);
        let client_part = self.client_part(client);
        let attempt = Attempt {
            pair_key: format!("{email_key}:from:{client_part}"),
            known_key: format!("{email_key}:known:{client_part}"),
            client_key: format!("{}:client:{client_part}", self.prefix),
            email_key,
        };
        let gate_key = format!("{}:gate", attempt.email_key);
        let mut script = ATTEMPT_SCRIPT.prepare_invoke();
        script
            .key(&attempt.known_key)
            .key(&gate_key)
            .key(&attempt.pair_key)
            .key(&attempt.email_key)
            .key(&attempt.client_key)
            .arg(self.limits.window.as_secs().max(1))
            .arg(self.limits.per_email_client)
            .arg(self.limits.per_email)
            .arg(self.limits.per_client)
            .arg(millis(FIRST_DELAY))
            .arg(millis(MAX_DELAY));
        let outcome = self
            .within_timeout("EVALSHA", async |connection| {
                script.invoke_async::<i64>(connection).await
            })
            .await;
        match outcome {
            Some(wait) if wait > 0 => Err(Duration::from_millis(wait.unsigned_abs())),
            _ => Ok(attempt),
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

    /// Takes a successful attempt back off: its address starts afresh with the email and is
    /// known to it from now on; the email and the address keep only their failures (so many
    /// people behind one address can log in).
    pub async fn succeeded(&self, attempt: Attempt) {
        let mut pipe = redis::pipe();
        pipe.cmd("DEL").arg(&attempt.pair_key).ignore();
        take_back(&mut pipe, &attempt.email_key, self.limits.window);
        take_back(&mut pipe, &attempt.client_key, self.limits.window);
        pipe.cmd("SET")
            .arg(&attempt.known_key)
            .arg(1)
            .arg("EX")
            .arg(KNOWN_FOR.as_secs())
            .ignore();
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

    fn client_key(&self, kind: &str, client: IpAddr) -> String {
        format!("{}:{kind}:{}", self.prefix, self.client_part(client))
    }

    /// IPv6 clients are counted per /64, the block one subscriber gets: counting single
    /// addresses would give each of them billions of fresh counters.
    fn client_part(&self, client: IpAddr) -> String {
        match client.to_canonical() {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => {
                let [a, b, c, d, ..] = v6.segments();
                format!("{a:x}:{b:x}:{c:x}:{d:x}::/64")
            }
        }
    }

    /// Runs `pipe` within the timeout; `None` (and a warning) when Redis cannot answer.
    async fn run<T: redis::FromRedisValue>(&self, pipe: &redis::Pipeline) -> Option<T> {
        self.within_timeout("MULTI", async |connection| {
            pipe.query_async::<T>(connection).await
        })
        .await
    }

    /// Runs `work` (`command`, for its span) on a pooled connection within the timeout;
    /// `None` (and a warning) when Redis cannot answer.
    async fn within_timeout<T>(
        &self,
        command: &'static str,
        work: impl AsyncFnOnce(&mut deadpool_redis::Connection) -> redis::RedisResult<T>,
    ) -> Option<T> {
        let outcome = tokio::time::timeout(self.timeout, async {
            let mut connection = self.pool.get().await.map_err(|e| e.to_string())?;
            work(&mut connection).await.map_err(|e| e.to_string())
        })
        .instrument(trace_context::redis_span(command))
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

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
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
            per_email_client: 1,
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
