//! `/api/v1/users`: thin handlers that parse input into domain types and call [`Profiles`].
//!
//! [`Profiles`]: crate::profiles::Profiles

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tessera_domain::{Cursor, DisplayName, PageRequest, Role};
use tessera_errors::extract::{Json, JsonBody, Path, Query};
use tessera_errors::{Error, Problem};
use tessera_jwt::Authenticated;
use utoipa::openapi::schema::{Object, SchemaType, Type};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::AppState;
use crate::domain::{User, UserChanges};

/// A user profile.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = User)]
pub struct UserBody {
    /// The user's id.
    pub id: Uuid,
    /// Normalised (lower-case) email.
    #[schema(format = Email, max_length = 254)]
    pub email: String,
    /// The name shown to others.
    #[schema(min_length = 1, max_length = 64)]
    pub display_name: String,
    /// What the user may do.
    pub role: Role,
    /// When the profile was created.
    #[serde(serialize_with = "tessera_domain::timestamp::serialize")]
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    #[serde(serialize_with = "tessera_domain::timestamp::serialize")]
    pub updated_at: DateTime<Utc>,
}

impl From<User> for UserBody {
    fn from(user: User) -> Self {
        Self {
            id: user.id,
            email: user.email.into(),
            display_name: user.display_name.into(),
            role: user.role,
            created_at: user.created_at,
            updated_at: user.updated_at,
        }
    }
}

impl From<&User> for UserBody {
    fn from(user: &User) -> Self {
        Self::from(user.clone())
    }
}

/// A display name, or `null` for no change.
fn optional_display_name() -> Object {
    let mut schema = DisplayName::schema();
    schema.schema_type = SchemaType::from_iter([Type::String, Type::Null]);
    schema
}

/// Changes to a profile; absent or `null` fields stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    /// A new display name.
    #[schema(schema_with = optional_display_name)]
    pub display_name: Option<DisplayName>,
    /// A new role; admins only.
    pub role: Option<Role>,
}

/// One page of users.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UserPage {
    /// The users, in id order.
    pub items: Vec<UserBody>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Paging parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    #[param(schema_with = Cursor::schema)]
    pub cursor: Option<String>,
}

/// The caller's own profile.
#[utoipa::path(
    get, path = "/api/v1/users/me", tag = "users",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's profile.", body = UserBody, links(
            ("GetUser" = (operation_id = "get", parameters(("id" = "$response.body#/id")), description = "The same profile by its id.")),
            ("UpdateUser" = (operation_id = "update", parameters(("id" = "$response.body#/id")), description = "Change it.")),
            ("DeleteUser" = (operation_id = "delete", parameters(("id" = "$response.body#/id")), description = "Delete it.")),
        )),
        (status = 401, description = "No valid access token.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The caller's profile was deleted.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn me(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
) -> Result<JsonBody, Error> {
    state
        .profiles
        .get(&caller, caller.user_id)
        .await?
        .json::<UserBody>()
}

/// A profile: the caller's own, or anyone's for an admin.
#[utoipa::path(
    get, path = "/api/v1/users/{id}", tag = "users",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The user's id.")),
    responses(
        (status = 200, description = "The profile.", body = UserBody),
        (status = 401, description = "No valid access token.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user, or not one the caller may see.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The id is not a UUID.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<Uuid>,
) -> Result<JsonBody, Error> {
    state.profiles.get(&caller, id).await?.json::<UserBody>()
}

/// Changes a profile's display name (and, for admins, its role).
#[utoipa::path(
    patch, path = "/api/v1/users/{id}", tag = "users",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The user's id.")),
    request_body = UpdateUser,
    responses(
        (status = 200, description = "The profile as it now is.", body = UserBody),
        (status = 401, description = "No valid access token.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only an admin may change a role.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user, or not one the caller may change.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn update(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<Uuid>,
    Json(body): Json<UpdateUser>,
) -> Result<Json<UserBody>, Error> {
    let changes = UserChanges {
        display_name: body.display_name,
        role: body.role,
    };
    let user = state.profiles.update(&caller, id, changes).await?;
    Ok(Json(user.into()))
}

/// Deletes a profile; the other services are told through `user.deleted`.
#[utoipa::path(
    delete, path = "/api/v1/users/{id}", tag = "users",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The user's id.")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 401, description = "No valid access token.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user, or not one the caller may delete.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The id is not a UUID.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, Error> {
    state.profiles.delete(&caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Every user, a page at a time (admins only).
#[utoipa::path(
    get, path = "/api/v1/users", tag = "users",
    security(("bearer" = [])),
    params(ListParams),
    responses(
        (status = 200, description = "A page of users.", body = UserPage),
        (status = 401, description = "No valid access token.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller is not an admin.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`limit` or `cursor` is invalid, or an unknown parameter was given.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Query(params): Query<ListParams>,
) -> Result<Json<UserPage>, Error> {
    let wanted = PageRequest::from_query(params.limit, params.cursor.as_deref())
        .map_err(|e| Error::invalid_field(e.field, e.invalid.0))?;
    let page = state
        .profiles
        .list(&caller, wanted.size, wanted.after)
        .await?;
    Ok(Json(UserPage {
        items: page.items.into_iter().map(UserBody::from).collect(),
        next_cursor: page.next_cursor.map(String::from),
    }))
}
