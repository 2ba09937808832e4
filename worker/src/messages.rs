//! Messages announcing booking changes, rendered when the change is decided and written to
//! the outbox in the same transaction, so a change and its messages commit together.
//!
//! Customer-supplied text is stored as given and escaped here, where it becomes HTML.
//!
//! Each message carries an iCalendar attachment (RFC 5545, built with the icalendar crate)
//! for the booking: the same UID for every message about one booking, a SEQUENCE that rises
//! with each change, event times in UTC, and METHOD:CANCEL once it is cancelled, so a
//! calendar application updates or removes the one event it already holds.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use common::domain::{Customer, Tenant};
use html_escape::encode_text as html;
use icalendar::{Calendar, Component, EventLike, EventStatus, Property};
use sqlx::PgConnection;
use uuid::Uuid;

/// The booking a message is about.
pub struct BookingDetails<'a> {
    pub booking_id: Uuid,
    pub service_name: &'a str,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub customer: &'a Customer,
    pub notes: Option<&'a str>,
    /// The booking's version: 0 when confirmed, one more with each change.
    pub sequence: i32,
    /// Whether the customer's copy carries the booking's manage link.
    pub manage_link: bool,
    /// For a reschedule, where the booking was before.
    pub previous_start: Option<DateTime<Utc>>,
}

/// What happened to the booking.
#[derive(Debug, Clone, Copy)]
pub enum Event {
    Confirmed,
    Rescheduled,
    Cancelled,
}

impl Event {
    /// The outbox's event name; with the booking and the recipient it identifies a message.
    fn name(self) -> &'static str {
        match self {
            Self::Confirmed => "booking_confirmed",
            Self::Rescheduled => "booking_rescheduled",
            Self::Cancelled => "booking_cancelled",
        }
    }

    /// How the customer's message says it, and how the business's subject starts.
    fn wording(self) -> (&'static str, &'static str) {
        match self {
            Self::Confirmed => ("is confirmed", "New booking"),
            Self::Rescheduled => ("has been moved", "Rescheduled booking"),
            Self::Cancelled => ("has been cancelled", "Cancelled booking"),
        }
    }
}

struct Message {
    role: &'static str,
    recipient: String,
    subject: String,
    text: String,
    html: String,
    manage_link: bool,
}

/// The iCalendar attachment of a message about `booking`, and its METHOD.
pub fn calendar(
    tenant: &Tenant,
    event: Event,
    booking: &BookingDetails<'_>,
) -> (String, &'static str) {
    let (method, status) = match event {
        Event::Cancelled => ("CANCEL", EventStatus::Cancelled),
        Event::Confirmed | Event::Rescheduled => ("REQUEST", EventStatus::Confirmed),
    };
    let uid = format!("{}@bookings.invalid", booking.booking_id.simple());
    let organizer = format!("mailto:{}", tenant.contact_email);
    let attendee = format!("mailto:{}", booking.customer.email);
    let mut organizer = Property::new("ORGANIZER", organizer.as_str());
    organizer.add_parameter("CN", &tenant.name);
    let mut attendee = Property::new("ATTENDEE", attendee.as_str());
    attendee.add_parameter("CN", &booking.customer.name);
    let entry = icalendar::Event::new()
        .uid(&uid)
        .sequence(u32::try_from(booking.sequence).unwrap_or(0))
        .summary(&format!("{} with {}", booking.service_name, tenant.name))
        .starts(booking.start)
        .ends(booking.end)
        .status(status)
        .append_property(organizer)
        .append_property(attendee)
        .done();
    let mut calendar = Calendar::new();
    calendar.append_property(("METHOD", method));
    calendar.push(entry);
    (calendar.done().to_string(), method)
}

