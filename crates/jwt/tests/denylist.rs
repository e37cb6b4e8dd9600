//! Revoked tokens, against the shared local Redis (each test uses fresh random jtis).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{TimeDelta, Utc};
use deadpool_redis::{Config, Pool, Runtime, redis};
use tessera_jwt::{Denylist, Role, TokenError, Verifier};
use tessera_testkit::jwks::TestIssuer;
use uuid::Uuid;

fn pool(url: &str) -> Pool {
    Config::from_url(url)
        .create_pool(Some(Runtime::Tokio1))
        .unwrap()
}

fn denylist() -> Denylist {
    Denylist::new(shared(&tessera_testkit::redis_url()))
}

fn shared(url: &str) -> tessera_runtime::SharedRedis {
    tessera_runtime::shared_redis(url, std::time::Duration::from_millis(500)).unwrap()
}

async fn ttl_of(jti: Uuid) -> i64 {
    let mut connection = pool(&tessera_testkit::redis_url()).get().await.unwrap();
    redis::cmd("TTL")
        .arg(format!("tessera:jwt:denylist:{jti}"))
        .query_async(&mut connection)
        .await
        .unwrap()
}

#[tokio::test]
async fn denylisted_jti_is_rejected_as_revoked() {
    let issuer = TestIssuer::start().await;
    let denylist = denylist();
    let verifier = Verifier::remote(issuer.verifier_settings())
        .unwrap()
        .with_denylist(denylist.clone());
    let token = issuer.token(Uuid::now_v7(), Role::User);
    let principal = verifier.verify(&token).await.unwrap();

    denylist
        .revoke(principal.jti, principal.expires_at)
        .await
        .unwrap();

    let error = verifier.verify(&token).await;
    assert!(matches!(error, Err(TokenError::Revoked)), "{error:?}");
}

#[tokio::test]
async fn a_revoked_jti_stays_listed_until_its_expiry_plus_the_margin() {
    let denylist = denylist();
    let jti = Uuid::now_v7();
    assert!(!denylist.is_revoked(jti).await.unwrap());

    denylist
        .revoke(jti, Utc::now() + TimeDelta::seconds(100))
        .await
        .unwrap();

    assert!(denylist.is_revoked(jti).await.unwrap());
    let ttl = ttl_of(jti).await;
    assert!((159..=160).contains(&ttl), "ttl {ttl}");
}

#[tokio::test]
async fn revoking_a_long_expired_token_stores_nothing() {
    let denylist = denylist();
    let jti = Uuid::now_v7();

    denylist
        .revoke(jti, Utc::now() - TimeDelta::minutes(5))
        .await
        .unwrap();

    assert!(!denylist.is_revoked(jti).await.unwrap());
}

#[tokio::test]
async fn an_unreachable_denylist_fails_open() {
    let issuer = TestIssuer::start().await;
    let dead = format!("redis://127.0.0.1:{}/0", tessera_testkit::free_port());
    let denylist = Denylist::new(shared(&dead));
    let verifier = Verifier::remote(issuer.verifier_settings())
        .unwrap()
        .with_denylist(denylist.clone());
    let user = Uuid::now_v7();

    assert!(denylist.is_revoked(Uuid::now_v7()).await.is_err());
    let principal = verifier
        .verify(&issuer.token(user, Role::User))
        .await
        .unwrap();

    assert_eq!(principal.user_id, user);
}

#[tokio::test]
async fn a_revocation_is_seen_at_once_where_it_was_made_and_within_the_recheck_interval_elsewhere()
{
    // Two processes, each with its own denylist on the one Redis.
    let (here, elsewhere) = (denylist(), denylist());
    let jti = Uuid::now_v7();
    assert!(!here.is_revoked(jti).await.unwrap());
    assert!(!elsewhere.is_revoked(jti).await.unwrap());
    // Elsewhere took the token as not revoked at the latest now.
    let cleared_by = tokio::time::Instant::now();

    here.revoke(jti, Utc::now() + TimeDelta::minutes(15))
        .await
        .unwrap();

    assert!(here.is_revoked(jti).await.unwrap(), "seen at once here");
    tokio::time::sleep_until(cleared_by + Denylist::RECHECK_AFTER).await;
    assert!(
        elsewhere.is_revoked(jti).await.unwrap(),
        "seen elsewhere once its answer is {:?} old",
        Denylist::RECHECK_AFTER
    );
}
