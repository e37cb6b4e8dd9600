//! Reading `/metrics`: fetching it, reading a counter, and checking the text exposition
//! format (version 0.0.4).

/// The `/metrics` text of the service whose REST side is at `http` (`http://127.0.0.1:<port>`).
pub async fn scrape(http: &str) -> String {
    crate::get(format!("{http}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of counter `name` in the exposition `text` over the series with all of
/// `labels` (`r#"result="hit""#`), summed; 0 when there is none.
pub fn counter(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(name) && labels.iter().all(|l| line.contains(l)))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Checks `text` line by line: `# HELP`/`# TYPE` comments, and samples of the form
/// `name{label="value",...} number`. Returns the first offending line.
pub fn validate(text: &str) -> Result<(), String> {
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("the exposition must end with a newline".to_owned());
    }
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        let valid = if let Some(comment) = line.strip_prefix("# ") {
            validate_comment(comment)
        } else {
            validate_sample(line)
        };
        if !valid {
            return Err(format!("invalid line: {line:?}"));
        }
    }
    Ok(())
}

fn validate_comment(comment: &str) -> bool {
    let mut parts = comment.splitn(3, ' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("HELP"), Some(name), _) => is_metric_name(name),
        (Some("TYPE"), Some(name), Some(kind)) => {
            is_metric_name(name)
                && ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind)
        }
        _ => true, // other comments are allowed
    }
}

fn validate_sample(line: &str) -> bool {
    let (series, value) = match line.rsplit_once(' ') {
        Some(split) => split,
        None => return false,
    };
    let value_ok = value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value);
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => match rest.strip_suffix('}') {
            Some(labels) => (name, Some(labels)),
            None => return false,
        },
        None => (series, None),
    };
    value_ok && is_metric_name(name) && labels.is_none_or(validate_labels)
}

fn validate_labels(labels: &str) -> bool {
    let mut rest = labels;
    while !rest.is_empty() {
        let Some((name, after)) = rest.split_once("=\"") else {
            return false;
        };
        if !is_label_name(name) {
            return false;
        }
        // Find the closing quote, skipping escaped characters.
        let mut chars = after.char_indices();
        let mut end = None;
        while let Some((index, c)) = chars.next() {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => {
                    end = Some(index);
                    break;
                }
                _ => {}
            }
        }
        let Some(end) = end else { return false };
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    true
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::validate;

    #[test]
    fn accepts_well_formed_text() {
        let text = "# HELP up 1 when up.\n# TYPE up gauge\nup 1\n\
                    http_requests_total{method=\"GET\",route=\"/a/{id}\",status=\"200\"} 3\n\
                    latency_bucket{le=\"+Inf\"} 4\n";
        assert_eq!(validate(text), Ok(()));
    }

    #[test]
    fn rejects_malformed_lines() {
        assert!(validate("up\n").is_err());
        assert!(validate("up one\n").is_err());
        assert!(validate("up{a=\"b\" 1\n").is_err());
        assert!(validate("9up 1\n").is_err());
        assert!(validate("# TYPE up gauges\n").is_err());
        assert!(validate("up 1").is_err());
    }
}
