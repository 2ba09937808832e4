//! GDPR requests about one customer of the tenant, named by email address (compared without
//! regard to case): export everything held about them, or erase it.
//!
//! The address travels in a POST body, never in the URL, so it stays out of access logs;
//! the audit log records counts only.
//!
//! Erasure keeps the bookings, anonymised, so that their slots stay taken; scrubs the
//! customer and notes out of the stored booking requests; and deletes the messages about
//! the customer's bookings (to them and to the business, whose copy names them too) and
//! any other message addressed to them.
//!
//! Only the database is erased: mail already handed to the SMTP server (or written to
//! `OUTBOX_DIR`) and database backups are beyond this route's reach.

use axum::Json as JsonResponse;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;
use validator::Validate;

use super::auth::Admin;
use super::bookings::{BOOKING_ROW_SQL, Booking, BookingRow, tenant_zone};
use crate::AppState;
use crate::audit;
use crate::json::{Json, field_errors};
use crate::problem::Problem;

/// What an erased customer's name and address become.
const ERASED_NAME: &str = "erased";
const ERASED_EMAIL: &str = "erased@invalid";

#[derive(Debug, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct CustomerRequest {
    #[validate(
        email(message = "must be a valid email address"),
        length(max = 254, message = "must be at most 254 characters")
    )]
    pub email: String,
}

impl CustomerRequest {
    fn validated(self) -> Result<String, Problem> {
        self.validate()
            .map_err(|e| Problem::validation(field_errors(&e)))?;
        Ok(self.email)
    }
}

/// Everything held about one customer.
#[derive(Debug, Serialize)]
pub struct CustomerExport {
    pub bookings: Vec<CustomerBooking>,
    pub booking_requests: Vec<CustomerRequestRecord>,
    pub messages: Vec<CustomerMessage>,
}

#[derive(Debug, Serialize)]
pub struct CustomerBooking {
    #[serde(flatten)]
    pub booking: Booking,
    pub service_name: String,
    pub resource_name: String,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct CustomerRequestRecord {
    pub id: Uuid,
    pub kind: String,
    pub status: String,
    pub reason: Option<String>,
    pub detail: Option<String>,
    pub booking_id: Option<Uuid>,
    pub accepted_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
    /// The request as it was accepted.
    pub payload: serde_json::Value,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct CustomerMessage {
    pub id: Uuid,
    pub booking_id: Uuid,
    pub event: String,
    pub recipient_role: String,
    pub recipient: String,
    pub subject: String,
    pub body_text: String,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
}

/// How many records an erasure changed.
#[derive(Debug, Serialize)]
pub struct Erased {
    pub bookings_anonymised: u64,
    pub booking_requests_scrubbed: u64,
    pub messages_deleted: u64,
}

/// The ids of the customer's bookings, as a subquery over `$1` (tenant) and `$2` (email).
// Limitation: no index covers `lower(customer_email)` or the payload's address, so each
// request reads all of the tenant's bookings and booking requests; expression indexes on
// `(tenant_id, lower(customer_email))` and on the payload's address would lift it.
const THEIR_BOOKINGS: &str =
    "SELECT id FROM bookings WHERE tenant_id = $1 AND lower(customer_email) = lower($2)";

/// Booking requests that carry the customer's details, and those about their bookings
/// (cancellations carry only the booking's id).
fn their_requests() -> String {
    format!(
        "tenant_id = $1 AND (
             lower(payload -> 'customer' ->> 'email') = lower($2)
             OR booking_id IN ({THEIR_BOOKINGS})
             OR payload ->> 'booking_id' IN (SELECT id::text FROM ({THEIR_BOOKINGS}) AS theirs))"
    )
}

/// Messages about the customer's bookings, and any other message addressed to them.
fn their_messages() -> String {
    format!("tenant_id = $1 AND (booking_id IN ({THEIR_BOOKINGS}) OR lower(recipient) = lower($2))")
}

/// `POST /v1/admin/customers/export`: the customer's bookings, booking requests and
/// messages. Audited as `customer.export` with the counts.
pub async fn export(
    State(state): State<AppState>,
    admin: Admin,
    Json(body): Json<CustomerRequest>,
) -> Result<JsonResponse<CustomerExport>, Problem> {
    let email = body.validated()?;

    // One snapshot, so the three parts agree with each other.
    let mut tx = common::db::tenant_snapshot_tx(&state.pool, admin.tenant.id).await?;
    let export = collect(&mut tx, &admin, &email).await?;
    let detail = json!({
        "bookings": export.bookings.len(),
        "booking_requests": export.booking_requests.len(),
        "messages": export.messages.len(),
    });
    audit::record(&mut tx, admin.audit("customer.export", None, detail)).await?;
    tx.commit().await?;
    Ok(JsonResponse(export))
}

async fn collect(
    conn: &mut PgConnection,
    admin: &Admin,
    email: &str,
) -> Result<CustomerExport, Problem> {
    let tenant_id = admin.tenant.id;
    let rows: Vec<BookingRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{BOOKING_ROW_SQL}
         WHERE b.tenant_id = $1 AND lower(b.customer_email) = lower($2)
         ORDER BY b.starts_at, b.id"
    )))
    .bind(tenant_id)
    .bind(email)
    .fetch_all(&mut *conn)
    .await?;
    let tz = tenant_zone(admin);
    let bookings = rows
        .into_iter()
        .map(|row| CustomerBooking {
            booking: row.view(tz),
            service_name: row.service_name,
            resource_name: row.resource_name,
            updated_at: row.updated_at,
        })
        .collect();

    let booking_requests = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT id, kind, status, reason, detail, booking_id, accepted_at, decided_at, payload
         FROM booking_requests WHERE {} ORDER BY seq",
        their_requests()
    )))
    .bind(tenant_id)
    .bind(email)
    .fetch_all(&mut *conn)
    .await?;

    let messages = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT id, booking_id, event, recipient_role, recipient, subject, body_text, status,
                created_at, sent_at
         FROM outbox WHERE {} ORDER BY created_at, id",
        their_messages()
    )))
    .bind(tenant_id)
    .bind(email)
    .fetch_all(&mut *conn)
    .await?;

    Ok(CustomerExport {
        bookings,
        booking_requests,
        messages,
    })
}

