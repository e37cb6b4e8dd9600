//! Settings every service shares, read from `<PREFIX>_*` variables.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;
use tessera_messaging::ConsumerSettings;
use tessera_observability::LogFormat;

use crate::grpc::GrpcTls;

/// The runtime's settings. Everything has a default except the connection URLs, which carry
/// credentials and may come from files (`USERS_DATABASE_URL_FILE`).
#[derive(Debug, Clone, Deserialize)]
pub struct RuntimeConfig {
    /// Address the REST server binds to: every interface unless told otherwise.
    #[serde(default = "defaults::host")]
    pub host: IpAddr,
    /// Address the gRPC server binds to. Unset: every interface with mutual TLS, the
    /// loopback interface without, where only this host's processes can call.
    pub grpc_host: Option<IpAddr>,
    /// REST port; the service's default when unset.
    pub http_port: Option<u16>,
    /// gRPC port; the service's default when unset.
    pub grpc_port: Option<u16>,

    /// The service's certificate chain on internal gRPC (PEM, usually from the file
    /// `<PREFIX>GRPC_TLS_CERT_FILE` names), presented as server and as client; its first DNS
    /// name is the service's identity. With `_KEY` and `_CA`, turns on mutual TLS.
    pub grpc_tls_cert: Option<String>,
    /// The certificate's private key (PEM).
    pub grpc_tls_key: Option<SecretString>,
    /// The CA certificates (PEM) that peers' certificates must chain to.
    pub grpc_tls_ca: Option<String>,
    /// The three above, checked by [`crate::configure`].
    #[serde(skip)]
    pub grpc_tls: Option<GrpcTls>,

    /// `postgres://user:password@host:5432/database` of the service's own database.
    pub database_url: SecretString,
    /// `redis://host:6379/0`.
    pub redis_url: SecretString,
    /// `amqp://user:password@host:5672/vhost`.
    pub amqp_url: SecretString,

    /// `json` (default) or `pretty`.
    #[serde(default)]
    pub log_format: LogFormat,
    /// Log filter directives: a default level and levels by target (`info,sqlx=warn`).
    #[serde(default = "defaults::log_filter")]
    pub log_filter: String,

    /// Apply pending migrations when `serve` starts (creating the database if needed).
    #[serde(default = "defaults::yes")]
    pub run_migrations: bool,
    /// Most connections the PostgreSQL pool opens.
    #[serde(default = "defaults::db_max_connections")]
    pub db_max_connections: u32,
    /// How long a query may wait for a pooled connection.
    #[serde(default = "defaults::db_acquire_timeout_ms")]
    pub db_acquire_timeout_ms: u64,
    /// Server-side limit on any one SQL statement.
    #[serde(default = "defaults::db_statement_timeout_ms")]
    pub db_statement_timeout_ms: u64,
    /// Most connections the Redis pool opens.
    #[serde(default = "defaults::redis_max_connections")]
    pub redis_max_connections: usize,
    /// Limit on connecting to Redis and waiting for a pooled connection.
    #[serde(default = "defaults::redis_timeout_ms")]
    pub redis_timeout_ms: u64,

    /// Longest a request may take before it is answered 504 (HTTP) or DEADLINE_EXCEEDED.
    #[serde(default = "defaults::request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Largest request body accepted, in bytes (413 beyond).
    #[serde(default = "defaults::body_limit_bytes")]
    pub body_limit_bytes: usize,
    /// Most API requests handled at once; more are refused with 503 at once (load shedding).
    #[serde(default = "defaults::concurrency_limit")]
    pub concurrency_limit: usize,
    /// Limit on each readiness check.
    #[serde(default = "defaults::health_check_timeout_ms")]
    pub health_check_timeout_ms: u64,

    /// After SIGTERM, how long to keep serving with readiness failing, so load balancers stop
    /// routing here before the listeners close. Unset: 5 s in Kubernetes (whose endpoints
    /// drop a terminating pod only after it got SIGTERM), none elsewhere.
    pub shutdown_delay_ms: Option<u64>,
    /// Whether the process runs in a Kubernetes pod (`KUBERNETES_SERVICE_HOST` is set).
    #[serde(skip)]
    pub in_kubernetes: bool,
    /// After the listeners close, how long in-flight requests get to finish.
    #[serde(default = "defaults::shutdown_timeout_ms")]
    pub shutdown_timeout_ms: u64,

