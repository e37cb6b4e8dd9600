//! `tessera.users.v1.UserService`, for the other services (no end-user access rules here:
//! the gRPC port is internal).

use std::sync::Arc;

use tessera_domain::{DisplayName, Email, Role};
use tessera_errors::Error;
use tessera_proto::users::v1 as proto;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::Repository;
use crate::domain::{Creation, NewUser, User};
use crate::repository::UserRepository;

/// Most ids one `BatchGetUsers` call may ask for.
const MAX_BATCH: usize = 100;

/// The gRPC service over the users repository.
pub struct UserGrpc {
    repository: Arc<Repository>,
}

impl UserGrpc {
    /// A service reading and writing through `repository`.
    pub fn new(repository: Arc<Repository>) -> proto::user_service_server::UserServiceServer<Self> {
        proto::user_service_server::UserServiceServer::new(Self { repository })
    }
}

#[tonic::async_trait]
impl proto::user_service_server::UserService for UserGrpc {
    async fn create_user(
        &self,
        request: Request<proto::CreateUserRequest>,
    ) -> Result<Response<proto::CreateUserResponse>, Status> {
        let request = request.into_inner();
        let new = NewUser {
            id: parse_id("id", &request.id)?,
            email: Email::parse(&request.email).map_err(|e| invalid("email", e.0))?,
            display_name: DisplayName::parse(&request.display_name)
                .map_err(|e| invalid("display_name", e.0))?,
            role: parse_role(request.role)?,
        };
        let creation = self.repository.create(new).await.map_err(Error::from)?;
        Ok(Response::new(proto::CreateUserResponse {
            created: matches!(creation, Creation::Created(_)),
            user: Some(to_proto(creation.user())),
        }))
    }

    async fn get_user(
        &self,
        request: Request<proto::GetUserRequest>,
    ) -> Result<Response<proto::GetUserResponse>, Status> {
        let id = parse_id("id", &request.get_ref().id)?;
        let user = self
            .repository
            .find(id)
            .await
            .map_err(Error::from)?
            .ok_or(Error::NotFound("user"))?;
        Ok(Response::new(proto::GetUserResponse {
            user: Some(to_proto(&user)),
        }))
    }

    async fn batch_get_users(
        &self,
        request: Request<proto::BatchGetUsersRequest>,
    ) -> Result<Response<proto::BatchGetUsersResponse>, Status> {
        let raw = &request.get_ref().ids;
        if raw.len() > MAX_BATCH {
            return Err(invalid("ids", format!("at most {MAX_BATCH} ids per call")).into());
        }
        let mut ids = raw
            .iter()
            .enumerate()
            .map(|(index, id)| parse_id(&format!("ids[{index}]"), id))
            .collect::<Result<Vec<_>, _>>()?;
        ids.sort_unstable();
        ids.dedup();
        let users = self.repository.find_many(&ids).await.map_err(Error::from)?;
        Ok(Response::new(proto::BatchGetUsersResponse {
            users: users.iter().map(to_proto).collect(),
        }))
    }
}

fn invalid(field: &str, message: impl Into<String>) -> Error {
    Error::invalid_field(field, message)
}

fn parse_id(field: &str, raw: &str) -> Result<Uuid, Error> {
    Uuid::parse_str(raw).map_err(|_| invalid(field, "not a valid uuid"))
}

fn parse_role(raw: i32) -> Result<Role, Error> {
    match proto::Role::try_from(raw) {
        Ok(proto::Role::Unspecified | proto::Role::User) => Ok(Role::User),
        Ok(proto::Role::Admin) => Ok(Role::Admin),
        Err(_) => Err(invalid("role", format!("unknown role {raw}"))),
    }
}

fn to_proto(user: &User) -> proto::User {
    let role = match user.role {
        Role::User => proto::Role::User,
        Role::Admin => proto::Role::Admin,
    };
    proto::User {
        id: user.id.to_string(),
        email: user.email.to_string(),
        display_name: user.display_name.to_string(),
        role: role.into(),
        created_at: Some(timestamp(user.created_at)),
        updated_at: Some(timestamp(user.updated_at)),
    }
}

fn timestamp(at: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}
