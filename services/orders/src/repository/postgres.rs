//! Orders in PostgreSQL, with their events and idempotency records in the same transactions.

use std::collections::HashMap;

use chrono::{DateTime, SubsecRound, Utc};
use sqlx::{PgConnection, PgPool};
use tessera_events::orders::{
    CancelReason, OrderCancelled, OrderConfirmed, OrderCreated, OrderLine,
};
use tessera_messaging::Outbox;
use tessera_runtime::Snapshot;
use uuid::Uuid;

use super::{Filter, OrderRepository, Placed, Placement, RepositoryError, StoredResponse};
use crate::domain::{
    Currency, Fingerprint, IdempotencyKey, Money, Order, OrderItem, OrderStatus, Quantity, Sku,
};

/// The PostgreSQL repository.
#[derive(Clone)]
pub struct Postgres {
    db: PgPool,
    outbox: Outbox,
}

impl Postgres {
    /// A repository over `db` that writes events to `outbox`.
    pub fn new(db: PgPool, outbox: Outbox) -> Self {
        Self { db, outbox }
    }

    /// The orders of `rows` with their lines.
    async fn with_items(
        connection: &mut PgConnection,
        rows: Vec<OrderRow>,
    ) -> Result<Vec<Order>, RepositoryError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = rows.iter().map(|row| row.id).collect();
        let mut items: HashMap<Uuid, Vec<ItemRow>> = HashMap::with_capacity(rows.len());
        let stored = sqlx::query_as!(
            ItemRow,
            "SELECT order_id, sku, quantity, unit_price_cents, line_total_cents FROM order_items \
             WHERE order_id = ANY($1) ORDER BY order_id, position",
            &ids
        )
        .fetch_all(&mut *connection)
        .await?;
        for item in stored {
            items.entry(item.order_id).or_default().push(item);
        }
        rows.into_iter()
            .map(|row| {
                let mine = items.remove(&row.id).unwrap_or_default();
                row.into_order(mine)
            })
            .collect()
    }

    /// One attempt at [`OrderRepository::place`]: `None` when the key's record expired
    /// between the statement that found it live and the read of it.
    async fn try_place(&self, placement: Placement<'_>) -> Result<Option<Placed>, RepositoryError> {
        let Placement {
            user_id,
            key,
            fingerprint,
            order: new,
            key_ttl,
            render,
        } = placement;
        // The order is complete before it is written (PostgreSQL keeps microseconds), so its
        // response can be stored by the same statement that writes it. Its timestamps come
        // from this clock; changes stamp the database's, never earlier than the last stamp.
        let now = Utc::now().trunc_subsecs(6);
        let order = Order {
            id: Uuid::now_v7(),
            user_id,
            status: OrderStatus::Pending,
            currency: new.currency(),
            items: new.items().to_vec(),
            total: new.total(),
            version: FIRST_VERSION,
            created_at: now,
            updated_at: now,
        };
        let body = render(&order)?;
        let items = &order.items;
        let positions: Vec<i16> = (0..).take(items.len()).collect();
        let skus: Vec<&str> = items.iter().map(|item| item.sku.as_str()).collect();
        let quantities: Vec<i32> = items
            .iter()
            .map(|item| i32::try_from(item.quantity.get()).unwrap_or(i32::MAX))
            .collect();
        let prices: Vec<i64> = items.iter().map(|item| item.unit_price.cents()).collect();
        let totals: Vec<i64> = items.iter().map(|item| item.line_total.cents()).collect();
        let ttl_ms = i64::try_from(key_ttl.as_millis()).unwrap_or(i64::MAX);

        let mut tx = self.db.begin().await?;
        // Waits for a sweep of this user's orders in progress; the tombstone check below,
        // a statement of its own so that its snapshot is taken after the wait, sees its result.
        sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
            .bind(user_lock(user_id))
            .execute(&mut *tx)
            .await?;
        // The key is claimed first and the order written only if it was: a live key of
        // another request claims nothing, an expired one is taken over, and a racing
        // request's uncommitted key makes this wait for its outcome.
        let written = sqlx::query!(
            r#"WITH claimed AS (
                 INSERT INTO idempotency_keys
                   (user_id, key, fingerprint, order_id, response_status, response_body, expires_at)
                 VALUES ($2, $10, $11, $1, 201, $12, now() + make_interval(secs => $13::bigint / 1000.0))
                 ON CONFLICT (user_id, key) DO UPDATE SET
                   fingerprint = EXCLUDED.fingerprint, order_id = EXCLUDED.order_id,
                   response_status = EXCLUDED.response_status, response_body = EXCLUDED.response_body,
                   created_at = now(), expires_at = EXCLUDED.expires_at
                 WHERE idempotency_keys.expires_at <= now()
                 RETURNING order_id
               ), inserted AS (
                 INSERT INTO orders (id, user_id, status, currency, total_cents, version, created_at, updated_at)
                 SELECT $1, $2, 'pending', $3, $4, $14, $15, $15
                 FROM claimed
                 WHERE NOT EXISTS (SELECT 1 FROM deleted_users WHERE user_id = $2)
                 RETURNING id
               ), lines AS (
                 INSERT INTO order_items (order_id, position, sku, quantity, unit_price_cents, line_total_cents)
                 SELECT $1, line.*
                 FROM inserted, unnest($5::smallint[], $6::text[], $7::integer[], $8::bigint[], $9::bigint[]) AS line
               )
               SELECT EXISTS (SELECT 1 FROM claimed) AS "claimed!",
                      EXISTS (SELECT 1 FROM inserted) AS "inserted!""#,
            order.id,
            user_id,
            order.currency.code(),
            order.total.cents(),
            &positions,
            &skus as &[&str],
            &quantities,
            &prices,
            &totals,
            key.as_str(),
            &fingerprint.0[..],
            &body,
            ttl_ms,
            order.version,
            now
        )
        .fetch_one(&mut *tx)
        .await?;
        if !written.claimed {
            tx.rollback().await?;
            return Ok(self
                .stored_response(user_id, key)
                .await?
                .map(Placed::KeyTaken));
        }
        if !written.inserted {
            // The user was deleted; the claim of the key goes with the rollback.
            tx.rollback().await?;
            return Ok(Some(Placed::UserGone));
        }
        self.outbox
            .enqueue(&mut tx, &OrderCreated::from(&order))
            .await?;
        tx.commit().await?;
        Ok(Some(Placed::Created { order, body }))
    }
}