/// `POST /v1/admin/customers/erase`: anonymises the customer's bookings, scrubs their
/// booking requests and deletes their messages, in one transaction; answers the counts.
/// 409 while one of their requests is still being decided. Audited as `customer.erase`
/// with the counts.
pub async fn erase(
    State(state): State<AppState>,
    admin: Admin,
    Json(body): Json<CustomerRequest>,
) -> Result<JsonResponse<Erased>, Problem> {
    let email = body.validated()?;
    let tenant_id = admin.tenant.id;

    let mut tx = admin.db(&state).await?;
    // The worker decides a tenant's requests holding this lock (see worker/src/engine.rs);
    // taking it here means no decision copies the customer's details into a booking or a
    // message while they are being erased.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('tenant:' || $1::text, 0))")
        .bind(tenant_id)
        .execute(&mut *tx)
        .await?;
    let open: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM booking_requests
         WHERE {} AND status IN ('queued', 'processing')",
        their_requests()
    )))
    .bind(tenant_id)
    .bind(email.as_str())
    .fetch_one(&mut *tx)
    .await?;
    if open > 0 {
        return Err(Problem::conflict(
            "some of this customer's booking requests are still being decided; retry once \
             they are final",
        ));
    }

    // Messages first: they are found through the bookings, which are about to lose the
    // address.
    let messages_deleted = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM outbox WHERE {}",
        their_messages()
    )))
    .bind(tenant_id)
    .bind(email.as_str())
    .execute(&mut *tx)
    .await?
    .rows_affected();

    // The fingerprint is a hash of the customer's details, so it goes too; a retry under
    // the same Idempotency-Key then no longer matches. A key that contains the address
    // is dropped.
    let booking_requests_scrubbed = sqlx::query(
        "UPDATE booking_requests
         SET payload = payload || jsonb_build_object(
                 'customer', jsonb_build_object('name', $3::text, 'email', $4::text,
                                                'phone', NULL),
                 'notes', NULL),
             body_fingerprint = 'erased',
             idempotency_key = CASE WHEN strpos(lower(idempotency_key), lower($2)) > 0
                                    THEN NULL ELSE idempotency_key END
         WHERE tenant_id = $1 AND lower(payload -> 'customer' ->> 'email') = lower($2)",
    )
    .bind(tenant_id)
    .bind(email.as_str())
    .bind(ERASED_NAME)
    .bind(ERASED_EMAIL)
    .execute(&mut *tx)
    .await?
    .rows_affected();

    let bookings_anonymised = sqlx::query(
        "UPDATE bookings
         SET customer_name = $3, customer_email = $4, customer_phone = NULL, notes = NULL,
             manage_token_hash = NULL, updated_at = now()
         WHERE tenant_id = $1 AND lower(customer_email) = lower($2)",
    )
    .bind(tenant_id)
    .bind(email.as_str())
    .bind(ERASED_NAME)
    .bind(ERASED_EMAIL)
    .execute(&mut *tx)
    .await?
    .rows_affected();

    let erased = Erased {
        bookings_anonymised,
        booking_requests_scrubbed,
        messages_deleted,
    };
    let detail = serde_json::to_value(&erased).map_err(Problem::internal)?;
    audit::record(&mut tx, admin.audit("customer.erase", None, detail)).await?;
    tx.commit().await?;
    Ok(JsonResponse(erased))
}
