//! `/api/v1/orders`: thin handlers that parse input into domain types and call [`OrderBook`].
//!
//! [`OrderBook`]: crate::book::OrderBook

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tessera_domain::{Cursor, PageRequest};
use tessera_errors::extract::{Json, JsonBody, Path, Query};
use tessera_errors::{Error, Problem};
use tessera_jwt::Authenticated;
use utoipa::openapi::schema::{Object, ObjectBuilder, Type};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::AppState;
use crate::domain::{
    Currency, IdempotencyKey, MAX_ITEMS, MAX_UNIT_PRICE_CENTS, Money, NewOrder, Order, OrderItem,
    OrderStatus, Quantity, Sku,
};

/// The header a client names its order with, so that a retry cannot place it twice.
const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Set on a response that repeats the one first given for its key.
const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// An order.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = Order)]
pub struct OrderBody {
    /// The order's id.
    pub id: Uuid,
    /// Who placed it.
    pub user_id: Uuid,
    /// `pending`, then `confirmed` or `cancelled`.
    pub status: OrderStatus,
    /// ISO 4217 code of every amount.
    #[schema(pattern = "^[A-Z]{3}$", example = "EUR")]
    pub currency: String,
    /// Its lines, in the order given.
    pub items: Vec<ItemBody>,
    /// Sum of the line totals, in minor units.
    pub total_cents: i64,
    /// When it was placed.
    #[serde(serialize_with = "tessera_domain::timestamp::serialize")]
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    #[serde(serialize_with = "tessera_domain::timestamp::serialize")]
    pub updated_at: DateTime<Utc>,
}

/// One line of an order.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = OrderItem)]
pub struct ItemBody {
    /// The article's stock-keeping unit.
    pub sku: String,
    /// How many.
    pub quantity: u32,
    /// Price of one, in minor units.
    pub unit_price_cents: i64,
    /// `quantity × unit_price_cents`.
    pub line_total_cents: i64,
}

impl From<&Order> for OrderBody {
    fn from(order: &Order) -> Self {
        Self {
            id: order.id,
            user_id: order.user_id,
            status: order.status,
            currency: order.currency.code().to_owned(),
            items: order.items.iter().map(ItemBody::from).collect(),
            total_cents: order.total.cents(),
            created_at: order.created_at,
            updated_at: order.updated_at,
        }
    }
}

impl From<&OrderItem> for ItemBody {
    fn from(item: &OrderItem) -> Self {
        Self {
            sku: item.sku.as_str().to_owned(),
            quantity: item.quantity.get(),
            unit_price_cents: item.unit_price.cents(),
            line_total_cents: item.line_total.cents(),
        }
    }
}

/// An order to place.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrder {
    /// ISO 4217 code, upper case.
    #[schema(schema_with = currency_schema)]
    pub currency: Currency,
    /// 1 to 100 lines.
    #[schema(min_items = 1, max_items = 100)]
    pub items: Vec<PlaceItem>,
}

/// One line of an order to place.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceItem {
    /// 1 to 64 of `A-Z a-z 0-9 . _ -`.
    #[schema(value_type = String, pattern = "^[A-Za-z0-9._-]{1,64}$", example = "BOOK-42")]
    pub sku: Sku,
    /// 1 to 10,000.
    #[schema(value_type = u32, minimum = 1, maximum = 10000)]
    pub quantity: Quantity,
    /// Price of one in minor units (cents), 0 to 10^12.
    #[schema(value_type = i64, minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub unit_price_cents: Money,
}

// The limits the schemas state are the ones enforced.
const _: () = assert!(
    MAX_ITEMS == 100 && Quantity::MAX == 10_000 && MAX_UNIT_PRICE_CENTS == 1_000_000_000_000
);

/// The currencies an order may be in, listed, so that the document allows no other code.
fn currency_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(Currency::all().map(Currency::code)))
        .description(Some("ISO 4217 code, upper case."))
        .examples(["EUR"])
        .build()
}

/// Listing parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only orders in this status.
    pub status: Option<OrderStatus>,
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    #[param(schema_with = Cursor::schema)]
    pub cursor: Option<String>,
}

/// One page of orders.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OrderPage {
    /// The orders, newest first.
    pub items: Vec<OrderBody>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// The `Idempotency-Key` header, required and valid.
pub struct IdempotencyKeyHeader(IdempotencyKey);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKeyHeader {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let mut values = parts.headers.get_all(IDEMPOTENCY_KEY).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return Err(Error::BadRequest(
                "send exactly one Idempotency-Key header, unique per order (a UUID will do)"
                    .to_owned(),
            ));
        };
        IdempotencyKey::parse(value.as_bytes())
            .map(Self)
            .map_err(|e| Error::BadRequest(format!("Idempotency-Key {e}")))
    }
}

