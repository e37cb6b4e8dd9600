//! [`Stack`]: auth, users and orders started as their real binaries and wired together as in
//! production (users and orders trust auth's JWKS, auth and orders call users over gRPC, auth
//! and orders consume events), each on a fresh database and free ports, with the typed calls
//! a client makes.

use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use tessera_jwt::{Signer, SigningKey};
use tessera_testkit::broker::TestBroker;
use tessera_testkit::database::TestDatabase;
use tessera_testkit::pki::TestCa;
use tessera_testkit::process::ServiceProcess;
use uuid::Uuid;

use crate::binary;

/// The kid of the key auth signs with.
pub const KID: &str = "test-1";
/// The password of every account a test registers, and of the admin.
pub const PASSWORD: &str = "correct horse battery staple";
/// auth's `iss`, as it is configured by default.
pub const ISSUER: &str = "tessera-auth";
/// The services' `aud`, as they are configured by default.
pub const AUDIENCE: &str = "tessera";

/// One of the three services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// Identities, credentials and tokens.
    Auth,
    /// Profiles.
    Users,
    /// Orders.
    Orders,
}

impl Service {
    /// All three.
    pub const ALL: [Self; 3] = [Self::Auth, Self::Users, Self::Orders];

    /// The prefix of its variables, `AUTH_`.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Auth => "AUTH_",
            Self::Users => "USERS_",
            Self::Orders => "ORDERS_",
        }
    }

    /// Its name, `auth`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::Users => "users",
            Self::Orders => "orders",
        }
    }
}

/// How to start a [`Stack`]; see [`Stack::builder`].
pub struct StackBuilder {
    env: Vec<(String, String)>,
    settings: Vec<(Service, String, String)>,
    admin: Option<String>,
    ca: Option<TestCa>,
}

impl StackBuilder {
    /// Gives every service the variable `name` as it is (`OTEL_EXPORTER_OTLP_ENDPOINT`).
    #[must_use]
    pub fn env(mut self, name: &str, value: impl Into<String>) -> Self {
        self.env.push((name.to_owned(), value.into()));
        self
    }

    /// Sets `<PREFIX>name` of `service` (`name` without the prefix), over the defaults.
    #[must_use]
    pub fn setting(mut self, service: Service, name: &str, value: impl Into<String>) -> Self {
        self.settings.push((service, name.to_owned(), value.into()));
        self
    }

    /// Has auth bootstrap an admin account (`email`, [`PASSWORD`]); [`Stack::admin`] logs it
    /// in.
    #[must_use]
    pub fn admin(mut self, email: &str) -> Self {
        self.admin = Some(email.to_owned());
        self.setting(Service::Auth, "ADMIN_EMAIL", email).setting(
            Service::Auth,
            "ADMIN_PASSWORD",
            PASSWORD,
        )
    }

    /// Has the services call each other over mutual TLS, each with a certificate of a CA
    /// of the stack's own ([`Stack::ca`]) naming it, and gRPC bound where TLS binds it by
    /// default: every interface.
    #[must_use]
    pub fn mutual_tls(mut self) -> Self {
        self.ca = Some(TestCa::new());
        self
    }

    /// Starts users, auth and orders (in that order: each needs the one before), each
    /// ready, on a RabbitMQ vhost of their own (see [`TestBroker`]) where the contract's
    /// queues are declared.
    pub async fn start(self) -> Stack {
        let broker = TestBroker::isolated().await;
        let amqp_url = broker.amqp_url().to_owned();
        let keys = tempfile::tempdir().unwrap();
        SigningKey::generate(KID).write_pem(keys.path()).unwrap();
        // Empty: each binary applies its own migrations as it starts.
        let databases = [
            TestDatabase::empty().await,
            TestDatabase::empty().await,
            TestDatabase::empty().await,
        ];
        let env = |service: Service, database: &TestDatabase| {
            let prefix = service.prefix();
            let mut env = tessera_testkit::service_env(prefix, database.url(), &amqp_url);
            env.extend(self.env.iter().cloned());
            if let Some(ca) = &self.ca {
                env.extend(ca.service_env(prefix, service.name()));
            }
            env
        };
        let tls = self.ca.is_some();
        let overridden = |service: Service, env: &mut Vec<(String, String)>| {
            for (_, name, value) in self.settings.iter().filter(|(s, ..)| *s == service) {
                tessera_testkit::set_var(env, service.prefix(), name, value.clone());
            }
        };
        let [auth_db, users_db, orders_db] = &databases;
        let mut auth_env = env(Service::Auth, auth_db);
        for (name, value) in [
            ("SIGNING_KEYS_DIR", keys.path().display().to_string()),
            // Small but real costs: the defaults would make every registration slow.
            ("ARGON2_MEMORY_KIB", "4096".to_owned()),
            ("ARGON2_ITERATIONS", "1".to_owned()),
            // Every test logs in from 127.0.0.1: its own counters, or they would add up.
            (
                "LOGIN_LIMITS_KEY_PREFIX",
                format!("test:{}", Uuid::now_v7().simple()),
            ),
        ] {
            tessera_testkit::set_var(&mut auth_env, "AUTH_", name, value);
        }
        overridden(Service::Auth, &mut auth_env);
        let mut users_env = env(Service::Users, users_db);
        overridden(Service::Users, &mut users_env);
        let (auth, users) = start_auth_and_users(&auth_env, &users_env, tls).await;

        let mut orders_env = env(Service::Orders, orders_db);
        let jwks_url = format!("{}/.well-known/jwks.json", auth.http_url());
        tessera_testkit::set_var(&mut orders_env, "ORDERS_", "JWKS_URL", jwks_url);
        tessera_testkit::set_var(
            &mut orders_env,
            "ORDERS_",
            "USERS_GRPC_URL",
            grpc_url(&users, tls),
        );
        overridden(Service::Orders, &mut orders_env);
        let orders = ServiceProcess::start(binary("orders"), &[], "ORDERS_", &orders_env).await;

        Stack {
            auth,
            users,
            orders,
            admin: self.admin,
            ca: self.ca,
            amqp_url,
            client: tessera_testkit::http_client(),
            keys,
            _databases: databases,
            _broker: broker,
        }
    }
}

