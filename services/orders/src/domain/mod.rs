//! Orders and the rules they follow. No I/O.

mod idempotency;
mod order;
mod values;

pub use idempotency::{Fingerprint, IdempotencyKey};
pub use order::{
    MAX_ITEMS, MAX_UNIT_PRICE_CENTS, NewOrder, Order, OrderError, OrderItem, OrderStatus,
    Transition,
};
pub use values::{Currency, Money, Quantity, Sku};
