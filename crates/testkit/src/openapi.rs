//! A service's operations as its `/openapi.json` describes them, so tests can sweep every
//! route (every secured one, every one that takes a body) and a route added later is swept
//! too, without anyone updating a list.

use serde_json::Value;

/// One operation of an OpenAPI document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// `GET`, `POST`, ... (upper case).
    pub method: reqwest::Method,
    /// The path template, e.g. `/api/v1/users/{id}`.
    pub path: String,
    /// Whether a caller must present credentials: it has a security requirement and none of
    /// its alternatives is the empty (anonymous) one.
    pub secured: bool,
    /// Whether it takes a request body.
    pub has_body: bool,
    /// The names of its required header parameters, e.g. `Idempotency-Key`.
    pub required_headers: Vec<String>,
}

impl Operation {
    /// `"POST /api/v1/orders"`, for messages.
    pub fn name(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    /// The path with each `{param}` replaced by `value(param)`.
    pub fn path_with(&self, value: impl Fn(&str) -> String) -> String {
        let mut path = String::with_capacity(self.path.len());
        let mut rest = self.path.as_str();
        while let Some((before, after)) = rest.split_once('{') {
            let (param, after) = after
                .split_once('}')
                .unwrap_or_else(|| panic!("unbalanced braces in {}", self.path));
            path.push_str(before);
            path.push_str(&value(param));
            rest = after;
        }
        path.push_str(rest);
        path
    }

    /// The names of its path parameters, in order.
    pub fn path_params(&self) -> Vec<&str> {
        self.path
            .split('{')
            .skip(1)
            .filter_map(|part| part.split_once('}').map(|(param, _)| param))
            .collect()
    }
}

/// The document served at `<http>/openapi.json` (`http` as in `http://127.0.0.1:<port>`).
pub async fn fetch(http: &str) -> Value {
    let response = crate::get(format!("{http}/openapi.json")).await.unwrap();
    assert_eq!(
        response.status(),
        reqwest::StatusCode::OK,
        "{http}/openapi.json"
    );
    response.json().await.unwrap()
}

/// The operations of the document at `<http>/openapi.json`.
pub async fn operations_of(http: &str) -> Vec<Operation> {
    operations(&fetch(http).await)
}

/// Every operation of `document`, in path order.
pub fn operations(document: &Value) -> Vec<Operation> {
    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    let default_security = document.get("security");
    let mut found = Vec::new();
    let Some(paths) = document["paths"].as_object() else {
        return found;
    };
    let mut paths: Vec<(&String, &Value)> = paths.iter().collect();
    paths.sort_by_key(|(path, _)| *path);
    for (path, item) in paths {
        for method in METHODS {
            let Some(operation) = item.get(method) else {
                continue;
            };
            let security = operation.get("security").or(default_security);
            found.push(Operation {
                method: method.to_uppercase().parse().unwrap(),
                path: path.clone(),
                secured: is_secured(security),
                has_body: operation.get("requestBody").is_some(),
                required_headers: required_headers(item, operation),
            });
        }
    }
    found
}

/// Whether a `security` list demands credentials: it is non-empty and no alternative in it is
/// `{}`, which would let an anonymous caller through.
fn is_secured(security: Option<&Value>) -> bool {
    let Some(alternatives) = security.and_then(Value::as_array) else {
        return false;
    };
    !alternatives.is_empty()
        && alternatives
            .iter()
            .all(|requirement| requirement.as_object().is_some_and(|r| !r.is_empty()))
}

/// The required header parameters, of the path item and of the operation.
fn required_headers(item: &Value, operation: &Value) -> Vec<String> {
    [item.get("parameters"), operation.get("parameters")]
        .into_iter()
        .flatten()
        .filter_map(Value::as_array)
        .flatten()
        .filter(|param| param["in"] == "header" && param["required"] == true)
        .filter_map(|param| param["name"].as_str().map(str::to_owned))
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn security_parameters_and_bodies_are_read_per_operation() {
        let document = json!({
            "paths": {
                "/things/{id}/parts/{part}": {
                    "get": { "security": [{ "bearer": [] }] },
                    "post": {
                        "security": [{ "bearer": [] }, {}],
                        "requestBody": { "content": {} },
                        "parameters": [
                            { "name": "Key", "in": "header", "required": true },
                            { "name": "Hint", "in": "header", "required": false },
                            { "name": "id", "in": "path", "required": true }
                        ]
                    }
                },
                "/open": { "get": {} }
            }
        });

        let operations = operations(&document);

        let names: Vec<String> = operations.iter().map(Operation::name).collect();
        assert_eq!(
            names,
            [
                "GET /open",
                "GET /things/{id}/parts/{part}",
                "POST /things/{id}/parts/{part}"
            ]
        );
        assert!(!operations[0].secured);
        assert!(operations[1].secured && !operations[1].has_body);
        assert!(!operations[2].secured, "anonymous is one alternative");
        assert!(operations[2].has_body);
        assert_eq!(operations[2].required_headers, ["Key"]);
        assert_eq!(operations[1].path_params(), ["id", "part"]);
        assert_eq!(
            operations[1].path_with(|param| format!("<{param}>")),
            "/things/<id>/parts/<part>"
        );
    }

    #[test]
    fn a_document_wide_requirement_applies_where_an_operation_sets_none() {
        let document = json!({
            "security": [{ "bearer": [] }],
            "paths": {
                "/a": { "get": {} },
                "/b": { "get": { "security": [] } }
            }
        });
        let secured: Vec<bool> = operations(&document).iter().map(|o| o.secured).collect();
        assert_eq!(secured, [true, false]);
    }
}
