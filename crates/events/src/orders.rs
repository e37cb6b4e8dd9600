//! Events published by the orders service. Each carries the order's lines and total, so a
//! consumer (billing, a warehouse, a read model) needs no call back to orders.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Event;

/// One line of an order, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    /// The article's stock-keeping unit.
    pub sku: String,
    /// How many, 1 to 10,000.
    pub quantity: u32,
    /// Price of one, in minor units of the order's currency.
    pub unit_price_cents: i64,
    /// `quantity × unit_price_cents`.
    pub line_total_cents: i64,
}

/// An order was placed (`order.created`); it is `pending`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCreated {
    /// The order's id.
    pub id: Uuid,
    /// Who placed it.
    pub user_id: Uuid,
    /// ISO 4217 code of every amount.
    pub currency: String,
    /// Its lines, in the order they were given.
    pub items: Vec<OrderLine>,
    /// Sum of the line totals.
    pub total_cents: i64,
    /// When it was placed.
    pub created_at: DateTime<Utc>,
}

impl Event for OrderCreated {
    const TYPE: &'static str = "order.created";

    fn aggregate_id(&self) -> String {
        self.id.to_string()
    }
}

/// An admin confirmed a pending order (`order.confirmed`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderConfirmed {
    /// The order's id.
    pub id: Uuid,
    /// Who placed it.
    pub user_id: Uuid,
    /// ISO 4217 code of every amount.
    pub currency: String,
    /// Its lines.
    pub items: Vec<OrderLine>,
    /// Sum of the line totals.
    pub total_cents: i64,
    /// When it was confirmed.
    pub confirmed_at: DateTime<Utc>,
}

impl Event for OrderConfirmed {
    const TYPE: &'static str = "order.confirmed";

    fn aggregate_id(&self) -> String {
        self.id.to_string()
    }
}

/// Why an order was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelReason {
    /// Its owner or an admin asked for it.
    Requested,
    /// Its owner's account was deleted.
    UserDeleted,
}

/// A pending or confirmed order was cancelled (`order.cancelled`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCancelled {
    /// The order's id.
    pub id: Uuid,
    /// Who placed it.
    pub user_id: Uuid,
    /// Why.
    pub reason: CancelReason,
    /// ISO 4217 code of every amount.
    pub currency: String,
    /// Its lines.
    pub items: Vec<OrderLine>,
    /// Sum of the line totals.
    pub total_cents: i64,
    /// When it was cancelled.
    pub cancelled_at: DateTime<Utc>,
}

impl Event for OrderCancelled {
    const TYPE: &'static str = "order.cancelled";

    fn aggregate_id(&self) -> String {
        self.id.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancellation_names_its_reason_in_snake_case() {
        let json = serde_json::to_value(CancelReason::UserDeleted).unwrap();
        assert_eq!(json, "user_deleted");
    }
}
