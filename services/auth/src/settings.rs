//! The auth service's own settings (`AUTH_*`), next to the runtime's.

use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tessera_config::ConfigError;
use tessera_domain::{DisplayName, Email, Role};
use tessera_jwt::{Signer, SigningKey};

use crate::domain::{NewAccount, Password, SessionPolicy};
use crate::hashing::HashSettings;
use crate::limiter::Limits;

/// Settings read from `AUTH_*` variables. Only the signing keys have no default.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// A directory of Ed25519 private keys, one PKCS#8 PEM file per key named `<kid>.pem`
    /// (a mounted Secret). Every key there is published in the JWKS.
    pub signing_keys_dir: PathBuf,
    /// The kid of the key that signs new tokens; may be left out when there is one key.
    pub signing_kid: Option<String>,
    /// The `iss` of issued tokens.
    #[serde(default = "defaults::jwt_issuer")]
    pub jwt_issuer: String,
    /// The `aud` of issued tokens.
    #[serde(default = "defaults::jwt_audience")]
    pub jwt_audience: String,
    /// Lifetime of access tokens.
    #[serde(default = "defaults::access_token_ttl_secs")]
    pub access_token_ttl_secs: u64,
    /// Lifetime of a refresh token; each refresh issues a new one with a full lifetime, up
    /// to the session's absolute end.
    #[serde(default = "defaults::refresh_token_ttl_secs")]
    pub refresh_token_ttl_secs: u64,
    /// Longest a session lives from its login, however often it is refreshed; then the user
    /// logs in again.
    #[serde(default = "defaults::session_max_lifetime_secs")]
    pub session_max_lifetime_secs: u64,
    /// How long after its exchange a refresh token presented again is taken for a retry or a
    /// second tab (409, the session kept) rather than a replay (the session revoked); 0 to
    /// treat every second use as a replay.
    #[serde(default = "defaults::refresh_reuse_grace_secs")]
    pub refresh_reuse_grace_secs: u64,

    /// Argon2id memory cost in KiB. The default is OWASP's 7 MiB with 5 iterations, which it
    /// rates as strong as 19 MiB with 2 at about the same CPU time: every hash in flight holds
    /// this much memory, and the service has a 30 MB budget.
    #[serde(default = "defaults::argon2_memory_kib")]
    pub argon2_memory_kib: u32,
    /// Argon2id iterations.
    #[serde(default = "defaults::argon2_iterations")]
    pub argon2_iterations: u32,
    /// Argon2id lanes.
    #[serde(default = "defaults::argon2_parallelism")]
    pub argon2_parallelism: u32,
    /// Most password hashes computed at once; half the CPUs (at least one) when unset. Each
    /// holds its memory cost while it runs, and half leaves a login flood the rest of the
    /// CPUs to share with every other request rather than all of them.
    pub password_hash_concurrency: Option<usize>,

    /// The users service's gRPC endpoint.
    #[serde(default = "defaults::users_grpc_url")]
    pub users_grpc_url: String,
    /// Deadline of each call to the users service.
    #[serde(default = "defaults::users_timeout_ms")]
    pub users_timeout_ms: u64,

    /// Failed logins allowed per email from one client address within the window, before
    /// 429 for that address: the lockout, which cannot keep the owner out from elsewhere.
    #[serde(default = "defaults::login_max_failures_per_email_client")]
    pub login_max_failures_per_email_client: u32,
    /// Failed logins allowed per email from every address together within the window,
    /// before 429 for addresses that never logged in to it; past the per-address limit,
    /// attempts from such addresses also wait a doubling delay.
    #[serde(default = "defaults::login_max_failures_per_email")]
    pub login_max_failures_per_email: u32,
    /// Failed logins allowed per client address within the window, before 429.
    #[serde(default = "defaults::login_max_failures_per_client")]
    pub login_max_failures_per_client: u32,
    /// The window failed logins are counted over, from the first failure.
    #[serde(default = "defaults::login_failure_window_secs")]
    pub login_failure_window_secs: u64,
    /// Registrations allowed per client address within their window, before 429: each
    /// costs a password hash.
    #[serde(default = "defaults::registrations_per_client")]
    pub registrations_per_client: u32,
    /// The window registrations are counted over, from the first one.
    #[serde(default = "defaults::registration_window_secs")]
    pub registration_window_secs: u64,
    /// Prefix of the limits' Redis keys; distinct per deployment sharing a Redis.
    #[serde(default = "defaults::login_limits_key_prefix")]
    pub login_limits_key_prefix: String,
    /// How many reverse proxies in front of auth append the client's address to `Forwarded`
    /// (RFC 7239) or `X-Forwarded-For`: the address is then the one the outermost of them
    /// appended, and nothing a client wrote there itself. 0 (the default): the TCP peer.
    #[serde(default)]
    pub trusted_proxy_hops: usize,

    /// Email of an admin account created at startup if it does not exist.
    pub admin_email: Option<String>,
    /// Its password (or `AUTH_ADMIN_PASSWORD_FILE`); required with `AUTH_ADMIN_EMAIL`.
    pub admin_password: Option<SecretString>,
    /// Its display name.
    #[serde(default = "defaults::admin_display_name")]
    pub admin_display_name: String,
}

