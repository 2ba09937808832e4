//! Messages announcing booking changes, rendered when the change is decided and written to
//! the outbox in the same transaction, so a change and its messages commit together.
//!
//! Customer-supplied text is stored as given and escaped here, where it becomes HTML.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use common::domain::{Customer, Tenant};
use html_escape::encode_text as html;
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
}

/// What happened to the booking.
#[derive(Debug, Clone, Copy)]
pub enum Event {
    Confirmed,
    Cancelled,
}

impl Event {
    /// The outbox's event name; with the booking and the recipient it identifies a message.
    fn name(self) -> &'static str {
        match self {
            Self::Confirmed => "booking_confirmed",
            Self::Cancelled => "booking_cancelled",
        }
    }

    /// How the customer's message says it, and how the business's subject starts.
    fn wording(self) -> (&'static str, &'static str) {
        match self {
            Self::Confirmed => ("is confirmed", "New booking"),
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

    let customer = Message {
        role: "customer",
        recipient: booking.customer.email.clone(),
        subject: format!("Your booking with {} {happened}", tenant.name),
        text: format!(
            "Hello {name},\n\nYour {service} with {business} on {when} {happened}.\n\
             Booking reference: {reference}\n",
            name = booking.customer.name,
            service = booking.service_name,
            business = tenant.name,
        ),
        html: format!(
            "<p>Hello {name},</p><p>Your {service} with {business} on \
             <strong>{when}</strong> {happened}.</p><p>Booking reference: {reference}</p>",
            name = html(&booking.customer.name),
            service = html(booking.service_name),
            business = html(&tenant.name),
            when = html(&when),
        ),
    };
    let notes = booking.notes.unwrap_or("-");
    let phone = booking.customer.phone.as_deref().unwrap_or("-");
    let business = Message {
        role: "tenant",
        recipient: tenant.contact_email.clone(),
        subject: format!("{headline}: {} on {}", booking.service_name, when),
        text: format!(
            "{headline} {reference}\nService: {service}\nWhen: {when}\nCustomer: {name} \
             <{email}>\nPhone: {phone}\nNotes: {notes}\n",
            service = booking.service_name,
            name = booking.customer.name,
            email = booking.customer.email,
        ),
        html: format!(
            "<p>{headline} {reference}</p><ul><li>Service: {service}</li><li>When: {when}</li>\
             <li>Customer: {name} &lt;{email}&gt;</li><li>Phone: {phone}</li>\
             <li>Notes: {notes}</li></ul>",
            service = html(booking.service_name),
            when = html(&when),
            name = html(&booking.customer.name),
            email = html(&booking.customer.email),
            phone = html(phone),
            notes = html(notes),
        ),
    };

    for message in [customer, business] {
        insert_outbox(conn, tenant.id, booking.booking_id, event.name(), message).await?;
    }
    Ok(())
}

async fn insert_outbox(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    booking_id: Uuid,
    event: &str,
    message: Message,
) -> sqlx::Result<()> {
    let id = Uuid::now_v7();
    let message_id = format!("<{}.{}@bookings.invalid>", id.simple(), message.role);
    sqlx::query(
        "INSERT INTO outbox (tenant_id, id, booking_id, event, recipient_role, recipient,
                             subject, body_text, body_html, message_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(tenant_id)
    .bind(id)
    .bind(booking_id)
    .bind(event)
    .bind(message.role)
    .bind(message.recipient)
    .bind(message.subject)
    .bind(message.text)
    .bind(message.html)
    .bind(message_id)
    .execute(conn)
    .await?;
    Ok(())
}
