//! Where a booking request stands.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use common::domain::{RequestStatus, Tenant, local_rfc3339};
use serde::Serialize;
use sqlx::Row;
use uuid::Uuid;

use crate::AppState;
use crate::problem::Problem;
use crate::tenant::CurrentTenant;

#[derive(Debug, Serialize)]
pub struct RequestView {
    pub request_id: Uuid,
    pub status: RequestStatus,
    /// When the api accepted the request.
    pub accepted_at: DateTime<Utc>,
    /// When the worker reached the final status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub booking: Option<BookingView>,
}

/// The booking the request confirmed, as it stands now (a later reschedule or cancellation
/// shows here too), with its times in the tenant's offset.
#[derive(Debug, Serialize)]
pub struct BookingView {
    pub id: Uuid,
    pub service_id: Uuid,
    pub resource_id: Uuid,
    pub start: String,
    pub end: String,
    pub status: String,
}

/// Seconds a client should wait before polling a request that is not final yet.
const POLL_AFTER_SECONDS: u32 = 1;

/// `GET /v1/booking-requests/{id}`: the request's status, its booking once confirmed, and
/// `Retry-After` while it is still open. Another tenant's request is 404.
pub async fn show(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let not_found = || Problem::not_found("no booking request with this id");
    let id: Uuid = id.parse().map_err(|_| not_found())?;
    let view = find(&state, &tenant, id).await?.ok_or_else(not_found)?;
    let open = !view.status.is_final();
    let mut response = Json(view).into_response();
    if open {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(POLL_AFTER_SECONDS));
    }
    Ok(response)
}

pub async fn find(
    state: &AppState,
    tenant: &Tenant,
    id: Uuid,
) -> Result<Option<RequestView>, Problem> {
    let tenant_id = tenant.id;
    let local = |instant| local_rfc3339(tenant.zone(), instant);
    let mut tx = common::db::tenant_tx(&state.pool, tenant_id).await?;
    let row = sqlx::query(
        "SELECT r.id, r.status, r.reason, r.detail, r.accepted_at, r.decided_at,
                b.id AS booking_id, b.service_id, b.resource_id, b.starts_at, b.ends_at,
                b.status AS booking_status
         FROM booking_requests r
         LEFT JOIN bookings b ON b.tenant_id = r.tenant_id AND b.id = r.booking_id
         WHERE r.tenant_id = $1 AND r.id = $2",
    )
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else { return Ok(None) };

    let booking_id: Option<Uuid> = row.try_get("booking_id")?;
    let booking = match booking_id {
        Some(id) => Some(BookingView {
            id,
            service_id: row.try_get("service_id")?,
            resource_id: row.try_get("resource_id")?,
            start: local(row.try_get("starts_at")?),
            end: local(row.try_get("ends_at")?),
            status: row.try_get("booking_status")?,
        }),
        None => None,
    };
    Ok(Some(RequestView {
        request_id: row.try_get("id")?,
        status: row.try_get("status")?,
        accepted_at: row.try_get("accepted_at")?,
        decided_at: row.try_get("decided_at")?,
        reason: row.try_get("reason")?,
        detail: row.try_get("detail")?,
        booking,
    }))
}