/// Where `process` serves gRPC: over TLS (`https`) or not.
fn grpc_url(process: &ServiceProcess, tls: bool) -> String {
    let url = process.grpc_url();
    if tls {
        url.replacen("http://", "https://", 1)
    } else {
        url.to_owned()
    }
}

/// users, told where auth's JWKS will be, then auth on those ports. Another process can take
/// the ports meanwhile; then auth exits, and the pair starts again.
async fn start_auth_and_users(
    auth_env: &[(String, String)],
    users_env: &[(String, String)],
    tls: bool,
) -> (ServiceProcess, ServiceProcess) {
    for attempt in 1..=3 {
        let auth_ports = (tessera_testkit::free_port(), tessera_testkit::free_port());
        let mut users_env = users_env.to_vec();
        let jwks_url = format!("http://127.0.0.1:{}/.well-known/jwks.json", auth_ports.0);
        tessera_testkit::set_var(&mut users_env, "USERS_", "JWKS_URL", jwks_url);
        let users = ServiceProcess::start(binary("users"), &[], "USERS_", &users_env).await;
        let mut auth_env = auth_env.to_vec();
        tessera_testkit::set_var(
            &mut auth_env,
            "AUTH_",
            "USERS_GRPC_URL",
            grpc_url(&users, tls),
        );
        match ServiceProcess::start_on(binary("auth"), &[], "AUTH_", &auth_env, auth_ports).await {
            Ok(auth) => return (auth, users),
            Err(status) if attempt < 3 => {
                eprintln!("auth exited before it was ready ({status}); starting both again");
            }
            Err(status) => panic!("auth exited before it was ready: {status}"),
        }
    }
    unreachable!("the last attempt returns or panics")
}

/// The three services, running. Dropping it kills the processes (also when a test panics:
/// [`ServiceProcess`] kills its child on drop), then drops the databases and the vhost.
pub struct Stack {
    /// The auth process.
    pub auth: ServiceProcess,
    /// The users process.
    pub users: ServiceProcess,
    /// The orders process.
    pub orders: ServiceProcess,
    admin: Option<String>,
    ca: Option<TestCa>,
    amqp_url: String,
    client: reqwest::Client,
    keys: tempfile::TempDir,
    // Fields drop in order: what the processes use goes after them.
    _databases: [TestDatabase; 3],
    _broker: TestBroker,
}

/// A registered account.
#[derive(Debug, Clone)]
pub struct Account {
    /// Its user id.
    pub id: Uuid,
    /// Its (normalised) email.
    pub email: String,
}

/// A session's tokens.
#[derive(Debug, Clone)]
pub struct Session {
    /// The access token (JWT).
    pub access: String,
    /// The refresh token.
    pub refresh: String,
}

impl Stack {
    /// How to start one: the shared vhost, no admin, the services' defaults.
    pub fn builder() -> StackBuilder {
        StackBuilder {
            env: Vec::new(),
            settings: Vec::new(),
            admin: None,
            ca: None,
        }
    }

    /// The process of `service`.
    pub fn process(&self, service: Service) -> &ServiceProcess {
        match service {
            Service::Auth => &self.auth,
            Service::Users => &self.users,
            Service::Orders => &self.orders,
        }
    }

    /// `<service's REST base URL><path>`.
    pub fn url(&self, service: Service, path: &str) -> String {
        format!("{}{path}", self.process(service).http_url())
    }

    /// The CA of [`StackBuilder::mutual_tls`], to issue a test's own callers.
    pub fn ca(&self) -> Option<&TestCa> {
        self.ca.as_ref()
    }

    /// Where `service` serves gRPC: an `https` URL with mutual TLS.
    pub fn grpc_url(&self, service: Service) -> String {
        grpc_url(self.process(service), self.ca.is_some())
    }