    /// How long a cached read (a profile, an order) stays in Redis and in memory; also the
    /// most an entry can lag behind PostgreSQL if an invalidation is lost while Redis is
    /// unreachable.
    #[serde(default = "defaults::cache_ttl_secs")]
    pub cache_ttl_secs: u64,
    /// Most cached reads kept in process memory in front of Redis (each a few hundred
    /// bytes); 0 keeps none.
    #[serde(default = "defaults::near_cache_capacity")]
    pub near_cache_capacity: u64,
    /// Most events handled at once (unacknowledged deliveries).
    #[serde(default = "defaults::events_prefetch")]
    pub events_prefetch: u16,
    /// Delays before each retry of an event whose handler failed, comma-separated; an event
    /// is attempted once more than there are delays, then dead-lettered.
    #[serde(default = "defaults::events_retry_delays_ms")]
    pub events_retry_delays_ms: Vec<u64>,
    /// How long the record of a processed event is kept to recognise a redelivery (at
    /// least an hour: far beyond the retry delays and the broker's redelivery).
    #[serde(
        default = "defaults::events_processed_retention_secs",
        deserialize_with = "at_least_an_hour"
    )]
    pub events_processed_retention_secs: u64,
}

fn at_least_an_hour<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    let secs = <u64 as serde::Deserialize>::deserialize(deserializer)?;
    if secs < 3_600 {
        return Err(serde::de::Error::custom(format!(
            "{secs} s is too short to recognise redelivered events; at least 3600"
        )));
    }
    Ok(secs)
}

impl RuntimeConfig {
    /// The REST listen address.
    pub fn http_addr(&self, default_port: u16) -> SocketAddr {
        SocketAddr::new(self.host, self.http_port.unwrap_or(default_port))
    }

