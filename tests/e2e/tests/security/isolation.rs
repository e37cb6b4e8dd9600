//! One user can neither see nor touch another's data, on any route of any service: a route
//! given someone else's resource answers exactly as it does for one that does not exist, a
//! listing shows nothing of theirs, and nothing of theirs changes or is announced.
//!
//! The routes come from the OpenAPI documents. The single-route rules (404 for another's
//! order or profile, 403 for a user confirming, owners listing their own) are tested per
//! service in `orders/lifecycle.rs`, `orders/listing.rs` and users' API tests; here they are
//! swept over every route, with tokens auth issued, and checked to leak nothing.
//!
//! Internal gRPC (`UserService`, `OrderService`) takes no end-user credentials: its callers
//! are the other services, trusted as such. What keeps end users off it is in `grpc.rs`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tessera_e2e::stack::{Account, Service, Session, Stack};
use tessera_testkit::events::EventTap;
use tessera_testkit::openapi::Operation;
use uuid::Uuid;

use crate::helpers::{Answer, Callers, Failures, prepare, sample, secured_operations, truncated};

/// What belongs to the victim.
struct Victim {
    account: Account,
    session: Session,
    orders: Vec<String>,
}

impl Victim {
    /// Every identifier and detail of the victim's that must not reach anyone else.
    fn secrets(&self) -> Vec<String> {
        let mut secrets = vec![self.account.id.to_string(), self.account.email.clone()];
        secrets.extend(self.orders.iter().cloned());
        secrets
    }

    /// The victim's resource a route of `service` is about.
    fn resource(&self, service: Service) -> String {
        match service {
            Service::Users => self.account.id.to_string(),
            Service::Orders => self.orders[0].clone(),
            Service::Auth => panic!("auth has no routes about one resource; teach this test"),
        }
    }
}

/// `operation` as `token`'s holder, about resource `id` if its path names one: the answer,
/// with `id` written as `{id}` so answers about different resources compare.
async fn attempt(
    stack: &Stack,
    (service, operation): (Service, &Operation),
    token: &str,
    callers: &Callers<'_>,
    id: Option<&str>,
) -> Answer {
    let mut request = prepare(stack, service, operation, |param| {
        assert_eq!(
            param,
            "id",
            "{}: teach this test the parameter",
            operation.name()
        );
        id.expect("an id for a path that names one").to_owned()
    });
    request = request.bearer_auth(token);
    if operation.has_body {
        request = request.json(&sample(operation, callers).body);
    }
    let mut answer = Answer::of(request.send().await.unwrap()).await;
    if let Some(id) = id {
        answer.body = answer.body.replace(id, "{id}");
    }
    answer
}

/// The victim's orders and profile, as the victim sees them.
async fn victims_view(stack: &Stack, victim: &Victim) -> (Value, Value) {
    let get = |service, path: &str| {
        let path = path.to_owned();
        async move {
            let response = stack.get(service, &path, &victim.session.access).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            response.json::<Value>().await.unwrap()
        }
    };
    let orders = get(Service::Orders, "/api/v1/orders").await;
    let me = get(Service::Users, "/api/v1/users/me").await;
    (orders, me)
}

#[tokio::test]
async fn a_user_can_neither_see_nor_touch_another_users_data() {
    let stack = Stack::builder().start().await;
    let mallory_account = stack.register().await;
    let mallory = stack.login(&mallory_account).await;
    let victim_account = stack.register().await;
    let victim_session = stack.login(&victim_account).await;
    let mut orders = Vec::new();
    for _ in 0..2 {
        let order = stack.placed(&victim_session.access).await;
        orders.push(order["id"].as_str().unwrap().to_owned());
    }
    let victim = Victim {
        account: victim_account,
        session: victim_session,
        orders,
    };
    // Mallory's own sessions for the bodies that carry tokens: a route that wrongly took
    // them would act on Mallory, never on the victim.
    let (refreshable, logout) = (
        stack.login(&mallory_account).await,
        stack.login(&mallory_account).await,
    );
    let callers = Callers {
        account: &mallory_account,
        refreshable: &refreshable,
        logout: &logout,
    };
    let before = victims_view(&stack, &victim).await;
    let mut tap = EventTap::bind_at(stack.amqp_url(), "#").await;
    let mut failures = Failures::default();

    for (service, operation) in secured_operations(&stack, &[]).await {
        let target = (service, &operation);
        let name = operation.name();
        if !operation.path_params().is_empty() {
            let theirs = victim.resource(service);
            let missing = Uuid::now_v7().to_string();
            let on_theirs = attempt(&stack, target, &mallory.access, &callers, Some(&theirs)).await;
            let on_missing =
                attempt(&stack, target, &mallory.access, &callers, Some(&missing)).await;
            failures.record(on_theirs.client_error(&format!("{name} on another's")));
            if (on_theirs.status, &on_theirs.body) != (on_missing.status, &on_missing.body) {
                failures.record(Err(format!(
                    "{name}: another's resource is told apart from a missing one: {} {} vs {} {}",
                    on_theirs.status,
                    truncated(&on_theirs.body),
                    on_missing.status,
                    truncated(&on_missing.body)
                )));
            }
        } else if operation.method == reqwest::Method::GET {
            let answer = attempt(&stack, target, &mallory.access, &callers, None).await;
            for secret in victim.secrets() {
                if answer.body.contains(&secret) {
                    failures.record(Err(format!("{name} shows another's {secret}")));
                }
            }
        }
        // The rest (placing an order, logging out) act on the caller's own data only; logout
        // with another's refresh token is `auth/sessions.rs`'s
        // `logout_cannot_end_someone_elses_session`.
    }

    failures.assert_none("one user on another's data");
    assert_eq!(victims_view(&stack, &victim).await, before, "changed");
    let announced = tap
        .about(
            "user.updated",
            &victim.account.id.to_string(),
            1,
            Duration::from_secs(2),
        )
        .await;
    assert!(announced.is_empty(), "{announced:?}");
    for event_type in ["user.deleted", "order.confirmed", "order.cancelled"] {
        for id in victim.secrets() {
            let announced = tap.about(event_type, &id, 1, Duration::ZERO).await;
            assert!(announced.is_empty(), "{announced:?}");
        }
    }
}
