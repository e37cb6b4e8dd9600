//! What the deployment files must agree on with the service binaries, which no schema
//! validator can see: the variables each binary reads, the ports it serves on, the health
//! paths it answers.
//!
//! A variable counts as read when the binary's own settings types react to it: loaded with
//! it set to a value no setting would hold, [`Binary::reads`] gets another outcome (an error,
//! or different settings) than without it. So a misspelt name, or one a service does not
//! have, is caught without starting anything.

pub mod compose;
pub mod k8s;
pub mod yaml;

use std::fmt::Debug;

use tessera_config::ConfigError;
use tessera_observability::otlp::ExportSettings;
use tessera_runtime::{RuntimeConfig, Service};

/// The paths a service answers probes on, on its HTTP port.
pub const HEALTH_PATHS: [&str; 3] = ["/health/live", "/health/ready", "/health/startup"];
/// Where auth publishes its keys.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";
/// Variables as the binaries take them.
pub type Vars = Vec<(String, String)>;

/// A value no setting holds: not a number, a flag, an address or a log format.
const STRANGER: &str = "not-a-value-of-any-setting";

/// One service binary, known through its own types.
pub struct Binary {
    /// `users`.
    pub name: &'static str,
    /// `USERS_`.
    pub prefix: &'static str,
    /// REST port when `<PREFIX>HTTP_PORT` is unset.
    pub default_http_port: u16,
    /// gRPC port when `<PREFIX>GRPC_PORT` is unset.
    pub default_grpc_port: u16,
    load: fn(Vars) -> Result<Loaded, ConfigError>,
}

/// A binary's settings, loaded as `serve` loads them.
pub struct Loaded {
    /// The runtime's part.
    pub config: RuntimeConfig,
    debug: String,
}

impl Loaded {
    /// The REST port it listens on.
    pub fn http_port(&self, binary: &Binary) -> u16 {
        self.config.http_port.unwrap_or(binary.default_http_port)
    }

    /// The gRPC port it listens on.
    pub fn grpc_port(&self, binary: &Binary) -> u16 {
        self.config.grpc_port.unwrap_or(binary.default_grpc_port)
    }
}

fn load<S: Service>(vars: Vars) -> Result<Loaded, ConfigError>
where
    S::Settings: Debug,
{
    let (config, settings) = tessera_runtime::configure::<S>(vars)?;
    let debug = format!("{config:?} {settings:?}");
    Ok(Loaded { config, debug })
}

/// The three service binaries.
pub fn binaries() -> [Binary; 3] {
    [
        Binary::of::<auth::Auth>(),
        Binary::of::<users::Users>(),
        Binary::of::<orders::Orders>(),
    ]
}

impl Binary {
    fn of<S: Service>() -> Self
    where
        S::Settings: Debug,
    {
        let spec = S::SPEC;
        Self {
            name: spec.name,
            prefix: spec.env_prefix,
            default_http_port: spec.default_http_port,
            default_grpc_port: spec.default_grpc_port,
            load: load::<S>,
        }
    }

    /// The binary an image runs: `tessera/users`, with any tag or registry in front.
    pub fn of_image(image: &str) -> Option<Self> {
        let repository = image.split(':').next().unwrap_or(image);
        let name = repository
            .strip_prefix("tessera/")
            .or_else(|| repository.rsplit_once("/tessera/").map(|(_, name)| name))?;
        Self::named(name)
    }

    /// The binary called `name`.
    pub fn named(name: &str) -> Option<Self> {
        binaries().into_iter().find(|binary| binary.name == name)
    }

    /// Its settings from `vars`, as `serve` would load them.
    pub fn load(&self, vars: Vars) -> Result<Loaded, ConfigError> {
        (self.load)(vars)
    }

    /// Its runtime settings from `vars`, as `migrate` loads them (it needs no others).
    pub fn load_for_migrate(&self, vars: Vars) -> Result<RuntimeConfig, ConfigError> {
        tessera_config::from_vars(self.prefix, vars)
    }

    /// Loads `vars` as the command `args` would: `migrate`, or else `serve`.
    pub fn check(&self, args: &[String], vars: Vars) -> Result<(), ConfigError> {
        match args {
            [command] if command == "migrate" => self.load_for_migrate(vars).map(drop),
            _ => self.load(vars).map(drop),
        }
    }