impl Settings {
    /// The token signer: every key in [`Self::signing_keys_dir`], the active one first.
    pub fn signer(&self) -> Result<Signer, ConfigError> {
        let keys = load_keys(&self.signing_keys_dir, self.signing_kid.as_deref())?;
        Signer::new(
            keys,
            &self.jwt_issuer,
            &self.jwt_audience,
            Duration::from_secs(self.access_token_ttl_secs),
        )
        .map_err(|error| invalid("access_token_ttl_secs", error.to_string()))
    }

    /// The password hashing parameters.
    pub fn hashing(&self) -> HashSettings {
        HashSettings {
            memory_kib: self.argon2_memory_kib,
            iterations: self.argon2_iterations,
            parallelism: self.argon2_parallelism,
            concurrency: self.password_hash_concurrency.unwrap_or_else(|| {
                let cpus = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
                (cpus / 2).max(1)
            }),
        }
    }

    /// Lifetime of refresh tokens: a minute to a year.
    pub fn refresh_token_ttl(&self) -> Result<chrono::TimeDelta, ConfigError> {
        const YEAR: u64 = 365 * 24 * 60 * 60;
        match self.refresh_token_ttl_secs {
            // Both bounds fit an i64 of seconds, so the conversion cannot fail.
            secs @ 60..=YEAR => Ok(chrono::TimeDelta::seconds(secs.cast_signed())),
            _ => Err(invalid(
                "refresh_token_ttl_secs",
                "must be between 60 and 31536000 (a year)",
            )),
        }
    }

    /// The session lifetime and the refresh reuse grace (at most five minutes).
    pub fn sessions(&self) -> Result<SessionPolicy, ConfigError> {
        let reuse_grace = match self.refresh_reuse_grace_secs {
            secs @ 0..=300 => chrono::TimeDelta::seconds(secs.cast_signed()),
            _ => {
                return Err(invalid(
                    "refresh_reuse_grace_secs",
                    "must be between 0 and 300 (five minutes)",
                ));
            }
        };
        Ok(SessionPolicy {
            lifetime: self.session_max_lifetime()?,
            reuse_grace,
        })
    }

    /// Absolute lifetime of a session: an hour to ten years.
    pub fn session_max_lifetime(&self) -> Result<chrono::TimeDelta, ConfigError> {
        const TEN_YEARS: u64 = 10 * 365 * 24 * 60 * 60;
        match self.session_max_lifetime_secs {
            // Both bounds fit an i64 of seconds, so the conversion cannot fail.
            secs @ 3600..=TEN_YEARS => Ok(chrono::TimeDelta::seconds(secs.cast_signed())),
            _ => Err(invalid(
                "session_max_lifetime_secs",
                "must be between 3600 (an hour) and 315360000 (ten years)",
            )),
        }
    }

    /// The login and registration limits.
    pub fn limits(&self) -> Limits {
        Limits {
            per_email_client: self.login_max_failures_per_email_client,
            per_email: self.login_max_failures_per_email,
            per_client: self.login_max_failures_per_client,
            window: Duration::from_secs(self.login_failure_window_secs),
            registrations_per_client: self.registrations_per_client,
            registration_window: Duration::from_secs(self.registration_window_secs),
        }
    }

    /// Deadline of calls to the users service.
    pub fn users_timeout(&self) -> Duration {
        Duration::from_millis(self.users_timeout_ms)
    }

    /// The admin account to bootstrap, if one is configured (email and password, or
    /// neither), validated like any registration.
    pub fn admin_account(&self) -> Result<Option<NewAccount>, ConfigError> {
        let (email, password) = match (&self.admin_email, &self.admin_password) {
            (None, None) => return Ok(None),
            (Some(email), Some(password)) => (email, password),
            (Some(_), None) => {
                return Err(invalid("admin_password", "required with the admin email"));
            }
            (None, Some(_)) => {
                return Err(invalid("admin_email", "required with the admin password"));
            }
        };
        let email = Email::parse(email).map_err(|e| invalid("admin_email", e.0))?;
        let password = Password::new_for(password.expose_secret(), &email)
            .map_err(|e| invalid("admin_password", format!("the password {}", e.0)))?;
        let display_name = DisplayName::parse(&self.admin_display_name)
            .map_err(|e| invalid("admin_display_name", e.0))?;
        Ok(Some(NewAccount {
            email,
            password,
            display_name,
            role: Role::Admin,
        }))
    }
}

