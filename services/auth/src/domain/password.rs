//! What a password must be: the rules for new ones, the cap on any one, and a type that
//! never prints. Hashing is elsewhere ([`crate::hashing`]); this is only the policy.

use std::collections::HashSet;
use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use tessera_domain::{Email, Invalid};

use super::common_passwords;

/// Fewest characters a new password may have.
pub const MIN_CHARS: usize = 12;
/// Most characters any password may have: longer ones are refused before hashing, so a
/// megabyte "password" costs nothing.
pub const MAX_CHARS: usize = 128;
/// Fewest distinct characters a new password must use.
const MIN_DISTINCT: usize = 5;

/// A password as the client typed it. Never printed.
#[derive(Clone)]
pub struct Password(SecretString);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(..)")
    }
}

impl Password {
    /// A password to register `email` with: 12 to 128 characters, not repetitive, not one
    /// of the most common (however dressed up), not containing the email address.
    pub fn new_for(raw: &str, email: &Email) -> Result<Self, Invalid> {
        let offered = Self::offered(raw)?;
        let chars = raw.chars().count();
        if chars < MIN_CHARS {
            return Err(Invalid(format!(
                "must have at least {MIN_CHARS} characters"
            )));
        }
        if raw.chars().collect::<HashSet<_>>().len() < MIN_DISTINCT {
            return Err(Invalid(format!(
                "must use at least {MIN_DISTINCT} different characters"
            )));
        }
        if common_passwords::is_common(raw) {
            return Err(Invalid(
                "is one of the most common passwords, or one of them dressed up".to_owned(),
            ));
        }
        if raw.to_lowercase().contains(email.as_str()) {
            return Err(Invalid("must not contain the email address".to_owned()));
        }
        Ok(offered)
    }

    /// The rule of [`Password::new_for`] a pattern can state, as an ECMA-262 regular
    /// expression for the API document: at least [`MIN_DISTINCT`] different characters.
    /// Its length limits are [`MIN_CHARS`] and [`MAX_CHARS`]; the common passwords (a
    /// corpus) and the email are beyond a pattern.
    ///
    /// Each group takes the first character not seen before it, and no repetition can back
    /// up into a seen one, so matching is linear: a validator never stalls on it.
    pub fn pattern() -> String {
        // `\1|\2|...|\n`: the characters the first `n` groups took.
        let seen = |n: usize| {
            (1..=n)
                .map(|group| format!("\\{group}"))
                .collect::<Vec<_>>()
                .join("|")
        };
        let mut distinct = String::new();
        for group in 1..=MIN_DISTINCT {
            if group > 1 {
                distinct.push_str(&format!("(?!{})", seen(group - 1)));
            }
            if group < MIN_DISTINCT {
                distinct.push_str(&format!("([\\s\\S])(?:{})*", seen(group)));
            } else {
                distinct.push_str("[\\s\\S]");
            }
        }
        format!("^{distinct}")
    }

    /// A password offered at login: only the length cap applies.
    pub fn offered(raw: &str) -> Result<Self, Invalid> {
        if raw.chars().count() > MAX_CHARS {
            return Err(Invalid(format!("must have at most {MAX_CHARS} characters")));
        }
        Ok(Self(SecretString::from(raw)))
    }

    /// The password's bytes, for hashing.
    pub(crate) fn bytes(&self) -> &[u8] {
        self.0.expose_secret().as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email() -> Email {
        Email::parse("ada@example.com").unwrap()
    }

    #[test]
    fn new_passwords_are_long_varied_uncommon_and_not_the_email() {
        assert!(Password::new_for("correct horse battery", &email()).is_ok());
        let refused = |raw: &str| Password::new_for(raw, &email()).unwrap_err().0;
        assert!(refused("short pass").contains("at least 12"));
        assert!(refused(&"x".repeat(129)).contains("at most 128"));
        assert!(refused("abababababababab").contains("different characters"));
        assert!(refused("Password1234").contains("common"));
        assert!(refused("Sunshine2024!").contains("common"));
        assert!(refused("my ADA@example.com pw").contains("email"));
    }

    #[test]
    fn the_documented_pattern_states_the_same_rules() {
        let pattern = fancy_regex::Regex::new(&Password::pattern()).unwrap();
        let email = Email::parse("someone@example.org").unwrap();
        for raw in [
            "correct horse battery",
            "abababababababab",
            "aaaabbbbccccdddd",
            "aaaabbbbccccddddE",
            "abcdabcdabcdabcd",
            "Password1234",
            "PASSWORD1234",
            "password12345x",
            "1q2w3e4r5t6y",
            "administrator",
            "ÄÖÜäöüßéèêëî",
            "ÄÄÄÄÖÖÖÖüüüüßßßß",
            "12345678901234",
        ] {
            let accepted = Password::new_for(raw, &email)
                .map_err(|refusal| refusal.0)
                .map_or_else(|refusal| refusal.contains("common"), |_| true);
            assert_eq!(pattern.is_match(raw).unwrap(), accepted, "{raw}");
        }
    }

    #[test]
    fn length_counts_characters_not_bytes() {
        assert!(Password::new_for("ÄÖÜäöüßéèêëî", &email()).is_ok());
        assert!(Password::offered(&"é".repeat(128)).is_ok());
        assert!(Password::offered(&"é".repeat(129)).is_err());
    }

    #[test]
    fn passwords_never_print() {
        let password = Password::offered("hunter2hunter2").unwrap();
        assert_eq!(format!("{password:?}"), "Password(..)");
    }
}
