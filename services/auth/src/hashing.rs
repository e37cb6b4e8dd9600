//! Password hashing: argon2id kept off the async threads, bounded in how many run at once
//! (each holds its memory cost, given back when it ends), timed in
//! `auth_password_hash_seconds`.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tessera_errors::BoxError;
use tokio::sync::Semaphore;

use crate::domain::Password;

/// Argon2id cost parameters and how many hashes may run at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashSettings {
    /// Memory cost in KiB.
    pub memory_kib: u32,
    /// Iterations.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
    /// Most hashes computed at once.
    pub concurrency: usize,
}

/// Hashing failed: bad parameters, a corrupt stored hash, or the blocking pool is gone.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// Argon2 refused the parameters or the input.
    #[error("argon2: {0}")]
    Argon2(String),
    /// The blocking task did not complete.
    #[error("password hashing task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// What checking a password against a stored hash found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The password is wrong (or there was no account: see [`Hasher::verify`]).
    Mismatch,
    /// The password is right; `rehash` when the stored hash used other parameters than the
    /// configured ones and should be replaced.
    Match {
        /// Whether to store a new hash made with the current parameters.
        rehash: bool,
    },
}

/// Hashes and verifies passwords with argon2id on the blocking pool.
#[derive(Clone)]
pub struct Hasher {
    inner: Arc<Inner>,
}

struct Inner {
    params: Params,
    permits: Semaphore,
    /// A hash of a random password, verified against when the account does not exist so
    /// that answer takes as long as a wrong password.
    dummy: String,
    seconds: prometheus::HistogramVec,
}

impl Hasher {
    /// A hasher with `settings`; computes its dummy hash once, and registers
    /// `auth_password_hash_seconds{operation}` in `registry`.
    pub async fn new(
        settings: HashSettings,
        registry: &prometheus::Registry,
    ) -> Result<Self, BoxError> {
        let params = Params::new(
            settings.memory_kib,
            settings.iterations,
            settings.parallelism,
            None,
        )
        .map_err(|error| {
            tessera_config::ConfigError::setting(
                "argon2_memory_kib",
                format!("invalid argon2 parameters (memory/iterations/parallelism): {error}"),
            )
        })?;
        let seconds = prometheus::HistogramVec::new(
            prometheus::HistogramOpts::new(
                "auth_password_hash_seconds",
                "Time to hash or verify one password with argon2id.",
            )
            .buckets(vec![0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0]),
            &["operation"],
        )?;
        registry.register(Box::new(seconds.clone()))?;
        let random: [u8; 32] = rand::random();
        let dummy = {
            let params = params.clone();
            tokio::task::spawn_blocking(move || hash_with(&params, &random)).await??
        };
        Ok(Self {
            inner: Arc::new(Inner {
                params,
                permits: Semaphore::new(settings.concurrency.max(1)),
                dummy,
                seconds,
            }),
        })
    }

    /// A new PHC string (`$argon2id$v=19$m=..,t=..,p=..$salt$hash`) for `password`.
    pub async fn hash(&self, password: &Password) -> Result<String, HashError> {
        let params = self.inner.params.clone();
        let password = password.clone();
        self.run("hash", move || hash_with(&params, password.bytes()))
            .await
    }

    /// Checks `password` against `stored`, or against the dummy hash when there is no
    /// account (`None`), which then always answers [`Verdict::Mismatch`] in the same time.
    pub async fn verify(
        &self,
        password: &Password,
        stored: Option<&str>,
    ) -> Result<Verdict, HashError> {
        let known = stored.is_some();
        let stored = stored.unwrap_or(&self.inner.dummy).to_owned();
        let params = self.inner.params.clone();
        let password = password.clone();
        self.run("verify", move || {
            let hash = PasswordHash::new(&stored).map_err(argon2_error)?;
            let matches = verify_with(&hash, password.bytes())?;
            Ok(match (known && matches, stale(&hash, &params)) {
                (false, _) => Verdict::Mismatch,
                (true, rehash) => Verdict::Match { rehash },
            })
        })
        .await
    }

