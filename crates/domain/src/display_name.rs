use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{Object, ObjectBuilder, Type};

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
    /// Most characters (Unicode scalar values) a name may have, counted before trimming.
    pub const MAX_CHARS: usize = 64;

    /// Parses a display name: at most [`Self::MAX_CHARS`] characters, none of them control
    /// or invisible, at least one of them not a space; kept without surrounding spaces.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if raw.chars().count() > Self::MAX_CHARS {
            return Err(Invalid::new(format!(
                "must be at most {} characters long",
                Self::MAX_CHARS
            )));
        }
        if raw.chars().any(|c| in_ranges(c, FORBIDDEN)) {
            return Err(Invalid::new(
                "must not contain control or invisible characters",
            ));
        }
        let name = raw.trim();
        if name.is_empty() {
            return Err(Invalid::new("must not be empty"));
        }
        Ok(Self(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Its schema in the API documents, every rule of [`DisplayName::parse`] included:
    /// `#[schema(schema_with = DisplayName::schema)]`.
    pub fn schema() -> Object {
        let forbidden = class(FORBIDDEN);
        let spaces = class(SPACES);
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(Self::MAX_CHARS))
            .pattern(Some(format!(
                "^[^{forbidden}]*[^{forbidden}{spaces}][^{forbidden}]*$"
            )))
            .description(Some(
                "The name shown to others: up to 64 characters, not only spaces, with no \
                 control or invisible characters. Stored without surrounding spaces.",
            ))
            .examples(["Ada Lovelace"])
            .build()
    }
}

/// Characters a name may not hold: the control characters (category Cc, as
/// [`char::is_control`]) and the Unicode format characters (Cf) that render as nothing or
/// reorder the text around them.
const FORBIDDEN: &[(char, char)] = &[
    ('\u{0000}', '\u{001F}'),
    ('\u{007F}', '\u{009F}'),
    ('\u{00AD}', '\u{00AD}'),
    ('\u{061C}', '\u{061C}'),
    ('\u{180E}', '\u{180E}'),
    ('\u{200B}', '\u{200F}'),
    ('\u{202A}', '\u{202E}'),
    ('\u{2060}', '\u{2064}'),
    ('\u{2066}', '\u{206F}'),
    ('\u{FEFF}', '\u{FEFF}'),
    ('\u{FFF9}', '\u{FFFB}'),
];

/// The white space [`str::trim`] removes that is not already [`FORBIDDEN`].
const SPACES: &[(char, char)] = &[
    ('\u{0020}', '\u{0020}'),
    ('\u{00A0}', '\u{00A0}'),
    ('\u{1680}', '\u{1680}'),
    ('\u{2000}', '\u{200A}'),
    ('\u{2028}', '\u{2029}'),
    ('\u{202F}', '\u{202F}'),
    ('\u{205F}', '\u{205F}'),
    ('\u{3000}', '\u{3000}'),
];

fn in_ranges(c: char, ranges: &[(char, char)]) -> bool {
    ranges
        .iter()
        .any(|&(first, last)| (first..=last).contains(&c))
}

/// The inside of a regular expression character class holding `ranges`, as `\uXXXX`
/// escapes that ECMA-262 and most other dialects read alike.
fn class(ranges: &[(char, char)]) -> String {
    ranges
        .iter()
        .map(|&(first, last)| {
            if first == last {
                format!("\\u{:04X}", u32::from(first))
            } else {
                format!("\\u{:04X}-\\u{:04X}", u32::from(first), u32::from(last))
            }
        })
        .collect()
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

    #[test]
    fn the_forbidden_characters_are_the_controls_and_the_invisible_ones() {
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            if c.is_control() {
                assert!(in_ranges(c, FORBIDDEN), "{c:?}");
            }
            if c.is_whitespace() {
                assert!(in_ranges(c, FORBIDDEN) || in_ranges(c, SPACES), "{c:?}");
            }
        }
    }

    #[test]
    fn the_documented_pattern_is_the_rule_for_every_character() {
        let schema = serde_json::to_value(DisplayName::schema()).unwrap();
        let pattern = fancy_regex::Regex::new(schema["pattern"].as_str().unwrap()).unwrap();
        let documented = |raw: &str| {
            let length = raw.chars().count();
            pattern.is_match(raw).unwrap() && (1..=DisplayName::MAX_CHARS).contains(&length)
        };
        for c in (0..=0xFFFF).filter_map(char::from_u32) {
            for raw in [c.to_string(), format!("a{c}"), format!("{c} b")] {
                assert_eq!(
                    documented(&raw),
                    DisplayName::parse(&raw).is_ok(),
                    "{raw:?}"
                );
            }
        }
        for raw in [
            "",
            " ",
            "  x  ",
            &"x".repeat(64),
            &format!(" {}", "x".repeat(64)),
        ] {
            assert_eq!(documented(raw), DisplayName::parse(raw).is_ok(), "{raw:?}");
        }
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
