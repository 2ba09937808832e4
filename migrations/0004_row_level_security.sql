-- Row-level security: the second wall behind the application's own tenant scoping.
--
-- Every tenant-owned table shows a transaction only the rows of the tenant named by
-- `app.tenant_id` (set with set_config(..., true) at the start of the transaction). Work
-- that spans tenants (the sweeper, the notifier, looking up an API key by its prefix) says so
-- explicitly with `app.system = 'on'`. A query that forgets both sees and changes nothing.
-- FORCE applies the policies to the tables' owner too, which is the role the services use.

CREATE FUNCTION app_tenant() RETURNS uuid
    LANGUAGE sql STABLE
    AS $$ SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid $$;

CREATE FUNCTION app_system() RETURNS boolean
    LANGUAGE sql STABLE
    AS $$ SELECT coalesce(current_setting('app.system', true), '') = 'on' $$;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY[
        'services', 'resources', 'resource_services', 'opening_hours', 'hours_exceptions',
        'blackouts', 'bookings', 'booking_requests', 'outbox', 'api_keys', 'admin_users',
        'audit_log'
    ] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I
                 USING (app_system() OR tenant_id = app_tenant())
                 WITH CHECK (app_system() OR tenant_id = app_tenant())',
            t);
    END LOOP;
END
$$;
