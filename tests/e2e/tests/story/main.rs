//! The product's story end to end, over the three real binaries (each a child process on a
//! fresh database and free ports, on a RabbitMQ vhost of the story's own), driven as clients
//! drive them over REST and as the services drive each other over gRPC, with every event
//! watched on a queue of the test's own bound to the events exchange:
//!
//! register → log in → read one's profile → place an order and replay it (one order, one
//! event) → list → an admin confirms another order → refresh and log out (the old tokens are
//! refused) → delete oneself → the open orders are cancelled, each once, and every session
//! ends.
//!
//! Each step's finer rules have their own tests (`auth/`, `orders/`); this one shows they
//! hold together.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tessera_e2e::stack::{Account, PASSWORD, Service, Session, Stack, an_order, eventually};
use tessera_proto::auth::v1::ValidateTokenRequest;
use tessera_proto::auth::v1::auth_service_client::AuthServiceClient;
use tessera_proto::orders::v1 as orders_proto;
use tessera_proto::orders::v1::order_service_client::OrderServiceClient;
use tessera_proto::users::v1 as users_proto;
use tessera_proto::users::v1::user_service_client::UserServiceClient;
use tessera_testkit::assert_problem;
use tessera_testkit::events::EventTap;
use uuid::Uuid;

/// How long a consumer may take to apply an event published by another service.
const PROPAGATION: Duration = Duration::from_secs(15);
/// How long a second copy of an event is waited for once the first has arrived.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(2);

#[tokio::test]
async fn a_customer_registers_orders_logs_out_and_leaves_without_a_trace() {
    let admin_email = format!("admin-{}@example.com", Uuid::now_v7().simple());
    let stack = Stack::builder().admin(&admin_email).start().await;
    // Bound before anything happens, so every event of the story is on it.
    let mut events = stack.tap("#").await;
    let story = Story { stack: &stack };

    let account = story.register().await;
    let user_id = account.id.to_string();
    let session = stack.login(&account).await;
    story.profile_is_readable(&account, &session).await;
    let created = events.one("user.created", &user_id).await;
    assert_eq!(created["data"]["email"], account.email, "{created}");

    let first = story.place_and_replay(&session, &mut events).await;
    let confirmed = story.admin_confirms_another(&session, &mut events).await;
    let cancelled_before = story.cancelled_by_its_owner(&session, &mut events).await;
    story
        .listed(&account, &session, &[&first, &confirmed, &cancelled_before])
        .await;

    let session = story.refresh_and_log_out(&account, session).await;

    let other_session = stack.login(&account).await;
    story.delete(&account, &session).await;
    let deleted = events.one("user.deleted", &user_id).await;
    assert_eq!(deleted["source"], "users", "{deleted}");
    for open in [&first, &confirmed] {
        story.cancelled_by_the_deletion(open, &mut events).await;
    }
    let only = events
        .about("order.cancelled", &cancelled_before, 2, DUPLICATE_WINDOW)
        .await;
    assert_eq!(only.len(), 1, "cancelled before, not again: {only:?}");
    story
        .sessions_are_over(&account, &[&session, &other_session])
        .await;
}

/// The steps of the story, each asserting what a client sees.
struct Story<'a> {
    stack: &'a Stack,
}

