//! Revoked access tokens, by `jti`, in Redis.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use deadpool_redis::redis;
use deadpool_redis::redis::aio::ConnectionManager;
use tessera_observability::trace_context;
use tracing::Instrument;
use uuid::Uuid;

/// Revoked access-token ids in Redis, each kept until the token would have expired anyway
/// (plus [`Denylist::EXPIRY_MARGIN`]), so the list never outgrows the tokens alive.
///
/// Every request asks it, so it sends its commands over one multiplexed connection shared
/// with the request's other Redis work (no checkout per command); a call waits as long as
/// that connection's timeouts allow (the runtime's `SharedRedis` bounds connecting and each
/// answer).
///
/// A token Redis said was not revoked is taken as such for [`Denylist::RECHECK_AFTER`]
/// before Redis is asked again, so a busy client's requests cost one lookup per interval,
/// not one each: a revocation made elsewhere is seen within that interval. One made through
/// this denylist (any clone of it) is seen at once.
#[derive(Clone)]
pub struct Denylist {
    redis: ConnectionManager,
    memory: Arc<Mutex<Memory>>,
}

impl std::fmt::Debug for Denylist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Denylist").finish_non_exhaustive()
    }
}

/// Redis could not be asked.
#[derive(Debug, thiserror::Error)]
#[error("the token denylist command failed")]
pub struct DenylistError(#[from] redis::RedisError);

impl Denylist {
    /// How long past its `exp` a revoked token stays listed: longer than a verifier's leeway
    /// (30 s by default), during which the token would otherwise still be accepted.
    pub const EXPIRY_MARGIN: TimeDelta = TimeDelta::seconds(60);

    /// How long a token found not revoked is taken as such: the longest a revocation made
    /// by another process may go unseen here while Redis answers.
    pub const RECHECK_AFTER: Duration = Duration::from_millis(500);

    /// Most tokens remembered as not revoked; past it the oldest make room.
    const CLEARED_CAPACITY: usize = 4_096;

    /// A denylist in the Redis behind `redis`, under keys `tessera:jwt:denylist:{jti}`.
    pub fn new(redis: ConnectionManager) -> Self {
        Self {
            redis,
            memory: Arc::new(Mutex::new(Memory::default())),
        }
    }

    /// Lists `jti` until `until` (the token's expiry) plus [`Self::EXPIRY_MARGIN`]; nothing to do
    /// for a token already past that.
    pub async fn revoke(&self, jti: Uuid, until: DateTime<Utc>) -> Result<(), DenylistError> {
        self.revoke_all(&[(jti, until)]).await
    }

    /// [`Self::revoke`] for each `(jti, until)`, in one round trip.
    pub async fn revoke_all(&self, tokens: &[(Uuid, DateTime<Utc>)]) -> Result<(), DenylistError> {
        let mut pipe = redis::pipe();
        let now = Instant::now();
        for (jti, until) in tokens {
            let listed_until = until
                .checked_add_signed(Self::EXPIRY_MARGIN)
                .unwrap_or(*until);
            let left = (listed_until - Utc::now()).num_milliseconds();
            if left > 0 {
                self.lock_memory().revoked_here(*jti, now);
                // Round up: a key that expires a fraction early would let the token back in.
                let seconds = (left + 999) / 1000;
                pipe.cmd("SET")
                    .arg(key(*jti))
                    .arg(1)
                    .arg("EX")
                    .arg(seconds)
                    .ignore();
            }
        }
        if pipe.is_empty() {
            return Ok(());
        }
        let mut connection = self.redis.clone();
        pipe.query_async::<()>(&mut connection)
            .instrument(trace_context::redis_span("SET"))
            .await?;
        Ok(())
    }

    /// Whether this Redis holds every revocation pushed since [`Self::mark_complete`]: false
    /// when it has lost its data (a restart without persistence, a flush) or never had it,
    /// and then every revocation still in force must be pushed again.
    pub async fn is_complete(&self) -> Result<bool, DenylistError> {
        self.exists(COMPLETE_KEY).await
    }

    /// Records that every revocation in force has been pushed to this Redis.
    pub async fn mark_complete(&self) -> Result<(), DenylistError> {
        let mut connection = self.redis.clone();
        redis::cmd("SET")
            .arg(COMPLETE_KEY)
            .arg(1)
            .query_async::<()>(&mut connection)
            .instrument(trace_context::redis_span("SET"))
            .await?;
        Ok(())
    }

    /// Whether `jti` was revoked (as of at most [`Self::RECHECK_AFTER`] ago).
    pub async fn is_revoked(&self, jti: Uuid) -> Result<bool, DenylistError> {
        let asked = Instant::now();
        if let Some(known) = self.lock_memory().known(jti, asked) {
            return Ok(known);
        }
        let revoked = self.exists(&key(jti)).await?;
        if !revoked {
            self.lock_memory().cleared(jti, asked);
        }
        Ok(revoked)
    }

    fn lock_memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        // Plain timestamps: a panic elsewhere cannot leave them inconsistent.
        self.memory
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn exists(&self, key: &str) -> Result<bool, DenylistError> {
        let mut connection = self.redis.clone();
        let exists = redis::cmd("EXISTS")
            .arg(key)
            .query_async::<bool>(&mut connection)
            .instrument(trace_context::redis_span("EXISTS"))
            .await?;
        Ok(exists)
    }
}

/// What this process knows without asking Redis: tokens Redis said were not revoked, and
/// tokens revoked here, each with when.
#[derive(Debug, Default)]
struct Memory {
    cleared: JtiMap,
    revoked_here: JtiMap,
}

/// When, by token id. Hashed with foldhash rather than SipHash, looked up on every request:
/// the ids are those of tokens whose signature was checked, not a client's choice.
type JtiMap = HashMap<Uuid, Instant, foldhash::fast::RandomState>;

impl Memory {
    /// How long a revocation made here is answered from memory: until its write to Redis
    /// has surely landed, so no answer Redis gave before it can hide it.
    const REVOKED_HERE_FOR: Duration = Duration::from_secs(2);

    /// Revoked (made here lately), not revoked (cleared lately), or unknown.
    fn known(&self, jti: Uuid, now: Instant) -> Option<bool> {
        if self.revoked_here.contains_key(&jti) {
            return Some(true);
        }
        self.cleared
            .get(&jti)
            .is_some_and(|&at| now.saturating_duration_since(at) < Denylist::RECHECK_AFTER)
            .then_some(false)
    }

    /// Remembers that Redis, asked at `asked`, did not list `jti`; unless it was revoked
    /// here meanwhile. When full, the stale entries go, or else the oldest one: never
    /// everything at once.
    fn cleared(&mut self, jti: Uuid, asked: Instant) {
        if self.revoked_here.contains_key(&jti) {
            return;
        }
        if self.cleared.len() >= Denylist::CLEARED_CAPACITY && !self.cleared.contains_key(&jti) {
            self.cleared
                .retain(|_, &mut at| asked.saturating_duration_since(at) < Denylist::RECHECK_AFTER);
            if self.cleared.len() >= Denylist::CLEARED_CAPACITY
                && let Some(oldest) = self
                    .cleared
                    .iter()
                    .min_by_key(|(_, at)| **at)
                    .map(|(jti, _)| *jti)
            {
                self.cleared.remove(&oldest);
            }
        }
        self.cleared.insert(jti, asked);
    }

    /// `jti` is being revoked here: answered as revoked from now on, for as long as Redis
    /// may still be taking the write.
    fn revoked_here(&mut self, jti: Uuid, now: Instant) {
        self.cleared.remove(&jti);
        self.revoked_here
            .retain(|_, &mut at| now.saturating_duration_since(at) < Self::REVOKED_HERE_FOR);
        self.revoked_here.insert(jti, now);
    }
}

/// Set once the denylist holds every revocation in force; gone with the rest of Redis' data.
const COMPLETE_KEY: &str = "tessera:jwt:denylist:complete";

fn key(jti: Uuid) -> String {
    format!("tessera:jwt:denylist:{jti}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clearance_lasts_the_recheck_interval() {
        let mut memory = Memory::default();
        let jti = Uuid::now_v7();
        let at = Instant::now();
        assert_eq!(memory.known(jti, at), None);
        memory.cleared(jti, at);
        assert_eq!(
            memory.known(jti, at + Denylist::RECHECK_AFTER / 2),
            Some(false)
        );
        assert_eq!(memory.known(jti, at + Denylist::RECHECK_AFTER), None);
    }

    #[test]
    fn a_revocation_made_here_wins_over_any_clearance_racing_it() {
        let mut memory = Memory::default();
        let jti = Uuid::now_v7();
        let asked = Instant::now();
        memory.cleared(jti, asked);
        memory.revoked_here(jti, asked + Duration::from_millis(1));
        assert_eq!(memory.known(jti, asked), Some(true));
        // Redis' "not listed", asked before the write landed, arrives afterwards.
        memory.cleared(jti, asked);
        assert_eq!(
            memory.known(jti, asked + Duration::from_millis(2)),
            Some(true)
        );
        // Once Redis surely holds it, memory lets go (and Redis answers).
        let later = asked + Memory::REVOKED_HERE_FOR + Duration::from_millis(5);
        memory.revoked_here(Uuid::now_v7(), later);
        assert_eq!(memory.known(jti, later), None);
    }

    #[test]
    fn a_full_memory_makes_room_one_at_a_time_oldest_first() {
        let mut memory = Memory::default();
        let start = Instant::now();
        let jtis: Vec<Uuid> = (0..Denylist::CLEARED_CAPACITY)
            .map(|_| Uuid::now_v7())
            .collect();
        for (n, jti) in (0u64..).zip(&jtis) {
            memory.cleared(*jti, start + Duration::from_micros(n));
        }
        let newcomer = Uuid::now_v7();
        let now = start + Duration::from_millis(10);
        memory.cleared(newcomer, now);
        assert_eq!(memory.cleared.len(), Denylist::CLEARED_CAPACITY);
        assert_eq!(memory.known(jtis[0], now), None, "the oldest made room");
        assert_eq!(memory.known(jtis[1], now), Some(false));
        assert_eq!(memory.known(newcomer, now), Some(false));
        // Stale ones all go before anything fresh does.
        let later = start + Denylist::RECHECK_AFTER + Duration::from_millis(5);
        memory.cleared(Uuid::now_v7(), later);
        assert!(memory.cleared.len() < 10, "{}", memory.cleared.len());
    }
}
