-- Delivery under faults: why a message last failed, when it was dead-lettered and how
-- often an operator replayed it.

ALTER TABLE outbox
    ADD COLUMN failure_class text
        CHECK (failure_class IN ('permanent', 'transient', 'connection')),
    ADD COLUMN dead_at timestamptz,
    ADD COLUMN replays integer NOT NULL DEFAULT 0;

CREATE INDEX outbox_dead ON outbox (tenant_id, dead_at) WHERE status = 'dead';