    /// The database `service` keeps its data in, for a test that reads what it wrote.
    pub fn database_url(&self, service: Service) -> &str {
        let [auth, users, orders] = &self._databases;
        match service {
            Service::Auth => auth.url(),
            Service::Users => users.url(),
            Service::Orders => orders.url(),
        }
    }

    /// The AMQP URL the services use, for the test's own connections to the same vhost.
    pub fn amqp_url(&self) -> &str {
        &self.amqp_url
    }

    /// Taps the events matching `pattern` (`user.*`) on the stack's vhost, from now on.
    pub async fn tap(&self, pattern: &str) -> tessera_testkit::events::EventTap {
        tessera_testkit::events::EventTap::bind_at(&self.amqp_url, pattern).await
    }

    /// A request to `service`, without credentials.
    pub fn request(&self, method: Method, service: Service, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(service, path))
    }

    /// `GET path` at `service` with the access token `token`.
    pub async fn get(&self, service: Service, path: &str, token: &str) -> Response {
        self.request(Method::GET, service, path)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// `POST path` at `service` with the access token `token`, without a body.
    pub async fn post(&self, service: Service, path: &str, token: &str) -> Response {
        self.request(Method::POST, service, path)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// The signer auth uses, read from the same key file: what lets a test forge tokens that
    /// differ from auth's in one respect only.
    pub fn signer(&self) -> Signer {
        let pem = std::fs::read_to_string(self.keys.path().join(format!("{KID}.pem"))).unwrap();
        Signer::new(
            vec![SigningKey::from_pem(KID, &pem).unwrap()],
            ISSUER,
            AUDIENCE,
            Duration::from_secs(900),
        )
        .unwrap()
    }

    /// `POST /api/v1/auth/register` with `body`.
    pub async fn register_with(&self, body: &Value) -> Response {
        self.request(Method::POST, Service::Auth, "/api/v1/auth/register")
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Registers a new account with [`PASSWORD`].
    pub async fn register(&self) -> Account {
        let email = format!("user-{}@example.com", Uuid::now_v7().simple());
        let body = json!({ "email": email, "password": PASSWORD, "display_name": "Ada Lovelace" });
        let response = self.register_with(&body).await;
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["email"], email, "{body}");
        Account {
            id: body["user_id"].as_str().unwrap().parse().unwrap(),
            email,
        }
    }

    /// `POST /api/v1/auth/login`.
    pub async fn login_with(&self, email: &str, password: &str) -> Response {
        self.request(Method::POST, Service::Auth, "/api/v1/auth/login")
            .json(&json!({ "email": email, "password": password }))
            .send()
            .await
            .unwrap()
    }

    /// Logs `account` in.
    pub async fn login(&self, account: &Account) -> Session {
        session(self.login_with(&account.email, PASSWORD).await).await
    }

    /// Logs the bootstrapped admin in, once auth has created it (it does so as it starts).
    pub async fn admin(&self) -> Session {
        let email = self
            .admin
            .as_deref()
            .expect("start the stack with an admin");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let response = self.login_with(email, PASSWORD).await;
            if response.status() == StatusCode::OK {
                return session(response).await;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the admin was never bootstrapped: {}",
                response.text().await.unwrap()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `POST /api/v1/auth/refresh`.
    pub async fn refresh(&self, refresh: &str) -> Response {
        self.request(Method::POST, Service::Auth, "/api/v1/auth/refresh")
            .json(&json!({ "refresh_token": refresh }))
            .send()
            .await
            .unwrap()
    }

    /// `POST /api/v1/auth/logout` of `session`.
    pub async fn logout(&self, session: &Session) -> Response {
        self.request(Method::POST, Service::Auth, "/api/v1/auth/logout")
            .bearer_auth(&session.access)
            .json(&json!({ "refresh_token": session.refresh }))
            .send()
            .await
            .unwrap()
    }

    /// `POST /api/v1/orders` with `key` and `body`.
    pub async fn place(&self, token: &str, key: &str, body: &Value) -> Response {
        self.request(Method::POST, Service::Orders, "/api/v1/orders")
            .bearer_auth(token)
            .header("idempotency-key", key)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Places [`an_order`] under a fresh key; returns it.
    pub async fn placed(&self, token: &str) -> Value {
        let response = self
            .place(token, &Uuid::now_v7().to_string(), &an_order())
            .await;
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }
}

/// A valid order body.
pub fn an_order() -> Value {
    json!({
        "currency": "EUR",
        "items": [
            { "sku": "BOOK-42", "quantity": 2, "unit_price_cents": 1250 },
            { "sku": "pen.blue_1", "quantity": 10, "unit_price_cents": 99 }
        ]
    })
}

/// The tokens of a 200 login or refresh answer.
pub async fn session(response: Response) -> Session {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer", "{body}");
    Session {
        access: body["access_token"].as_str().unwrap().to_owned(),
        refresh: body["refresh_token"].as_str().unwrap().to_owned(),
    }
}

/// Polls `check` every 100 ms until it holds, for up to `limit`; panics naming `what` then.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "within {limit:?}, never: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
