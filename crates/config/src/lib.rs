//! Typed configuration loaded from the environment.
//!
//! Every service reads its settings from variables that share one prefix (`USERS_HTTP_PORT`,
//! `USERS_DATABASE_URL`, ...) into plain `serde` structs with [`envy`]. Two conventions sit on
//! top of that:
//!
//! - A variable `PREFIX_NAME_FILE` supplies the value of `PREFIX_NAME` from the file it points
//!   to, so secrets can be mounted as files (Kubernetes Secrets, Docker secrets) instead of
//!   living in the environment. Setting both is an error.
//! - [`load_dotenv`] reads a `.env` file from the working directory, if there is one, without
//!   overriding variables that are already set. It is meant for development.
//!
//! Any problem yields a [`ConfigError`] that names the variable, so a misconfigured process
//! stops with one line saying exactly what to fix.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use serde::de::DeserializeOwned;

/// Suffix that redirects a variable to the contents of a file.
const FILE_SUFFIX: &str = "_FILE";

/// A configuration value that is missing, malformed or unreadable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {variable}: {problem}")]
pub struct ConfigError {
    /// The environment variable at fault, with its prefix (`USERS_HTTP_PORT`) once it is known.
    pub variable: String,
    /// What is wrong with it, in words meant for an operator.
    pub problem: String,
    /// Whether `variable` still lacks the service's prefix (see [`ConfigError::setting`]).
    unscoped: bool,
}

impl ConfigError {
    /// A problem with the variable `variable`, named in full (`USERS_HTTP_PORT`, `.env`).
    pub fn new(variable: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            variable: variable.into(),
            problem: problem.into(),
            unscoped: false,
        }
    }

    /// A problem with the settings field `field` (`users_grpc_url`), for code that does not
    /// know which service it runs in: the variable is `USERS_GRPC_URL` until
    /// [`ConfigError::in_scope`] prefixes it (the runtime does, with the service's prefix).
    pub fn setting(field: &str, problem: impl Into<String>) -> Self {
        Self {
            variable: field.to_uppercase(),
            problem: problem.into(),
            unscoped: true,
        }
    }

    /// Names the variable with `prefix` (`AUTH_`) if it was made by [`ConfigError::setting`];
    /// a variable named in full is left as it is.
    #[must_use]
    pub fn in_scope(mut self, prefix: &str) -> Self {
        if self.unscoped {
            self.variable = format!("{prefix}{}", self.variable);
            self.unscoped = false;
        }
        self
    }
}

