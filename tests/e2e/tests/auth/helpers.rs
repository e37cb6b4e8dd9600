//! `spawn_app()`: the auth and users binaries, wired together (users trusts auth's JWKS,
//! auth calls users over gRPC and consumes its events).

use std::time::Duration;

use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use tessera_e2e::binary;
pub use tessera_e2e::stack::{Account, Session};
use tessera_jwt::{Signer, SigningKey};
use tessera_proto::auth::v1::auth_service_client::AuthServiceClient;
use tessera_proto::auth::v1::{ValidateTokenRequest, ValidateTokenResponse};
use tessera_proto::users::v1::user_service_client::UserServiceClient;
use tessera_testkit::broker::TestBroker;
use tessera_testkit::database::TestDatabase;
use tessera_testkit::process::ServiceProcess;
use tessera_testkit::proxy::TcpProxy;
use tonic::transport::Channel;
use uuid::Uuid;

pub use tessera_testkit::assert_problem;

const AUTH: &str = "AUTH_";
const USERS: &str = "USERS_";
/// The kid of the key a test app signs with.
pub const KID: &str = "test-1";
/// A password every test account can use.
pub const PASSWORD: &str = "correct horse battery staple";

/// auth and users, each with its own database, on a RabbitMQ vhost of their own.
pub struct TestApp {
    pub auth: ServiceProcess,
    pub users: ServiceProcess,
    pub auth_db: TestDatabase,
    pub users_db: TestDatabase,
    pub keys: tempfile::TempDir,
    /// auth reaches users' gRPC through this, so a test can cut it off.
    pub users_proxy: TcpProxy,
    /// auth's settings as the test started it, to start it again.
    pub auth_env: Vec<(String, String)>,
    client: reqwest::Client,
    /// Last: deleted once the processes are gone.
    pub broker: TestBroker,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// `spawn_app` with some `AUTH_*` variables overridden (names without the prefix).
pub async fn spawn_app_with(overrides: &[(&str, String)]) -> TestApp {
    let keys = tempfile::tempdir().unwrap();
    write_key(keys.path(), KID);
    // Empty: each binary applies its own migrations as it starts.
    let auth_db = TestDatabase::empty().await;
    let users_db = TestDatabase::empty().await;
    let broker = TestBroker::isolated().await;
    let limits = format!("test:{}", Uuid::now_v7().simple());
    let mut attempts = 0;
    loop {
        attempts += 1;
        // Chosen now: users is told where auth's JWKS will be before auth starts. Another
        // process can take them meanwhile; then auth exits, and the pair starts again.
        let auth_ports = (tessera_testkit::free_port(), tessera_testkit::free_port());
        let mut users_env = tessera_testkit::service_env(USERS, users_db.url(), broker.amqp_url());
        tessera_testkit::set_var(
            &mut users_env,
            USERS,
            "JWKS_URL",
            format!("http://127.0.0.1:{}/.well-known/jwks.json", auth_ports.0),
        );
        let users = ServiceProcess::start(binary("users"), &[], USERS, &users_env).await;

        let users_proxy = TcpProxy::start(
            users
                .grpc_url()
                .trim_start_matches("http://")
                .parse()
                .unwrap(),
        )
        .await;
        let mut auth_env = tessera_testkit::service_env(AUTH, auth_db.url(), broker.amqp_url());
        for (name, value) in [
            ("SIGNING_KEYS_DIR", keys.path().display().to_string()),
            ("USERS_GRPC_URL", format!("http://{}", users_proxy.addr())),
            // Small but real costs: the defaults would make every test login slow.
            ("ARGON2_MEMORY_KIB", "4096".to_owned()),
            ("ARGON2_ITERATIONS", "1".to_owned()),
            // Every test app logs in from 127.0.0.1: its own counters, or they would add up.
            ("LOGIN_LIMITS_KEY_PREFIX", limits.clone()),
        ] {
            tessera_testkit::set_var(&mut auth_env, AUTH, name, value);
        }
        for (name, value) in overrides {
            tessera_testkit::set_var(&mut auth_env, AUTH, name, value.clone());
        }
        let auth = match start_auth(auth_ports, &auth_env).await {
            Ok(auth) => auth,
            Err(status) if attempts < 3 => {
                eprintln!("auth exited before it was ready ({status}); starting both again");
                continue;
            }
            Err(status) => panic!("auth exited before it was ready: {status}"),
        };
        return TestApp {
            auth,
            users,
            auth_db,
            users_db,
            keys,
            users_proxy,
            auth_env,
            client: tessera_testkit::http_client(),
            broker,
        };
    }
}

/// The auth binary on `ports` with `env`, once it is ready; how it exited if it did first.
async fn start_auth(
    ports: (u16, u16),
    env: &[(String, String)],
) -> Result<ServiceProcess, std::process::ExitStatus> {
    ServiceProcess::start_on(binary("auth"), &[], AUTH, env, ports).await
}

/// Writes a new Ed25519 key `<kid>.pem` into `dir`.
pub fn write_key(dir: &std::path::Path, kid: &str) {
    SigningKey::generate(kid).write_pem(dir).unwrap();
}

/// A unique email.
pub fn email() -> String {
    format!("user-{}@example.com", Uuid::now_v7().simple())
}

impl TestApp {
    pub fn auth_url(&self, path: &str) -> String {
        format!("{}{path}", self.auth.http_url())
    }

