//! The REST API: routes, and the OpenAPI document generated from them.

mod orders;

use std::sync::Arc;

use axum::Router;
use axum::extract::FromRef;
use tessera_jwt::Verifier;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::book::OrderBook;
use crate::repository::Repository;

pub use orders::OrderBody;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The orders, behind their rules.
    pub book: Arc<OrderBook<Repository>>,
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
    info(title = "tessera orders", description = "Orders and their lifecycle."),
    tags((name = "orders", description = "Orders: owners see and cancel their own, admins all and confirm."))
)]
struct ApiDoc;

/// The REST routes, with `/openapi.json` describing them.
pub fn router(state: AppState) -> Router {
    let (router, api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(orders::place, orders::list))
        .routes(routes!(orders::get))
        .routes(routes!(orders::confirm))
        .routes(routes!(orders::cancel))
        .with_state(state)
        .split_for_parts();
    router.merge(tessera_runtime::openapi::route(api))
}
