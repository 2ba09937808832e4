//! Cancelling a booking. The cancellation is a booking request like a creation: stored,
//! queued, and decided by the tenant's actor in order, so it never races a booking of the
//! same slot.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::json;

use super::auth::Admin;
use super::path_id;
use crate::AppState;
use crate::audit;
use crate::problem::Problem;
use crate::routes::bookings::{idempotency_key, submit};

/// `POST /v1/admin/bookings/{id}/cancel`: 202 with the status URL of the cancellation.
pub async fn cancel(
    State(state): State<AppState>,
    admin: Admin,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let booking_id = path_id(&id, "booking")?;
    let key = idempotency_key(&headers)?;
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM bookings WHERE tenant_id = $1 AND id = $2)",
    )
    .bind(admin.tenant.id)
    .bind(booking_id)
    .fetch_one(&mut *admin.db(&state).await?)
    .await?;
    if !exists {
        return Err(Problem::not_found("no such booking"));
    }

    let response = submit(
        &state,
        &admin.tenant,
        "cancel",
        key,
        json!({ "booking_id": booking_id }),
    )
    .await?;
    let mut conn = admin.db(&state).await?;
    audit::record(
        &mut conn,
        admin.audit("booking.cancel", Some(booking_id.to_string()), json!({})),
    )
    .await?;
    conn.commit().await?;
    Ok(response)
}