    pub fn users_url(&self, path: &str) -> String {
        format!("{}{path}", self.users.http_url())
    }

    /// The signer auth uses, read from the same key file: what lets a test forge tokens
    /// that differ from auth's in one claim only.
    pub fn signer(&self) -> Signer {
        let pem = std::fs::read_to_string(self.keys.path().join(format!("{KID}.pem"))).unwrap();
        Signer::new(
            vec![SigningKey::from_pem(KID, &pem).unwrap()],
            "tessera-auth",
            "tessera",
            Duration::from_secs(900),
        )
        .unwrap()
    }

    /// auth's published key set.
    pub async fn jwks(&self) -> Value {
        self.client
            .get(self.auth_url("/.well-known/jwks.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn post(&self, path: &str, body: Value) -> Response {
        self.client
            .post(self.auth_url(path))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn register_with(&self, email: &str, password: &str, name: &str) -> Response {
        self.post(
            "/api/v1/auth/register",
            json!({ "email": email, "password": password, "display_name": name }),
        )
        .await
    }

    /// Registers a new account with [`PASSWORD`].
    pub async fn register(&self) -> Account {
        let email = email();
        let response = self.register_with(&email, PASSWORD, "Ada Lovelace").await;
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["email"], email);
        Account {
            id: body["user_id"].as_str().unwrap().parse().unwrap(),
            email,
        }
    }

    pub async fn login_with(&self, email: &str, password: &str) -> Response {
        self.post(
            "/api/v1/auth/login",
            json!({ "email": email, "password": password }),
        )
        .await
    }

    /// Logs `account` in.
    pub async fn login(&self, account: &Account) -> Session {
        session(self.login_with(&account.email, PASSWORD).await).await
    }

    pub async fn refresh(&self, refresh: &str) -> Response {
        self.post("/api/v1/auth/refresh", json!({ "refresh_token": refresh }))
            .await
    }

    pub async fn logout(&self, session: &Session) -> Response {
        self.client
            .post(self.auth_url("/api/v1/auth/logout"))
            .bearer_auth(&session.access)
            .json(&json!({ "refresh_token": session.refresh }))
            .send()
            .await
            .unwrap()
    }

    /// `GET /api/v1/users/me` at the users service with `access`: what another service
    /// makes of the token.
    pub async fn me(&self, access: &str) -> Response {
        self.client
            .get(self.users_url("/api/v1/users/me"))
            .bearer_auth(access)
            .send()
            .await
            .unwrap()
    }

    /// What auth's gRPC `ValidateToken` answers for `access`.
    pub async fn validate(&self, access: &str) -> Result<ValidateTokenResponse, tonic::Status> {
        AuthServiceClient::new(self.auth.channel().await.unwrap())
            .validate_token(ValidateTokenRequest {
                access_token: access.to_owned(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn users_grpc(&self) -> UserServiceClient<Channel> {
        UserServiceClient::new(self.users.channel().await.unwrap())
    }

    /// Stops auth and starts it again with the same settings (and ports).
    pub async fn restart_auth(self) -> Self {
        let env = self.auth_env.clone();
        self.restart_auth_with(env).await
    }

    /// Stops auth (SIGTERM, as on a rollout) and starts it with `env` on the same ports,
    /// where users fetches its JWKS.
    pub async fn restart_auth_with(self, env: Vec<(String, String)>) -> Self {
        let Self {
            auth,
            users,
            auth_db,
            users_db,
            keys,
            users_proxy,
            client,
            broker,
            ..
        } = self;
        let ports = auth.ports();
        let status = auth.stop(Duration::from_secs(30)).await;
        assert!(status.success(), "auth did not stop cleanly: {status}");
        let auth = start_auth(ports, &env)
            .await
            .unwrap_or_else(|status| panic!("auth did not start again: {status}"));
        Self {
            auth,
            users,
            auth_db,
            users_db,
            keys,
            users_proxy,
            auth_env: env,
            client,
            broker,
        }
    }

    /// The stored role of `email`'s credential.
    pub async fn role_of(&self, email: &str) -> String {
        scalar(
            self.auth_db.url(),
            "SELECT role FROM credentials WHERE email = $1",
            email,
        )
        .await
    }

    /// Credentials stored for `email` (any state).
    pub async fn credentials_for(&self, email: &str) -> i64 {
        scalar(
            self.auth_db.url(),
            "SELECT count(*) FROM credentials WHERE email = $1",
            email,
        )
        .await
    }

    /// Events auth's consumer has recorded as processed under the name `consumer`.
    /// Publishes `envelope` on the app's vhost, as users' relay would.
    pub async fn publish(&self, envelope: &Value) {
        tessera_testkit::events::publish_at(self.broker.amqp_url(), envelope).await;
    }

    pub async fn processed_by(&self, consumer: &str) -> i64 {
        scalar(
            self.auth_db.url(),
            "SELECT count(*) FROM messaging_processed_events WHERE consumer = $1",
            consumer,
        )
        .await
    }

    /// Profiles stored for `email` at the users service.
    pub async fn profiles_for(&self, email: &str) -> i64 {
        scalar(
            self.users_db.url(),
            "SELECT count(*) FROM users WHERE email = $1",
            email,
        )
        .await
    }
}

/// The one value `sql` selects with `$1 = param`, read straight from the database at `url`.
async fn scalar<T>(url: &str, sql: &'static str, param: &str) -> T
where
    T: Send + Unpin + for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    let db = sqlx::PgPool::connect(url).await.unwrap();
    let value = sqlx::query_scalar(sql)
        .bind(param)
        .fetch_one(&db)
        .await
        .unwrap();
    db.close().await;
    value
}

/// The `Retry-After` of a 429 answer.
pub fn retry_after(response: &Response) -> Duration {
    let secs = response.headers()["retry-after"].to_str().unwrap();
    Duration::from_secs(secs.parse().unwrap())
}

/// The tokens of a 200 login or refresh answer.
pub async fn session(response: Response) -> Session {
    let status = response.status();
    let cache_control = response.headers().get("cache-control").cloned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(cache_control.unwrap(), "no-store");
    assert_eq!(body["token_type"], "Bearer");
    let expires_in = body["expires_in"].as_i64().unwrap();
    assert!((890..=900).contains(&expires_in), "{body}");
    Session {
        access: body["access_token"].as_str().unwrap().to_owned(),
        refresh: body["refresh_token"].as_str().unwrap().to_owned(),
    }
}

/// Polls `check` every 100 ms for up to 15 s until it is true.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..150 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never happened: {what}");
}
