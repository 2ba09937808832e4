-- Scheduling a business can run on: group sessions with a number of seats, bookings that
-- can be rescheduled in place, manage links for customers, and calendar attachments.

-- How many customers one slot of the service takes (1: an ordinary appointment).
ALTER TABLE services
    ADD COLUMN capacity integer NOT NULL DEFAULT 1 CHECK (capacity BETWEEN 1 AND 500);

-- A booking holds one seat of a slot. Bookings that share a slot_key are seats of one group
-- session (same service, resource and start) and may share the resource's time; any other
-- two live bookings of a resource must not overlap. Ordinary bookings use their own id as
-- the slot key, so they never share. Seats are numbered 1..seats, unique per live session,
-- so the database itself refuses more bookings than the service has seats.
ALTER TABLE bookings
    ADD COLUMN slot_key uuid,
    ADD COLUMN seat integer NOT NULL DEFAULT 1,
    ADD COLUMN seats integer NOT NULL DEFAULT 1,
    -- Rises with every change, as the calendar attachments' SEQUENCE.
    ADD COLUMN sequence integer NOT NULL DEFAULT 0,
    -- SHA-256 of the customer's manage token; the token itself is never stored.
    ADD COLUMN manage_token_hash bytea UNIQUE;

UPDATE bookings SET slot_key = id;
-- A booking written without a key shares it with nobody, the safe reading.
ALTER TABLE bookings
    ALTER COLUMN slot_key SET DEFAULT gen_random_uuid(),
    ALTER COLUMN slot_key SET NOT NULL,
    ADD CONSTRAINT bookings_seat_in_range CHECK (seat BETWEEN 1 AND seats),
    DROP CONSTRAINT bookings_no_overlap,
    ADD CONSTRAINT bookings_no_overlap EXCLUDE USING gist (
        tenant_id WITH =,
        resource_id WITH =,
        occupied WITH &&,
        slot_key WITH <>
    ) WHERE (status <> 'cancelled');

CREATE UNIQUE INDEX bookings_one_seat_each
    ON bookings (tenant_id, slot_key, seat)
    WHERE status <> 'cancelled';

ALTER TABLE booking_requests
    DROP CONSTRAINT booking_requests_kind_check,
    ADD CONSTRAINT booking_requests_kind_check
        CHECK (kind IN ('create', 'cancel', 'reschedule'));

-- One message per event, version of the booking and recipient: a booking rescheduled twice
-- announces each change once.
ALTER TABLE outbox
    ADD COLUMN sequence integer NOT NULL DEFAULT 0,
    -- The iCalendar attachment (RFC 5545), and its METHOD for the Content-Type.
    ADD COLUMN ics text,
    ADD COLUMN ics_method text CHECK (ics_method IN ('REQUEST', 'CANCEL')),
    -- The customer's copy carries the manage link, derived when sending, never stored.
    ADD COLUMN manage_link boolean NOT NULL DEFAULT false,
    DROP CONSTRAINT outbox_tenant_id_booking_id_event_recipient_role_key,
    ADD CONSTRAINT outbox_one_message_per_change
        UNIQUE (tenant_id, booking_id, event, sequence, recipient_role);