impl Story<'_> {
    async fn register(&self) -> Account {
        let account = self.stack.register().await;
        let twice = self
            .stack
            .register_with(&json!({
                "email": account.email, "password": PASSWORD, "display_name": "Ada Again"
            }))
            .await;
        assert_problem(twice, 409, None).await;
        account
    }

    /// `GET /users/me` over REST, the same profile over users' gRPC, and the token as auth's
    /// gRPC `ValidateToken` reads it.
    async fn profile_is_readable(&self, account: &Account, session: &Session) {
        let me = self
            .stack
            .get(Service::Users, "/api/v1/users/me", &session.access)
            .await;
        assert_eq!(me.status(), StatusCode::OK);
        let me: Value = me.json().await.unwrap();
        assert_eq!(me["id"], account.id.to_string());
        assert_eq!(me["email"], account.email);
        assert_eq!(me["display_name"], "Ada Lovelace");
        assert_eq!(me["role"], "user");

        let profile = self
            .users_grpc()
            .await
            .get_user(users_proto::GetUserRequest {
                id: account.id.to_string(),
            })
            .await
            .unwrap()
            .into_inner()
            .user
            .unwrap();
        assert_eq!(
            (profile.email.as_str(), profile.display_name.as_str()),
            (account.email.as_str(), "Ada Lovelace")
        );
        let principal = self.validate(&session.access).await.unwrap();
        assert_eq!(principal.user_id, account.id.to_string());
        assert_eq!(principal.role, "user");
    }

    /// Places an order, sends the same request again as a retrying client would: the same
    /// order, and one `order.created`. Returns the order's id.
    async fn place_and_replay(&self, session: &Session, events: &mut EventTap) -> String {
        let key = Uuid::now_v7().to_string();
        let placed = self.stack.place(&session.access, &key, &an_order()).await;
        assert_eq!(placed.status(), StatusCode::CREATED);
        let placed = placed.bytes().await.unwrap();
        let order: Value = serde_json::from_slice(&placed).unwrap();
        assert_eq!(order["status"], "pending");
        assert_eq!(order["total_cents"], 3490);
        let id = order["id"].as_str().unwrap().to_owned();

        let replay = self.stack.place(&session.access, &key, &an_order()).await;
        assert_eq!(replay.status(), StatusCode::CREATED);
        assert_eq!(replay.headers()["idempotent-replayed"], "true");
        assert_eq!(replay.bytes().await.unwrap(), placed, "the first answer");

        let announced = events
            .about("order.created", &id, 2, DUPLICATE_WINDOW)
            .await;
        assert_eq!(announced.len(), 1, "one order, one event: {announced:?}");
        assert_eq!(announced[0]["data"]["user_id"], order["user_id"]);
        assert_eq!(announced[0]["data"]["total_cents"], 3490);
        id
    }

    async fn admin_confirms_another(&self, session: &Session, events: &mut EventTap) -> String {
        let order = self.stack.placed(&session.access).await;
        let id = order["id"].as_str().unwrap().to_owned();
        let confirm = format!("/api/v1/orders/{id}/confirm");
        let refused = self
            .stack
            .post(Service::Orders, &confirm, &session.access)
            .await;
        assert_problem(refused, 403, None).await;

        let admin = self.stack.admin().await;
        let confirmed = self
            .stack
            .post(Service::Orders, &confirm, &admin.access)
            .await;
        assert_eq!(confirmed.status(), StatusCode::OK);
        let confirmed: Value = confirmed.json().await.unwrap();
        assert_eq!(confirmed["status"], "confirmed");
        events.one("order.created", &id).await;
        events.one("order.confirmed", &id).await;
        id
    }

    async fn cancelled_by_its_owner(&self, session: &Session, events: &mut EventTap) -> String {
        let order = self.stack.placed(&session.access).await;
        let id = order["id"].as_str().unwrap().to_owned();
        let cancel = format!("/api/v1/orders/{id}/cancel");
        let cancelled = self
            .stack
            .post(Service::Orders, &cancel, &session.access)
            .await;
        assert_eq!(cancelled.status(), StatusCode::OK);
        let event = events.one("order.cancelled", &id).await;
        assert_eq!(event["data"]["reason"], "requested");
        id
    }

    /// The owner's listing over REST and the same orders over orders' gRPC, newest first.
    async fn listed(&self, account: &Account, session: &Session, placed: &[&String]) {
        let newest_first: Vec<&String> = placed.iter().rev().copied().collect();
        let page: Value = self
            .stack
            .get(Service::Orders, "/api/v1/orders", &session.access)
            .await
            .json()
            .await
            .unwrap();
        let listed: Vec<&str> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|order| order["id"].as_str().unwrap())
            .collect();
        assert_eq!(listed, newest_first, "{page}");
        let statuses: Vec<&str> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|order| order["status"].as_str().unwrap())
            .collect();
        assert_eq!(statuses, ["cancelled", "confirmed", "pending"]);

        let grpc = self
            .orders_grpc()
            .await
            .list_orders_by_user(orders_proto::ListOrdersByUserRequest {
                user_id: account.id.to_string(),
                page_size: 0,
                page_token: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        let ids: Vec<&String> = grpc.orders.iter().map(|order| &order.id).collect();
        assert_eq!(ids, newest_first);
    }

    /// Refreshes (the old refresh token is spent), logs the new session out: none of the
    /// session's tokens works anywhere after. Returns a new session to go on with.
    async fn refresh_and_log_out(&self, account: &Account, first: Session) -> Session {
        let response = self.stack.refresh(&first.refresh).await;
        let second = tessera_e2e::stack::session(response).await;
        assert_ne!(second.access, first.access);

        let logout = self.stack.logout(&second).await;
        assert_eq!(logout.status(), StatusCode::NO_CONTENT);

        for refresh in [&first.refresh, &second.refresh] {
            assert_problem(self.stack.refresh(refresh).await, 401, None).await;
        }
        // users and orders took `first` for not revoked before the logout; they ask Redis
        // again once that answer is `RECHECK_AFTER` old.
        tokio::time::sleep(tessera_jwt::Denylist::RECHECK_AFTER).await;
        for access in [&first.access, &second.access] {
            self.access_refused_everywhere(access).await;
        }
        assert_problem(self.stack.logout(&second).await, 401, None).await;
        self.stack.login(account).await
    }

    /// `access` gets 401 from users and orders over REST, and from auth's `ValidateToken`.
    async fn access_refused_everywhere(&self, access: &str) {
        for (service, path) in [
            (Service::Users, "/api/v1/users/me"),
            (Service::Orders, "/api/v1/orders"),
        ] {
            let response = self.stack.get(service, path, access).await;
            assert_problem(response, 401, None).await;
        }
        let status = self.validate(access).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
    }

    async fn delete(&self, account: &Account, session: &Session) {
        let path = format!("/api/v1/users/{}", account.id);
        let deleted = self
            .stack
            .request(Method::DELETE, Service::Users, &path)
            .bearer_auth(&session.access)
            .send()
            .await
            .unwrap();
        assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
        let profile = self
            .users_grpc()
            .await
            .get_user(users_proto::GetUserRequest {
                id: account.id.to_string(),
            })
            .await
            .unwrap_err();
        assert_eq!(profile.code(), tonic::Code::NotFound);
    }

    /// The open order `id` becomes `cancelled` because its owner left, announced once.
    async fn cancelled_by_the_deletion(&self, id: &str, events: &mut EventTap) {
        let announced = events.about("order.cancelled", id, 1, PROPAGATION).await;
        assert_eq!(announced.len(), 1, "order {id} was not cancelled");
        assert_eq!(announced[0]["data"]["reason"], "user_deleted");
        let again = events
            .about("order.cancelled", id, 2, DUPLICATE_WINDOW)
            .await;
        assert_eq!(again.len(), 1, "cancelled once: {again:?}");

        let admin = self.stack.admin().await;
        let order: Value = self
            .stack
            .get(
                Service::Orders,
                &format!("/api/v1/orders/{id}"),
                &admin.access,
            )
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(order["status"], "cancelled", "{order}");
        let order = self
            .orders_grpc()
            .await
            .get_order(orders_proto::GetOrderRequest { id: id.to_owned() })
            .await
            .unwrap()
            .into_inner()
            .order
            .unwrap();
        assert_eq!(order.status(), orders_proto::OrderStatus::Cancelled);
    }

    /// Once auth has applied `user.deleted`: no session refreshes, no token is taken, the
    /// password logs in no more.
    async fn sessions_are_over(&self, account: &Account, sessions: &[&Session]) {
        // Revoking the access tokens is the last thing auth does with the event.
        eventually("auth revokes the access tokens", PROPAGATION, || async {
            let mut revoked = true;
            for session in sessions {
                revoked &= self.validate(&session.access).await.is_err();
            }
            revoked
        })
        .await;
        for session in sessions {
            assert_problem(self.stack.refresh(&session.refresh).await, 401, None).await;
            self.access_refused_everywhere(&session.access).await;
        }
        let login = self.stack.login_with(&account.email, PASSWORD).await;
        assert_problem(login, 401, None).await;
    }

    async fn validate(
        &self,
        access: &str,
    ) -> Result<tessera_proto::auth::v1::ValidateTokenResponse, tonic::Status> {
        let channel = self.stack.auth.channel().await.unwrap();
        AuthServiceClient::new(channel)
            .validate_token(ValidateTokenRequest {
                access_token: access.to_owned(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    async fn users_grpc(&self) -> UserServiceClient<tonic::transport::Channel> {
        UserServiceClient::new(self.stack.users.channel().await.unwrap())
    }

    async fn orders_grpc(&self) -> OrderServiceClient<tonic::transport::Channel> {
        OrderServiceClient::new(self.stack.orders.channel().await.unwrap())
    }
}