/// Places an order. Send a new `Idempotency-Key` for each order and the same one when
/// retrying it: a retry gets the first answer again and never places a second order.
#[utoipa::path(
    post, path = "/api/v1/orders", tag = "orders",
    security(("bearer" = [])),
    params(("Idempotency-Key" = String, Header, description = "1 to 255 visible ASCII characters naming this order; scoped to the caller.", min_length = 1, max_length = 255, pattern = "^[!-~]{1,255}$")),
    request_body = PlaceOrder,
    responses(
        (status = 201, description = "Placed (or the first answer to this key, with `Idempotent-Replayed: true`).", body = OrderBody,
            headers(("Location" = String, description = "The order's URL."))),
        (status = 400, description = "The Idempotency-Key header is missing or malformed, or the body is not JSON.", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid access token.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller's account no longer exists.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid (named), a total overflows, or the key was used for another order.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The caller cannot be checked with users now; nothing was written. Retry with the same key.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn place(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    Json(body): Json<PlaceOrder>,
) -> Result<Response, Error> {
    let lines = body
        .items
        .into_iter()
        .map(|item| (item.sku, item.quantity, item.unit_price_cents))
        .collect();
    let order = NewOrder::new(body.currency, lines)?;
    let placed = state.book.place(&caller, key, order, render).await?;
    let status = StatusCode::from_u16(placed.status).map_err(Error::internal)?;
    let location = HeaderValue::try_from(format!("/api/v1/orders/{}", placed.order_id))
        .map_err(Error::internal)?;
    let mut response = (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::LOCATION, location),
        ],
        placed.body,
    )
        .into_response();
    if placed.replayed {
        response
            .headers_mut()
            .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// The body of a 201, stored with the key and replayed to retries.
fn render(order: &Order) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&OrderBody::from(order))
}

/// An order: the caller's own, or anyone's for an admin.
#[utoipa::path(
    get, path = "/api/v1/orders/{id}", tag = "orders",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The order's id.")),
    responses(
        (status = 200, description = "The order.", body = OrderBody),
        (status = 401, description = "No valid access token.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order, or not one the caller may see.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The id is not a UUID.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<Uuid>,
) -> Result<JsonBody, Error> {
    state.book.get(&caller, id).await?.json::<OrderBody>()
}

/// The caller's orders (every order for an admin), newest first, a page at a time.
#[utoipa::path(
    get, path = "/api/v1/orders", tag = "orders",
    security(("bearer" = [])),
    params(ListParams),
    responses(
        (status = 200, description = "A page of orders.", body = OrderPage),
        (status = 401, description = "No valid access token.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`status`, `limit` or `cursor` is invalid, or an unknown parameter was given.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Query(params): Query<ListParams>,
) -> Result<Json<OrderPage>, Error> {
    let wanted = PageRequest::from_query(params.limit, params.cursor.as_deref())
        .map_err(|e| Error::invalid_field(e.field, e.invalid.0))?;
    let page = state
        .book
        .list(&caller, params.status, wanted.size, wanted.after)
        .await?;
    Ok(Json(OrderPage {
        items: page.items.iter().map(OrderBody::from).collect(),
        next_cursor: page.next_cursor.map(String::from),
    }))
}

/// Confirms a pending order (admins only).
#[utoipa::path(
    post, path = "/api/v1/orders/{id}/confirm", tag = "orders",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The order's id.")),
    responses(
        (status = 200, description = "The order, now confirmed.", body = OrderBody),
        (status = 401, description = "No valid access token.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller is not an admin.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The order is not pending, or changed meanwhile.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The id is not a UUID.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn confirm(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<Uuid>,
) -> Result<Json<OrderBody>, Error> {
    let order = state.book.confirm(&caller, id).await?;
    Ok(Json(OrderBody::from(&order)))
}

/// Cancels a pending or confirmed order (its owner or an admin).
#[utoipa::path(
    post, path = "/api/v1/orders/{id}/cancel", tag = "orders",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The order's id.")),
    responses(
        (status = 200, description = "The order, now cancelled.", body = OrderBody),
        (status = 401, description = "No valid access token.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order, or not one the caller may change.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The order is cancelled already, or changed meanwhile.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The id is not a UUID.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn cancel(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<Uuid>,
) -> Result<Json<OrderBody>, Error> {
    let order = state.book.cancel(&caller, id).await?;
    Ok(Json(OrderBody::from(&order)))
}
