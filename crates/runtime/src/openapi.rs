//! What every service's OpenAPI document shares: the bearer scheme, the answers any route
//! can give, and the `/openapi.json` route.

use axum::Router;
use axum::http::header;
use axum::routing::get;
use utoipa::Modify;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, ResponseBuilder};

/// Declares the `bearer` security scheme (a JWT access token from the auth service) that
/// operations refer to with `security(("bearer" = []))`.
pub struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut OpenApi) {
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("JWT".to_owned());
        scheme.description = Some("An access token from `POST /api/v1/auth/login`.".to_owned());
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// Adds to every operation the answers the runtime itself can give: 500, 503 (overloaded or
/// a dependency down) and 504 (the request timed out); and to every operation that takes a
/// JSON body the answers its extractor gives: 400, 413, 415 and 422. All problem+json; an
/// operation that documents one of them itself keeps its own words.
pub struct CommonResponses;

/// What any operation can answer.
const EVERY_OPERATION: &[(&str, &str)] = &[
    (
        "500",
        "An internal error; the details are in the service's logs.",
    ),
    (
        "503",
        "Overloaded, or a dependency is down; `Retry-After` says when to retry.",
    ),
    ("504", "The request did not complete in time."),
];

/// What an operation with a JSON body can answer besides.
const JSON_BODY: &[(&str, &str)] = &[
    ("400", "The body is not valid JSON."),
    ("413", "The body is too large."),
    ("415", "The body is not `application/json`."),
    (
        "422",
        "A field is missing, unknown or invalid; `errors` names each one.",
    ),
];

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            for operation in operations(item) {
                let body = if operation.request_body.is_some() {
                    JSON_BODY
                } else {
                    &[]
                };
                for (status, description) in EVERY_OPERATION.iter().chain(body) {
                    operation
                        .responses
                        .responses
                        .entry((*status).to_owned())
                        .or_insert_with(|| problem(description).into());
                }
            }
        }
    }
}

fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.options.as_mut(),
        item.head.as_mut(),
        item.patch.as_mut(),
        item.trace.as_mut(),
    ]
    .into_iter()
    .flatten()
}

fn problem(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            tessera_errors::PROBLEM_JSON,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build()
}

/// `GET /openapi.json`, serving `api` completed with [`BearerAuth`] and [`CommonResponses`]
/// (applied here, after the router has added every route's operation).
pub fn route(mut api: OpenApi) -> Router {
    BearerAuth.modify(&mut api);
    CommonResponses.modify(&mut api);
    let body = api.to_json().unwrap_or_else(|error| {
        tracing::error!(%error, "cannot serialize the OpenAPI document");
        "{}".to_owned()
    });
    Router::new().route(
        "/openapi.json",
        get(move || {
            let body = body.clone();
            async move { ([(header::CONTENT_TYPE, "application/json")], body) }
        }),
    )
}
