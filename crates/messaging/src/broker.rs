//! The supervised AMQP connection.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties};
use secrecy::{ExposeSecret, SecretString};
use tessera_observability::{Criticality, HealthCheck};
use tessera_resilience::backoff;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Longest wait for one connection attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the connection state is checked, besides listening for its error events.
const STATUS_POLL: Duration = Duration::from_millis(250);

/// The largest AMQP frame asked for unless the URL sets `frame_max`. lapin keeps a send and a
/// receive buffer of 32 frames each, written through: at RabbitMQ's default (128 KiB) that is
/// 8 MiB per connection, most of an idle service's memory, for events of a few hundred bytes.
/// Bigger messages still pass, split over several frames.
const FRAME_MAX: u32 = 16 * 1024;

/// How the connection is made and re-made.
#[derive(Clone)]
pub struct BrokerSettings {
    /// `amqp://user:password@host:5672/vhost`.
    pub url: SecretString,
    /// Shown in the broker's management UI, to tell services apart.
    pub connection_name: String,
    /// First delay between reconnection attempts; doubles up to `max_backoff`.
    pub min_backoff: Duration,
    /// Longest delay between reconnection attempts.
    pub max_backoff: Duration,
}

/// A handle on the service's broker connection. Cheap to clone.
#[derive(Clone)]
pub struct Broker {
    current: watch::Receiver<Option<Arc<Connection>>>,
    stop: CancellationToken,
    task: Arc<tokio::sync::Mutex<Option<JoinHandle<()>>>>,
}

impl Broker {
    /// Starts the connection task. It returns at once: the first connection is made in the
    /// background, so a service starts even while the broker is down.
    ///
    /// `connection_up` is set to 1 while connected and 0 otherwise.
    pub fn start(settings: BrokerSettings, connection_up: prometheus::IntGauge) -> Self {
        let (sender, current) = watch::channel(None);
        let stop = CancellationToken::new();
        let task = tokio::spawn(supervise(settings, sender, stop.clone(), connection_up));
        Self {
            current,
            stop,
            task: Arc::new(tokio::sync::Mutex::new(Some(task))),
        }
    }

    /// The connection, if there is a live one now.
    pub fn connection(&self) -> Option<Arc<Connection>> {
        self.current
            .borrow()
            .as_ref()
            .filter(|connection| connection.status().connected())
            .cloned()
    }

    /// Waits until there is a live connection. Returns `None` once the broker is closed.
    pub async fn connected(&self) -> Option<Arc<Connection>> {
        let mut current = self.current.clone();
        loop {
            if let Some(connection) = self.connection() {
                return Some(connection);
            }
            if self.stop.is_cancelled() || current.changed().await.is_err() {
                return None;
            }
        }
    }

    /// Like [`Broker::connected`], but gives up with `None` once `stop` is cancelled.
    pub async fn connected_until(&self, stop: &CancellationToken) -> Option<Arc<Connection>> {
        tokio::select! {
            () = stop.cancelled() => None,
            connection = self.connected() => connection,
        }
    }

    /// Completes once `connection` is no longer the broker's live connection (lost, replaced
    /// or closed). Work bound to a connection races against this, because a dead connection
    /// does not always fail the operations waiting on it.
    pub async fn lost(&self, connection: &Arc<Connection>) {
        let mut current = self.current.clone();
        loop {
            let same = current
                .borrow_and_update()
                .as_ref()
                .is_some_and(|live| Arc::ptr_eq(live, connection));
            if !same || current.changed().await.is_err() {
                return;
            }
        }
    }

    /// A readiness check: optional, since the outbox absorbs a broker outage.
    pub fn health_check(&self) -> impl HealthCheck + use<> {
        BrokerCheck(self.clone())
    }

    /// Closes the connection cleanly and stops reconnecting.
    pub async fn close(&self) {
        self.stop.cancel();
        if let Some(task) = self.task.lock().await.take()
            && let Err(error) = task.await
        {
            tracing::warn!(%error, "broker connection task failed");
        }
    }
}

struct BrokerCheck(Broker);

impl HealthCheck for BrokerCheck {
    fn name(&self) -> &'static str {
        "rabbitmq"
    }

    fn criticality(&self) -> Criticality {
        Criticality::Optional
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        let connected = self.0.connection().is_some();
        Box::pin(async move {
            if connected {
                Ok(())
            } else {
                Err("not connected".to_owned())
            }
        })
    }
}

