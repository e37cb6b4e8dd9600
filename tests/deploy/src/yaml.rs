//! Reading YAML documents and walking them.

use serde::Deserialize;
use serde_norway::Value;

/// Every document of `text`, with `<<` merge keys applied.
pub fn documents(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|document| {
            let mut value =
                Value::deserialize(document).unwrap_or_else(|error| panic!("not YAML: {error}"));
            value
                .apply_merge()
                .unwrap_or_else(|error| panic!("bad merge key: {error}"));
            value
        })
        .filter(|value| !value.is_null())
        .collect()
}

/// The value at `path` (mapping keys; list indexes as numbers).
pub fn at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(value, |value, key| match value {
        Value::Sequence(items) => items.get(key.parse::<usize>().ok()?),
        _ => value.get(*key),
    })
}

/// A scalar as text: strings, numbers and booleans alike.
pub fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

/// The text at `path`.
pub fn text_at(value: &Value, path: &[&str]) -> Option<String> {
    at(value, path).and_then(text)
}

/// The items of the list at `path`; none when absent.
pub fn list<'a>(value: &'a Value, path: &[&str]) -> &'a [Value] {
    at(value, path)
        .and_then(Value::as_sequence)
        .map_or(&[], Vec::as_slice)
}

/// The string entries of the mapping at `path`.
pub fn string_map(value: &Value, path: &[&str]) -> Vec<(String, String)> {
    at(value, path)
        .and_then(Value::as_mapping)
        .map(|mapping| {
            mapping
                .iter()
                .filter_map(|(key, value)| Some((text(key)?, text(value)?)))
                .collect()
        })
        .unwrap_or_default()
}
