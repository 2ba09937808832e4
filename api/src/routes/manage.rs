//! The customer's manage link: `/v1/manage/{token}` shows the one booking the token was
//! made for, and lets its customer cancel or reschedule it. Both changes are booking
//! requests like a creation: stored, queued and decided by the tenant's actor, answered 202
//! with the status URL to poll.
//!
//! The token is looked up by its SHA-256 within the resolved tenant; a malformed token, an
//! unknown one and another tenant's are all the same 404.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::{DateTime, Utc};
use common::domain::{Tenant, local_rfc3339};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;
use validator::Validate;

use crate::AppState;
use crate::json::{Json, field_errors};
use crate::problem::{FieldError, Problem};
use crate::routes::bookings::{idempotency_key, rfc3339_with_offset, submit};
use crate::tenant::CurrentTenant;

/// A new time for a booking, from its customer or the tenant's admin.
#[derive(Debug, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct RescheduleBody {
    #[validate(custom(function = "rfc3339_with_offset"))]
    pub start: String,
    /// The resource to move to; without it the booking keeps its own when it is free, and
    /// otherwise takes any free resource offering its service.
    #[serde(default)]
    pub resource_id: Option<Uuid>,
}

#[derive(Debug, Serialize)]
pub struct ManagedBooking {
    pub id: Uuid,
    pub service_id: Uuid,
    pub service_name: String,
    pub resource_id: Uuid,
    pub start: String,
    pub end: String,
    pub status: String,
}

#[derive(sqlx::FromRow)]
struct BookingRow {
    id: Uuid,
    service_id: Uuid,
    service_name: String,
    resource_id: Uuid,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    status: String,
}

async fn find(state: &AppState, tenant: &Tenant, token: &str) -> Result<BookingRow, Problem> {
    let not_found = || Problem::not_found("no booking for this link");
    if !common::manage::looks_like_token(token) {
        return Err(not_found());
    }
    let mut tx = common::db::tenant_tx(&state.pool, tenant.id).await?;
    let row: Option<BookingRow> = sqlx::query_as(
        "SELECT b.id, b.service_id, s.name AS service_name, b.resource_id, b.starts_at,
                b.ends_at, b.status
         FROM bookings b
         JOIN services s ON s.tenant_id = b.tenant_id AND s.id = b.service_id
         WHERE b.tenant_id = $1 AND b.manage_token_hash = $2",
    )
    .bind(tenant.id)
    .bind(common::manage::token_hash(token))
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    row.ok_or_else(not_found)
}

/// `GET /v1/manage/{token}`: the booking, with times in the tenant's zone.
pub async fn show(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    Path(token): Path<String>,
) -> Result<axum::Json<ManagedBooking>, Problem> {
    let booking = find(&state, &tenant, &token).await?;
    let local = |instant| local_rfc3339(tenant.zone(), instant);
    Ok(axum::Json(ManagedBooking {
        id: booking.id,
        service_id: booking.service_id,
        service_name: booking.service_name,
        resource_id: booking.resource_id,
        start: local(booking.starts_at),
        end: local(booking.ends_at),
        status: booking.status,
    }))
}

/// `POST /v1/manage/{token}/cancel`: 202 with the status URL of the cancellation.
pub async fn cancel(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Result<Response, Problem> {
    let key = idempotency_key(&headers)?;
    let booking = find(&state, &tenant, &token).await?;
    submit(
        &state,
        &tenant,
        "cancel",
        key,
        json!({ "booking_id": booking.id }),
    )
    .await
}

/// `POST /v1/manage/{token}/reschedule`: 202 with the status URL of the reschedule.
pub async fn reschedule(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    headers: HeaderMap,
    Path(token): Path<String>,
    Json(body): Json<RescheduleBody>,
) -> Result<Response, Problem> {
    let key = idempotency_key(&headers)?;
    let booking = find(&state, &tenant, &token).await?;
    let payload = reschedule_payload(&state, &tenant, booking.id, body).await?;
    submit(&state, &tenant, "reschedule", key, payload).await
}

/// Checks a reschedule's body against the booking's service and gives the stored payload.
pub async fn reschedule_payload(
    state: &AppState,
    tenant: &Tenant,
    booking_id: Uuid,
    body: RescheduleBody,
) -> Result<serde_json::Value, Problem> {
    body.validate()
        .map_err(|errors| Problem::validation(field_errors(&errors)))?;
    let start = DateTime::parse_from_rfc3339(&body.start)
        .map_err(|_| Problem::bad_request("invalid start"))?;
    if let Some(resource_id) = body.resource_id {
        let mut tx = common::db::tenant_tx(&state.pool, tenant.id).await?;
        let offers: bool = sqlx::query_scalar(
            "SELECT EXISTS (
                 SELECT 1 FROM bookings b
                 JOIN resource_services rs ON rs.tenant_id = b.tenant_id
                                          AND rs.service_id = b.service_id
                 JOIN resources r ON r.tenant_id = rs.tenant_id AND r.id = rs.resource_id
                 WHERE b.tenant_id = $1 AND b.id = $2 AND rs.resource_id = $3 AND r.active)",
        )
        .bind(tenant.id)
        .bind(booking_id)
        .bind(resource_id)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        if !offers {
            return Err(Problem::validation(vec![FieldError {
                field: "resource_id".into(),
                message: "no such resource offers this booking's service".into(),
            }]));
        }
    }
    Ok(json!({
        "booking_id": booking_id,
        "start": start,
        "resource_id": body.resource_id,
    }))
}
