//! The passwords breach corpora show most often (`data/common-passwords.txt`, 30,000 of
//! them, see `data/README.md`), and the few ways people dress one up: in any case, with
//! digits or symbols after it, or typed twice. The list is searched in place, bisecting
//! its sorted lines: nothing is loaded or allocated, and a check touches a dozen pages.

/// One password per line, lowercased, sorted by bytes.
const LIST: &str = include_str!("../../data/common-passwords.txt");

/// Fewest characters a word left after taking a password apart must have to count: a
/// stem of one or two letters is no password.
const MIN_STEM: usize = 4;

/// Whether `password` is one of the list, or one of them with digits or symbols appended
/// or repeated whole (`Password2024!`, `dragondragon`).
pub fn is_common(password: &str) -> bool {
    let lower = password.to_lowercase();
    let stem = lower.trim_end_matches(|c: char| !c.is_alphabetic());
    let half = halves(&lower);
    listed(&lower)
        || (stem.chars().count() >= MIN_STEM && listed(stem))
        || half.is_some_and(|half| half.chars().count() >= MIN_STEM && listed(half))
}

/// `word` when `text` is `word` twice.
fn halves(text: &str) -> Option<&str> {
    let middle = text.len() / 2;
    let (first, second) = text.split_at_checked(middle)?;
    (text.len().is_multiple_of(2) && first == second).then_some(first)
}

/// Whether `word` is a line of [`LIST`].
fn listed(word: &str) -> bool {
    bisect(LIST, word)
}

/// Whether `word` is a line of `sorted` (lines in byte order), by bisection over its bytes:
/// each step takes the line around the middle of the range still in question.
fn bisect(sorted: &str, word: &str) -> bool {
    let bytes = sorted.as_bytes();
    let (mut low, mut high) = (0, bytes.len());
    while low < high {
        let middle = low + (high - low) / 2;
        let start = bytes[low..middle]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(low, |at| low + at + 1);
        let end = bytes[middle..high]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(high, |at| middle + at);
        match sorted[start..end].cmp(word) {
            std::cmp::Ordering::Equal => return true,
            std::cmp::Ordering::Less => low = end + 1,
            std::cmp::Ordering::Greater => high = start,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_sorted_unique_lowercase_and_tens_of_thousands_long() {
        let lines: Vec<&str> = LIST.lines().collect();
        assert!(lines.len() >= 30_000, "{}", lines.len());
        assert!(
            lines.windows(2).all(|pair| pair[0] < pair[1]),
            "sorted, no repeats"
        );
        assert!(
            lines
                .iter()
                .all(|line| !line.is_empty() && line.to_lowercase() == *line)
        );
    }

    #[test]
    fn bisection_finds_every_line_and_nothing_else() {
        assert!(LIST.lines().all(listed));
        for absent in [
            "",
            "correct horse battery staple",
            "zzzzzzzzzzzzzzzzzz",
            "!",
            "\u{10ffff}",
        ] {
            assert!(!listed(absent), "{absent:?}");
        }
        // Between neighbours, before the first and after the last line.
        assert!(!bisect("b\nd\nf\n", "a"));
        assert!(!bisect("b\nd\nf\n", "c"));
        assert!(!bisect("b\nd\nf\n", "g"));
        assert!(bisect("b\nd\nf\n", "f") && bisect("b\nd\nf", "f") && bisect("b", "b"));
        assert!(!bisect("", "a"));
    }

    #[test]
    fn common_passwords_are_known_however_dressed_up() {
        for common in [
            "baseball",
            "BaseBall",
            "password1234",
            "Sunshine2024!",
            "iloveyou!!!!",
            "dragondragon",
            "TrustNo1TrustNo1",
            "qwerty123456",
        ] {
            assert!(is_common(common), "{common}");
        }
        for uncommon in [
            "correct horse battery staple",
            "Tr0ub4dor&3 zebra",
            "ab123456789012",
            "xyxy",
            "",
        ] {
            assert!(!is_common(uncommon), "{uncommon}");
        }
    }
}
