//! Internal gRPC takes no end-user credentials: its callers are the other services. What
//! keeps end users off it is where it is served (never on the public REST port; without TLS
//! on the loopback interface only unless deliberately bound elsewhere) and, with mutual TLS,
//! who the caller's certificate says it is (`tessera_proto::callers`).

use reqwest::StatusCode;
use tessera_e2e::binary;
use tessera_e2e::stack::{Service, Stack};
use tessera_proto::auth::v1::ValidateTokenRequest;
use tessera_proto::auth::v1::auth_service_client::AuthServiceClient;
use tessera_proto::orders::v1::GetOrderRequest;
use tessera_proto::orders::v1::order_service_client::OrderServiceClient;
use tessera_proto::users::v1::GetUserRequest;
use tessera_proto::users::v1::user_service_client::UserServiceClient;
use tessera_testkit::broker::TestBroker;
use tessera_testkit::database::TestDatabase;
use tessera_testkit::process::ServiceProcess;
use tonic::transport::Channel;

/// A channel to `url`, which may not speak gRPC at all.
async fn channel(url: &str) -> Option<Channel> {
    tonic::transport::Endpoint::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .ok()
}

/// Each service's own gRPC call, made at `url`: whether it was answered.
async fn answered(service: Service, url: &str, id: &str, token: &str) -> Result<(), String> {
    let Some(channel) = channel(url).await else {
        return Err("no HTTP/2 connection".to_owned());
    };
    let outcome = match service {
        Service::Auth => AuthServiceClient::new(channel)
            .validate_token(ValidateTokenRequest {
                access_token: token.to_owned(),
            })
            .await
            .map(drop),
        Service::Users => UserServiceClient::new(channel)
            .get_user(GetUserRequest { id: id.to_owned() })
            .await
            .map(drop),
        Service::Orders => OrderServiceClient::new(channel)
            .get_order(GetOrderRequest { id: id.to_owned() })
            .await
            .map(drop),
    };
    outcome.map_err(|status| format!("{:?}: {}", status.code(), status.message()))
}

#[tokio::test]
async fn internal_grpc_is_not_served_on_the_public_rest_port() {
    let stack = Stack::builder().start().await;
    let account = stack.register().await;
    let session = stack.login(&account).await;
    let order = stack.placed(&session.access).await;
    let order_id = order["id"].as_str().unwrap();

    for service in Service::ALL {
        let process = stack.process(service);
        let id = match service {
            Service::Orders => order_id.to_owned(),
            _ => account.id.to_string(),
        };
        // The control: the call is answered where it belongs.
        answered(service, process.grpc_url(), &id, &session.access)
            .await
            .unwrap_or_else(|why| panic!("{} gRPC: {why}", service.name()));
        let on_rest = answered(service, process.http_url(), &id, &session.access).await;
        assert!(on_rest.is_err(), "{} answers gRPC on REST", service.name());
    }
    let raw = stack
        .request(
            reqwest::Method::POST,
            Service::Users,
            "/tessera.users.v1.UserService/GetUser",
        )
        .header("content-type", "application/grpc")
        .body(vec![0, 0, 0, 0, 0])
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::NOT_FOUND);
}

/// The addresses on which something listens on TCP `port`, from the kernel's tables.
fn listening_on(port: u16) -> Vec<String> {
    let suffix = format!(":{port:04X}");
    let mut addresses = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // `st` 0A is LISTEN.
            if let [_, local, _, "0A", ..] = fields[..]
                && let Some(address) = local.strip_suffix(&suffix)
            {
                addresses.push(address.to_owned());
            }
        }
    }
    addresses
}

/// 127.0.0.1 or ::1 as `/proc/net/tcp*` write them (32-bit words in host order).
fn is_loopback(address: &str) -> bool {
    address == "0100007F" || address == "00000000000000000000000001000000"
}

#[tokio::test]
async fn without_tls_grpc_listens_on_the_loopback_interface_only_by_default() {
    let database = TestDatabase::empty().await;
    let broker = TestBroker::isolated().await;
    let mut env = tessera_testkit::service_env("USERS_", database.url(), broker.amqp_url());
    // The default, which is what this test is about; the test servers bind 127.0.0.1.
    env.retain(|(name, _)| name != "USERS_HOST");

    let users = ServiceProcess::start(binary("users"), &[], "USERS_", &env).await;

    let (_, grpc) = users.ports();
    let listening = listening_on(grpc);
    assert!(!listening.is_empty(), "nothing listens on {grpc}");
    assert!(
        listening.iter().all(|address| is_loopback(address)),
        "gRPC without TLS is reachable beyond this machine, listening on {listening:?} \
         (00000000 is every interface)"
    );
}

#[tokio::test]
async fn over_mutual_tls_the_story_runs_and_only_granted_callers_get_in() {
    let stack = Stack::builder().mutual_tls().start().await;
    // Registration makes the profile through users' CreateUser, an order asks users'
    // GetUser: both over TLS, as the services' own certificates.
    let account = stack.register().await;
    let session = stack.login(&account).await;
    let order = stack.placed(&session.access).await;
    assert_eq!(order["user_id"], account.id.to_string());

    let ca = stack.ca().unwrap();
    let users = stack.grpc_url(Service::Users);
    let create = |role: i32| tessera_proto::users::v1::CreateUserRequest {
        id: uuid::Uuid::now_v7().to_string(),
        email: format!("{}@example.com", uuid::Uuid::now_v7().simple()),
        display_name: "Mallory".to_owned(),
        role,
    };
    let admin = tessera_proto::users::v1::Role::Admin as i32;
    // orders may read profiles but not make an admin; an operator may read only.
    for caller in ["orders", "operator"] {
        let channel = ca
            .channel(&users, Some(&ca.issue(caller)), "users")
            .await
            .unwrap();
        let refused = UserServiceClient::new(channel)
            .create_user(create(admin))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{caller}");
    }
    let operator = ca
        .channel(&users, Some(&ca.issue("operator")), "users")
        .await
        .unwrap();
    let found = UserServiceClient::new(operator)
        .get_user(GetUserRequest {
            id: account.id.to_string(),
        })
        .await
        .unwrap();
    assert!(found.into_inner().user.is_some());

    // Plaintext gRPC gets nothing, though TLS serves every interface by default.
    let (_, grpc) = stack.users.ports();
    assert!(
        listening_on(grpc)
            .iter()
            .any(|address| !is_loopback(address)),
        "with TLS gRPC is meant to be reachable by peers on other hosts"
    );
    let plaintext = answered(
        Service::Users,
        stack.users.grpc_url(),
        &account.id.to_string(),
        &session.access,
    )
    .await;
    assert!(plaintext.is_err(), "plaintext gRPC answered over TLS");
}
