//! The values an order is made of, each valid by construction.

use std::fmt;

use serde::{Deserialize, Serialize};
use tessera_domain::Invalid;

/// An article's stock-keeping unit: 1 to 64 of `A–Z a–z 0–9 . _ -`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sku(String);

impl Sku {
    /// Longest SKU.
    pub const MAX_LEN: usize = 64;

    /// Parses a SKU, as given (no trimming or case folding: SKUs are codes).
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if raw.is_empty() || raw.len() > Self::MAX_LEN {
            return Err(Invalid(format!(
                "must be 1 to {} characters long",
                Self::MAX_LEN
            )));
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(Invalid(
                "may contain only letters, digits, '.', '_' and '-'".to_owned(),
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Sku {
    type Error = Invalid;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<Sku> for String {
    fn from(sku: Sku) -> Self {
        sku.0
    }
}

/// How many of an article: 1 to 10,000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u32")]
pub struct Quantity(u32);

impl Quantity {
    /// The most one line may order.
    pub const MAX: u32 = 10_000;

    /// A quantity, if it is within 1..=10,000.
    pub fn new(quantity: u64) -> Result<Self, Invalid> {
        match u32::try_from(quantity) {
            Ok(q) if (1..=Self::MAX).contains(&q) => Ok(Self(q)),
            _ => Err(Invalid(format!("must be between 1 and {}", Self::MAX))),
        }
    }

    /// The number.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u64> for Quantity {
    type Error = Invalid;

    fn try_from(quantity: u64) -> Result<Self, Self::Error> {
        Self::new(quantity)
    }
}

impl From<Quantity> for u32 {
    fn from(quantity: Quantity) -> Self {
        quantity.0
    }
}

/// An amount in minor units of a currency (cents): never negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Money(i64);

impl Money {
    /// Nothing.
    pub const ZERO: Self = Self(0);

    /// An amount, if it is not negative.
    pub fn new(cents: i64) -> Result<Self, Invalid> {
        if cents < 0 {
            return Err(Invalid("must not be negative".to_owned()));
        }
        Ok(Self(cents))
    }

    /// The amount in minor units.
    pub fn cents(self) -> i64 {
        self.0
    }

    /// `self × quantity`, or `None` past `i64::MAX`.
    pub fn times(self, quantity: Quantity) -> Option<Self> {
        self.0.checked_mul(i64::from(quantity.get())).map(Self)
    }

    /// `self + other`, or `None` past `i64::MAX`.
    pub fn plus(self, other: Self) -> Option<Self> {
        self.0.checked_add(other.0).map(Self)
    }
}

impl TryFrom<i64> for Money {
    type Error = Invalid;

    fn try_from(cents: i64) -> Result<Self, Self::Error> {
        Self::new(cents)
    }
}

impl From<Money> for i64 {
    fn from(money: Money) -> Self {
        money.0
    }
}

/// An ISO 4217 alphabetic code of a real currency, upper case (`EUR`).
///
/// `XXX` (no currency) and `XTS` (reserved for testing) are on the list but are no currency
/// an order can be paid in, so they are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency(iso_currency::Currency);

impl Currency {
    /// Parses an alphabetic code; it must be upper case, as ISO 4217 writes it.
    pub fn parse(code: &str) -> Result<Self, Invalid> {
        match iso_currency::Currency::from_code(code) {
            Some(currency) if !Self::is_no_currency(code) => Ok(Self(currency)),
            _ => Err(Invalid(
                "must be an ISO 4217 currency code in upper case, such as EUR".to_owned(),
            )),
        }
    }

    /// Every currency an order can be in, in the list's order.
    pub fn all() -> impl Iterator<Item = Self> {
        use iso_currency::IntoEnumIterator;
        iso_currency::Currency::iter()
            .filter(|currency| !Self::is_no_currency(currency.code()))
            .map(Self)
    }

    /// `XXX` and `XTS`: codes on the list that name no currency.
    fn is_no_currency(code: &str) -> bool {
        matches!(code, "XXX" | "XTS")
    }

    /// The three-letter code.
    pub fn code(self) -> &'static str {
        self.0.code()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl TryFrom<String> for Currency {
    type Error = Invalid;

    fn try_from(code: String) -> Result<Self, Self::Error> {
        Self::parse(&code)
    }
}

impl From<Currency> for String {
    fn from(currency: Currency) -> Self {
        currency.code().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn skus_are_short_codes_of_a_safe_alphabet() {
        for good in ["A", "abc-123_X.9", &"a".repeat(64)] {
            assert!(Sku::parse(good).is_ok(), "{good:?} refused");
        }
        for bad in ["", &"a".repeat(65), "a b", "ä", "a/b", "a\n", "<script>"] {
            assert!(Sku::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn quantities_run_from_one_to_ten_thousand() {
        assert!(Quantity::new(0).is_err());
        assert!(Quantity::new(10_001).is_err());
        assert!(Quantity::new(u64::MAX).is_err());
        assert_eq!(Quantity::new(1).unwrap().get(), 1);
        assert_eq!(Quantity::new(10_000).unwrap().get(), 10_000);
    }

    #[test]
    fn money_is_never_negative() {
        assert!(Money::new(-1).is_err());
        assert_eq!(Money::new(0).unwrap(), Money::ZERO);
        assert_eq!(Money::new(i64::MAX).unwrap().cents(), i64::MAX);
    }

    #[test]
    fn currencies_are_real_upper_case_iso_codes() {
        for good in ["EUR", "USD", "JPY", "CHF"] {
            assert_eq!(Currency::parse(good).unwrap().code(), good);
        }
        for bad in ["eur", "Eur", "XXY", "EU", "EURO", "", "XXX", "XTS", " EUR"] {
            assert!(Currency::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn the_list_of_all_is_exactly_what_parses() {
        let all: Vec<_> = Currency::all().map(Currency::code).collect();
        assert!(all.len() > 150, "{all:?}");
        assert!(all.contains(&"EUR") && !all.contains(&"XXX") && !all.contains(&"XTS"));
        for code in &all {
            assert_eq!(Currency::parse(code).unwrap().code(), *code);
        }
        for first in 'A'..='Z' {
            for second in 'A'..='Z' {
                for third in 'A'..='Z' {
                    let code = format!("{first}{second}{third}");
                    assert_eq!(
                        Currency::parse(&code).is_ok(),
                        all.contains(&code.as_str()),
                        "{code}"
                    );
                }
            }
        }
    }

    #[test]
    fn arithmetic_past_the_range_is_none_not_wrapped() {
        let max = Money::new(i64::MAX).unwrap();
        assert_eq!(max.times(Quantity::new(2).unwrap()), None);
        assert_eq!(max.plus(Money::new(1).unwrap()), None);
        assert_eq!(
            Money::new(250).unwrap().times(Quantity::new(4).unwrap()),
            Some(Money::new(1000).unwrap())
        );
    }

    proptest! {
        #[test]
        fn a_line_total_is_exact_or_refused(price in 0i64..=i64::MAX, quantity in 1u64..=10_000) {
            let quantity = Quantity::new(quantity).unwrap();
            let total = Money::new(price).unwrap().times(quantity);
            let exact = i128::from(price) * i128::from(quantity.get());
            match total {
                Some(total) => prop_assert_eq!(i128::from(total.cents()), exact),
                None => prop_assert!(exact > i128::from(i64::MAX)),
            }
        }

        #[test]
        fn any_string_parses_as_a_sku_only_if_it_is_one(raw in "\\PC{0,70}") {
            let valid = !raw.is_empty()
                && raw.len() <= 64
                && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            prop_assert_eq!(Sku::parse(&raw).is_ok(), valid);
        }
    }
}