/// An `orders` row as stored.
struct OrderRow {
    id: Uuid,
    user_id: Uuid,
    status: String,
    currency: String,
    total_cents: i64,
    version: i32,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// An `order_items` row as stored.
struct ItemRow {
    order_id: Uuid,
    sku: String,
    quantity: i32,
    unit_price_cents: i64,
    line_total_cents: i64,
}

impl OrderRow {
    fn into_order(self, items: Vec<ItemRow>) -> Result<Order, RepositoryError> {
        let id = self.id;
        let corrupt = |reason: String| RepositoryError::Corrupt { id, reason };
        let items = items
            .into_iter()
            .map(|item| {
                Ok(OrderItem {
                    sku: Sku::parse(&item.sku).map_err(|e| corrupt(format!("sku {e}")))?,
                    quantity: Quantity::new(u64::try_from(item.quantity).unwrap_or(0))
                        .map_err(|e| corrupt(format!("quantity {e}")))?,
                    unit_price: Money::new(item.unit_price_cents)
                        .map_err(|e| corrupt(format!("unit price {e}")))?,
                    line_total: Money::new(item.line_total_cents)
                        .map_err(|e| corrupt(format!("line total {e}")))?,
                })
            })
            .collect::<Result<Vec<_>, RepositoryError>>()?;
        Ok(Order {
            id,
            user_id: self.user_id,
            status: self
                .status
                .parse()
                .map_err(|e| corrupt(format!("status {e}")))?,
            currency: Currency::parse(&self.currency)
                .map_err(|e| corrupt(format!("currency {e}")))?,
            items,
            total: Money::new(self.total_cents).map_err(|e| corrupt(format!("total {e}")))?,
            version: self.version,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// The version of a new order; every change adds one.
const FIRST_VERSION: i32 = 1;

/// The advisory lock that orders a user's new orders against the sweep of their orders when
/// they are deleted: placing takes it shared, the sweep exclusive.
fn user_lock(user_id: Uuid) -> i64 {
    let (high, low) = user_id.as_u64_pair();
    i64::from_ne_bytes((high ^ low).to_ne_bytes())
}

impl OrderRepository for Postgres {
    #[tracing::instrument(
        name = "orders.stored_response",
        skip_all,
        fields(otel.kind = "client", db.system.name = "postgresql")
    )]
    async fn stored_response(
        &self,
        user_id: Uuid,
        key: &IdempotencyKey,
    ) -> Result<Option<StoredResponse>, RepositoryError> {
        let row = sqlx::query!(
            "SELECT fingerprint, order_id, response_status, response_body FROM idempotency_keys \
             WHERE user_id = $1 AND key = $2 AND expires_at > now()",
            user_id,
            key.as_str()
        )
        .fetch_optional(&self.db)
        .await?;
        Ok(row.and_then(|row| {
            Some(StoredResponse {
                fingerprint: Fingerprint(row.fingerprint.try_into().ok()?),
                order_id: row.order_id,
                status: u16::try_from(row.response_status).ok()?,
                body: row.response_body,
            })
        }))
    }

    #[tracing::instrument(
        name = "orders.place",
        skip_all,
        fields(otel.kind = "client", db.system.name = "postgresql")
    )]
    async fn place(&self, placement: Placement<'_>) -> Result<Placed, RepositoryError> {
        // A key can expire between the insert that found it live and the read of its
        // record; the next attempt takes it over. A third would need a new record under the
        // key to be written and to expire within those same instants.
        for _ in 0..3 {
            if let Some(placed) = self.try_place(placement).await? {
                return Ok(placed);
            }
        }
        Err(RepositoryError::Database(sqlx::Error::RowNotFound))
    }

