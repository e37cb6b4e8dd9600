//! `/api/v1/auth`: thin handlers that parse input into domain types and call [`Accounts`].
//!
//! [`Accounts`]: crate::accounts::Accounts

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use http::{HeaderValue, header};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tessera_domain::{DisplayName, Email, Role};
use tessera_errors::extract::Json;
use tessera_errors::{Error, Problem};
use tessera_jwt::Authenticated;
use utoipa::ToSchema;
use utoipa::openapi::schema::{KnownFormat, Object, ObjectBuilder, SchemaFormat, Type};
use uuid::Uuid;

use super::{AppState, ClientAddr};
use crate::accounts::Tokens;
use crate::domain::{self, NewAccount, Password, RefreshToken};

/// A new account.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Register {
    /// The email to log in with; stored trimmed and lower-cased.
    #[schema(value_type = String, format = Email, max_length = 254)]
    pub email: Email,
    /// 12 to 128 characters, at least 5 different ones, not a common password, not
    /// containing the email.
    #[schema(schema_with = new_password_schema)]
    pub password: SecretString,
    /// The name shown to others.
    #[schema(schema_with = DisplayName::schema)]
    pub display_name: DisplayName,
}

/// A new password's schema: the lengths and the pattern come from the policy itself; the
/// rules no pattern can state (the common-password corpus, the email) are described.
fn new_password_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Password)))
        .min_length(Some(domain::MIN_CHARS))
        .max_length(Some(domain::MAX_CHARS))
        .pattern(Some(Password::pattern()))
        .description(Some(
            "12 to 128 characters, at least 5 different ones, not containing the email, and \
             not one of the 30,000 most common passwords (in any case, with digits or symbols \
             after it, or typed twice).",
        ))
        .build()
}

/// The account that was created.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Registered {
    /// The new user's id (also their profile's).
    pub user_id: Uuid,
    /// The normalised email.
    pub email: String,
}

/// Credentials.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    /// The account's email.
    pub email: String,
    /// Its password.
    #[schema(value_type = String, format = Password)]
    pub password: SecretString,
}

/// A refresh token, to exchange or to end its session.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The refresh token from the last login or refresh: 32 bytes in unpadded base64url.
    #[schema(
        value_type = String, min_length = 43, max_length = 43,
        pattern = "^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$"
    )]
    pub refresh_token: SecretString,
}

/// A session's tokens (RFC 6749 §5.1).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenResponse {
    /// A JWT to send as `Authorization: Bearer`.
    pub access_token: String,
    /// An opaque token that gets the next access token, once.
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: i64,
}

