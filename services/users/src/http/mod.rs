//! The REST API: routes, and the OpenAPI document generated from them.

mod users;

use std::sync::Arc;

use axum::Router;
use axum::extract::FromRef;
use tessera_jwt::Verifier;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::profiles::Profiles;
use crate::repository::Repository;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The profiles, behind their access rules.
    pub profiles: Arc<Profiles<Repository>>,
    /// Verifies the callers' access tokens.
    pub verifier: Verifier,
}

impl FromRef<AppState> for Verifier {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "tessera users", description = "User profiles."),
    tags((name = "users", description = "Profiles: owners see themselves, admins everyone."))
)]
struct ApiDoc;

/// The REST routes, with `/openapi.json` describing them.
pub fn router(state: AppState) -> Router {
    let (router, api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(users::me))
        .routes(routes!(users::get, users::update, users::delete))
        .routes(routes!(users::list))
        .with_state(state)
        .split_for_parts();
    router.merge(tessera_runtime::openapi::route(api))
}