    /// The gRPC listen address.
    pub fn grpc_addr(&self, default_port: u16) -> SocketAddr {
        let host = self.grpc_host.unwrap_or(match self.grpc_tls {
            Some(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            None => IpAddr::V4(Ipv4Addr::LOCALHOST),
        });
        SocketAddr::new(host, self.grpc_port.unwrap_or(default_port))
    }

    /// Checks the `grpc_tls_*` settings into [`Self::grpc_tls`].
    pub(crate) fn load_grpc_tls(&mut self) -> Result<(), tessera_config::ConfigError> {
        self.grpc_tls = GrpcTls::from_pem(
            self.grpc_tls_cert.as_deref(),
            self.grpc_tls_key.as_ref(),
            self.grpc_tls_ca.as_deref(),
        )?;
        Ok(())
    }

    /// The settings of `service`'s event consumer `name`, on its queue of the event
    /// contract.
    pub fn consumer(&self, service: &str, name: &str) -> ConsumerSettings {
        ConsumerSettings {
            name: name.to_owned(),
            exchange: tessera_messaging::topology::EVENTS_EXCHANGE.to_owned(),
            queue: tessera_events::subscriptions::queue_of(service),
            prefetch: self.events_prefetch,
            retry_delays: self
                .events_retry_delays_ms
                .iter()
                .copied()
                .map(Duration::from_millis)
                .collect(),
            queue_expires: None,
            processed_retention: Duration::from_secs(self.events_processed_retention_secs),
            prune_interval: Duration::from_secs(600),
            prune_batch: 1_000,
        }
    }

    /// How long to keep serving after SIGTERM: [`Self::shutdown_delay_ms`], or its default.
    pub fn shutdown_delay(&self) -> Duration {
        let default = if self.in_kubernetes { 5_000 } else { 0 };
        Duration::from_millis(self.shutdown_delay_ms.unwrap_or(default))
    }

    /// [`Self::request_timeout_ms`] as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

mod defaults {
    use super::*;

    pub fn host() -> IpAddr {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    }
    pub fn log_filter() -> String {
        "info,sqlx=warn,lapin=warn".to_owned()
    }
    pub fn yes() -> bool {
        true
    }
    pub fn db_max_connections() -> u32 {
        16
    }
    pub fn db_acquire_timeout_ms() -> u64 {
        3_000
    }
    pub fn db_statement_timeout_ms() -> u64 {
        5_000
    }
    pub fn redis_max_connections() -> usize {
        32
    }
    pub fn redis_timeout_ms() -> u64 {
        500
    }
    pub fn cache_ttl_secs() -> u64 {
        60
    }
    pub fn near_cache_capacity() -> u64 {
        10_000
    }
    pub fn request_timeout_ms() -> u64 {
        10_000
    }
    pub fn body_limit_bytes() -> usize {
        64 * 1024
    }
    pub fn concurrency_limit() -> usize {
        1_024
    }
    pub fn health_check_timeout_ms() -> u64 {
        1_000
    }
    pub fn shutdown_timeout_ms() -> u64 {
        20_000
    }
    pub fn events_prefetch() -> u16 {
        32
    }
    pub fn events_retry_delays_ms() -> Vec<u64> {
        vec![1_000, 10_000, 60_000]
    }
    pub fn events_processed_retention_secs() -> u64 {
        7 * 24 * 3_600
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn config(vars: &[(&str, &str)]) -> RuntimeConfig {
        let required = ["DATABASE_URL", "REDIS_URL", "AMQP_URL"].map(|name| (name, "x://"));
        let vars = required
            .iter()
            .chain(vars)
            .map(|(name, value)| (format!("SVC_{name}"), (*value).to_owned()));
        tessera_config::from_vars("SVC_", vars).unwrap()
    }

    #[test]
    fn the_consumer_takes_its_queue_from_the_contract_and_retries_from_the_environment() {
        let defaults = config(&[]).consumer("auth", "auth.things");
        assert_eq!(defaults.name, "auth.things");
        assert_eq!(defaults.queue, "auth.events");
        assert_eq!(defaults.prefetch, 32);
        assert_eq!(defaults.retry_delays.len(), 3);
        assert_eq!(defaults.queue_expires, None);
        assert_eq!(
            defaults.processed_retention,
            Duration::from_secs(7 * 24 * 3_600)
        );

        let set = config(&[
            ("EVENTS_PREFETCH", "4"),
            ("EVENTS_RETRY_DELAYS_MS", "100,2000"),
            ("EVENTS_PROCESSED_RETENTION_SECS", "86400"),
        ])
        .consumer("auth", "auth.things");
        assert_eq!(set.prefetch, 4);
        assert_eq!(
            set.retry_delays,
            [Duration::from_millis(100), Duration::from_secs(2)]
        );
        assert_eq!(set.processed_retention, Duration::from_secs(86_400));
    }

    #[test]
    fn grpc_binds_to_loopback_without_tls_and_everywhere_with_it_unless_told() {
        let plain = config(&[]);
        assert_eq!(plain.grpc_addr(50052).to_string(), "127.0.0.1:50052");
        let ca = tessera_testkit::pki::TestCa::new();
        let issued = ca.issue("users");
        let ca_pem = ca.pem();
        let mut tls = config(&[
            ("GRPC_TLS_CERT", &issued.cert_pem),
            ("GRPC_TLS_KEY", &issued.key_pem),
            ("GRPC_TLS_CA", &ca_pem),
        ]);
        tls.load_grpc_tls().unwrap();
        assert_eq!(tls.grpc_addr(50052).to_string(), "0.0.0.0:50052");
        let told = config(&[("GRPC_HOST", "0.0.0.0"), ("GRPC_PORT", "7000")]);
        assert_eq!(told.grpc_addr(50052).to_string(), "0.0.0.0:7000");
    }

    #[test]
    fn the_shutdown_delay_drains_endpoints_by_default_in_kubernetes_only() {
        let mut unset = config(&[]);
        assert_eq!(unset.shutdown_delay(), Duration::ZERO);
        unset.in_kubernetes = true;
        assert_eq!(unset.shutdown_delay(), Duration::from_secs(5));
        let mut set = config(&[("SHUTDOWN_DELAY_MS", "0")]);
        set.in_kubernetes = true;
        assert_eq!(set.shutdown_delay(), Duration::ZERO, "an explicit 0 holds");
    }

    #[test]
    fn a_processed_event_retention_too_short_for_redeliveries_is_refused() {
        let required = ["DATABASE_URL", "REDIS_URL", "AMQP_URL"].map(|name| (name, "x://"));
        let vars = required
            .iter()
            .chain(&[("EVENTS_PROCESSED_RETENTION_SECS", "60")])
            .map(|(name, value)| (format!("SVC_{name}"), (*value).to_owned()));
        let error = tessera_config::from_vars::<RuntimeConfig, _>("SVC_", vars).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("EVENTS_PROCESSED_RETENTION_SECS"),
            "{error}"
        );
    }
}
