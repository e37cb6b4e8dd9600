-- A row the broker keeps refusing is retried with backoff and, after the relay's limit, set
-- aside as poisoned: kept with its last error for an operator, no longer holding back the
-- rows after it. Replay one with
--   UPDATE messaging_outbox SET poisoned_at = NULL, attempts = 0 WHERE event_id = '<id>';
ALTER TABLE messaging_outbox
    ADD COLUMN attempts    INT  NOT NULL DEFAULT 0,
    ADD COLUMN last_error  TEXT,
    ADD COLUMN poisoned_at TIMESTAMPTZ;

DROP INDEX messaging_outbox_pending;
CREATE INDEX messaging_outbox_pending ON messaging_outbox (seq)
    WHERE sent_at IS NULL AND poisoned_at IS NULL;

-- Processed-event records are pruned by age, oldest first, in batches.
CREATE INDEX messaging_processed_events_age ON messaging_processed_events (processed_at);
