//! `spawn_app()`: the orders binary with its own database and RabbitMQ vhost, the users
//! binary beside it, and the typed calls the tests make.

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::{Response, StatusCode};
use serde_json::Value;
use tessera_e2e::binary;
use tessera_jwt::Role;
use tessera_proto::orders::v1::order_service_client::OrderServiceClient;
use tessera_proto::users::v1 as users_proto;
use tessera_proto::users::v1::user_service_client::UserServiceClient;
use tessera_testkit::broker::TestBroker;
use tessera_testkit::database::TestDatabase;
use tessera_testkit::events::EventTap;
use tessera_testkit::jwks::TestIssuer;
use tessera_testkit::process::ServiceProcess;
use tessera_testkit::proxy::TcpProxy;
use tonic::transport::Channel;
use uuid::Uuid;

pub use tessera_e2e::stack::an_order;
pub use tessera_testkit::assert_problem;

const ORDERS: &str = "ORDERS_";
const USERS: &str = "USERS_";

/// The users binary with its own database.
pub struct UsersApp {
    pub service: ServiceProcess,
    /// Read by the fault tests, which share this module, to cut its connections.
    #[allow(dead_code)]
    pub database: TestDatabase,
}

impl UsersApp {
    pub async fn start(issuer: &TestIssuer, amqp_url: &str) -> Self {
        // Empty: the binary applies its migrations as it starts.
        let database = TestDatabase::empty().await;
        let mut env = tessera_testkit::service_env(USERS, database.url(), amqp_url);
        tessera_testkit::set_var(&mut env, USERS, "JWKS_URL", issuer.jwks_url());
        tessera_testkit::set_var(&mut env, USERS, "JWT_ISSUER", TestIssuer::ISSUER);
        tessera_testkit::set_var(&mut env, USERS, "JWT_AUDIENCE", TestIssuer::AUDIENCE);
        let service = ServiceProcess::start(binary("users"), &[], USERS, &env).await;
        Self { service, database }
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.service
            .grpc_url()
            .trim_start_matches("http://")
            .parse()
            .unwrap()
    }
}

/// Where orders finds users.
pub enum UsersAt {
    /// Through a proxy that tests can cut, to a real users service.
    Proxied,
    /// This URL (a closed port, a server that never answers).
    Url(String),
}

/// An orders service, its users service and its test token issuer.
pub struct TestApp {
    pub orders: ServiceProcess,
    pub users: Option<UsersApp>,
    pub users_proxy: Option<TcpProxy>,
    pub issuer: TestIssuer,
    pub database: TestDatabase,
    pub env: Vec<(String, String)>,
    client: reqwest::Client,
    /// Last: deleted once the processes are gone.
    pub broker: TestBroker,
}

/// A user with a profile at users and a token to act as them.
pub struct TestUser {
    pub id: Uuid,
    pub token: String,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(UsersAt::Proxied, &[]).await
}

/// `spawn_app` with users elsewhere and some `ORDERS_*` variables overridden.
pub async fn spawn_app_with(users_at: UsersAt, overrides: &[(&str, String)]) -> TestApp {
    spawn_app_on(TestBroker::isolated().await, users_at, overrides).await
}

/// [`spawn_app_with`] on `broker`'s vhost (orders may be given another route to it, such as a
/// proxy, in `overrides`).
pub async fn spawn_app_on(
    broker: TestBroker,
    users_at: UsersAt,
    overrides: &[(&str, String)],
) -> TestApp {
    let issuer = TestIssuer::start().await;
    let (users, users_proxy, users_url) = match users_at {
        UsersAt::Proxied => {
            let users = UsersApp::start(&issuer, broker.amqp_url()).await;
            let proxy = TcpProxy::start(users.grpc_addr()).await;
            let url = format!("http://{}", proxy.addr());
            (Some(users), Some(proxy), url)
        }
        UsersAt::Url(url) => (None, None, url),
    };
    let database = TestDatabase::empty().await;
    let mut env = tessera_testkit::service_env(ORDERS, database.url(), broker.amqp_url());
    for (name, value) in [
        ("JWKS_URL", issuer.jwks_url()),
        ("JWT_ISSUER", TestIssuer::ISSUER.to_owned()),
        ("JWT_AUDIENCE", TestIssuer::AUDIENCE.to_owned()),
        ("USERS_GRPC_URL", users_url),
    ] {
        tessera_testkit::set_var(&mut env, ORDERS, name, value);
    }
    for (name, value) in overrides {
        tessera_testkit::set_var(&mut env, ORDERS, name, value.clone());
    }
    let orders = ServiceProcess::start(binary("orders"), &[], ORDERS, &env).await;
    TestApp {
        orders,
        users,
        users_proxy,
        issuer,
        database,
        env,
        client: tessera_testkit::http_client(),
        broker,
    }
}