    async fn run<T: Send + 'static>(
        &self,
        operation: &'static str,
        work: impl FnOnce() -> Result<T, HashError> + Send + 'static,
    ) -> Result<T, HashError> {
        // The semaphore is never closed, so acquiring only waits.
        let _permit = self.inner.permits.acquire().await.map_err(argon2_error)?;
        let started = Instant::now();
        let outcome = tokio::task::spawn_blocking(work).await?;
        self.inner
            .seconds
            .with_label_values(&[operation])
            .observe(started.elapsed().as_secs_f64());
        outcome
    }
}

/// Runs argon2 over `password` and `salt` into `out`, in memory of its own.
fn compute(
    argon2: &Argon2<'_>,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> Result<(), HashError> {
    let memory = working_memory(argon2.params().block_count());
    argon2
        .hash_password_into_with_memory(password, salt, out, memory)
        .map_err(argon2_error)
}

/// `blocks` blocks of argon2 working memory in a mapping of their own, unmapped when dropped.
///
/// glibc serves an allocation this size (7 MiB by default) from a per-thread arena once one
/// like it has been freed (the mmap threshold rises to it, mallopt(3)), and an arena keeps
/// what it got: the process would stay a buffer larger for every thread that ever hashed.
/// Asked for with a capacity above the threshold's ceiling (32 MiB on 64-bit), which never
/// moves it, the buffer is always mapped apart and returned whole; only the `blocks` used are
/// touched, so only they are resident.
fn working_memory(blocks: usize) -> Vec<Block> {
    const MAPPED_APART_BYTES: usize = 32 * 1024 * 1024 + 1;
    let capacity = blocks.max(MAPPED_APART_BYTES.div_ceil(size_of::<Block>()));
    let mut memory = Vec::with_capacity(capacity);
    memory.resize(blocks, Block::default());
    memory
}

/// A new argon2id PHC string for `password` with a random 16-byte salt.
fn hash_with(params: &Params, password: &[u8]) -> Result<String, HashError> {
    let salt: [u8; 16] = rand::random();
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    compute(&argon2, password, &salt, &mut out)?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(argon2_error)?,
        salt: Some(Salt::new(&salt).map_err(argon2_error)?),
        hash: Some(Output::new(&out).map_err(argon2_error)?),
    };
    Ok(hash.to_string())
}

/// Whether `password` matches `hash`, computed with the costs stored in the hash and
/// compared in constant time.
fn verify_with(hash: &PasswordHash, password: &[u8]) -> Result<bool, HashError> {
    let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else {
        return Err(HashError::Argon2(
            "the stored hash has no salt or output".to_owned(),
        ));
    };
    let algorithm = Algorithm::try_from(hash.algorithm.as_str()).map_err(argon2_error)?;
    let version = hash
        .version
        .map(Version::try_from)
        .transpose()
        .map_err(argon2_error)?
        .unwrap_or_default();
    let params = Params::try_from(hash).map_err(argon2_error)?;
    let mut out = vec![0u8; expected.len()];
    let argon2 = Argon2::new(algorithm, version, params);
    compute(&argon2, password, salt.as_ref(), &mut out)?;
    Ok(Output::new(&out).map_err(argon2_error)? == *expected)
}

fn argon2_error(error: impl fmt::Display) -> HashError {
    HashError::Argon2(error.to_string())
}

