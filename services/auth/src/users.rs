//! The users service, as registration needs it: `CreateUser` with a deadline.

use std::time::Duration;

use tessera_domain::{DisplayName, Email, Role};
use tessera_observability::trace_context::{self, TracedChannel};
use tessera_proto::convert;
use tessera_proto::users::v1 as proto;
use tessera_proto::users::v1::user_service_client::UserServiceClient;
use tonic::transport::Endpoint;
use tracing::Instrument;
use uuid::Uuid;

/// A profile as the users service returned it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Profile {
    /// Its id.
    pub id: Uuid,
    /// Its role.
    pub role: Role,
}

/// Why the users service did not create the profile.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    /// It cannot be reached or did not answer within the deadline: the profile may or may not
    /// exist now.
    #[error("the users service is unavailable: {0}")]
    Unavailable(String),
    /// It answered with something other than a profile.
    #[error("the users service refused the profile: {0}")]
    Refused(String),
}

/// A client of `tessera.users.v1.UserService`.
#[derive(Debug, Clone)]
pub struct UsersClient {
    client: UserServiceClient<TracedChannel>,
    deadline: Duration,
}

impl UsersClient {
    /// A client of the service at `endpoint` (connecting on first use), each call bounded
    /// by `deadline`.
    pub fn new(endpoint: Endpoint, deadline: Duration) -> Self {
        let channel = endpoint.connect_timeout(deadline).connect_lazy();
        Self {
            client: UserServiceClient::new(trace_context::traced(channel)),
            deadline,
        }
    }

    /// Creates the profile `id` (or finds the one that has `email` already).
    pub async fn create_user(
        &self,
        id: Uuid,
        email: &Email,
        display_name: &DisplayName,
        role: Role,
    ) -> Result<Profile, UsersError> {
        let mut request = tonic::Request::new(proto::CreateUserRequest {
            id: id.to_string(),
            email: email.as_str().to_owned(),
            display_name: display_name.as_str().to_owned(),
            role: proto::Role::from(role).into(),
        });
        // The deadline travels with the call (grpc-timeout) and bounds our wait for it.
        request.set_timeout(self.deadline);
        let mut client = self.client.clone();
        let span = trace_context::grpc_client_span("tessera.users.v1.UserService", "CreateUser");
        let answer = tokio::time::timeout(self.deadline, client.create_user(request))
            .instrument(span.clone())
            .await;
        let code = match &answer {
            Ok(Ok(_)) => tonic::Code::Ok,
            Ok(Err(status)) => status.code(),
            Err(_) => tonic::Code::DeadlineExceeded,
        };
        trace_context::record_grpc_code(&span, code);
        let response = answer
            .map_err(|_| UsersError::Unavailable(format!("no answer within {:?}", self.deadline)))?
            .map_err(|status| match status.code() {
                tonic::Code::InvalidArgument
                | tonic::Code::AlreadyExists
                | tonic::Code::FailedPrecondition
                | tonic::Code::PermissionDenied
                | tonic::Code::Unauthenticated => UsersError::Refused(status.message().to_owned()),
                _ => UsersError::Unavailable(format!("{:?}: {}", status.code(), status.message())),
            })?
            .into_inner();
        let user = response
            .user
            .ok_or_else(|| UsersError::Refused("the answer has no user".to_owned()))?;
        let refused = |error: tessera_errors::Error| UsersError::Refused(error.public_message());
        Ok(Profile {
            id: convert::uuid("user.id", &user.id).map_err(refused)?,
            role: convert::role("user.role", user.role).map_err(refused)?,
        })
    }
}
