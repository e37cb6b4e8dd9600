//! What makes a retried order the same order: the client's key and the request's fingerprint.

use sha2::{Digest, Sha256};
use tessera_domain::Invalid;

use super::NewOrder;

/// The client's `Idempotency-Key`: 1 to 255 visible ASCII characters. Keys are scoped to
/// the user who sends them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Longest key.
    pub const MAX_LEN: usize = 255;

    /// Parses a key as sent.
    pub fn parse(raw: &[u8]) -> Result<Self, Invalid> {
        if raw.is_empty() || raw.len() > Self::MAX_LEN {
            return Err(Invalid(format!(
                "must be 1 to {} characters long",
                Self::MAX_LEN
            )));
        }
        if !raw.iter().all(u8::is_ascii_graphic) {
            return Err(Invalid(
                "may contain only visible ASCII characters, without spaces".to_owned(),
            ));
        }
        Ok(Self(String::from_utf8_lossy(raw).into_owned()))
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// SHA-256 of an order request as parsed, so the same order sent with other whitespace or
/// field order is recognised, and a different one under the same key is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of `order`.
    pub fn of(order: &NewOrder) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(order.currency().code());
        for item in order.items() {
            // SKUs cannot contain ':' or ';', so the encoding is unambiguous.
            hasher.update(format!(
                ";{}:{}:{}",
                item.sku.as_str(),
                item.quantity.get(),
                item.unit_price.cents()
            ));
        }
        Self(hasher.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Currency, Money, Quantity, Sku};

    fn order(currency: &str, lines: &[(&str, u64, i64)]) -> NewOrder {
        let lines = lines
            .iter()
            .map(|(sku, quantity, price)| {
                (
                    Sku::parse(sku).unwrap(),
                    Quantity::new(*quantity).unwrap(),
                    Money::new(*price).unwrap(),
                )
            })
            .collect();
        NewOrder::new(Currency::parse(currency).unwrap(), lines).unwrap()
    }

    #[test]
    fn keys_are_visible_ascii_of_bounded_length() {
        for good in [&b"a"[..], b"3f2c-99_x/=+", &[b'k'; 255]] {
            assert!(IdempotencyKey::parse(good).is_ok());
        }
        for bad in [
            &b""[..],
            &[b'k'; 256],
            b"with space",
            b"tab\t",
            "é".as_bytes(),
            b"\x7f",
        ] {
            assert!(IdempotencyKey::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn the_fingerprint_tells_orders_apart_and_only_them() {
        let one = order("EUR", &[("A", 1, 100), ("B", 2, 5)]);
        assert_eq!(Fingerprint::of(&one), Fingerprint::of(&one.clone()));
        for other in [
            order("USD", &[("A", 1, 100), ("B", 2, 5)]),
            order("EUR", &[("B", 2, 5), ("A", 1, 100)]),
            order("EUR", &[("A", 1, 100), ("B", 2, 6)]),
            order("EUR", &[("A", 1, 100)]),
        ] {
            assert_ne!(Fingerprint::of(&one), Fingerprint::of(&other));
        }
    }
}
