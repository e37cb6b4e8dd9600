use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Invalid;

/// The name a user shows to others: trimmed, 1 to 64 characters, printable.
///
/// Control characters and the invisible formatting ones (zero-width spaces, bidirectional
/// overrides) are refused: they make names that look alike but differ, or that reorder the
/// text around them where the name is displayed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DisplayName(String);

impl DisplayName {
    /// Most characters (Unicode scalar values) a name may have.
    pub const MAX_CHARS: usize = 64;

    /// Parses a display name.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let name = raw.trim();
        if name.is_empty() {
            return Err(Invalid::new("must not be empty"));
        }
        if name.chars().count() > Self::MAX_CHARS {
            return Err(Invalid::new(format!(
                "must be at most {} characters long",
                Self::MAX_CHARS
            )));
        }
        if name
            .chars()
            .any(|c| c.is_control() || is_invisible_format(c))
        {
            return Err(Invalid::new(
                "must not contain control or invisible characters",
            ));
        }
        Ok(Self(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Unicode format characters (category Cf) that render as nothing or reorder text.
fn is_invisible_format(c: char) -> bool {
    matches!(c,
        '\u{00AD}'
        | '\u{061C}'
        | '\u{180E}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{206F}'
        | '\u{FEFF}'
        | '\u{FFF9}'..='\u{FFFB}'
    )
}

impl TryFrom<String> for DisplayName {
    type Error = Invalid;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<DisplayName> for String {
    fn from(name: DisplayName) -> Self {
        name.0
    }
}

impl fmt::Display for DisplayName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn names_are_trimmed() {
        assert_eq!(DisplayName::parse("  Ada  ").unwrap().as_str(), "Ada");
    }

    #[test]
    fn names_in_any_script_are_accepted() {
        for raw in [
            "Ada Lovelace",
            "Zoë",
            "李小龍",
            "O'Brien-Smith",
            "🦀 Ferris",
        ] {
            assert!(DisplayName::parse(raw).is_ok(), "{raw}");
        }
    }

    #[test]
    fn empty_long_control_and_invisible_names_are_refused() {
        let long = "x".repeat(DisplayName::MAX_CHARS + 1);
        for raw in [
            "",
            "   ",
            &long,
            "line\nbreak",
            "tab\there",
            "a\u{200B}b",
            "evil\u{202E}txt",
        ] {
            assert!(DisplayName::parse(raw).is_err(), "{raw:?} was accepted");
        }
    }

    #[test]
    fn the_limit_counts_characters_not_bytes() {
        assert!(DisplayName::parse(&"é".repeat(DisplayName::MAX_CHARS)).is_ok());
    }

    proptest! {
        #[test]
        fn accepted_names_are_within_bounds(raw in "\\PC{0,100}") {
            if let Ok(name) = DisplayName::parse(&raw) {
                let length = name.as_str().chars().count();
                prop_assert!((1..=DisplayName::MAX_CHARS).contains(&length));
                prop_assert_eq!(name.as_str().trim(), name.as_str());
            }
        }
    }
}
