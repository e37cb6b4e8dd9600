//! `spawn_app()` and the typed calls the tests make.

use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use tessera_jwt::Role;
use tessera_proto::users::v1 as proto;
use tessera_proto::users::v1::user_service_client::UserServiceClient;
use tessera_testkit::app::InProcess;
use tessera_testkit::broker::TestBroker;
use tessera_testkit::database::TestDatabase;
use tessera_testkit::events::EventTap;
use tessera_testkit::jwks::TestIssuer;
use tonic::transport::Channel;
use uuid::Uuid;

pub use tessera_testkit::assert_problem;

const PREFIX: &str = "USERS_";

/// A users service with its own database and RabbitMQ vhost, trusting a test token issuer.
pub struct TestApp {
    pub service: InProcess,
    pub issuer: TestIssuer,
    pub database: TestDatabase,
    client: reqwest::Client,
    /// What the service was started with, for another instance of it.
    env: Vec<(String, String)>,
    /// Last: deleted once the service is gone.
    broker: TestBroker,
}

/// A user created through the API, with a token to act as them.
pub struct TestUser {
    pub id: Uuid,
    pub email: String,
    pub token: String,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// `spawn_app` with some `USERS_*` variables overridden (names without the prefix).
pub async fn spawn_app_with(overrides: &[(&str, String)]) -> TestApp {
    let issuer = TestIssuer::start().await;
    let database = TestDatabase::migrated(&users::MIGRATOR).await;
    let broker = TestBroker::isolated().await;
    let mut env = tessera_testkit::service_env(PREFIX, database.url(), broker.amqp_url());
    tessera_testkit::set_var(&mut env, PREFIX, "JWKS_URL", issuer.jwks_url());
    tessera_testkit::set_var(&mut env, PREFIX, "JWT_ISSUER", TestIssuer::ISSUER);
    tessera_testkit::set_var(&mut env, PREFIX, "JWT_AUDIENCE", TestIssuer::AUDIENCE);
    for (name, value) in overrides {
        tessera_testkit::set_var(&mut env, PREFIX, name, value.clone());
    }
    let service = InProcess::start::<users::Users>(env.clone()).await;
    TestApp {
        service,
        issuer,
        database,
        client: tessera_testkit::http_client(),
        env,
        broker,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.service.http())
    }

    /// Taps the events matching `pattern` (`user.*`) on the app's vhost, from now on.
    pub async fn tap(&self, pattern: &str) -> EventTap {
        EventTap::bind_at(self.broker.amqp_url(), pattern).await
    }

    pub async fn grpc(&self) -> UserServiceClient<Channel> {
        UserServiceClient::new(self.service.channel().await)
    }

    /// Creates a profile through gRPC, as registration does.
    pub async fn create_user(&self, role: Role) -> TestUser {
        let id = Uuid::now_v7();
        let email = format!("user-{}@example.com", id.simple());
        let role = match role {
            Role::User => proto::Role::User,
            Role::Admin => proto::Role::Admin,
        };
        let response = self
            .grpc()
            .await
            .create_user(proto::CreateUserRequest {
                id: id.to_string(),
                email: email.clone(),
                display_name: "Test User".to_owned(),
                role: role.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(response.created);
        let role = if role == proto::Role::Admin {
            Role::Admin
        } else {
            Role::User
        };
        TestUser {
            id,
            email,
            token: self.issuer.token(id, role),
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Response {
        self.client
            .patch(self.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn patch_raw(
        &self,
        path: &str,
        token: &str,
        content_type: &str,
        body: String,
    ) -> Response {
        self.client
            .patch(self.url(path))
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn delete(&self, path: &str, token: &str) -> Response {
        self.client
            .delete(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// Renames `user` through the API and returns the response body.
    pub async fn rename(&self, user: &TestUser, name: &str) -> Value {
        let response = self
            .patch(
                &format!("/api/v1/users/{}", user.id),
                &user.token,
                json!({ "display_name": name }),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    /// Another instance of the service, on the same database, Redis and vhost, with some
    /// `USERS_*` variables overridden.
    pub async fn another_instance(&self, overrides: &[(&str, String)]) -> InProcess {
        let mut env = self.env.clone();
        for (name, value) in overrides {
            tessera_testkit::set_var(&mut env, PREFIX, name, value.clone());
        }
        InProcess::start::<users::Users>(env).await
    }

    /// The profile's display name, read through the API.
    pub async fn display_name(&self, user: &TestUser) -> String {
        self.display_name_on(&self.service, user).await
    }

    /// The profile's display name, read through the API of `instance`.
    pub async fn display_name_on(&self, instance: &InProcess, user: &TestUser) -> String {
        let response = self
            .client
            .get(format!("{}/api/v1/users/{}", instance.http(), user.id))
            .bearer_auth(&user.token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        body["display_name"].as_str().unwrap().to_owned()
    }

    /// Changes a profile behind the service's back, to tell cached answers from fresh ones.
    pub async fn rename_in_database(&self, user: &TestUser, name: &str) {
        let db = sqlx::PgPool::connect(self.database.url()).await.unwrap();
        sqlx::query("UPDATE users SET display_name = $1 WHERE id = $2")
            .bind(name)
            .bind(user.id)
            .execute(&db)
            .await
            .unwrap();
        db.close().await;
    }
}