    #[tracing::instrument(
        name = "orders.find",
        skip_all,
        fields(otel.kind = "client", db.system.name = "postgresql")
    )]
    async fn find(&self, id: Uuid) -> Result<Option<Snapshot<Order>>, RepositoryError> {
        let mut connection = self.db.acquire().await?;
        let row = sqlx::query_as!(
            OrderRow,
            "SELECT id, user_id, status, currency, total_cents, version, created_at, updated_at \
             FROM orders WHERE id = $1",
            id
        )
        .fetch_optional(&mut *connection)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Self::with_items(&mut connection, vec![row])
            .await?
            .pop()
            .map(Snapshot::new))
    }

    #[tracing::instrument(
        name = "orders.list",
        skip_all,
        fields(otel.kind = "client", db.system.name = "postgresql")
    )]
    async fn list(
        &self,
        filter: Filter,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Order>, RepositoryError> {
        let mut connection = self.db.acquire().await?;
        let rows = sqlx::query_as!(
            OrderRow,
            "SELECT id, user_id, status, currency, total_cents, version, created_at, updated_at \
             FROM orders \
             WHERE ($1::uuid IS NULL OR user_id = $1) AND ($2::text IS NULL OR status = $2) \
               AND ($3::uuid IS NULL OR id < $3) \
             ORDER BY id DESC LIMIT $4",
            filter.user_id,
            filter.status.map(OrderStatus::as_str),
            after,
            i64::from(limit)
        )
        .fetch_all(&mut *connection)
        .await?;
        Self::with_items(&mut connection, rows).await
    }

    #[tracing::instrument(
        name = "orders.set_status",
        skip_all,
        fields(otel.kind = "client", db.system.name = "postgresql")
    )]
    async fn set_status(
        &self,
        order: &Order,
        status: OrderStatus,
    ) -> Result<Option<Order>, RepositoryError> {
        let mut tx = self.db.begin().await?;
        let updated = sqlx::query!(
            "UPDATE orders SET status = $2, version = version + 1, \
               updated_at = greatest(now(), updated_at) \
             WHERE id = $1 AND version = $3 RETURNING version, updated_at",
            order.id,
            status.as_str(),
            order.version
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some(updated) = updated else {
            return Ok(None);
        };
        let order = Order {
            status,
            version: updated.version,
            updated_at: updated.updated_at,
            ..order.clone()
        };
        match status {
            OrderStatus::Confirmed => {
                self.outbox
                    .enqueue(&mut tx, &OrderConfirmed::from(&order))
                    .await?
            }
            OrderStatus::Cancelled => {
                self.outbox
                    .enqueue(&mut tx, &cancelled(&order, CancelReason::Requested))
                    .await?
            }
            OrderStatus::Pending => {
                return Err(RepositoryError::Corrupt {
                    id: order.id,
                    reason: "an order cannot go back to pending".to_owned(),
                });
            }
        };
        tx.commit().await?;
        Ok(Some(order))
    }

    #[tracing::instrument(
        name = "orders.cancel_orders_of_deleted_user",
        skip_all,
        fields(otel.kind = "client", db.system.name = "postgresql")
    )]
    async fn cancel_orders_of_deleted_user(
        &self,
        connection: &mut PgConnection,
        user_id: Uuid,
    ) -> Result<Vec<Order>, RepositoryError> {
        // Waits for orders of this user being placed right now, so the update below sees them.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(user_lock(user_id))
            .execute(&mut *connection)
            .await?;
        sqlx::query!(
            "INSERT INTO deleted_users (user_id) VALUES ($1) ON CONFLICT DO NOTHING",
            user_id
        )
        .execute(&mut *connection)
        .await?;
        let rows = sqlx::query_as!(
            OrderRow,
            "UPDATE orders SET status = 'cancelled', version = version + 1, \
               updated_at = greatest(now(), updated_at) \
             WHERE user_id = $1 AND status IN ('pending', 'confirmed') \
             RETURNING id, user_id, status, currency, total_cents, version, created_at, updated_at",
            user_id
        )
        .fetch_all(&mut *connection)
        .await?;
        let cancelled_orders = Self::with_items(connection, rows).await?;
        for order in &cancelled_orders {
            self.outbox
                .enqueue(connection, &cancelled(order, CancelReason::UserDeleted))
                .await?;
        }
        Ok(cancelled_orders)
    }

    #[tracing::instrument(
        name = "orders.sweep",
        skip_all,
        fields(otel.kind = "client", db.system.name = "postgresql")
    )]
    async fn sweep(&self, batch: u32) -> Result<u64, RepositoryError> {
        let keys = sqlx::query!(
            "DELETE FROM idempotency_keys WHERE (user_id, key) IN \
             (SELECT user_id, key FROM idempotency_keys WHERE expires_at <= now() LIMIT $1)",
            i64::from(batch)
        )
        .execute(&self.db)
        .await?
        .rows_affected();
        let tombstones = sqlx::query!(
            "DELETE FROM deleted_users WHERE user_id IN \
             (SELECT user_id FROM deleted_users WHERE deleted_at < now() - interval '1 day' LIMIT $1)",
            i64::from(batch)
        )
        .execute(&self.db)
        .await?
        .rows_affected();
        Ok(keys + tombstones)
    }
}

