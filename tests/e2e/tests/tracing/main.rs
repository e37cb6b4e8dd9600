//! Distributed tracing across the three binaries: a request's trace follows it from the
//! caller's `traceparent` through REST, gRPC and the broker, as the spans every service
//! exports over OTLP show, and as the trace context events carry shows when nothing is
//! exported.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

use reqwest::StatusCode;
use tessera_e2e::stack::{self, PASSWORD, Service};
use tessera_testkit::otlp::SpanKind::{Client, Consumer, Producer, Server};

use crate::helpers::{AUTH, CREATE_USER, GET_USER, ORDERS, RemoteParent, USERS, spawn_stack};

#[tokio::test]
async fn a_registration_is_one_trace_through_auth_users_and_its_event() {
    let stack = spawn_stack().await;
    let mut tap = stack.services.tap("user.created").await;
    let parent = RemoteParent::fresh();

    let user = stack.register(&parent).await;

    let trace = stack
        .trace(
            &parent,
            &[
                (AUTH, Server, "POST /api/v1/auth/register"),
                (AUTH, Client, CREATE_USER),
                (USERS, Server, CREATE_USER),
                (USERS, Producer, "publish user.created"),
            ],
        )
        .await;
    let route = ("POST", "/api/v1/auth/register");
    let server = trace.rest_server(AUTH, route, StatusCode::CREATED, &parent);
    let client = trace.grpc(AUTH, Client, CREATE_USER);
    trace.assert_descends(client, server);
    let users = trace.grpc(USERS, Server, CREATE_USER);
    trace.assert_child(users, client);
    let event = tap.one("user.created", &user.id.to_string()).await;
    trace.assert_descends(trace.publish(USERS, &event), users);
    stack.assert_every_span_names_its_service();
}

#[tokio::test]
async fn placing_an_order_is_one_trace_through_orders_users_and_its_event() {
    let stack = spawn_stack().await;
    let mut tap = stack.services.tap("order.created").await;
    let user = stack.register(&RemoteParent::fresh()).await;
    let parent = RemoteParent::fresh();

    let order = stack.place_order(&user, &parent).await;

    let trace = stack
        .trace(
            &parent,
            &[
                (ORDERS, Server, "POST /api/v1/orders"),
                (ORDERS, Client, GET_USER),
                (USERS, Server, GET_USER),
                (ORDERS, Producer, "publish order.created"),
            ],
        )
        .await;
    let route = ("POST", "/api/v1/orders");
    let server = trace.rest_server(ORDERS, route, StatusCode::CREATED, &parent);
    let client = trace.grpc(ORDERS, Client, GET_USER);
    trace.assert_descends(client, server);
    trace.assert_child(trace.grpc(USERS, Server, GET_USER), client);
    let event = tap.one("order.created", &order).await;
    trace.assert_descends(trace.publish(ORDERS, &event), server);
    stack.assert_every_span_names_its_service();
}

#[tokio::test]
async fn deleting_a_user_is_one_trace_across_all_three_services() {
    let stack = spawn_stack().await;
    let mut deleted = stack.services.tap("user.deleted").await;
    let mut cancelled = stack.services.tap("order.cancelled").await;
    let user = stack.register(&RemoteParent::fresh()).await;
    let order = stack.place_order(&user, &RemoteParent::fresh()).await;
    let parent = RemoteParent::fresh();

    stack.delete_user(&user, &parent).await;

    // The order's cancellation is the story's last step; its span says it happened (the
    // order itself is no longer readable with the deleted user's token).
    let trace = stack
        .trace(
            &parent,
            &[
                (USERS, Server, "DELETE /api/v1/users/{id}"),
                (USERS, Producer, "publish user.deleted"),
                (AUTH, Consumer, "process user.deleted"),
                (ORDERS, Consumer, "process user.deleted"),
                (ORDERS, Producer, "publish order.cancelled"),
            ],
        )
        .await;
    let route = ("DELETE", "/api/v1/users/{id}");
    let server = trace.rest_server(USERS, route, StatusCode::NO_CONTENT, &parent);
    let event = deleted.one("user.deleted", &user.id.to_string()).await;
    let publish = trace.publish(USERS, &event);
    trace.assert_descends(publish, server);
    trace.assert_child(trace.process(AUTH, "user.deleted"), publish);
    let consumer = trace.process(ORDERS, "user.deleted");
    trace.assert_child(consumer, publish);
    let event = cancelled.one("order.cancelled", &order).await;
    trace.assert_descends(trace.publish(ORDERS, &event), consumer);
    stack.assert_every_span_names_its_service();
}

/// With no collector configured, spans carry their trace context alone: the caller's trace
/// still goes from auth's REST route over gRPC to users, into the outbox row of the event
/// users writes, and so onto the event.
#[tokio::test]
async fn without_a_collector_the_callers_trace_still_reaches_the_event() {
    let stack = stack::Stack::builder().start().await;
    let parent = RemoteParent::fresh();
    let email = format!("untraced-{}@example.com", uuid::Uuid::now_v7().simple());
    let response = stack
        .request(
            reqwest::Method::POST,
            Service::Auth,
            "/api/v1/auth/register",
        )
        .header("traceparent", parent.header())
        .json(&serde_json::json!({ "email": email, "password": PASSWORD, "display_name": "Ada" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let registered: serde_json::Value = response.json().await.unwrap();
    let user_id = registered["user_id"].as_str().unwrap();

    let users = sqlx::PgPool::connect(stack.database_url(Service::Users))
        .await
        .unwrap();
    let traceparent: Option<String> = sqlx::query_scalar(
        "SELECT traceparent FROM messaging_outbox \
         WHERE event_type = 'user.created' AND envelope -> 'data' ->> 'id' = $1",
    )
    .bind(user_id)
    .fetch_one(&users)
    .await
    .unwrap();
    let traceparent = traceparent.expect("the event was written without a trace context");
    let parts: Vec<_> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(parts[1], parent.trace_id, "{traceparent}");
    assert_ne!(parts[2], parent.span_id, "{traceparent}");
    assert_eq!(
        parts[3], "01",
        "the caller's sampling decision: {traceparent}"
    );
}
