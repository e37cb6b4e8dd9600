//! `tessera.orders.v1.OrderService`, for the other services: proto in, [`OrderBook`] called,
//! proto out (the gRPC port is internal, so the callers are trusted services).
//!
//! [`OrderBook`]: crate::book::OrderBook

use std::sync::Arc;

use tessera_domain::PageRequest;
use tessera_errors::Error;
use tessera_proto::convert;
use tessera_proto::orders::v1 as proto;
use tonic::{Request, Response, Status};

use crate::book::OrderBook;
use crate::domain::{Order, OrderStatus};
use crate::repository::Repository;

/// The gRPC service over the orders.
pub struct OrderGrpc {
    book: Arc<OrderBook<Repository>>,
}

impl OrderGrpc {
    /// A service reading through `book`.
    pub fn new(
        book: Arc<OrderBook<Repository>>,
    ) -> proto::order_service_server::OrderServiceServer<Self> {
        proto::order_service_server::OrderServiceServer::new(Self { book })
    }
}

#[tonic::async_trait]
impl proto::order_service_server::OrderService for OrderGrpc {
    async fn get_order(
        &self,
        request: Request<proto::GetOrderRequest>,
    ) -> Result<Response<proto::GetOrderResponse>, Status> {
        let id = convert::uuid("id", &request.get_ref().id)?;
        let order = self.book.find(id).await?;
        Ok(Response::new(proto::GetOrderResponse {
            order: Some(to_proto(&order)),
        }))
    }

    async fn list_orders_by_user(
        &self,
        request: Request<proto::ListOrdersByUserRequest>,
    ) -> Result<Response<proto::ListOrdersByUserResponse>, Status> {
        let request = request.into_inner();
        let user_id = convert::uuid("user_id", &request.user_id)?;
        let wanted = PageRequest::from_grpc(request.page_size, &request.page_token)
            .map_err(|e| Error::invalid_field(e.field, e.invalid.0))?;
        let page = self
            .book
            .list_by_user(user_id, wanted.size, wanted.after)
            .await?;
        Ok(Response::new(proto::ListOrdersByUserResponse {
            orders: page.items.iter().map(to_proto).collect(),
            next_page_token: page.next_cursor.map(String::from).unwrap_or_default(),
        }))
    }
}

fn to_proto(order: &Order) -> proto::Order {
    let status = match order.status {
        OrderStatus::Pending => proto::OrderStatus::Pending,
        OrderStatus::Confirmed => proto::OrderStatus::Confirmed,
        OrderStatus::Cancelled => proto::OrderStatus::Cancelled,
    };
    proto::Order {
        id: order.id.to_string(),
        user_id: order.user_id.to_string(),
        status: status.into(),
        currency: order.currency.code().to_owned(),
        items: order
            .items
            .iter()
            .map(|item| proto::OrderItem {
                sku: item.sku.as_str().to_owned(),
                quantity: item.quantity.get(),
                unit_price_cents: item.unit_price.cents(),
                line_total_cents: item.line_total.cents(),
            })
            .collect(),
        total_cents: order.total.cents(),
        created_at: Some(convert::timestamp(order.created_at)),
        updated_at: Some(convert::timestamp(order.updated_at)),
    }
}