/// The process environment as [`from_vars`] takes it.
pub fn vars() -> Vec<(String, String)> {
    // Variables that are not valid Unicode cannot be meant for us; skipping them beats failing
    // on an unrelated variable of the parent environment.
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

/// Loads `T` from `vars` (the process environment is [`vars()`]), taking the variables that
/// start with `prefix`.
///
/// `prefix` includes its separator, e.g. `"USERS_"`; field `http_port` is then read from
/// `USERS_HTTP_PORT`. Tests pass their own variables, so they never touch process-wide state.
pub fn from_vars<T, I>(prefix: &str, vars: I) -> Result<T, ConfigError>
where
    T: DeserializeOwned,
    I: IntoIterator<Item = (String, String)>,
{
    let vars = resolve_files(prefix, vars)?;
    // envy reports a malformed value without always naming its variable (enum values, for
    // one). It pulls variables one at a time and fails on the value it just pulled, so
    // remembering the last one handed out names the culprit in every case.
    let last = Rc::new(RefCell::new(None::<String>));
    let tracked = {
        let last = Rc::clone(&last);
        vars.into_iter().map(move |(name, value)| {
            *last.borrow_mut() = Some(format!("{prefix}{name}"));
            (name, value)
        })
    };
    envy::from_iter(tracked).map_err(|error| match error {
        envy::Error::MissingValue(field) => ConfigError::new(
            format!("{prefix}{}", field.to_uppercase()),
            "is required but not set",
        ),
        envy::Error::Custom(message) => {
            let variable = last
                .borrow_mut()
                .take()
                .unwrap_or_else(|| format!("{prefix}*"));
            ConfigError::new(variable, strip_envy_suffix(&message))
        }
    })
}

/// Reads a `.env` file from the working directory into the environment, if one exists.
///
/// Variables already set win over the file. A malformed file is an error rather than being
/// silently ignored. Call it once, first thing in `main`, before any thread is started.
pub fn load_dotenv() -> Result<(), ConfigError> {
    match dotenvy::dotenv() {
        Ok(_) => Ok(()),
        Err(error) if error.not_found() => Ok(()),
        Err(error) => Err(ConfigError::new(".env", error.to_string())),
    }
}

/// Strips `prefix` from the variables and replaces each `NAME_FILE` by `NAME` with the file's
/// contents.
fn resolve_files<I>(prefix: &str, vars: I) -> Result<BTreeMap<String, String>, ConfigError>
where
    I: IntoIterator<Item = (String, String)>,
{
    let mut plain = BTreeMap::new();
    let mut files = BTreeMap::new();
    for (key, value) in vars {
        let Some(name) = key.strip_prefix(prefix) else {
            continue;
        };
        match name.strip_suffix(FILE_SUFFIX) {
            Some(base) if !base.is_empty() => files.insert(base.to_owned(), value),
            _ => plain.insert(name.to_owned(), value),
        };
    }
    for (name, path) in files {
        let variable = format!("{prefix}{name}{FILE_SUFFIX}");
        if plain.contains_key(&name) {
            return Err(ConfigError::new(
                variable,
                format!("set either {prefix}{name} or {prefix}{name}{FILE_SUFFIX}, not both"),
            ));
        }
        let contents = std::fs::read_to_string(&path).map_err(|error| {
            ConfigError::new(&variable, format!("cannot read file {path:?}: {error}"))
        })?;
        // Files written by editors and `echo` end in a newline that is not part of the secret.
        let value = contents.strip_suffix('\n').unwrap_or(&contents);
        let value = value.strip_suffix('\r').unwrap_or(value);
        plain.insert(name, value.to_owned());
    }
    Ok(plain)
}

/// envy appends "while parsing value 'x' provided by NAME" to parse errors; the variable is
/// named separately, so keep only the value part.
fn strip_envy_suffix(message: &str) -> String {
    match message.split_once(" provided by ") {
        Some((head, _)) => head.to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::IpAddr;

    use secrecy::{ExposeSecret, SecretString};
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    struct Settings {
        #[serde(default = "default_port")]
        http_port: u16,
        #[serde(default = "default_host")]
        host: IpAddr,
        #[serde(default)]
        format: Format,
        database_url: SecretString,
    }

    #[derive(Debug, Default, PartialEq, Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Format {
        #[default]
        Json,
        Pretty,
    }

    fn default_port() -> u16 {
        8080
    }

    fn default_host() -> IpAddr {
        IpAddr::from([127, 0, 0, 1])
    }

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn load_settings(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        from_vars("SVC_", vars(pairs))
    }

    #[test]
    fn defaults_fill_everything_but_secrets() {
        let settings = load_settings(&[("SVC_DATABASE_URL", "postgres://db/x")]).unwrap();
        assert_eq!(settings.http_port, 8080);
        assert_eq!(settings.host, default_host());
        assert_eq!(settings.format, Format::Json);
        assert_eq!(settings.database_url.expose_secret(), "postgres://db/x");
    }

    #[test]
    fn variables_of_other_prefixes_are_ignored() {
        let error =
            load_settings(&[("OTHER_DATABASE_URL", "x"), ("DATABASE_URL", "y")]).unwrap_err();
        assert_eq!(error.variable, "SVC_DATABASE_URL");
    }

    #[test]
    fn missing_secret_names_the_variable() {
        let error = load_settings(&[("SVC_HTTP_PORT", "80")]).unwrap_err();
        assert_eq!(
            error,
            ConfigError::new("SVC_DATABASE_URL", "is required but not set")
        );
        assert_eq!(
            error.to_string(),
            "invalid configuration: SVC_DATABASE_URL: is required but not set"
        );
    }

    #[test]
    fn bad_number_names_the_variable_and_the_value() {
        let error =
            load_settings(&[("SVC_DATABASE_URL", "x"), ("SVC_HTTP_PORT", "eighty")]).unwrap_err();
        assert_eq!(error.variable, "SVC_HTTP_PORT");
        assert!(error.problem.contains("'eighty'"), "{error}");
    }

    #[test]
    fn out_of_range_number_is_rejected() {
        let error =
            load_settings(&[("SVC_DATABASE_URL", "x"), ("SVC_HTTP_PORT", "70000")]).unwrap_err();
        assert_eq!(error.variable, "SVC_HTTP_PORT");
    }

    #[test]
    fn bad_enum_value_names_the_variable() {
        let error = load_settings(&[("SVC_DATABASE_URL", "x"), ("SVC_FORMAT", "xml")]).unwrap_err();
        assert_eq!(error.variable, "SVC_FORMAT");
        assert!(error.problem.contains("xml"), "{error}");
    }

    #[test]
    fn bad_address_names_the_variable() {
        let error =
            load_settings(&[("SVC_HOST", "not-an-ip"), ("SVC_DATABASE_URL", "x")]).unwrap_err();
        assert_eq!(error.variable, "SVC_HOST");
    }

    #[test]
    fn secret_is_read_from_file_without_trailing_newline() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "postgres://from-file/db").unwrap();
        let path = file.path().to_str().unwrap();
        let settings = load_settings(&[("SVC_DATABASE_URL_FILE", path)]).unwrap();
        assert_eq!(
            settings.database_url.expose_secret(),
            "postgres://from-file/db"
        );
    }

    #[test]
    fn unreadable_secret_file_names_the_file_variable() {
        let error = load_settings(&[("SVC_DATABASE_URL_FILE", "/nonexistent/secret")]).unwrap_err();
        assert_eq!(error.variable, "SVC_DATABASE_URL_FILE");
        assert!(error.problem.contains("/nonexistent/secret"), "{error}");
    }

    #[test]
    fn value_and_file_together_are_ambiguous() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let path = file.path().to_str().unwrap();
        let error = load_settings(&[("SVC_DATABASE_URL", "x"), ("SVC_DATABASE_URL_FILE", path)])
            .unwrap_err();
        assert_eq!(error.variable, "SVC_DATABASE_URL_FILE");
        assert!(error.problem.contains("not both"), "{error}");
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let settings =
            load_settings(&[("SVC_DATABASE_URL", "postgres://user:hunter2@db/x")]).unwrap();
        assert!(!format!("{settings:?}").contains("hunter2"));
    }

    #[test]
    fn a_setting_is_named_with_the_prefix_of_the_service_it_runs_in() {
        let error = ConfigError::setting("users_grpc_url", "not a valid URL").in_scope("AUTH_");
        assert_eq!(error.variable, "AUTH_USERS_GRPC_URL");
        assert_eq!(
            error.to_string(),
            "invalid configuration: AUTH_USERS_GRPC_URL: not a valid URL"
        );
        // Scoping twice, or scoping a variable named in full, changes nothing.
        assert_eq!(error.clone().in_scope("USERS_"), error);
        let full = ConfigError::new("USERS_HTTP_PORT", "bad").in_scope("AUTH_");
        assert_eq!(full.variable, "USERS_HTTP_PORT");
    }
}

/// Deserializers for fields of a `#[serde(flatten)]`ed settings struct: serde hands such
/// fields the raw strings, past envy's own conversions.
pub mod flattened {
    use serde::{Deserialize, Deserializer, de::Error as _};

    /// A boolean given as `true`/`false` (or `1`/`0`).
    pub fn flag<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Given {
            Bool(bool),
            Text(String),
        }
        match Given::deserialize(deserializer)? {
            Given::Bool(value) => Ok(value),
            Given::Text(text) => match text.trim().to_ascii_lowercase().as_str() {
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                _ => Err(D::Error::custom(format!(
                    "{text:?} is not a boolean: true or false"
                ))),
            },
        }
    }
}
