//! `OrderService` over gRPC: the same orders, the same validation.

use tessera_jwt::Role;
use tessera_proto::orders::v1 as proto;
use tonic::Code;
use uuid::Uuid;

use crate::helpers::spawn_app;

#[tokio::test]
async fn get_order_returns_it_with_its_lines() {
    let app = spawn_app().await;
    let user = app.create_user(Role::User).await;
    let placed = app.placed(&user).await;
    let id = placed["id"].as_str().unwrap().to_owned();

    let order = app
        .grpc()
        .await
        .get_order(proto::GetOrderRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(order.id, id);
    assert_eq!(order.user_id, user.id.to_string());
    assert_eq!(order.status(), proto::OrderStatus::Pending);
    assert_eq!(order.currency, "EUR");
    assert_eq!(order.total_cents, 3490);
    assert_eq!(order.items.len(), 2);
    assert_eq!(order.items[0].line_total_cents, 2500);
    assert!(order.created_at.is_some());
}

#[tokio::test]
async fn bad_and_missing_ids_get_their_codes() {
    let app = spawn_app().await;
    let mut grpc = app.grpc().await;
    let missing = grpc
        .get_order(proto::GetOrderRequest {
            id: Uuid::now_v7().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let bad = grpc
        .get_order(proto::GetOrderRequest {
            id: "nope".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("id"), "{}", bad.message());
}

#[tokio::test]
async fn list_orders_by_user_pages_newest_first() {
    let app = spawn_app().await;
    let user = app.create_user(Role::User).await;
    let other = app.create_user(Role::User).await;
    let mut placed = Vec::new();
    for _ in 0..3 {
        placed.push(app.placed(&user).await["id"].as_str().unwrap().to_owned());
    }
    app.placed(&other).await;
    placed.reverse();

    let mut grpc = app.grpc().await;
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = grpc
            .list_orders_by_user(proto::ListOrdersByUserRequest {
                user_id: user.id.to_string(),
                page_size: 2,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.orders.into_iter().map(|order| order.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, placed);

    for (request, field) in [
        (
            proto::ListOrdersByUserRequest {
                user_id: "x".into(),
                page_size: 0,
                page_token: String::new(),
            },
            "user_id",
        ),
        (
            proto::ListOrdersByUserRequest {
                user_id: user.id.to_string(),
                page_size: 101,
                page_token: String::new(),
            },
            "page_size",
        ),
        (
            proto::ListOrdersByUserRequest {
                user_id: user.id.to_string(),
                page_size: 0,
                page_token: "bogus".into(),
            },
            "page_token",
        ),
    ] {
        let status = grpc.list_orders_by_user(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains(field), "{}", status.message());
    }
}
