-- Date exceptions to a resource's weekly opening hours, in the tenant's local time. Both
-- times NULL: closed all day. Otherwise the one interval replaces that day's weekly hours.

CREATE TABLE hours_exceptions (
    tenant_id   uuid NOT NULL,
    resource_id uuid NOT NULL,
    date        date NOT NULL,
    opens_at    time,
    closes_at   time,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, resource_id, date),
    FOREIGN KEY (tenant_id, resource_id) REFERENCES resources (tenant_id, id),
    CHECK ((opens_at IS NULL) = (closes_at IS NULL)),
    CHECK (opens_at < closes_at)
);