/// Whether `hash` was made with another algorithm or other costs than `params`.
fn stale(hash: &PasswordHash, params: &Params) -> bool {
    hash.algorithm != Algorithm::Argon2id.ident()
        || Params::try_from(hash).map_or(true, |used| {
            used.m_cost() != params.m_cost()
                || used.t_cost() != params.t_cost()
                || used.p_cost() != params.p_cost()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(memory_kib: u32) -> HashSettings {
        HashSettings {
            memory_kib,
            iterations: 1,
            parallelism: 1,
            concurrency: 2,
        }
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let hasher = Hasher::new(settings(1024), &prometheus::Registry::new())
            .await
            .unwrap();
        let password = Password::offered("correct horse battery").unwrap();
        let hash = hasher.hash(&password).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{hash}");
        let right = hasher.verify(&password, Some(&hash)).await.unwrap();
        assert_eq!(right, Verdict::Match { rehash: false });
        let wrong = Password::offered("correct horse battery!").unwrap();
        let verdict = hasher.verify(&wrong, Some(&hash)).await.unwrap();
        assert_eq!(verdict, Verdict::Mismatch);
    }

    #[tokio::test]
    async fn hashes_agree_with_the_reference_implementation() {
        use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
        let hasher = Hasher::new(settings(1024), &prometheus::Registry::new())
            .await
            .unwrap();
        let password = Password::offered("correct horse battery").unwrap();
        let reference = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(1024, 1, 1, None).unwrap(),
        );
        let theirs = reference
            .hash_password(password.bytes())
            .unwrap()
            .to_string();
        let verdict = hasher.verify(&password, Some(&theirs)).await.unwrap();
        assert_eq!(verdict, Verdict::Match { rehash: false });
        let ours = hasher.hash(&password).await.unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(reference.verify_password(password.bytes(), &parsed).is_ok());
        assert!(reference.verify_password(b"another one", &parsed).is_err());
    }

    /// This process's resident memory, in KiB.
    #[cfg(target_os = "linux")]
    fn resident_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status
            .lines()
            .find(|line| line.starts_with("VmRSS:"))
            .unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashes_give_their_memory_back_when_they_end() {
        const MEMORY_KIB: u32 = 16 * 1024;
        let hasher = Hasher::new(settings(MEMORY_KIB), &prometheus::Registry::new())
            .await
            .unwrap();
        let password = Password::offered("correct horse battery").unwrap();
        let before = resident_kib();

        for _ in 0..3 {
            let (one, other) = tokio::join!(hasher.hash(&password), hasher.hash(&password));
            one.unwrap();
            other.unwrap();
        }

        let grown = resident_kib().saturating_sub(before);
        assert!(
            grown < u64::from(MEMORY_KIB) / 2,
            "{grown} KiB more resident after hashing with {MEMORY_KIB} KiB each"
        );
    }

    #[tokio::test]
    async fn a_corrupt_stored_hash_is_an_error_not_a_match() {
        let hasher = Hasher::new(settings(1024), &prometheus::Registry::new())
            .await
            .unwrap();
        let password = Password::offered("correct horse battery").unwrap();
        assert!(
            hasher
                .verify(&password, Some("$argon2id$garbage"))
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn no_account_is_a_mismatch_even_with_the_dummy_password() {
        let hasher = Hasher::new(settings(1024), &prometheus::Registry::new())
            .await
            .unwrap();
        let password = Password::offered("anything at all").unwrap();
        assert_eq!(
            hasher.verify(&password, None).await.unwrap(),
            Verdict::Mismatch
        );
    }

    #[tokio::test]
    async fn hashes_made_with_other_costs_ask_for_a_rehash() {
        let old = Hasher::new(settings(1024), &prometheus::Registry::new())
            .await
            .unwrap();
        let new = Hasher::new(settings(2048), &prometheus::Registry::new())
            .await
            .unwrap();
        let password = Password::offered("correct horse battery").unwrap();
        let hash = old.hash(&password).await.unwrap();
        let verdict = new.verify(&password, Some(&hash)).await.unwrap();
        assert_eq!(verdict, Verdict::Match { rehash: true });
    }

    #[tokio::test]
    async fn invalid_costs_are_a_configuration_error() {
        let error = Hasher::new(settings(1), &prometheus::Registry::new())
            .await
            .err()
            .unwrap();
        assert!(error.to_string().contains("ARGON2_MEMORY_KIB"), "{error}");
    }
}
