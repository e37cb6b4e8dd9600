//! docker-compose.yml, read as compose reads it with no variables set in the shell.

use std::path::{Path, PathBuf};

use serde_norway::Value;

use crate::yaml::{at, documents, list, string_map, text, text_at};
use crate::{Binary, Vars};

/// docker-compose.yml of this repository.
pub fn path() -> PathBuf {
    tessera_testkit::manifest_dir(env!("CARGO_MANIFEST_DIR")).join("../../docker-compose.yml")
}

/// One compose service that runs a tessera binary.
pub struct Service {
    /// Its compose name (`users`, `users-migrate`), also its host name on the network.
    pub name: String,
    /// The binary its image runs.
    pub binary: Binary,
    /// Its `command` (`["migrate"]`), empty for the image's default (`serve`).
    pub command: Vec<String>,
    /// Its `environment`, interpolated; a `<NAME>_FILE` of an internal gRPC identity
    /// (`.../<identity>/tls.crt`, made by a one-shot at `up`) is `<NAME>` with a stand-in
    /// ([`crate::tls_stand_in`]).
    pub environment: Vars,
    /// The container ports it publishes or exposes.
    pub container_ports: Vec<u16>,
    /// Its health check's `test`, interpolated.
    pub healthcheck: Vec<String>,
    /// How long compose waits after SIGTERM before SIGKILL (compose's default: 10 s).
    pub stop_grace_period_ms: u64,
}

/// The compose file's services that run tessera binaries; `None` when there is no file.
pub fn services() -> Option<Vec<Service>> {
    let source = std::fs::read_to_string(path()).ok()?;
    let file = documents(&source).into_iter().next()?;
    let services = at(&file, &["services"])?.as_mapping()?;
    Some(
        services
            .iter()
            .filter_map(|(name, service)| {
                let binary = Binary::of_image(&interpolate(&text_at(service, &["image"])?))
                    .or_else(|| Binary::named(&text_at(service, &["build", "args", "SERVICE"])?))?;
                Some(Service {
                    name: text(name)?,
                    binary,
                    command: strings(at(service, &["command"])),
                    environment: with_tls_stand_ins(environment(service)),
                    container_ports: list(service, &["ports"])
                        .iter()
                        .chain(list(service, &["expose"]))
                        .filter_map(container_port)
                        .collect(),
                    healthcheck: strings(at(service, &["healthcheck", "test"])),
                    stop_grace_period_ms: text_at(service, &["stop_grace_period"])
                        .map_or(10_000, |period| duration_ms(&interpolate(&period))),
                })
            })
            .collect(),
    )
}

/// A command or test: a list, or one string split on spaces.
fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Sequence(items)) => items
            .iter()
            .filter_map(text)
            .map(|item| interpolate(&item))
            .collect(),
        Some(value) => text(value)
            .map(|line| {
                interpolate(&line)
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
        None => Vec::new(),
    }
}

fn with_tls_stand_ins(vars: Vars) -> Vars {
    vars.into_iter()
        .map(|(name, value)| {
            let stand_in = name.strip_suffix("_FILE").and_then(|base| {
                let path = Path::new(&value);
                let file = path.file_name()?.to_str()?;
                let identity = path.parent()?.file_name()?.to_str()?;
                Some((base.to_owned(), crate::tls_stand_in(identity, file)?))
            });
            stand_in.unwrap_or((name, value))
        })
        .collect()
}

/// `environment:` as a mapping or as `NAME=value` lines.
fn environment(service: &Value) -> Vars {
    let vars = match at(service, &["environment"]) {
        Some(Value::Sequence(lines)) => lines
            .iter()
            .filter_map(text)
            .map(|line| match line.split_once('=') {
                Some((name, value)) => (name.to_owned(), value.to_owned()),
                None => (line, String::new()),
            })
            .collect(),
        _ => string_map(service, &["environment"]),
    };
    vars.into_iter()
        .map(|(name, value)| (name, interpolate(&value)))
        .collect()
}

/// The container side of `"127.0.0.1:8080:8080"`, `"8080/tcp"`, `8080` or `{target: 8080}`.
fn container_port(port: &Value) -> Option<u16> {
    let spec = text_at(port, &["target"]).or_else(|| text(port))?;
    let spec = interpolate(&spec);
    let container = spec.rsplit(':').next()?;
    container.split('/').next()?.parse().ok()
}

/// Compose's `${NAME}`, `${NAME:-default}` and `${NAME-default}` with nothing set: the
/// default, or empty. `$$` is a dollar.
pub fn interpolate(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
        } else if let Some(inner) = rest.strip_prefix('{') {
            let Some(end) = inner.find('}') else {
                out.push('$');
                continue;
            };
            let expression = &inner[..end];
            let default = expression
                .split_once(":-")
                .or_else(|| expression.split_once('-'))
                .map_or("", |(_, default)| default);
            out.push_str(default);
            rest = &inner[end + 1..];
        } else {
            // `$NAME`: unset, so empty.
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

/// A compose duration (`30s`, `1m30s`, `500ms`) in milliseconds.
pub fn duration_ms(duration: &str) -> u64 {
    let mut total = 0;
    let mut number = String::new();
    let mut chars = duration.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let value: u64 = number
            .parse()
            .unwrap_or_else(|_| panic!("bad duration {duration:?}"));
        number.clear();
        total += match c {
            'h' => value * 3_600_000,
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                value
            }
            'm' => value * 60_000,
            's' => value * 1_000,
            _ => panic!("bad duration {duration:?}"),
        };
    }
    assert!(number.is_empty(), "bad duration {duration:?}: no unit");
    total
}
