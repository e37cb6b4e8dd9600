//! An order, its lines and totals, and the states it goes through.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::values::{Currency, Money, Quantity, Sku};

/// Most lines one order may have.
pub const MAX_ITEMS: usize = 100;
/// The highest price of one article, in minor units: 10 billion in major units. With at most
/// [`MAX_ITEMS`] lines of [`Quantity::MAX`] each, no total can pass `i64::MAX`.
pub const MAX_UNIT_PRICE_CENTS: i64 = 1_000_000_000_000;

const _: () = assert!(
    (MAX_ITEMS as i128) * (Quantity::MAX as i128) * (MAX_UNIT_PRICE_CENTS as i128)
        <= i64::MAX as i128
);

/// Where an order is in its life.
///
/// ```text
/// pending ──confirm──▶ confirmed
///    │                    │
///    └──cancel──▶ cancelled ◀──cancel──┘
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Placed, awaiting confirmation.
    Pending,
    /// Confirmed by an admin.
    Confirmed,
    /// Cancelled; final.
    Cancelled,
}

impl OrderStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [Self; 3] = [Self::Pending, Self::Confirmed, Self::Cancelled];

    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Confirmed => "confirmed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Whether the order may still be cancelled (and is cancelled when its owner goes).
    pub fn is_open(self) -> bool {
        matches!(self, Self::Pending | Self::Confirmed)
    }

    /// The status after `to` is applied, or why it cannot be.
    pub fn apply(self, to: Transition) -> Result<Self, OrderError> {
        match (self, to) {
            (Self::Pending, Transition::Confirm) => Ok(Self::Confirmed),
            (Self::Pending | Self::Confirmed, Transition::Cancel) => Ok(Self::Cancelled),
            (from, to) => Err(OrderError::Transition { from, to }),
        }
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OrderStatus {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == raw)
            .ok_or_else(|| "must be one of pending, confirmed, cancelled".to_owned())
    }
}

/// A change of status someone asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// pending → confirmed (admins).
    Confirm,
    /// pending or confirmed → cancelled (owner or admin).
    Cancel,
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Confirm => "confirmed",
            Self::Cancel => "cancelled",
        })
    }
}

/// Why an order cannot be made or changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    /// A field's value is refused; `field` is its path in the request (`items[2].quantity`).
    #[error("{field}: {message}")]
    Invalid {
        /// The field's path.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The order's status does not allow the change.
    #[error("an order that is {from} cannot be {to}")]
    Transition {
        /// The current status.
        from: OrderStatus,
        /// The change asked for.
        to: Transition,
    },
}

impl From<OrderError> for tessera_errors::Error {
    fn from(error: OrderError) -> Self {
        match error {
            OrderError::Invalid { field, message } => Self::invalid_field(field, message),
            transition @ OrderError::Transition { .. } => Self::Conflict(transition.to_string()),
        }
    }
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderItem {
    /// The article.
    pub sku: Sku,
    /// How many.
    pub quantity: Quantity,
    /// Price of one.
    pub unit_price: Money,
    /// `quantity × unit_price`.
    pub line_total: Money,
}

/// An order to place: valid lines whose totals are known not to overflow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    currency: Currency,
    items: Vec<OrderItem>,
    total: Money,
}

impl NewOrder {
    /// Checks the lines (1 to [`MAX_ITEMS`], each priced at most [`MAX_UNIT_PRICE_CENTS`])
    /// and computes the line totals and the total, which those limits keep within `i64`.
    pub fn new(currency: Currency, lines: Vec<(Sku, Quantity, Money)>) -> Result<Self, OrderError> {
        if lines.is_empty() || lines.len() > MAX_ITEMS {
            return Err(OrderError::Invalid {
                field: "items".to_owned(),
                message: format!("must have between 1 and {MAX_ITEMS} items"),
            });
        }
        let mut total = Money::ZERO;
        let mut items = Vec::with_capacity(lines.len());
        for (index, (sku, quantity, unit_price)) in lines.into_iter().enumerate() {
            if unit_price.cents() > MAX_UNIT_PRICE_CENTS {
                return Err(OrderError::Invalid {
                    field: format!("items[{index}].unit_price_cents"),
                    message: format!("must be at most {MAX_UNIT_PRICE_CENTS}"),
                });
            }
            let line_total = unit_price
                .times(quantity)
                .ok_or_else(|| too_large(format!("items[{index}].line_total_cents")))?;
            total = total
                .plus(line_total)
                .ok_or_else(|| too_large("total_cents".to_owned()))?;
            items.push(OrderItem {
                sku,
                quantity,
                unit_price,
                line_total,
            });
        }
        Ok(Self {
            currency,
            items,
            total,
        })
    }

