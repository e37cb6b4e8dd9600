//! A new environment, where services come up in any order: an event published before its
//! consumer has ever run waits for it.

use sqlx::migrate::Migrator;
use tessera_e2e::binary;
use tessera_jwt::Role;
use tessera_proto::users::v1 as users_proto;
use tessera_proto::users::v1::user_service_client::UserServiceClient;
use tessera_testkit::broker::TestBroker;
use tessera_testkit::database::TestDatabase;
use tessera_testkit::jwks::TestIssuer;
use tessera_testkit::process::ServiceProcess;
use uuid::Uuid;

use crate::helpers::{KID, eventually, write_key};

/// auth's schema, applied without running auth (whose start would declare its queue).
static AUTH_SCHEMA: Migrator = sqlx::migrate!("../../migrations/auth");

#[tokio::test]
async fn a_user_deleted_before_auth_ever_ran_loses_their_credential_once_auth_starts() {
    let broker = TestBroker::isolated().await;
    let issuer = TestIssuer::start().await;
    let auth_db = TestDatabase::migrated(&AUTH_SCHEMA).await;
    let users_db = TestDatabase::empty().await;

    // Only users runs on this vhost.
    let mut users_env = tessera_testkit::service_env("USERS_", users_db.url(), broker.amqp_url());
    for (name, value) in [
        ("JWKS_URL", issuer.jwks_url()),
        ("JWT_ISSUER", TestIssuer::ISSUER.to_owned()),
        ("JWT_AUDIENCE", TestIssuer::AUDIENCE.to_owned()),
    ] {
        tessera_testkit::set_var(&mut users_env, "USERS_", name, value);
    }
    let users = ServiceProcess::start(binary("users"), &[], "USERS_", &users_env).await;

    // A profile at users and its credential at auth, as registration leaves them.
    let id = Uuid::now_v7();
    let email = format!("user-{}@example.com", id.simple());
    UserServiceClient::new(users.channel().await.unwrap())
        .create_user(users_proto::CreateUserRequest {
            id: id.to_string(),
            email: email.clone(),
            display_name: "First Deploy".to_owned(),
            role: users_proto::Role::User.into(),
        })
        .await
        .unwrap();
    let auth_pool = sqlx::PgPool::connect(auth_db.url()).await.unwrap();
    sqlx::query(
        "INSERT INTO credentials (user_id, email, password_hash, status) VALUES ($1, $2, 'unused', 'active')",
    )
    .bind(id)
    .bind(&email)
    .execute(&auth_pool)
    .await
    .unwrap();

    let deleted = tessera_testkit::http_client()
        .delete(format!("{}/api/v1/users/{id}", users.http_url()))
        .bearer_auth(issuer.token(id, Role::User))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    // Confirmed by the broker, and waiting in auth's queue, which auth never declared.
    let users_pool = sqlx::PgPool::connect(users_db.url()).await.unwrap();
    eventually("users published user.deleted", || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM messaging_outbox WHERE event_type = 'user.deleted' AND sent_at IS NOT NULL)",
        )
        .fetch_one(&users_pool)
        .await
        .unwrap()
    })
    .await;
    let waiting = tessera_testkit::events::queue_depth_at(broker.amqp_url(), "auth.events").await;
    assert_eq!(
        waiting,
        Some(1),
        "user.deleted is not waiting in auth.events"
    );

    // auth comes up afterwards.
    let keys = tempfile::tempdir().unwrap();
    write_key(keys.path(), KID);
    let mut auth_env = tessera_testkit::service_env("AUTH_", auth_db.url(), broker.amqp_url());
    for (name, value) in [
        ("SIGNING_KEYS_DIR", keys.path().display().to_string()),
        ("USERS_GRPC_URL", users.grpc_url().to_owned()),
        (
            "LOGIN_LIMITS_KEY_PREFIX",
            format!("test:{}", Uuid::now_v7().simple()),
        ),
    ] {
        tessera_testkit::set_var(&mut auth_env, "AUTH_", name, value);
    }
    let _auth = ServiceProcess::start(binary("auth"), &[], "AUTH_", &auth_env).await;
    eventually("auth removed the deleted user's credential", || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT NOT EXISTS (SELECT 1 FROM credentials WHERE user_id = $1)",
        )
        .bind(id)
        .fetch_one(&auth_pool)
        .await
        .unwrap()
    })
    .await;
}
