//! `tessera.auth.v1.AuthService`, for callers that do not verify tokens themselves.

use std::sync::Arc;

use tessera_proto::auth::v1 as proto;
use tessera_proto::convert;
use tonic::{Request, Response, Status};

use crate::accounts::Accounts;
use crate::repository::Repository;

/// The gRPC service: the same verification every other service does locally, denylist
/// included.
pub struct AuthGrpc {
    accounts: Arc<Accounts<Repository>>,
}

impl AuthGrpc {
    /// A service answering from `accounts`.
    pub fn new(
        accounts: Arc<Accounts<Repository>>,
    ) -> proto::auth_service_server::AuthServiceServer<Self> {
        proto::auth_service_server::AuthServiceServer::new(Self { accounts })
    }
}

#[tonic::async_trait]
impl proto::auth_service_server::AuthService for AuthGrpc {
    async fn validate_token(
        &self,
        request: Request<proto::ValidateTokenRequest>,
    ) -> Result<Response<proto::ValidateTokenResponse>, Status> {
        let principal = self
            .accounts
            .validate(&request.get_ref().access_token)
            .await?;
        Ok(Response::new(proto::ValidateTokenResponse {
            user_id: principal.user_id.to_string(),
            role: principal.role.as_str().to_owned(),
            token_id: principal.jti.to_string(),
            expires_at: Some(convert::timestamp(principal.expires_at)),
        }))
    }
}
