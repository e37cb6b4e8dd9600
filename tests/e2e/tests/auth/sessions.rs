//! Refresh rotation and reuse detection, logout, and what users' events do to sessions.

use reqwest::StatusCode;
use serde_json::{Value, json};
use tessera_testkit::proxy::TcpProxy;

use uuid::Uuid;

use crate::helpers::{
    PASSWORD, TestApp, assert_problem, eventually, session, spawn_app, spawn_app_with,
};

#[tokio::test]
async fn a_refresh_token_works_once_and_its_replacement_takes_over() {
    let app = spawn_app().await;
    let account = app.register().await;
    let first = app.login(&account).await;

    let second = session(app.refresh(&first.refresh).await).await;

    assert_ne!(second.refresh, first.refresh);
    assert_ne!(second.access, first.access);
    assert_eq!(app.me(&second.access).await.status(), StatusCode::OK);
    let third = session(app.refresh(&second.refresh).await).await;
    assert_eq!(app.me(&third.access).await.status(), StatusCode::OK);
}

/// Moves every session of `app` `days` into the past, as if logged in that long ago.
async fn age_sessions(app: &TestApp, days: i32) {
    let db = sqlx::PgPool::connect(app.auth_db.url()).await.unwrap();
    sqlx::query("UPDATE sessions SET created_at = created_at - make_interval(days => $1)")
        .bind(days)
        .execute(&db)
        .await
        .unwrap();
    db.close().await;
}

