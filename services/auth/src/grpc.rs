//! `tessera.auth.v1.AuthService`, for callers that do not verify tokens themselves.

use tessera_errors::Error;
use tessera_jwt::Verifier;
use tessera_proto::auth::v1 as proto;
use tonic::{Request, Response, Status};

/// The gRPC service: the same verification every other service does locally, denylist
/// included.
pub struct AuthGrpc {
    verifier: Verifier,
}

impl AuthGrpc {
    /// A service verifying with `verifier`.
    pub fn new(verifier: Verifier) -> proto::auth_service_server::AuthServiceServer<Self> {
        proto::auth_service_server::AuthServiceServer::new(Self { verifier })
    }
}

#[tonic::async_trait]
impl proto::auth_service_server::AuthService for AuthGrpc {
    async fn validate_token(
        &self,
        request: Request<proto::ValidateTokenRequest>,
    ) -> Result<Response<proto::ValidateTokenResponse>, Status> {
        let token = request.get_ref().access_token.trim();
        if token.is_empty() {
            return Err(Error::Unauthenticated("access_token is empty".to_owned()).into());
        }
        let principal = self.verifier.verify(token).await.map_err(Error::from)?;
        Ok(Response::new(proto::ValidateTokenResponse {
            user_id: principal.user_id.to_string(),
            role: principal.role.as_str().to_owned(),
            token_id: principal.jti.to_string(),
            expires_at: Some(prost_types::Timestamp {
                seconds: principal.expires_at.timestamp(),
                nanos: 0,
            }),
        }))
    }
}
