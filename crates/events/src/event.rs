//! Domain events and the envelope they travel in.

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A domain event a service publishes: its payload type, with its name and version.
pub trait Event: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The event type and routing key, `<aggregate>.<past-tense verb>` (`user.created`).
    const TYPE: &'static str;
    /// The payload's schema version; bump it on incompatible changes.
    const VERSION: u32 = 1;

    /// The id of the aggregate the event is about. Events of one aggregate are delivered in
    /// the order they were written.
    fn aggregate_id(&self) -> String;
}

/// The JSON document every event travels in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T = serde_json::Value> {
    /// Unique id (UUIDv7): consumers deduplicate on it.
    pub id: Uuid,
    /// The event type (`user.created`).
    #[serde(rename = "type")]
    pub event_type: String,
    /// The payload's schema version.
    pub version: u32,
    /// When the change happened.
    pub occurred_at: DateTime<Utc>,
    /// The service that published it.
    pub source: String,
    /// The payload.
    pub data: T,
}

impl Envelope {
    /// Wraps `event` in a new envelope from `source`.
    pub fn wrap<E: Event>(source: &str, event: &E) -> Result<Self, serde_json::Error> {
        Ok(Self {
            id: Uuid::now_v7(),
            event_type: E::TYPE.to_owned(),
            version: E::VERSION,
            occurred_at: Utc::now(),
            source: source.to_owned(),
            data: serde_json::to_value(event)?,
        })
    }

    /// The payload as `E`.
    pub fn decode<E: Event>(&self) -> Result<E, serde_json::Error> {
        E::deserialize(&self.data)
    }
}
