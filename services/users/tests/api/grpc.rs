//! `UserService` through a real tonic client.

use std::time::{Duration, Instant};

use tessera_jwt::Role;
use tessera_proto::users::v1 as proto;
use tonic::Code;
use uuid::Uuid;

use crate::helpers::spawn_app;

fn request(id: Uuid, email: &str) -> proto::CreateUserRequest {
    proto::CreateUserRequest {
        id: id.to_string(),
        email: email.to_owned(),
        display_name: "Grace".to_owned(),
        role: proto::Role::Unspecified.into(),
    }
}

#[tokio::test]
async fn create_user_is_idempotent_on_email() {
    let app = spawn_app().await;
    let mut client = app.grpc().await;
    let id = Uuid::now_v7();

    let first = client
        .create_user(request(id, "Grace@Example.com"))
        .await
        .unwrap()
        .into_inner();
    let again = client
        .create_user(request(Uuid::now_v7(), " grace@example.COM "))
        .await
        .unwrap()
        .into_inner();

    assert!(first.created);
    assert!(!again.created);
    let (first, again) = (first.user.unwrap(), again.user.unwrap());
    assert_eq!(first.id, id.to_string());
    assert_eq!(again, first);
    assert_eq!(first.email, "grace@example.com");
    assert_eq!(first.role, i32::from(proto::Role::User));
    assert!(first.created_at.is_some());
}

#[tokio::test]
async fn invalid_requests_are_invalid_argument_naming_the_field() {
    let app = spawn_app().await;
    let mut client = app.grpc().await;
    let valid = request(Uuid::now_v7(), "ok@example.com");

    let cases = [
        (
            proto::CreateUserRequest {
                id: "nope".into(),
                ..valid.clone()
            },
            "id",
        ),
        (
            proto::CreateUserRequest {
                email: "no-at-sign".into(),
                ..valid.clone()
            },
            "email",
        ),
        (
            proto::CreateUserRequest {
                display_name: " ".into(),
                ..valid.clone()
            },
            "display_name",
        ),
        (
            proto::CreateUserRequest {
                role: 42,
                ..valid.clone()
            },
            "role",
        ),
    ];
    for (request, field) in cases {
        let status = client.create_user(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert!(
            status.message().contains(field),
            "{field} not named: {}",
            status.message()
        );
    }
    let status = client
        .get_user(proto::GetUserRequest { id: "42".into() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let too_many = proto::BatchGetUsersRequest {
        ids: (0..101).map(|_| Uuid::now_v7().to_string()).collect(),
    };
    let status = client.batch_get_users(too_many).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("ids"), "{}", status.message());
}

#[tokio::test]
async fn get_user_finds_existing_users_only() {
    let app = spawn_app().await;
    let user = app.create_user(Role::User).await;
    let mut client = app.grpc().await;

    let found = client
        .get_user(proto::GetUserRequest {
            id: user.id.to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.user.unwrap().email, user.email);
    let missing = client
        .get_user(proto::GetUserRequest {
            id: Uuid::now_v7().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
}

#[tokio::test]
async fn batch_get_returns_the_users_that_exist_once_each() {
    let app = spawn_app().await;
    let a = app.create_user(Role::User).await;
    let b = app.create_user(Role::User).await;
    let mut client = app.grpc().await;

    let ids = vec![
        a.id.to_string(),
        Uuid::now_v7().to_string(),
        b.id.to_string(),
        a.id.to_string(),
    ];
    let found = client
        .batch_get_users(proto::BatchGetUsersRequest { ids })
        .await
        .unwrap()
        .into_inner();

    let mut emails: Vec<_> = found.users.into_iter().map(|u| u.email).collect();
    emails.sort();
    let mut expected = vec![a.email, b.email];
    expected.sort();
    assert_eq!(emails, expected);
}

#[tokio::test]
async fn a_call_blocked_past_its_deadline_ends_at_the_deadline() {
    let app = spawn_app().await;
    let email = format!("blocked-{}@example.com", Uuid::now_v7().simple());
    // An uncommitted insert of the same email makes CreateUser wait on the unique index.
    let db = sqlx::PgPool::connect(app.database.url()).await.unwrap();
    let mut blocker = db.begin().await.unwrap();
    sqlx::query("INSERT INTO users (id, email, display_name) VALUES ($1, $2, 'Blocker')")
        .bind(Uuid::now_v7())
        .bind(&email)
        .execute(&mut *blocker)
        .await
        .unwrap();

    let mut call = tonic::Request::new(request(Uuid::now_v7(), &email));
    call.set_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let status = app.grpc().await.create_user(call).await.unwrap_err();

    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    blocker.rollback().await.unwrap();
}