impl IntoResponse for Tokens {
    fn into_response(self) -> Response {
        let body = TokenResponse {
            access_token: self.access.token,
            refresh_token: self.refresh.expose().to_owned(),
            token_type: "Bearer".to_owned(),
            expires_in: (self.access.expires_at - Utc::now()).num_seconds().max(0),
        };
        // Tokens must not be kept by any cache on the way.
        (
            [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
            Json(body),
        )
            .into_response()
    }
}

/// Creates an account and its profile.
#[utoipa::path(
    post, path = "/api/v1/auth/register", tag = "auth",
    request_body = Register,
    responses(
        (status = 201, description = "The account and its profile exist.", body = Registered),
        (status = 409, description = "An account with this email exists.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid or unknown (a weak password, say); `errors` names it.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many registrations from this address; `Retry-After` says when to try again.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The users service cannot create the profile now; no account was made.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn register(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    Json(request): Json<Register>,
) -> Result<(StatusCode, Json<Registered>), Error> {
    let password = Password::new_for(request.password.expose_secret(), &request.email)
        .map_err(|invalid| Error::invalid_field("password", invalid.0))?;
    let email = request.email;
    let user_id = state
        .accounts
        .register_from(
            client,
            NewAccount {
                email: email.clone(),
                password,
                display_name: request.display_name,
                role: Role::User,
            },
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(Registered {
            user_id,
            email: email.into(),
        }),
    ))
}

/// Logs in: a new session's access and refresh tokens.
#[utoipa::path(
    post, path = "/api/v1/auth/login", tag = "auth",
    request_body = Login,
    responses(
        (status = 200, description = "Logged in.", body = TokenResponse),
        (status = 401, description = "Wrong email or password (the same answer for both).", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed logins for this email or from this address; `Retry-After` says when to try again.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn login(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    Json(request): Json<Login>,
) -> Result<Tokens, Error> {
    state
        .accounts
        .login(&request.email, request.password.expose_secret(), client)
        .await
}

/// Exchanges a refresh token for new tokens; the presented one stops working. Presenting
/// an already exchanged token ends its whole session, unless it was exchanged within the
/// last `AUTH_REFRESH_REUSE_GRACE_SECS` (30 s): that is a retry or another tab, answered 409.
#[utoipa::path(
    post, path = "/api/v1/auth/refresh", tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "New tokens.", body = TokenResponse),
        (status = 401, description = "The refresh token is invalid, expired, already used or its session ended.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The refresh token was exchanged moments ago (a retry, another tab): use the tokens that exchange returned. The session is kept.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn refresh(
    State(state): State<AppState>,
    Json(request): Json<RefreshRequest>,
) -> Result<Tokens, Error> {
    state
        .accounts
        .refresh(request.refresh_token.expose_secret())
        .await
}

/// Ends the session of the refresh token and revokes the caller's access token.
#[utoipa::path(
    post, path = "/api/v1/auth/logout", tag = "auth",
    security(("bearer" = [])),
    request_body = RefreshRequest,
    responses(
        (status = 204, description = "The session is over (or was already)."),
        (status = 401, description = "No valid access token.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The refresh token is missing or not shaped like one.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The access token could not be revoked now; try again.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn logout(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Json(request): Json<RefreshRequest>,
) -> Result<StatusCode, Error> {
    let presented = RefreshToken::parse(request.refresh_token.expose_secret())
        .ok_or_else(|| Error::invalid_field("refresh_token", "is not a refresh token"))?;
    state.accounts.logout(&caller, &presented).await?;
    Ok(StatusCode::NO_CONTENT)
}

// The limits the schema's description states are the ones enforced.
const _: () = assert!(domain::MIN_CHARS == 12 && domain::MAX_CHARS == 128);

#[cfg(test)]
mod tests {
    use fancy_regex::Regex;
    use utoipa::PartialSchema;

    use super::*;

    /// The `pattern` the document gives `T`'s `field`.
    fn documented_pattern<T: PartialSchema>(field: &str) -> Regex {
        let schema = serde_json::to_value(T::schema()).unwrap();
        let pattern = schema["properties"][field]["pattern"]
            .as_str()
            .unwrap_or_else(|| panic!("no pattern for {field} in {schema}"));
        Regex::new(pattern).unwrap()
    }

    #[test]
    fn the_documented_refresh_token_shape_is_the_one_parsed() {
        let pattern = documented_pattern::<RefreshRequest>("refresh_token");
        for _ in 0..200 {
            assert!(pattern.is_match(RefreshToken::generate().expose()).unwrap());
        }
        // Every last character: only 16 of 64 leave no stray bits in 32 bytes.
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        for last in alphabet.chars() {
            let token = format!("{}{last}", "A".repeat(42));
            assert_eq!(
                pattern.is_match(&token).unwrap(),
                RefreshToken::parse(&token).is_some(),
                "{token}"
            );
        }
        for other in ["", "A", &"A".repeat(44), &format!("{}=", "A".repeat(42))] {
            assert!(!pattern.is_match(other).unwrap());
            assert!(RefreshToken::parse(other).is_none());
        }
    }

    #[test]
    fn the_documented_password_pattern_is_the_policy() {
        let pattern = documented_pattern::<Register>("password");
        assert_eq!(pattern.as_str(), Password::pattern());
    }
}
