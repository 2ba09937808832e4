//! Changing a booking. A cancellation or reschedule is a booking request like a creation:
//! stored, queued, and decided by the tenant's actor in order, so it never races a booking
//! of the same slot. Marking a booking completed or a no-show changes no slot, so it is
//! written at once.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::json;

use super::auth::Admin;
use super::path_id;
use crate::AppState;
use crate::audit;
use crate::json::Json;
use crate::problem::FieldError;
use crate::problem::Problem;
use crate::routes::bookings::{idempotency_key, submit};
use crate::routes::manage::{RescheduleBody, reschedule_payload};

/// `POST /v1/admin/bookings/{id}/cancel`: 202 with the status URL of the cancellation.
pub async fn cancel(
    State(state): State<AppState>,
    admin: Admin,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let booking_id = path_id(&id, "booking")?;
    let key = idempotency_key(&headers)?;
    ensure_exists(&state, &admin, booking_id).await?;

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

async fn ensure_exists(
    state: &AppState,
    admin: &Admin,
    booking_id: uuid::Uuid,
) -> Result<(), Problem> {
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM bookings WHERE tenant_id = $1 AND id = $2)",
    )
    .bind(admin.tenant.id)
    .bind(booking_id)
    .fetch_one(&mut *admin.db(state).await?)
    .await?;
    if exists {
        Ok(())
    } else {
        Err(Problem::not_found("no such booking"))
    }
}

/// `POST /v1/admin/bookings/{id}/reschedule`: 202 with the status URL of the reschedule.
pub async fn reschedule(
    State(state): State<AppState>,
    admin: Admin,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<RescheduleBody>,
) -> Result<Response, Problem> {
    let booking_id = path_id(&id, "booking")?;
    let key = idempotency_key(&headers)?;
    ensure_exists(&state, &admin, booking_id).await?;
    let payload = reschedule_payload(&state, &admin.tenant, booking_id, body).await?;
    let detail = json!({ "start": payload["start"], "resource_id": payload["resource_id"] });
    let response = submit(&state, &admin.tenant, "reschedule", key, payload).await?;
    let mut conn = admin.db(&state).await?;
    audit::record(
        &mut conn,
        admin.audit("booking.reschedule", Some(booking_id.to_string()), detail),
    )
    .await?;
    conn.commit().await?;
    Ok(response)
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusBody {
    pub status: String,
}

/// `POST /v1/admin/bookings/{id}/status` with `{"status": "completed" | "no_show"}`: records
/// how a confirmed booking went, once it has started. The booking keeps its slot.
pub async fn set_status(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
    Json(body): Json<StatusBody>,
) -> Result<axum::Json<serde_json::Value>, Problem> {
    let booking_id = path_id(&id, "booking")?;
    if !matches!(body.status.as_str(), "completed" | "no_show") {
        return Err(Problem::validation(vec![FieldError {
            field: "status".into(),
            message: "must be completed or no_show".into(),
        }]));
    }
    let mut tx = admin.db(&state).await?;
    let current: Option<(String, bool)> = sqlx::query_as(
        "SELECT status, starts_at <= now() FROM bookings WHERE tenant_id = $1 AND id = $2
         FOR UPDATE",
    )
    .bind(admin.tenant.id)
    .bind(booking_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((status, started)) = current else {
        return Err(Problem::not_found("no such booking"));
    };
    if status != "confirmed" {
        return Err(Problem::conflict(format!(
            "the booking is {status}; only a confirmed booking can be marked {}",
            body.status
        )));
    }
    if !started {
        return Err(Problem::conflict(
            "the booking has not started yet; mark it once it has",
        ));
    }
    sqlx::query(
        "UPDATE bookings SET status = $3, updated_at = now() WHERE tenant_id = $1 AND id = $2",
    )
    .bind(admin.tenant.id)
    .bind(booking_id)
    .bind(&body.status)
    .execute(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        admin.audit(
            "booking.status",
            Some(booking_id.to_string()),
            json!({ "status": body.status }),
        ),
    )
    .await?;
    tx.commit().await?;
    Ok(axum::Json(
        json!({ "id": booking_id, "status": body.status }),
    ))
}