    /// Its currency.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// Its lines, in the order given.
    pub fn items(&self) -> &[OrderItem] {
        &self.items
    }

    /// The sum of the line totals.
    pub fn total(&self) -> Money {
        self.total
    }
}

fn too_large(field: String) -> OrderError {
    OrderError::Invalid {
        field,
        message: format!(
            "the amount exceeds the largest supported, {} minor units",
            i64::MAX
        ),
    }
}

/// A stored order (serialised only to be cached).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// Its id (UUIDv7, so ids sort by creation).
    pub id: Uuid,
    /// Who placed it.
    pub user_id: Uuid,
    /// Where it is in its life.
    pub status: OrderStatus,
    /// The currency of every amount.
    pub currency: Currency,
    /// Its lines.
    pub items: Vec<OrderItem>,
    /// The sum of the line totals.
    pub total: Money,
    /// Bumped by every change; a change made against an older version is refused.
    pub version: i32,
    /// When it was placed.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(price: i64, quantity: u64) -> (Sku, Quantity, Money) {
        (
            Sku::parse("SKU-1").unwrap(),
            Quantity::new(quantity).unwrap(),
            Money::new(price).unwrap(),
        )
    }

    fn eur() -> Currency {
        Currency::parse("EUR").unwrap()
    }

    #[test]
    fn totals_are_the_sums_of_the_lines() {
        let order = NewOrder::new(eur(), vec![line(250, 4), line(1, 3), line(0, 1)]).unwrap();
        let totals: Vec<i64> = order.items().iter().map(|i| i.line_total.cents()).collect();
        assert_eq!(totals, [1000, 3, 0]);
        assert_eq!(order.total().cents(), 1003);
    }

    #[test]
    fn an_order_has_one_to_a_hundred_lines() {
        assert!(NewOrder::new(eur(), vec![]).is_err());
        assert!(NewOrder::new(eur(), vec![line(1, 1); 100]).is_ok());
        let error = NewOrder::new(eur(), vec![line(1, 1); 101]).unwrap_err();
        assert!(matches!(error, OrderError::Invalid { ref field, .. } if field == "items"));
    }

    #[test]
    fn a_price_above_the_highest_names_its_line() {
        let error =
            NewOrder::new(eur(), vec![line(1, 1), line(MAX_UNIT_PRICE_CENTS + 1, 2)]).unwrap_err();
        assert!(
            matches!(error, OrderError::Invalid { ref field, .. } if field == "items[1].unit_price_cents")
        );
        let error = NewOrder::new(eur(), vec![line(i64::MAX, 1)]).unwrap_err();
        assert!(
            matches!(error, OrderError::Invalid { ref field, .. } if field == "items[0].unit_price_cents")
        );
    }

    #[test]
    fn the_largest_order_allowed_has_an_exact_total() {
        let lines = vec![line(MAX_UNIT_PRICE_CENTS, Quantity::MAX.into()); MAX_ITEMS];
        let order = NewOrder::new(eur(), lines).unwrap();
        assert_eq!(
            i128::from(order.total().cents()),
            MAX_ITEMS as i128 * i128::from(Quantity::MAX) * i128::from(MAX_UNIT_PRICE_CENTS)
        );
    }

    #[test]
    fn the_lifecycle_allows_exactly_its_arrows() {
        use OrderStatus::*;
        use Transition::*;
        assert_eq!(Pending.apply(Confirm), Ok(Confirmed));
        assert_eq!(Pending.apply(Cancel), Ok(Cancelled));
        assert_eq!(Confirmed.apply(Cancel), Ok(Cancelled));
        for (from, to) in [
            (Confirmed, Confirm),
            (Cancelled, Confirm),
            (Cancelled, Cancel),
        ] {
            assert_eq!(from.apply(to), Err(OrderError::Transition { from, to }));
        }
    }

    #[test]
    fn statuses_round_trip_their_names() {
        for status in OrderStatus::ALL {
            assert_eq!(status.as_str().parse::<OrderStatus>(), Ok(status));
        }
        assert!("PENDING".parse::<OrderStatus>().is_err());
    }
}