fn lines(order: &Order) -> Vec<OrderLine> {
    order
        .items
        .iter()
        .map(|item| OrderLine {
            sku: item.sku.as_str().to_owned(),
            quantity: item.quantity.get(),
            unit_price_cents: item.unit_price.cents(),
            line_total_cents: item.line_total.cents(),
        })
        .collect()
}

fn cancelled(order: &Order, reason: CancelReason) -> OrderCancelled {
    OrderCancelled {
        id: order.id,
        user_id: order.user_id,
        reason,
        currency: order.currency.code().to_owned(),
        items: lines(order),
        total_cents: order.total.cents(),
        cancelled_at: order.updated_at,
    }
}

impl From<&Order> for OrderCreated {
    fn from(order: &Order) -> Self {
        Self {
            id: order.id,
            user_id: order.user_id,
            currency: order.currency.code().to_owned(),
            items: lines(order),
            total_cents: order.total.cents(),
            created_at: order.created_at,
        }
    }
}

impl From<&Order> for OrderConfirmed {
    fn from(order: &Order) -> Self {
        Self {
            id: order.id,
            user_id: order.user_id,
            currency: order.currency.code().to_owned(),
            items: lines(order),
            total_cents: order.total.cents(),
            confirmed_at: order.updated_at,
        }
    }
}
