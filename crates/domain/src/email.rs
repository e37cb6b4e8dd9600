use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Invalid;

/// An email address, trimmed and lower-cased, so two spellings of one address are equal.
///
/// The check is deliberately practical rather than RFC 5322 complete: one `@`, a local part
/// of at most 64 bytes without spaces or quotes, and a domain of dot-separated labels. That
/// accepts every address a mail provider hands out and refuses what is surely a typo.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

impl Email {
    /// Longest address SMTP can carry (RFC 5321: a 256-octet path minus the angle brackets).
    pub const MAX_LEN: usize = 254;

    /// Parses and normalises an address.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let email = raw.trim().to_lowercase();
        if email.is_empty() {
            return Err(Invalid::new("must not be empty"));
        }
        if email.len() > Self::MAX_LEN {
            return Err(Invalid::new(format!(
                "must be at most {} bytes long",
                Self::MAX_LEN
            )));
        }
        let Some((local, domain)) = email.rsplit_once('@') else {
            return Err(Invalid::new("must contain an @"));
        };
        check_local(local)?;
        check_domain(domain)?;
        Ok(Self(email))
    }

    /// The normalised address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn check_local(local: &str) -> Result<(), Invalid> {
    if local.is_empty() || local.len() > 64 {
        return Err(Invalid::new("the part before @ must be 1 to 64 bytes long"));
    }
    if local.chars().any(|c| {
        c.is_whitespace() || c.is_control() || matches!(c, '@' | '"' | '<' | '>' | ',' | ';' | '\\')
    }) {
        return Err(Invalid::new(
            "the part before @ holds a character an address cannot",
        ));
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err(Invalid::new("the part before @ has a misplaced dot"));
    }
    Ok(())
}

fn check_domain(domain: &str) -> Result<(), Invalid> {
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return Err(Invalid::new("the domain must contain a dot"));
    }
    let label_ok = |label: &&str| {
        !label.is_empty()
            && label.chars().count() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_alphanumeric() || c == '-')
    };
    if !labels.iter().all(label_ok) {
        return Err(Invalid::new("the domain is not a valid host name"));
    }
    Ok(())
}

impl TryFrom<String> for Email {
    type Error = Invalid;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<Email> for String {
    fn from(email: Email) -> Self {
        email.0
    }
}

impl AsRef<str> for Email {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn addresses_are_trimmed_and_lower_cased() {
        let email = Email::parse("  Ada.Lovelace@Example.ORG ").unwrap();
        assert_eq!(email.as_str(), "ada.lovelace@example.org");
    }

    #[test]
    fn ordinary_addresses_are_accepted() {
        for raw in [
            "a@b.co",
            "first.last+tag@sub.example.com",
            "o'brien@example.ie",
            "user@xn--bcher-kva.example",
            "jürgen@bücher.de",
        ] {
            assert!(Email::parse(raw).is_ok(), "{raw}");
        }
    }

    #[test]
    fn malformed_addresses_are_refused() {
        for raw in [
            "",
            "   ",
            "plainaddress",
            "@example.com",
            "user@",
            "user@localhost",
            "user@exa mple.com",
            "us er@example.com",
            ".user@example.com",
            "user.@example.com",
            "us..er@example.com",
            "user@-example.com",
            "user@example..com",
            "\"quoted\"@example.com",
            "a@b@example.com",
        ] {
            assert!(Email::parse(raw).is_err(), "{raw:?} was accepted");
        }
    }

    #[test]
    fn overlong_addresses_are_refused() {
        let local = "a".repeat(65);
        assert!(Email::parse(&format!("{local}@example.com")).is_err());
        let domain = format!("{}.com", "a".repeat(250));
        assert!(Email::parse(&format!("a@{domain}")).is_err());
    }

    #[test]
    fn serde_goes_through_parse() {
        let email: Email = serde_json::from_str("\"A@B.CO\"").unwrap();
        assert_eq!(email.as_str(), "a@b.co");
        let refused = serde_json::from_str::<Email>("\"nope\"").unwrap_err();
        assert!(refused.to_string().contains("must contain an @"));
    }

    proptest! {
        #[test]
        fn parsing_never_panics_and_is_idempotent(raw in "\\PC{0,80}") {
            if let Ok(email) = Email::parse(&raw) {
                prop_assert_eq!(Email::parse(email.as_str()).unwrap(), email.clone());
                prop_assert!(email.as_str().len() <= Email::MAX_LEN);
            }
        }
    }
}