    /// The variables it cannot start without, with stand-in values.
    fn required(&self) -> Vars {
        let mut vars = Vars::new();
        for _ in 0..32 {
            match self.load(vars.clone()) {
                Ok(_) => return vars,
                Err(error) if error.problem == "is required but not set" => {
                    vars.push((error.variable, "stand-in".to_owned()));
                }
                Err(error) => panic!("{}: loading stand-ins failed: {error}", self.name),
            }
        }
        panic!("{}: too many required variables", self.name)
    }

    /// Whether the binary reads `variable` (its `_FILE` form counts as the variable).
    pub fn reads(&self, variable: &str) -> bool {
        let name = variable.strip_suffix("_FILE").unwrap_or(variable);
        if name.starts_with("OTEL_") {
            return reacts(name, Vars::new(), |vars| {
                tessera_config::from_vars::<ExportSettings, _>("OTEL_", vars)
                    .map(|settings| format!("{settings:?}"))
            });
        }
        if !name.starts_with(self.prefix) {
            return false;
        }
        let others = self.required().into_iter().filter(|(key, _)| key != name);
        reacts(name, others.collect(), |vars| {
            self.load(vars).map(|loaded| loaded.debug)
        })
    }
}

/// Whether `load` gives another outcome with `name` set to a stranger value than without it.
fn reacts(name: &str, others: Vars, load: impl Fn(Vars) -> Result<String, ConfigError>) -> bool {
    let without = load(others.clone());
    let mut with = others;
    with.push((name.to_owned(), STRANGER.to_owned()));
    load(with) != without
}

/// What a file of an internal gRPC identity holds (`tls.crt`, `tls.key`, `ca.crt`, as in a
/// Kubernetes TLS Secret) where the real one is not in the repository: a certificate of a
/// CA of this process for `identity`, so the binaries' checks of it pass as they would
/// with a deployment's. `None` for any other file.
pub fn tls_stand_in(identity: &str, file: &str) -> Option<String> {
    use std::collections::BTreeMap;
    use std::sync::{Mutex, OnceLock};

    use tessera_testkit::pki::{Issued, TestCa};

    static PKI: OnceLock<Mutex<(TestCa, BTreeMap<String, Issued>)>> = OnceLock::new();
    let pki = PKI.get_or_init(|| Mutex::new((TestCa::new(), BTreeMap::new())));
    let mut pki = pki
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (ca, issued) = &mut *pki;
    let ca_pem = ca.pem();
    let identity = issued
        .entry(identity.to_owned())
        .or_insert_with(|| ca.issue(identity));
    match file {
        "tls.crt" => Some(identity.cert_pem.clone()),
        "tls.key" => Some(identity.key_pem.clone()),
        "ca.crt" => Some(ca_pem),
        _ => None,
    }
}

/// An internal URL a variable holds, split into what the checks need.
#[derive(Debug, PartialEq, Eq)]
pub struct Url {
    /// The host, a Service or compose service name (`users`, `users.tessera.svc`).
    pub host: String,
    /// The port, which internal URLs always spell out.
    pub port: Option<u16>,
    /// The path, `/` when there is none.
    pub path: String,
}

impl Url {
    /// Parses `http://host:port/path`; `None` for anything else.
    pub fn parse(url: &str) -> Option<Self> {
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))?;
        let (authority, path) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port.parse().ok()?)),
            None => (authority, None),
        };
        Some(Self {
            host: host.split('.').next().unwrap_or(host).to_owned(),
            port,
            path: path.to_owned(),
        })
    }
}

/// What an internal URL variable must reach: the binary (by name) and whether on its gRPC
/// port (else its REST port, at [`JWKS_PATH`]). `None` for other variables.
pub fn url_target(variable: &str, binary: &Binary) -> Option<(String, bool)> {
    let name = variable.strip_prefix(binary.prefix)?;
    if let Some(service) = name.strip_suffix("_GRPC_URL") {
        return Some((service.to_lowercase(), true));
    }
    (name == "JWKS_URL").then(|| ("auth".to_owned(), false))
}