async fn connect(url: &str, properties: ConnectionProperties) -> lapin::Result<Connection> {
    let mut uri: AMQPUri = url
        .parse()
        .map_err(|error: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, error))?;
    uri.query.frame_max.get_or_insert(FRAME_MAX);
    Connection::connect_uri(uri, properties).await
}

async fn supervise(
    settings: BrokerSettings,
    sender: watch::Sender<Option<Arc<Connection>>>,
    stop: CancellationToken,
    connection_up: prometheus::IntGauge,
) {
    let mut failures: u32 = 0;
    loop {
        let properties = ConnectionProperties::default()
            .with_connection_name(settings.connection_name.clone().into());
        let attempt = tokio::select! {
            () = stop.cancelled() => break,
            attempt = tokio::time::timeout(
                CONNECT_TIMEOUT,
                connect(settings.url.expose_secret(), properties),
            ) => attempt.unwrap_or_else(|_| Err(std::io::Error::other("connecting timed out").into())),
        };
        match attempt {
            Ok(connection) => {
                failures = 0;
                let connection = Arc::new(connection);
                let mut events = connection.events_listener();
                sender.send_replace(Some(Arc::clone(&connection)));
                connection_up.set(1);
                tracing::info!("connected to the broker");
                let lost = tokio::select! {
                    () = stop.cancelled() => None,
                    reason = async {
                        while let Some(event) = events.next().await {
                            match event {
                                // The broker closed one channel (over a message it refused,
                                // say): its user opens another; the connection stays.
                                lapin::Event::Error(error) if error.is_amqp_soft_error() => {
                                    tracing::debug!(%error, "the broker closed a channel");
                                }
                                lapin::Event::Error(error) => return error.to_string(),
                                _ => {}
                            }
                        }
                        "connection closed".to_owned()
                    } => Some(reason),
                    // Not every way of losing a connection raises an event: watch the state too.
                    () = async {
                        while connection.status().connected() {
                            tokio::time::sleep(STATUS_POLL).await;
                        }
                    } => Some("connection is no longer connected".to_owned()),
                };
                sender.send_replace(None);
                connection_up.set(0);
                match lost {
                    Some(reason) => {
                        tracing::warn!(%reason, "lost the broker connection; reconnecting")
                    }
                    None => {
                        if let Err(error) =
                            connection.close(200, "service shutting down".into()).await
                        {
                            tracing::debug!(%error, "broker connection was already closed");
                        }
                        break;
                    }
                }
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                tracing::warn!(%error, attempt = failures, "cannot connect to the broker; retrying");
            }
        }
        let delay = backoff(failures, settings.min_backoff, settings.max_backoff);
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(delay) => {}
        }
    }
    connection_up.set(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str) -> BrokerSettings {
        BrokerSettings {
            url: SecretString::from(url.to_owned()),
            connection_name: format!("tessera-test-{}", uuid::Uuid::new_v4()),
            min_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(200),
        }
    }

    fn gauge() -> prometheus::IntGauge {
        prometheus::IntGauge::new("amqp_connection_up", "test").unwrap()
    }

    #[tokio::test]
    async fn connects_to_the_local_broker_and_closes() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let up = gauge();
        let broker = Broker::start(
            settings("amqp://guest:guest@127.0.0.1:5672/%2f"),
            up.clone(),
        );
        let connection = tokio::time::timeout(Duration::from_secs(10), broker.connected())
            .await
            .unwrap();
        assert!(connection.is_some());
        assert_eq!(up.get(), 1);
        assert!(broker.health_check().check().await.is_ok());
        broker.close().await;
        assert_eq!(up.get(), 0);
        assert!(broker.connection().is_none());
    }

    #[tokio::test]
    async fn keeps_trying_while_the_broker_is_unreachable() {
        let up = gauge();
        // Nothing listens on port 1.
        let broker = Broker::start(settings("amqp://guest:guest@127.0.0.1:1/%2f"), up.clone());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(broker.connection().is_none());
        assert_eq!(
            broker.health_check().check().await,
            Err("not connected".to_owned())
        );
        tokio::time::timeout(Duration::from_secs(5), broker.close())
            .await
            .unwrap();
    }
}