/// Writes the message for the customer and the one for the business to the outbox.
pub async fn queue(
    conn: &mut PgConnection,
    tenant: &Tenant,
    tz: Tz,
    event: Event,
    booking: &BookingDetails<'_>,
) -> sqlx::Result<()> {
    let when = format!(
        "{} to {} ({})",
        booking
            .start
            .with_timezone(&tz)
            .format("%A %-d %B %Y, %H:%M"),
        booking.end.with_timezone(&tz).format("%H:%M"),
        tz.name()
    );
    let reference = booking.booking_id.simple().to_string();
    let (happened, headline) = event.wording();
    let moved_from = booking
        .previous_start
        .map(|previous| {
            format!(
                " (it was {})",
                previous.with_timezone(&tz).format("%A %-d %B %Y, %H:%M")
            )
        })
        .unwrap_or_default();

    let customer = Message {
        role: "customer",
        recipient: booking.customer.email.clone(),
        subject: format!("Your booking with {} {happened}", tenant.name),
        text: format!(
            "Hello {name},\n\nYour {service} with {business} on {when} {happened}{moved_from}.\n\
             Booking reference: {reference}\n",
            name = booking.customer.name,
            service = booking.service_name,
            business = tenant.name,
        ),
        html: format!(
            "<p>Hello {name},</p><p>Your {service} with {business} on \
             <strong>{when}</strong> {happened}{moved_from}.</p><p>Booking reference: {reference}</p>",
            name = html(&booking.customer.name),
            service = html(booking.service_name),
            business = html(&tenant.name),
            when = html(&when),
            moved_from = html(&moved_from),
        ),
        manage_link: booking.manage_link,
    };
    let notes = booking.notes.unwrap_or("-");
    let phone = booking.customer.phone.as_deref().unwrap_or("-");
    let business = Message {
        role: "tenant",
        recipient: tenant.contact_email.clone(),
        subject: format!("{headline}: {} on {}", booking.service_name, when),
        text: format!(
            "{headline} {reference}\nService: {service}\nWhen: {when}{moved_from}\nCustomer: {name} \
             <{email}>\nPhone: {phone}\nNotes: {notes}\n",
            service = booking.service_name,
            name = booking.customer.name,
            email = booking.customer.email,
        ),
        html: format!(
            "<p>{headline} {reference}</p><ul><li>Service: {service}</li><li>When: {when}{moved_from}</li>\
             <li>Customer: {name} &lt;{email}&gt;</li><li>Phone: {phone}</li>\
             <li>Notes: {notes}</li></ul>",
            service = html(booking.service_name),
            when = html(&when),
            moved_from = html(&moved_from),
            name = html(&booking.customer.name),
            email = html(&booking.customer.email),
            phone = html(phone),
            notes = html(notes),
        ),
        manage_link: false,
    };

    let (ics, method) = calendar(tenant, event, booking);
    for message in [customer, business] {
        let change = Change {
            booking_id: booking.booking_id,
            event: event.name(),
            sequence: booking.sequence,
            ics: &ics,
            method,
        };
        insert_outbox(conn, tenant.id, &change, message).await?;
    }
    Ok(())
}

/// The change a message announces, which with the recipient identifies it.
struct Change<'a> {
    booking_id: Uuid,
    event: &'static str,
    sequence: i32,
    ics: &'a str,
    method: &'static str,
}

async fn insert_outbox(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    change: &Change<'_>,
    message: Message,
) -> sqlx::Result<()> {
    let id = Uuid::now_v7();
    let message_id = format!("<{}.{}@bookings.invalid>", id.simple(), message.role);
    sqlx::query(
        "INSERT INTO outbox (tenant_id, id, booking_id, event, recipient_role, recipient,
                             subject, body_text, body_html, message_id, sequence, ics,
                             ics_method, manage_link)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(tenant_id)
    .bind(id)
    .bind(change.booking_id)
    .bind(change.event)
    .bind(message.role)
    .bind(message.recipient)
    .bind(message.subject)
    .bind(message.text)
    .bind(message.html)
    .bind(message_id)
    .bind(change.sequence)
    .bind(change.ics)
    .bind(change.method)
    .bind(message.manage_link)
    .execute(conn)
    .await?;
    Ok(())
}
