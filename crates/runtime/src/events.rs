//! How a service takes its part in the event contract: its broker connection, the
//! subscriptions its relay declares before publishing, the check that its consumer handles
//! what the contract routes to it, and the declaration made by `migrate`.

use std::time::Duration;

use secrecy::ExposeSecret;
use tessera_messaging::topology::{self, EVENTS_EXCHANGE, QueueTopology};
use tessera_messaging::{Broker, BrokerSettings, Consumer, MessagingMetrics, RelaySettings};

use crate::config::RuntimeConfig;
use crate::error::RunError;
use crate::service::ServiceSpec;

/// The settings of `spec`'s broker connection; `role` tells its connections apart in the
/// broker's UI (`None` for the serving process).
pub(crate) fn broker_settings(
    spec: &ServiceSpec,
    config: &RuntimeConfig,
    role: Option<&str>,
) -> BrokerSettings {
    BrokerSettings {
        url: config.amqp_url.expose_secret().to_owned().into(),
        connection_name: match role {
            Some(role) => format!("{}-{role}", spec.name),
            None => spec.name.to_owned(),
        },
        min_backoff: Duration::from_millis(200),
        max_backoff: Duration::from_secs(10),
    }
}

/// The relay's settings: every subscription of the contract is declared before publishing.
pub(crate) fn relay_settings() -> RelaySettings {
    RelaySettings {
        subscriptions: topology::contract_destinations(EVENTS_EXCHANGE),
        ..RelaySettings::default()
    }
}

/// Refuses to start a service whose consumer and the contract disagree: a type the contract
/// routes to it that it does not handle would be dead-lettered, and a type it handles that
/// the contract does not route would never arrive.
pub(crate) fn check_subscription(
    spec: &ServiceSpec,
    consumer: Option<&Consumer>,
) -> Result<(), RunError> {
    let handled = consumer.map(|consumer| consumer.topology().event_types);
    let mut routed = tessera_events::subscriptions::of(spec.name).map(|subscription| {
        subscription
            .event_types
            .iter()
            .map(|event_type| (*event_type).to_owned())
            .collect::<Vec<_>>()
    });
    if let Some(routed) = &mut routed {
        routed.sort();
    }
    if handled == routed {
        return Ok(());
    }
    Err(RunError::other(format!(
        "{} handles events {:?}, but the event contract (tessera_events::subscriptions) routes {:?} to it",
        spec.name,
        handled.unwrap_or_default(),
        routed.unwrap_or_default(),
    )))
}

/// Declares every subscription's destination, waiting up to `wait` for the broker: the
/// deploy step makes the queues, so no event published afterwards is dropped for want of
/// one, whichever service runs first.
pub(crate) async fn declare_subscriptions(
    spec: &ServiceSpec,
    config: &RuntimeConfig,
    wait: Duration,
) -> Result<(), RunError> {
    let broker = Broker::start(
        broker_settings(spec, config, Some("migrate")),
        MessagingMetrics::unregistered().connection_up,
    );
    let destinations = topology::contract_destinations(EVENTS_EXCHANGE);
    let declared = tokio::time::timeout(wait, async {
        loop {
            let Some(connection) = broker.connected().await else {
                return Err("the broker connection was closed".to_owned());
            };
            match declare(&connection, &destinations).await {
                Ok(()) => return Ok(()),
                Err(error) => {
                    tracing::warn!(%error, "cannot declare the event subscriptions; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    })
    .await;
    broker.close().await;
    match declared {
        Ok(Ok(())) => {
            tracing::info!(
                queues = destinations.len(),
                "event subscriptions are declared"
            );
            Ok(())
        }
        Ok(Err(reason)) => Err(RunError::other(reason)),
        Err(_) => Err(RunError::other(format!(
            "cannot declare the event subscriptions: the broker did not answer within {wait:?}"
        ))),
    }
}

async fn declare(
    connection: &lapin::Connection,
    destinations: &[QueueTopology],
) -> lapin::Result<()> {
    let channel = connection.create_channel().await?;
    for destination in destinations {
        destination.declare_destination(&channel).await?;
    }
    channel.close(200, "declared".into()).await
}
