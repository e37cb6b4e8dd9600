//! `tessera.users.v1.UserService`, for the other services: proto in, [`Profiles`] called,
//! proto out (the gRPC port is internal, so the callers are trusted services).

use std::sync::Arc;

use tessera_domain::{DisplayName, Email};
use tessera_errors::Error;
use tessera_proto::convert;
use tessera_proto::users::v1 as proto;
use tonic::{Request, Response, Status};

use crate::domain::{Creation, NewUser, User};
use crate::profiles::Profiles;
use crate::repository::Repository;

/// Most ids one `BatchGetUsers` call may ask for.
const MAX_BATCH: usize = 100;

/// The gRPC service over the profiles.
pub struct UserGrpc {
    profiles: Arc<Profiles<Repository>>,
}

impl UserGrpc {
    /// A service reading and writing through `profiles`.
    pub fn new(
        profiles: Arc<Profiles<Repository>>,
    ) -> proto::user_service_server::UserServiceServer<Self> {
        proto::user_service_server::UserServiceServer::new(Self { profiles })
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
            id: convert::uuid("id", &request.id)?,
            email: Email::parse(&request.email).map_err(|e| invalid("email", e.0))?,
            display_name: DisplayName::parse(&request.display_name)
                .map_err(|e| invalid("display_name", e.0))?,
            role: convert::role("role", request.role)?,
        };
        let creation = self.profiles.create(new).await?;
        Ok(Response::new(proto::CreateUserResponse {
            created: matches!(creation, Creation::Created(_)),
            user: Some(to_proto(creation.user())),
        }))
    }

    async fn get_user(
        &self,
        request: Request<proto::GetUserRequest>,
    ) -> Result<Response<proto::GetUserResponse>, Status> {
        let id = convert::uuid("id", &request.get_ref().id)?;
        let user = self.profiles.find(id).await?;
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
        let ids = raw
            .iter()
            .enumerate()
            .map(|(index, id)| convert::uuid(&format!("ids[{index}]"), id))
            .collect::<Result<Vec<_>, _>>()?;
        let users = self.profiles.find_many(ids).await?;
        Ok(Response::new(proto::BatchGetUsersResponse {
            users: users.iter().map(to_proto).collect(),
        }))
    }
}

fn invalid(field: &str, message: impl Into<String>) -> Error {
    Error::invalid_field(field, message)
}

fn to_proto(user: &User) -> proto::User {
    proto::User {
        id: user.id.to_string(),
        email: user.email.to_string(),
        display_name: user.display_name.to_string(),
        role: proto::Role::from(user.role).into(),
        created_at: Some(convert::timestamp(user.created_at)),
        updated_at: Some(convert::timestamp(user.updated_at)),
    }
}
