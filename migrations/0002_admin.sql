-- Tenant administration: credentials, blackout periods, booking changes through the queue,
-- and the audit log.

-- Programmatic access. The key itself is shown once; only its SHA-256 is kept (a key has
-- 256 random bits, so a fast hash is enough). The prefix finds the row.
CREATE TABLE api_keys (
    tenant_id    uuid NOT NULL REFERENCES tenants (id),
    id           uuid NOT NULL,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    prefix       text NOT NULL UNIQUE,
    key_hash     bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz,
    PRIMARY KEY (tenant_id, id)
);

-- People administering a tenant with HTTP Basic. Passwords are Argon2id PHC strings.
CREATE TABLE admin_users (
    tenant_id       uuid NOT NULL REFERENCES tenants (id),
    id              uuid NOT NULL,
    username        text NOT NULL CHECK (length(username) BETWEEN 1 AND 100),
    password_hash   text NOT NULL,
    failed_attempts integer NOT NULL DEFAULT 0,
    locked_until    timestamptz,
    last_login_at   timestamptz,
    disabled_at     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, username)
);

CREATE TABLE blackouts (
    tenant_id  uuid NOT NULL REFERENCES tenants (id),
    id         uuid NOT NULL,
    starts_at  timestamptz NOT NULL,
    ends_at    timestamptz NOT NULL,
    reason     text NOT NULL DEFAULT '' CHECK (length(reason) <= 500),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    CHECK (starts_at < ends_at)
);

-- A booking request either creates a booking or cancels one; both are decided by the
-- tenant's actor, in the order they were accepted.
ALTER TABLE booking_requests
    ADD COLUMN kind text NOT NULL DEFAULT 'create' CHECK (kind IN ('create', 'cancel'));

-- Who did what. Never holds a password, a key, or a customer's email.
CREATE TABLE audit_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   uuid REFERENCES tenants (id),
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    action      text NOT NULL,
    target      text,
    client_ip   text,
    request_id  text,
    detail      jsonb NOT NULL DEFAULT '{}'
);

CREATE INDEX audit_log_by_tenant ON audit_log (tenant_id, at);
