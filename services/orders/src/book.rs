//! What orders does: who may place, see and change which order. REST and gRPC only
//! translate to and from it.

use std::time::Duration;

use tessera_domain::{Page, PageSize};
use tessera_errors::Error;
use tessera_jwt::Principal;
use tessera_runtime::Snapshot;
use uuid::Uuid;

use crate::domain::{Fingerprint, IdempotencyKey, NewOrder, Order, OrderStatus, Transition};
use crate::repository::{Filter, OrderRepository, Placed, Placement, Render, StoredResponse};
use crate::users::{Liveness, UsersClient};

/// The answer to a placement: the stored response of its key.
#[derive(Debug)]
pub struct Response {
    /// The order's id.
    pub order_id: Uuid,
    /// The HTTP status first answered.
    pub status: u16,
    /// The body first answered.
    pub body: Vec<u8>,
    /// Whether this is a repeat of an earlier answer.
    pub replayed: bool,
}

/// The orders, behind their rules.
///
/// Owners see and cancel their own orders and admins every order; an order the caller may
/// not see is reported as missing, so ids cannot be probed. Only admins confirm. Other
/// services reach the gRPC port only, and read any order.
pub struct OrderBook<R> {
    repository: R,
    users: UsersClient,
    key_ttl: Duration,
}

impl<R: OrderRepository> OrderBook<R> {
    /// Orders kept in `repository`, placed by users `users` knows, keys kept for `key_ttl`.
    pub fn new(repository: R, users: UsersClient, key_ttl: Duration) -> Self {
        Self {
            repository,
            users,
            key_ttl,
        }
    }

    /// Places `order` for the caller under `key`, or replays what the key answered before.
    ///
    /// The same key with another order is refused (422). The caller must be a live user:
    /// if users cannot say, nothing is written (503); a deleted user is refused (403).
    pub async fn place(
        &self,
        caller: &Principal,
        key: IdempotencyKey,
        order: NewOrder,
        render: Render,
    ) -> Result<Response, Error> {
        let fingerprint = Fingerprint::of(&order);
        // A retry is answered from the record, without asking users again.
        if let Some(stored) = self
            .repository
            .stored_response(caller.user_id, &key)
            .await?
        {
            return replay(stored, fingerprint);
        }
        match self.users.liveness(caller.user_id).await {
            Ok(Liveness::Live) => {}
            Ok(Liveness::Gone) => return Err(user_gone()),
            Err(error) => {
                tracing::warn!(%error, "cannot check the caller with users");
                return Err(Error::Unavailable(
                    "cannot check the caller's account now; retry later".to_owned(),
                ));
            }
        }
        let placement = Placement {
            user_id: caller.user_id,
            key: &key,
            fingerprint,
            order: &order,
            key_ttl: self.key_ttl,
            render,
        };
        match self.repository.place(placement).await? {
            Placed::Created { order, body } => Ok(Response {
                order_id: order.id,
                status: 201,
                body,
                replayed: false,
            }),
            Placed::KeyTaken(stored) => replay(stored, fingerprint),
            Placed::UserGone => Err(user_gone()),
        }
    }

    /// The order `id`, if the caller may see it.
    pub async fn get(&self, caller: &Principal, id: Uuid) -> Result<Snapshot<Order>, Error> {
        self.repository
            .find(id)
            .await?
            .filter(|order| caller.may_act_for(order.user_id))
            .ok_or(Error::NotFound("order"))
    }

    /// A page of the caller's orders (every order for an admin), newest first.
    pub async fn list(
        &self,
        caller: &Principal,
        status: Option<OrderStatus>,
        size: PageSize,
        after: Option<Uuid>,
    ) -> Result<Page<Order>, Error> {
        let filter = Filter {
            user_id: (!caller.is_admin()).then_some(caller.user_id),
            status,
        };
        self.page(filter, size, after).await
    }

    /// Confirms a pending order (admins only).
    pub async fn confirm(&self, caller: &Principal, id: Uuid) -> Result<Order, Error> {
        if !caller.is_admin() {
            return Err(Error::PermissionDenied(
                "only an admin may confirm an order".to_owned(),
            ));
        }
        self.change(caller, id, Transition::Confirm).await
    }

    /// Cancels a pending or confirmed order (its owner or an admin).
    pub async fn cancel(&self, caller: &Principal, id: Uuid) -> Result<Order, Error> {
        self.change(caller, id, Transition::Cancel).await
    }

    /// The order `id`, for another service.
    pub async fn find(&self, id: Uuid) -> Result<Snapshot<Order>, Error> {
        self.repository
            .find(id)
            .await?
            .ok_or(Error::NotFound("order"))
    }

    /// A page of `user_id`'s orders, for another service.
    pub async fn list_by_user(
        &self,
        user_id: Uuid,
        size: PageSize,
        after: Option<Uuid>,
    ) -> Result<Page<Order>, Error> {
        let filter = Filter {
            user_id: Some(user_id),
            status: None,
        };
        self.page(filter, size, after).await
    }

    async fn page(
        &self,
        filter: Filter,
        size: PageSize,
        after: Option<Uuid>,
    ) -> Result<Page<Order>, Error> {
        let rows = self
            .repository
            .list(filter, after, size.fetch_limit())
            .await?;
        Ok(Page::from_rows(rows, size, |order| order.id))
    }

    /// Applies `transition` to order `id` against the version read, so that of two racing
    /// changes one wins and the other is told (409), never silently overwritten.
    async fn change(
        &self,
        caller: &Principal,
        id: Uuid,
        transition: Transition,
    ) -> Result<Order, Error> {
        let order = self.get(caller, id).await?;
        let status = order.status.apply(transition)?;
        self.repository
            .set_status(&order, status)
            .await?
            .ok_or_else(|| {
                Error::Conflict("the order changed meanwhile; read it again and retry".to_owned())
            })
    }
}

/// The stored answer, if it was given to the same request.
fn replay(stored: StoredResponse, fingerprint: Fingerprint) -> Result<Response, Error> {
    if stored.fingerprint != fingerprint {
        return Err(Error::invalid_field(
            "Idempotency-Key",
            "was already used for a different order; use a new key for a new order",
        ));
    }
    Ok(Response {
        order_id: stored.order_id,
        status: stored.status,
        body: stored.body,
        replayed: true,
    })
}

fn user_gone() -> Error {
    Error::PermissionDenied("the account placing the order no longer exists".to_owned())
}
