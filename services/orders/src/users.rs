//! The users service, as placing an order needs it: is the caller a live user?

use tessera_observability::trace_context::{self, TracedChannel};
use tessera_proto::users::v1 as proto;
use tessera_proto::users::v1::user_service_client::UserServiceClient;
use tessera_resilience::{CallError, CallPolicy, ClientMetrics, Guarded};
use tonic::transport::Endpoint;
use tracing::Instrument;
use uuid::Uuid;

/// The gRPC service called, as trace spans name it.
const USER_SERVICE: &str = "tessera.users.v1.UserService";

/// What users says of a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// The profile exists.
    Live,
    /// There is no profile: deleted (tokens outlive their user by up to their lifetime).
    Gone,
}

/// Why users could not say.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct UsersUnavailable(CallError);

/// A client of `tessera.users.v1.UserService` that fails fast (see [`tessera_resilience`]).
pub struct UsersClient {
    client: UserServiceClient<TracedChannel>,
    get_user: Guarded<proto::GetUserResponse>,
}

impl UsersClient {
    /// A client of the service at `endpoint` (connecting on first use), calls guarded by
    /// `policy`.
    pub fn new(
        endpoint: Endpoint,
        policy: CallPolicy,
        metrics: &ClientMetrics,
    ) -> Result<Self, tessera_config::ConfigError> {
        let channel = endpoint
            .connect_timeout(policy.attempt_timeout)
            .tcp_nodelay(true)
            .connect_lazy();
        let get_user = Guarded::new("users", policy, metrics)
            .map_err(|error| tessera_config::ConfigError::setting("users_breaker", error))?;
        Ok(Self {
            client: UserServiceClient::new(trace_context::traced(channel)),
            get_user,
        })
    }

    /// Whether `user_id` has a profile. `GetUser` is a read, so it is safe to retry.
    pub async fn liveness(&self, user_id: Uuid) -> Result<Liveness, UsersUnavailable> {
        let id = user_id.to_string();
        let span = trace_context::grpc_client_span(USER_SERVICE, "GetUser");
        let outcome = self
            .get_user
            .call(|limit| {
                let mut client = self.client.clone();
                let mut request = tonic::Request::new(proto::GetUserRequest { id: id.clone() });
                // The deadline travels with the call (grpc-timeout), so users stops too.
                request.set_timeout(limit);
                async move {
                    client
                        .get_user(request)
                        .await
                        .map(tonic::Response::into_inner)
                }
            })
            .instrument(span.clone())
            .await;
        trace_context::record_grpc_code(&span, outcome_code(&outcome));
        match outcome {
            Ok(_) => Ok(Liveness::Live),
            Err(CallError::Answered { status, .. }) if status.code() == tonic::Code::NotFound => {
                Ok(Liveness::Gone)
            }
            Err(other) => Err(UsersUnavailable(other)),
        }
    }
}

/// The status a guarded call ended with, for its span: the answer's, or UNAVAILABLE when
/// none came (transport failure, deadline, open circuit).
fn outcome_code<T>(outcome: &Result<T, CallError>) -> tonic::Code {
    match outcome {
        Ok(_) => tonic::Code::Ok,
        Err(CallError::Answered { status, .. }) => status.code(),
        Err(_) => tonic::Code::Unavailable,
    }
}