#[tokio::test]
async fn a_session_ends_at_its_absolute_lifetime_however_often_it_is_refreshed() {
    let app = spawn_app().await;
    let account = app.register().await;
    let first = app.login(&account).await;

    // 29 days in: still refreshable, but the new refresh token ends with the session (the
    // 30-day default), not 14 days on.
    age_sessions(&app, 29).await;
    let renewed = session(app.refresh(&first.refresh).await).await;
    let db = sqlx::PgPool::connect(app.auth_db.url()).await.unwrap();
    let left: f64 =
        sqlx::query_scalar("SELECT extract(epoch FROM expires_at - now())::float8 FROM sessions")
            .fetch_one(&db)
            .await
            .unwrap();
    db.close().await;
    assert!(
        (0.0..=86_400.0 + 60.0).contains(&left),
        "the session outlives its 30 days: {left} s left"
    );

    // Past 30 days: over, whatever its refresh token says.
    age_sessions(&app, 2).await;
    assert_eq!(
        app.refresh(&renewed.refresh).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // A new login starts a new session.
    let again = app.login(&account).await;
    session(app.refresh(&again.refresh).await).await;
}

/// Moves every exchange of a refresh token `secs` into the past.
async fn age_exchanges(app: &TestApp, secs: f64) {
    let db = sqlx::PgPool::connect(app.auth_db.url()).await.unwrap();
    sqlx::query("UPDATE refresh_tokens SET used_at = used_at - make_interval(secs => $1)")
        .bind(secs)
        .execute(&db)
        .await
        .unwrap();
    db.close().await;
}

#[tokio::test]
async fn reusing_a_rotated_refresh_token_revokes_the_whole_session() {
    let app = spawn_app().await;
    let account = app.register().await;
    let stolen = app.login(&account).await;
    let current = session(app.refresh(&stolen.refresh).await).await;
    // Past the grace a retry would have had (30 s by default).
    age_exchanges(&app, 31.0).await;

    let replay = app.refresh(&stolen.refresh).await;

    assert_problem(replay, 401, None).await;
    // The legitimate holder's newer tokens die with the session, and so does the access
    // token stolen with the refresh token.
    assert_problem(app.refresh(&current.refresh).await, 401, None).await;
    for access in [&current.access, &stolen.access] {
        assert_eq!(app.me(access).await.status(), StatusCode::UNAUTHORIZED);
    }
    // Other sessions of the same account are untouched.
    let other = app.login(&account).await;
    session(app.refresh(&other.refresh).await).await;
}

#[tokio::test]
async fn a_refresh_retried_or_raced_by_another_tab_keeps_the_session() {
    let app = spawn_app().await;
    let account = app.register().await;
    let first = app.login(&account).await;

    // Two tabs refresh with the same token at once: one gets new tokens, the other 409.
    let (one, two) = tokio::join!(app.refresh(&first.refresh), app.refresh(&first.refresh));
    let (winner, retry) = match (one.status(), two.status()) {
        (StatusCode::OK, StatusCode::CONFLICT) => (one, two),
        (StatusCode::CONFLICT, StatusCode::OK) => (two, one),
        other => panic!("expected one 200 and one 409, got {other:?}"),
    };
    assert_problem(retry, 409, None).await;
    let current = session(winner).await;
    // A retry after a lost response: 409 again, and nothing is revoked.
    assert_problem(app.refresh(&first.refresh).await, 409, None).await;
    assert_eq!(app.me(&current.access).await.status(), StatusCode::OK);
    session(app.refresh(&current.refresh).await).await;
}

#[tokio::test]
async fn anything_but_a_live_refresh_token_is_refused() {
    let app = spawn_app().await;
    for token in ["", "garbage", &"A".repeat(43), &"x".repeat(5_000)] {
        assert_problem(app.refresh(token).await, 401, None).await;
    }
    let response = app.post("/api/v1/auth/refresh", json!({})).await;
    assert_problem(response, 422, Some("refresh_token")).await;
}

#[tokio::test]
async fn logout_ends_the_session_and_revokes_the_access_token_everywhere() {
    let app = spawn_app().await;
    let account = app.register().await;
    let session_one = app.login(&account).await;
    let session_two = app.login(&account).await;

    let response = app.logout(&session_one).await;

    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    // Denylisted: the users service refuses it, and so does ValidateToken.
    assert_eq!(
        app.me(&session_one.access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let status = app.validate(&session_one.access).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert_problem(app.refresh(&session_one.refresh).await, 401, None).await;
    // The token is revoked, so logging out again with it is refused.
    assert_problem(app.logout(&session_one).await, 401, None).await;
    // The other session lives on.
    assert_eq!(app.me(&session_two.access).await.status(), StatusCode::OK);
    session(app.refresh(&session_two.refresh).await).await;
}

#[tokio::test]
async fn logout_revokes_every_access_token_the_session_issued() {
    let app = spawn_app().await;
    let account = app.register().await;
    let first = app.login(&account).await;
    let second = session(app.refresh(&first.refresh).await).await;
    assert_eq!(app.me(&first.access).await.status(), StatusCode::OK);

    assert_eq!(app.logout(&second).await.status(), StatusCode::NO_CONTENT);

    // users took `first` for not revoked a moment ago, and asks Redis again once that
    // answer is `RECHECK_AFTER` old: the bound on how long a revocation goes unseen there.
    tokio::time::sleep(tessera_jwt::Denylist::RECHECK_AFTER).await;
    for access in [&first.access, &second.access] {
        assert_eq!(app.me(access).await.status(), StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn logout_cannot_end_someone_elses_session() {
    let app = spawn_app().await;
    let mallory = app.login(&app.register().await).await;
    let victim = app.login(&app.register().await).await;
    let mixed = crate::helpers::Session {
        access: mallory.access.clone(),
        refresh: victim.refresh.clone(),
    };

    assert_eq!(app.logout(&mixed).await.status(), StatusCode::NO_CONTENT);

    session(app.refresh(&victim.refresh).await).await;
}

#[tokio::test]
async fn logout_needs_an_access_token_and_a_refresh_token() {
    let app = spawn_app().await;
    let live = app.login(&app.register().await).await;
    let response = app
        .post(
            "/api/v1/auth/logout",
            json!({ "refresh_token": live.refresh }),
        )
        .await;
    assert_problem(response, 401, None).await;
    let malformed = crate::helpers::Session {
        access: live.access.clone(),
        refresh: "nope".to_owned(),
    };
    assert_problem(app.logout(&malformed).await, 422, Some("refresh_token")).await;
}

#[tokio::test]
async fn deleting_the_user_revokes_every_session_and_the_credential() {
    let app = spawn_app().await;
    let account = app.register().await;
    let kept = app.login(&account).await;
    let active = app.login(&account).await;

    let deleted = tessera_testkit::http_client()
        .delete(app.users_url(&format!("/api/v1/users/{}", account.id)))
        .bearer_auth(&active.access)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);

    eventually("user.deleted reaches auth", || async {
        app.credentials_for(&account.email).await == 0
    })
    .await;
    assert_problem(app.refresh(&kept.refresh).await, 401, None).await;
    assert_problem(app.refresh(&active.refresh).await, 401, None).await;
    assert_problem(app.login_with(&account.email, PASSWORD).await, 401, None).await;
    let status = app.validate(&kept.access).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "denylisted");
    // Processed events are keyed by the consumer's name: renamed, every event would be
    // applied again after a deploy.
    assert!(app.processed_by("auth.users").await >= 1);
}

/// An app whose auth bootstraps an admin account, once that account can log in.
async fn spawn_app_with_admin() -> (crate::helpers::TestApp, String) {
    let admin_email = crate::helpers::email();
    let app = spawn_app_with(&[
        ("ADMIN_EMAIL", admin_email.clone()),
        ("ADMIN_PASSWORD", PASSWORD.to_owned()),
    ])
    .await;
    eventually("the admin is bootstrapped", || async {
        app.login_with(&admin_email, PASSWORD).await.status() == StatusCode::OK
    })
    .await;
    (app, admin_email)
}

#[tokio::test]
async fn the_bootstrapped_admin_can_promote_a_user_whose_next_tokens_say_admin() {
    let (app, admin_email) = spawn_app_with_admin().await;
    let admin = session(app.login_with(&admin_email, PASSWORD).await).await;
    let account = app.register().await;
    let user = app.login(&account).await;

    let promoted = tessera_testkit::http_client()
        .patch(app.users_url(&format!("/api/v1/users/{}", account.id)))
        .bearer_auth(&admin.access)
        .json(&json!({ "role": "admin" }))
        .send()
        .await
        .unwrap();
    assert_eq!(promoted.status(), StatusCode::OK);

    eventually("user.updated reaches auth", || async {
        app.role_of(&account.email).await == "admin"
    })
    .await;
    // The session from before carries the old role: it is over, and its token refused.
    assert_eq!(
        app.refresh(&user.refresh).await.status(),
        StatusCode::UNAUTHORIZED
    );
    eventually("the old token is refused", || async {
        app.me(&user.access).await.status() == StatusCode::UNAUTHORIZED
    })
    .await;
    let renewed = app.login(&account).await;
    let everyone = tessera_testkit::http_client()
        .get(app.users_url("/api/v1/users"))
        .bearer_auth(&renewed.access)
        .send()
        .await
        .unwrap();
    assert_eq!(everyone.status(), StatusCode::OK, "admin-only listing");
}

/// `role` for `user` set with `token`: the status users answers.
async fn set_role(app: &TestApp, token: &str, user: Uuid, role: &str) -> StatusCode {
    tessera_testkit::http_client()
        .patch(app.users_url(&format!("/api/v1/users/{user}")))
        .bearer_auth(token)
        .json(&json!({ "role": role }))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn a_demoted_admin_cannot_use_the_tokens_of_before_to_promote_themselves_back() {
    let (app, admin_email) = spawn_app_with_admin().await;
    let admin = session(app.login_with(&admin_email, PASSWORD).await).await;
    let account = app.register().await;
    assert_eq!(
        set_role(&app, &admin.access, account.id, "admin").await,
        StatusCode::OK
    );
    eventually("the promotion reaches auth", || async {
        app.role_of(&account.email).await == "admin"
    })
    .await;
    let promoted = app.login(&account).await;

    assert_eq!(
        set_role(&app, &admin.access, account.id, "user").await,
        StatusCode::OK
    );
    eventually("the demotion reaches auth", || async {
        app.role_of(&account.email).await == "user"
    })
    .await;

    // Denylisted as soon as auth applied the demotion: no role can be changed with it, its
    // own included, and its session cannot be refreshed into a new admin token.
    assert_eq!(
        set_role(&app, &promoted.access, account.id, "admin").await,
        StatusCode::UNAUTHORIZED
    );
    let other = app.register().await;
    assert_eq!(
        set_role(&app, &promoted.access, other.id, "admin").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.refresh(&promoted.refresh).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // A new login is a user's.
    let now_user = app.login(&account).await;
    assert_eq!(
        set_role(&app, &now_user.access, account.id, "admin").await,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn the_admin_bootstrap_is_idempotent_across_restarts() {
    let (app, admin_email) = spawn_app_with_admin().await;

    let app = app.restart_auth().await;

    let admin = session(app.login_with(&admin_email, PASSWORD).await).await;
    assert_eq!(app.credentials_for(&admin_email).await, 1);
    assert_eq!(app.profiles_for(&admin_email).await, 1);
    assert_eq!(app.role_of(&admin_email).await, "admin");
    assert_eq!(app.me(&admin.access).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_admin_bootstrap_never_promotes_an_existing_user() {
    let app = spawn_app().await;
    let account = app.register().await;
    let mut env = app.auth_env.clone();
    tessera_testkit::set_var(&mut env, "AUTH_", "ADMIN_EMAIL", account.email.clone());
    tessera_testkit::set_var(
        &mut env,
        "AUTH_",
        "ADMIN_PASSWORD",
        "another password entirely",
    );

    let app = app.restart_auth_with(env).await;

    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(app.role_of(&account.email).await, "user");
    app.login(&account).await;
}

/// A `user.updated` envelope as users publishes it.
fn user_updated(account: &crate::helpers::Account, role: &str, version: i64, at: &str) -> Value {
    json!({
        "id": Uuid::now_v7(),
        "type": "user.updated",
        "version": 1,
        "occurred_at": at,
        "source": "users",
        "data": {
            "id": account.id,
            "email": account.email,
            "display_name": "Racing Writer",
            "role": role,
            "updated_at": at,
            "version": version,
        },
    })
}

#[tokio::test]
async fn role_changes_are_ordered_by_profile_version_not_by_their_clocks() {
    let app = spawn_app().await;
    let account = app.register().await;
    // Two updates raced at users: the one stamped later committed first, so the newer
    // version carries the older clock. It arrives first; the stale one must not win.
    app.publish(&user_updated(&account, "user", 3, "2026-01-01T00:00:00Z"))
        .await;
    app.publish(&user_updated(&account, "admin", 2, "2026-01-01T00:00:01Z"))
        .await;
    eventually("both events are processed", || async {
        app.processed_by("auth.users").await >= 2
    })
    .await;
    assert_eq!(app.role_of(&account.email).await, "user");
}

/// The `jti` claim of `access`.
fn jti_of(access: &str) -> String {
    use base64::Engine as _;
    let payload = access.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    claims["jti"].as_str().unwrap().to_owned()
}

/// Sends one command to the test Redis and reads its one-line answer.
async fn redis_command(args: &[&str]) -> String {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let url = tessera_testkit::redis_url();
    let address = url
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let mut command = format!("*{}\r\n", args.len());
    for arg in args {
        command.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(command.as_bytes()).await.unwrap();
    let mut line = String::new();
    tokio::io::BufReader::new(stream)
        .read_line(&mut line)
        .await
        .unwrap();
    line
}

#[tokio::test]
async fn a_revocation_made_while_redis_was_down_holds_once_it_is_back() {
    let (redis, through_proxy) = TcpProxy::in_front_of(&tessera_testkit::redis_url()).await;
    let app = spawn_app_with(&[("REDIS_URL", through_proxy)]).await;
    let account = app.register().await;
    let stolen = app.login(&account).await;
    let current = session(app.refresh(&stolen.refresh).await).await;
    age_exchanges(&app, 31.0).await;

    // auth cannot reach Redis as it detects the replay and revokes the session...
    redis.cut();
    assert_problem(app.refresh(&stolen.refresh).await, 401, None).await;
    // ...so users, which can, still takes the session's token for now.
    assert_eq!(app.me(&current.access).await.status(), StatusCode::OK);

    redis.restore();
    eventually("the revocation reaches the denylist", || async {
        app.me(&current.access).await.status() == StatusCode::UNAUTHORIZED
    })
    .await;
}

#[tokio::test]
async fn revocations_are_pushed_again_to_a_redis_that_lost_its_data() {
    let app = spawn_app().await;
    let account = app.register().await;
    let ended = app.login(&account).await;
    assert_eq!(app.logout(&ended).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.me(&ended.access).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // Redis restarts empty: the revocation and the mark of a complete denylist are gone.
    let key = format!("tessera:jwt:denylist:{}", jti_of(&ended.access));
    redis_command(&["DEL", &key, "tessera:jwt:denylist:complete"]).await;
    let lost = std::time::Instant::now();
    assert_eq!(app.me(&ended.access).await.status(), StatusCode::OK);

    // auth notices within its 0.5 s sync and pushes again; users asks Redis again within
    // its 0.5 s recheck: about 1 s, given a second of slack for a loaded machine.
    loop {
        let sent = std::time::Instant::now();
        if app.me(&ended.access).await.status() == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(
            sent.duration_since(lost) < std::time::Duration::from_secs(2),
            "the revoked token still passed {:?} after Redis lost it",
            sent.duration_since(lost)
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
