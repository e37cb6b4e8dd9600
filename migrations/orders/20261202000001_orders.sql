-- Orders and their lines. Amounts are minor units of the order's currency (cents); the
-- service computes the totals with checked arithmetic and the checks here are the last line.
CREATE TABLE orders (
    id          uuid        PRIMARY KEY,
    user_id     uuid        NOT NULL,
    status      text        NOT NULL
        CONSTRAINT orders_status_known CHECK (status IN ('pending', 'confirmed', 'cancelled')),
    currency    text        NOT NULL
        CONSTRAINT orders_currency_code CHECK (currency ~ '^[A-Z]{3}$'),
    total_cents bigint      NOT NULL CONSTRAINT orders_total_not_negative CHECK (total_cents >= 0),
    -- Bumped by every change; updates name the version they read (optimistic concurrency).
    version     integer     NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- A user's orders, newest first (ids are UUIDv7), and their open ones when the user goes.
CREATE INDEX orders_by_user ON orders (user_id, id);
CREATE INDEX orders_open_by_user ON orders (user_id) WHERE status IN ('pending', 'confirmed');
CREATE INDEX orders_by_status ON orders (status, id);

CREATE TABLE order_items (
    order_id         uuid     NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    position         smallint NOT NULL,
    sku              text     NOT NULL
        CONSTRAINT order_items_sku_format CHECK (sku ~ '^[A-Za-z0-9._-]{1,64}$'),
    quantity         integer  NOT NULL
        CONSTRAINT order_items_quantity_range CHECK (quantity BETWEEN 1 AND 10000),
    unit_price_cents bigint   NOT NULL
        CONSTRAINT order_items_price_not_negative CHECK (unit_price_cents >= 0),
    line_total_cents bigint   NOT NULL
        CONSTRAINT order_items_line_total CHECK (line_total_cents = unit_price_cents * quantity),
    PRIMARY KEY (order_id, position)
);

-- The answer given to the first POST with an Idempotency-Key, replayed to any retry with
-- the same key and the same request (by fingerprint) until it expires. The row commits in
-- the same transaction as the order, so a key never points at an order that does not exist,
-- and a second request racing the first waits on this primary key and then replays.
CREATE TABLE idempotency_keys (
    user_id         uuid        NOT NULL,
    key             text        NOT NULL,
    -- SHA-256 of the request as parsed: the same order written differently is the same.
    fingerprint     bytea       NOT NULL,
    order_id        uuid        NOT NULL,
    response_status smallint    NOT NULL,
    response_body   bytea       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    PRIMARY KEY (user_id, key)
);

CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);

-- Users whose user.deleted was applied. An order whose owner check passed just before the
-- deletion may reach the database just after the sweep of their open orders; it is refused
-- here instead of staying open forever. Kept for a day, far longer than any request lives.
CREATE TABLE deleted_users (
    user_id    uuid        PRIMARY KEY,
    deleted_at timestamptz NOT NULL DEFAULT now()
);