/// Reads `<kid>.pem` files from `dir`, the one named by `active` first.
fn load_keys(dir: &Path, active: Option<&str>) -> Result<Vec<SigningKey>, ConfigError> {
    const VARIABLE: &str = "signing_keys_dir";
    let entries = std::fs::read_dir(dir)
        .map_err(|error| invalid(VARIABLE, format!("cannot read {}: {error}", dir.display())))?;
    let mut paths = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|error| invalid(VARIABLE, format!("cannot read {}: {error}", dir.display())))?
            .path();
        if path.extension().is_some_and(|ext| ext == "pem") {
            paths.push(path);
        }
    }
    paths.sort();
    let mut keys = Vec::with_capacity(paths.len());
    for path in paths {
        let kid = path
            .file_stem()
            .and_then(|stem| stem.to_str())
            .filter(|kid| is_valid_kid(kid))
            .ok_or_else(|| {
                invalid(
                    VARIABLE,
                    format!(
                        "{}: a key file is named <kid>.pem, kid made of letters, digits, '.', '_' or '-'",
                        path.display()
                    ),
                )
            })?;
        refuse_world_access(&path)?;
        let pem = std::fs::read_to_string(&path).map_err(|error| {
            invalid(VARIABLE, format!("cannot read {}: {error}", path.display()))
        })?;
        let key = SigningKey::from_pem(kid, &pem)
            .map_err(|error| invalid(VARIABLE, format!("{}: {error}", path.display())))?;
        keys.push(key);
    }
    let active_index = match (active, keys.len()) {
        (_, 0) => {
            return Err(invalid(
                VARIABLE,
                format!("no <kid>.pem key in {}", dir.display()),
            ));
        }
        (None, 1) => 0,
        (None, _) => {
            return Err(invalid(
                "signing_kid",
                "required when there are several keys: name the one that signs",
            ));
        }
        (Some(kid), _) => keys
            .iter()
            .position(|key| key.kid() == kid)
            .ok_or_else(|| {
                invalid(
                    "signing_kid",
                    format!("no key {kid}.pem in {}", dir.display()),
                )
            })?,
    };
    let active = keys.remove(active_index);
    keys.insert(0, active);
    Ok(keys)
}

/// A signing key anyone on the host can read is no secret: refused, as ssh refuses such a
/// private key. Group access is allowed (Kubernetes gives a mounted Secret's group, the
/// pod's `fsGroup`, read access).
fn refuse_world_access(path: &Path) -> Result<(), ConfigError> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path)
        .map_err(|error| {
            invalid(
                "signing_keys_dir",
                format!("cannot read {}: {error}", path.display()),
            )
        })?
        .permissions()
        .mode();
    if mode & 0o007 != 0 {
        return Err(invalid(
            "signing_keys_dir",
            format!(
                "{} is accessible to every user of this host (mode {:o}): chmod o-rwx it",
                path.display(),
                mode & 0o777
            ),
        ));
    }
    Ok(())
}

