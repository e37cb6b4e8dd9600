-- The transactional outbox: events written in the same transaction as the state change they
-- describe, published by the relay, marked sent only after the broker confirmed them.
CREATE TABLE messaging_outbox (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id     UUID        NOT NULL UNIQUE,
    event_type   TEXT        NOT NULL,
    aggregate_id TEXT        NOT NULL,
    envelope     JSONB       NOT NULL,
    -- W3C trace context of the span that wrote the event, sent as the traceparent header.
    traceparent  TEXT,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    sent_at      TIMESTAMPTZ
);

-- The relay reads pending rows in order; the cleanup deletes old sent ones.
CREATE INDEX messaging_outbox_pending ON messaging_outbox (seq) WHERE sent_at IS NULL;
CREATE INDEX messaging_outbox_sent ON messaging_outbox (sent_at) WHERE sent_at IS NOT NULL;

-- Events a consumer has applied, recorded in the same transaction as the effect, so a
-- redelivered event is recognised and skipped.
CREATE TABLE messaging_processed_events (
    consumer     TEXT        NOT NULL,
    event_id     UUID        NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
