//! `UserService` over mutual TLS: only certificates of the CA get in, and each method only
//! for the services granted it (`tessera_proto::callers`).

use tessera_proto::users::v1 as proto;
use tessera_proto::users::v1::user_service_client::UserServiceClient;
use tessera_testkit::pki::{Issued, TestCa};
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use uuid::Uuid;

use crate::helpers::{TestApp, spawn_app_with};

/// users with the certificate `users` of `ca`.
async fn spawn_tls_app(ca: &TestCa) -> TestApp {
    let issued = ca.issue("users");
    spawn_app_with(&[
        ("GRPC_TLS_CERT", issued.cert_pem),
        ("GRPC_TLS_KEY", issued.key_pem),
        ("GRPC_TLS_CA", ca.pem()),
    ])
    .await
}

fn https(app: &TestApp) -> String {
    app.service.grpc().replacen("http://", "https://", 1)
}

async fn client_as(app: &TestApp, ca: &TestCa, caller: &Issued) -> UserServiceClient<Channel> {
    UserServiceClient::new(
        ca.channel(&https(app), Some(caller), "users")
            .await
            .unwrap(),
    )
}

fn create(id: Uuid) -> proto::CreateUserRequest {
    proto::CreateUserRequest {
        id: id.to_string(),
        email: format!("tls-{}@example.com", id.simple()),
        display_name: "Ada".to_owned(),
        role: proto::Role::Admin.into(),
    }
}

#[tokio::test]
async fn each_method_takes_only_the_callers_granted_it() {
    let ca = TestCa::new();
    let app = spawn_tls_app(&ca).await;
    let (auth, orders, operator) = (ca.issue("auth"), ca.issue("orders"), ca.issue("operator"));
    let id = Uuid::now_v7();

    for stranger in [&orders, &operator] {
        let refused = client_as(&app, &ca, stranger)
            .await
            .create_user(create(Uuid::now_v7()))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
        assert!(refused.message().contains("CreateUser"), "{refused:?}");
    }
    let created = client_as(&app, &ca, &auth)
        .await
        .create_user(create(id))
        .await
        .unwrap()
        .into_inner();
    assert!(created.created);

    for reader in [&orders, &operator] {
        let found = client_as(&app, &ca, reader)
            .await
            .get_user(proto::GetUserRequest { id: id.to_string() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(found.user.unwrap().id, id.to_string());
    }
    let refused = client_as(&app, &ca, &auth)
        .await
        .get_user(proto::GetUserRequest { id: id.to_string() })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);

    // What was refused left nothing behind: one profile, the one auth created.
    let db = sqlx::PgPool::connect(app.database.url()).await.unwrap();
    let profiles: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(profiles, 1);
}

#[tokio::test]
async fn any_certified_peer_may_ask_for_health_but_nothing_more() {
    let ca = TestCa::new();
    let app = spawn_tls_app(&ca).await;
    let probe = ca.issue("probe");
    let channel = ca
        .channel(&https(&app), Some(&probe), "users")
        .await
        .unwrap();
    let health = HealthClient::new(channel.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status(), ServingStatus::Serving);
    let refused = UserServiceClient::new(channel)
        .get_user(proto::GetUserRequest {
            id: Uuid::now_v7().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
}

/// Whether a call over `channel` (if it connected at all) got an answer from the service:
/// the profile, or that there is none.
async fn reaches(channel: Result<Channel, tonic::transport::Error>) -> bool {
    let Ok(channel) = channel else {
        return false;
    };
    let answer = UserServiceClient::new(channel)
        .get_user(proto::GetUserRequest {
            id: Uuid::now_v7().to_string(),
        })
        .await;
    match answer {
        Ok(_) => true,
        Err(status) => status.code() == Code::NotFound,
    }
}

#[tokio::test]
async fn callers_without_a_certificate_of_the_ca_get_nowhere_and_do_not_stop_the_server() {
    let ca = TestCa::new();
    let other_ca = TestCa::new();
    let app = spawn_tls_app(&ca).await;
    let url = https(&app);

    // No certificate, one of another CA (named as a granted caller), plaintext: all refused,
    // whether at the handshake or at the first call.
    assert!(!reaches(ca.channel(&url, None, "users").await).await);
    let forged_orders = other_ca.issue("orders");
    assert!(!reaches(ca.channel(&url, Some(&forged_orders), "users").await).await);
    let plaintext = tonic::transport::Endpoint::from_shared(app.service.grpc().to_owned())
        .unwrap()
        .connect()
        .await;
    assert!(!reaches(plaintext).await);

    // A server that is not `users` (a certificate of the CA for another name) is refused
    // by the client.
    let orders = ca.issue("orders");
    assert!(!reaches(ca.channel(&url, Some(&orders), "orders").await).await);

    // The server still serves those who present the right certificate.
    assert!(reaches(ca.channel(&url, Some(&orders), "users").await).await);
}

#[tokio::test]
async fn a_peer_that_connects_and_never_finishes_the_handshake_is_let_go() {
    use tokio::io::AsyncReadExt as _;

    let ca = TestCa::new();
    let app = spawn_tls_app(&ca).await;
    let address = app.service.grpc().trim_start_matches("http://").to_owned();
    let mut stalled = tokio::net::TcpStream::connect(&address).await.unwrap();

    // Nothing is sent: the server closes the connection once the handshake's time is up
    // (10 s), rather than holding it for as long as the peer likes.
    let mut buffer = [0_u8; 16];
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        stalled.read(&mut buffer),
    )
    .await
    .expect("the stalled connection is still open after 20 s");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

    // Meanwhile and afterwards, peers that do speak TLS are served.
    assert!(
        reaches(
            ca.channel(&https(&app), Some(&ca.issue("orders")), "users")
                .await
        )
        .await
    );
}