fn is_valid_kid(kid: &str) -> bool {
    !kid.is_empty()
        && kid.len() <= 64
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A problem with the setting `field`; the runtime names its variable with the prefix.
fn invalid(field: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::setting(field, problem)
}

mod defaults {
    pub fn jwt_issuer() -> String {
        "tessera-auth".to_owned()
    }
    pub fn jwt_audience() -> String {
        "tessera".to_owned()
    }
    pub fn access_token_ttl_secs() -> u64 {
        15 * 60
    }
    pub fn refresh_token_ttl_secs() -> u64 {
        14 * 24 * 60 * 60
    }
    pub fn session_max_lifetime_secs() -> u64 {
        30 * 24 * 60 * 60
    }
    pub fn refresh_reuse_grace_secs() -> u64 {
        30
    }
    pub fn argon2_memory_kib() -> u32 {
        7 * 1024
    }
    pub fn argon2_iterations() -> u32 {
        5
    }
    pub fn argon2_parallelism() -> u32 {
        1
    }
    pub fn users_grpc_url() -> String {
        "http://127.0.0.1:50052".to_owned()
    }
    pub fn users_timeout_ms() -> u64 {
        2_000
    }
    pub fn login_max_failures_per_email_client() -> u32 {
        5
    }
    pub fn login_max_failures_per_email() -> u32 {
        100
    }
    pub fn login_max_failures_per_client() -> u32 {
        50
    }
    pub fn login_failure_window_secs() -> u64 {
        15 * 60
    }
    pub fn registrations_per_client() -> u32 {
        20
    }
    pub fn registration_window_secs() -> u64 {
        60 * 60
    }
    pub fn login_limits_key_prefix() -> String {
        "tessera:auth:login-failures".to_owned()
    }
    pub fn admin_display_name() -> String {
        "Administrator".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_keys(kids: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for kid in kids {
            SigningKey::generate(*kid).write_pem(dir.path()).unwrap();
        }
        dir
    }

    #[test]
    fn refresh_token_lifetimes_are_kept_in_range() {
        let with = |secs: &str| {
            let settings: Settings = tessera_config::from_vars(
                "AUTH_",
                [
                    ("AUTH_SIGNING_KEYS_DIR".to_owned(), "/keys".to_owned()),
                    ("AUTH_REFRESH_TOKEN_TTL_SECS".to_owned(), secs.to_owned()),
                ],
            )
            .unwrap();
            settings.refresh_token_ttl()
        };
        assert_eq!(with("1209600").unwrap(), chrono::TimeDelta::days(14));
        for out_of_range in ["0", "59", "31536001", "1000000000000"] {
            let error = with(out_of_range).unwrap_err();
            assert_eq!(error.variable, "REFRESH_TOKEN_TTL_SECS");
        }
    }

    #[test]
    fn session_lifetimes_default_to_thirty_days_and_are_kept_in_range() {
        let with = |vars: &[(&str, &str)]| {
            let mut all = vec![("AUTH_SIGNING_KEYS_DIR".to_owned(), "/keys".to_owned())];
            all.extend(vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
            let settings: Settings = tessera_config::from_vars("AUTH_", all).unwrap();
            settings.session_max_lifetime()
        };
        assert_eq!(with(&[]).unwrap(), chrono::TimeDelta::days(30));
        for out_of_range in ["0", "3599", "315360001"] {
            let error = with(&[("AUTH_SESSION_MAX_LIFETIME_SECS", out_of_range)]).unwrap_err();
            assert_eq!(error.variable, "SESSION_MAX_LIFETIME_SECS");
        }
    }

    #[test]
    fn a_single_key_signs_without_naming_it() {
        let dir = write_keys(&["only"]);
        let keys = load_keys(dir.path(), None).unwrap();
        assert_eq!(keys[0].kid(), "only");
    }

    #[test]
    fn the_named_key_signs_and_the_others_are_kept() {
        let dir = write_keys(&["2026-10", "2026-11", "2026-12"]);
        let keys = load_keys(dir.path(), Some("2026-11")).unwrap();
        let kids: Vec<_> = keys.iter().map(SigningKey::kid).collect();
        assert_eq!(kids, ["2026-11", "2026-10", "2026-12"]);
    }

    #[test]
    fn several_keys_need_an_active_kid_that_exists() {
        let dir = write_keys(&["a", "b"]);
        let error = load_keys(dir.path(), None).unwrap_err();
        assert_eq!(error.variable, "SIGNING_KID");
        let error = load_keys(dir.path(), Some("c")).unwrap_err();
        assert_eq!(error.variable, "SIGNING_KID");
    }

    #[test]
    fn an_empty_or_missing_directory_or_a_bad_pem_is_named() {
        let empty = tempfile::tempdir().unwrap();
        let error = load_keys(empty.path(), None).unwrap_err();
        assert_eq!(error.variable, "SIGNING_KEYS_DIR");
        let error = load_keys(&empty.path().join("nope"), None).unwrap_err();
        assert_eq!(error.variable, "SIGNING_KEYS_DIR");
        std::fs::write(empty.path().join("bad.pem"), "not a key").unwrap();
        chmod(&empty.path().join("bad.pem"), 0o600);
        let error = load_keys(empty.path(), None).unwrap_err();
        assert!(error.problem.contains("bad.pem"), "{error}");
    }

    fn chmod(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_key_file_every_user_can_read_is_refused_and_one_for_the_group_taken() {
        let dir = write_keys(&["k"]);
        let path = dir.path().join("k.pem");
        chmod(&path, 0o644);
        let error = load_keys(dir.path(), None).unwrap_err();
        assert_eq!(error.variable, "SIGNING_KEYS_DIR");
        assert!(error.problem.contains("mode 644"), "{error}");
        chmod(&path, 0o440);
        assert_eq!(load_keys(dir.path(), None).unwrap()[0].kid(), "k");
    }

    #[test]
    fn kids_are_plain_names() {
        assert!(is_valid_kid("2026-11.a_b"));
        assert!(!is_valid_kid(""));
        assert!(!is_valid_kid("with space"));
        assert!(!is_valid_kid(&"x".repeat(65)));
    }
}