/// A fresh idempotency key.
pub fn key() -> String {
    Uuid::now_v7().to_string()
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.orders.http_url())
    }

    pub async fn grpc(&self) -> OrderServiceClient<Channel> {
        OrderServiceClient::new(self.orders.channel().await.unwrap())
    }

    /// Taps the events matching `pattern` (`order.*`) on the app's vhost, from now on.
    pub async fn tap(&self, pattern: &str) -> EventTap {
        EventTap::bind_at(self.broker.amqp_url(), pattern).await
    }

    /// Publishes `envelope` on the app's vhost, as a service's relay would.
    pub async fn publish(&self, envelope: &Value) {
        tessera_testkit::events::publish_at(self.broker.amqp_url(), envelope).await;
    }

    pub fn users(&self) -> &UsersApp {
        self.users.as_ref().expect("this app has a users service")
    }

    /// A user with a profile at users.
    pub async fn create_user(&self, role: Role) -> TestUser {
        let id = Uuid::now_v7();
        let mut client = UserServiceClient::new(self.users().service.channel().await.unwrap());
        let proto_role = match role {
            Role::User => users_proto::Role::User,
            Role::Admin => users_proto::Role::Admin,
        };
        client
            .create_user(users_proto::CreateUserRequest {
                id: id.to_string(),
                email: format!("user-{}@example.com", id.simple()),
                display_name: "Test User".to_owned(),
                role: proto_role.into(),
            })
            .await
            .unwrap();
        TestUser {
            id,
            token: self.issuer.token(id, role),
        }
    }

    /// A token for a user users has never heard of (or has deleted).
    pub fn stranger(&self) -> TestUser {
        let id = Uuid::now_v7();
        TestUser {
            id,
            token: self.issuer.token(id, Role::User),
        }
    }

    /// Deletes `user`'s profile at users, which publishes `user.deleted`.
    pub async fn delete_user(&self, user: &TestUser) {
        let response = self
            .client
            .delete(format!(
                "{}/api/v1/users/{}",
                self.users().service.http_url(),
                user.id
            ))
            .bearer_auth(&user.token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
    }

    pub async fn place_raw(
        &self,
        token: &str,
        key: Option<&str>,
        content_type: &str,
        body: String,
    ) -> Response {
        let mut request = self
            .client
            .post(self.url("/api/v1/orders"))
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(body);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        request.send().await.unwrap()
    }

    pub async fn place(&self, user: &TestUser, key: &str, body: &Value) -> Response {
        self.place_raw(&user.token, Some(key), "application/json", body.to_string())
            .await
    }

    /// Places an order and returns its body.
    pub async fn placed(&self, user: &TestUser) -> Value {
        let response = self.place(user, &key(), &an_order()).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.unwrap()
    }

    /// Another orders process on the same database and queue: a second replica.
    pub async fn replica(&self) -> ServiceProcess {
        ServiceProcess::start(binary("orders"), &[], ORDERS, &self.env).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// Waits until order `id`, read with `token`, is in `status`; panics after `within`.
    pub async fn wait_for_status(&self, token: &str, id: &str, status: &str, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let order: Value = self
                .get(&format!("/api/v1/orders/{id}"), token)
                .await
                .json()
                .await
                .unwrap();
            if order["status"] == status {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "order {id} is still {} after {within:?}, never {status}",
                order["status"]
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn post(&self, path: &str, token: &str) -> Response {
        self.client
            .post(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// How many orders and idempotency keys the database holds.
    pub async fn rows(&self) -> (i64, i64) {
        let db = sqlx::PgPool::connect(self.database.url()).await.unwrap();
        let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
            .fetch_one(&db)
            .await
            .unwrap();
        let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM idempotency_keys")
            .fetch_one(&db)
            .await
            .unwrap();
        db.close().await;
        (orders, keys)
    }
}
