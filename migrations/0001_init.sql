-- Core schema: tenants, their catalogue and calendars, booking requests, bookings and the
-- notification outbox. Every tenant-owned table keys on tenant_id first so the data can be
-- distributed by tenant without reshaping it.

CREATE EXTENSION IF NOT EXISTS btree_gist;

CREATE TABLE tenants (
    id            uuid PRIMARY KEY,
    slug          text NOT NULL UNIQUE
                  CHECK (slug ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'),
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    time_zone     text NOT NULL,
    contact_email text NOT NULL,
    active        boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE services (
    tenant_id             uuid NOT NULL REFERENCES tenants (id),
    id                    uuid NOT NULL,
    name                  text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    duration_minutes      integer NOT NULL CHECK (duration_minutes BETWEEN 5 AND 1440),
    slot_interval_minutes integer NOT NULL CHECK (slot_interval_minutes BETWEEN 5 AND 1440),
    buffer_before_minutes integer NOT NULL DEFAULT 0 CHECK (buffer_before_minutes BETWEEN 0 AND 240),
    buffer_after_minutes  integer NOT NULL DEFAULT 0 CHECK (buffer_after_minutes BETWEEN 0 AND 240),
    min_notice_minutes    integer NOT NULL DEFAULT 0 CHECK (min_notice_minutes >= 0),
    max_days_ahead        integer NOT NULL DEFAULT 365 CHECK (max_days_ahead BETWEEN 1 AND 3650),
    price_minor           bigint NOT NULL CHECK (price_minor >= 0),
    currency              char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    active                boolean NOT NULL DEFAULT true,
    created_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);

-- The staff member, room or machine that a booking occupies.
CREATE TABLE resources (
    tenant_id  uuid NOT NULL REFERENCES tenants (id),
    id         uuid NOT NULL,
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    active     boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE resource_services (
    tenant_id   uuid NOT NULL,
    resource_id uuid NOT NULL,
    service_id  uuid NOT NULL,
    PRIMARY KEY (tenant_id, resource_id, service_id),
    FOREIGN KEY (tenant_id, resource_id) REFERENCES resources (tenant_id, id),
    FOREIGN KEY (tenant_id, service_id) REFERENCES services (tenant_id, id)
);

-- Weekly opening hours, in the tenant's local time; weekday is ISO (1 = Monday).
CREATE TABLE opening_hours (
    tenant_id   uuid NOT NULL,
    resource_id uuid NOT NULL,
    weekday     smallint NOT NULL CHECK (weekday BETWEEN 1 AND 7),
    opens_at    time NOT NULL,
    closes_at   time NOT NULL,
    PRIMARY KEY (tenant_id, resource_id, weekday, opens_at),
    FOREIGN KEY (tenant_id, resource_id) REFERENCES resources (tenant_id, id),
    CHECK (opens_at < closes_at)
);

CREATE TABLE bookings (
    tenant_id      uuid NOT NULL,
    id             uuid NOT NULL,
    request_id     uuid NOT NULL,
    service_id     uuid NOT NULL,
    resource_id    uuid NOT NULL,
    starts_at      timestamptz NOT NULL,
    ends_at        timestamptz NOT NULL,
    -- The span the resource is unavailable: the booking plus the service's buffers.
    occupied       tstzrange NOT NULL,
    status         text NOT NULL DEFAULT 'confirmed'
                   CHECK (status IN ('confirmed', 'cancelled', 'completed', 'no_show')),
    customer_name  text NOT NULL,
    customer_email text NOT NULL,
    customer_phone text,
    notes          text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, request_id),
    FOREIGN KEY (tenant_id, service_id) REFERENCES services (tenant_id, id),
    FOREIGN KEY (tenant_id, resource_id) REFERENCES resources (tenant_id, id),
    CHECK (starts_at < ends_at),
    CHECK (occupied @> tstzrange(starts_at, ends_at, '[)')),
    CONSTRAINT bookings_no_overlap EXCLUDE USING gist (
        tenant_id WITH =,
        resource_id WITH =,
        occupied WITH &&
    ) WHERE (status <> 'cancelled')
);

CREATE INDEX bookings_by_start ON bookings (tenant_id, starts_at);

-- Every request answered 202, with its payload and its outcome. This row, not the queue,
-- is the durable record: the queue only delivers it to a worker.
CREATE TABLE booking_requests (
    tenant_id        uuid NOT NULL REFERENCES tenants (id),
    id               uuid NOT NULL,
    seq              bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    idempotency_key  text,
    body_fingerprint text NOT NULL,
    payload          jsonb NOT NULL,
    status           text NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'processing', 'confirmed', 'rejected', 'failed')),
    reason           text,
    detail           text,
    attempts         integer NOT NULL DEFAULT 0,
    booking_id       uuid,
    accepted_at      timestamptz NOT NULL DEFAULT now(),
    decided_at       timestamptz,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, idempotency_key)
);

CREATE INDEX booking_requests_open
    ON booking_requests (tenant_id, seq)
    WHERE status IN ('queued', 'processing');

-- Messages written in the same transaction as the booking change they announce, and sent
-- afterwards. One row per event and recipient; the unique key makes a second copy impossible.
CREATE TABLE outbox (
    tenant_id       uuid NOT NULL REFERENCES tenants (id),
    id              uuid NOT NULL,
    booking_id      uuid NOT NULL,
    event           text NOT NULL,
    recipient_role  text NOT NULL CHECK (recipient_role IN ('customer', 'tenant')),
    recipient       text NOT NULL,
    subject         text NOT NULL,
    body_text       text NOT NULL,
    body_html       text NOT NULL,
    message_id      text NOT NULL UNIQUE,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, booking_id, event, recipient_role)
);

CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE status = 'pending';
