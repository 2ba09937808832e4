//! Services: what a tenant sells, with the rules its bookings follow.

use axum::Json as JsonResponse;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;
use validator::Validate;

use super::auth::Admin;
use super::path_id;
use crate::AppState;
use crate::audit;
use crate::json::{Json, field_errors};
use crate::problem::Problem;

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct Service {
    pub id: Uuid,
    pub name: String,
    pub duration_minutes: i32,
    pub slot_interval_minutes: i32,
    pub buffer_before_minutes: i32,
    pub buffer_after_minutes: i32,
    pub min_notice_minutes: i32,
    pub max_days_ahead: i32,
    /// Customers per slot: 1 for appointments, more for group sessions.
    pub capacity: i32,
    pub price_minor: i64,
    pub currency: String,
    pub active: bool,
}

/// A new service, or (all fields optional) changes to one.
#[derive(Debug, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct ServiceFields {
    #[validate(length(min = 1, max = 200, message = "must be 1 to 200 characters"))]
    pub name: Option<String>,
    #[validate(range(min = 5, max = 1440, message = "must be 5 to 1440 minutes"))]
    pub duration_minutes: Option<i32>,
    #[validate(range(min = 5, max = 1440, message = "must be 5 to 1440 minutes"))]
    pub slot_interval_minutes: Option<i32>,
    #[validate(range(min = 0, max = 240, message = "must be 0 to 240 minutes"))]
    pub buffer_before_minutes: Option<i32>,
    #[validate(range(min = 0, max = 240, message = "must be 0 to 240 minutes"))]
    pub buffer_after_minutes: Option<i32>,
    #[validate(range(min = 0, max = 525600, message = "must be 0 to 525600 minutes"))]
    pub min_notice_minutes: Option<i32>,
    #[validate(range(min = 1, max = 3650, message = "must be 1 to 3650 days"))]
    pub max_days_ahead: Option<i32>,
    #[validate(range(min = 1, max = 500, message = "must be 1 to 500 seats"))]
    pub capacity: Option<i32>,
    #[validate(range(min = 0, max = 100_000_000, message = "must be 0 to 100000000"))]
    pub price_minor: Option<i64>,
    #[validate(custom(function = "currency_code"))]
    pub currency: Option<String>,
    pub active: Option<bool>,
}

fn currency_code(code: &str) -> Result<(), validator::ValidationError> {
    if code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()) {
        return Ok(());
    }
    Err(validator::ValidationError::new("currency")
        .with_message("must be an ISO 4217 code such as GBP".into()))
}

const COLUMNS: &str = "id, name, duration_minutes, slot_interval_minutes, buffer_before_minutes,
    buffer_after_minutes, min_notice_minutes, max_days_ahead, capacity, price_minor,
    trim(currency) AS currency, active";

/// `GET /v1/admin/services`: every service, active or not.
pub async fn list(
    State(state): State<AppState>,
    admin: Admin,
) -> Result<JsonResponse<Vec<Service>>, Problem> {
    let services = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM services WHERE tenant_id = $1 ORDER BY name, id"
    )))
    .bind(admin.tenant.id)
    .fetch_all(&mut *admin.db(&state).await?)
    .await?;
    Ok(JsonResponse(services))
}

/// `GET /v1/admin/services/{id}`
pub async fn show(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<JsonResponse<Service>, Problem> {
    let id = path_id(&id, "service")?;
    find(&state, admin.tenant.id, id).await.map(JsonResponse)
}

async fn find(state: &AppState, tenant_id: Uuid, id: Uuid) -> Result<Service, Problem> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM services WHERE tenant_id = $1 AND id = $2"
    )))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(&mut *common::db::tenant_tx(&state.pool, tenant_id).await?)
    .await?
    .ok_or_else(|| Problem::not_found("no such service"))
}

/// `POST /v1/admin/services`: creates a service; 201 with it.
pub async fn create(
    State(state): State<AppState>,
    admin: Admin,
    Json(fields): Json<ServiceFields>,
) -> Result<(StatusCode, JsonResponse<Service>), Problem> {
    fields
        .validate()
        .map_err(|e| Problem::validation(field_errors(&e)))?;
    let mut missing = Vec::new();
    for (name, present) in [
        ("name", fields.name.is_some()),
        ("duration_minutes", fields.duration_minutes.is_some()),
        ("price_minor", fields.price_minor.is_some()),
        ("currency", fields.currency.is_some()),
    ] {
        if !present {
            missing.push(crate::problem::FieldError {
                field: name.into(),
                message: "is required".into(),
            });
        }
    }
    if !missing.is_empty() {
        return Err(Problem::validation(missing));
    }

    let id = Uuid::now_v7();
    let duration = fields.duration_minutes.unwrap_or(30);
    let mut tx = admin.db(&state).await?;
    let service: Service = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO services (tenant_id, id, name, duration_minutes, slot_interval_minutes,
             buffer_before_minutes, buffer_after_minutes, min_notice_minutes, max_days_ahead,
             price_minor, currency, active, capacity)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
         RETURNING {COLUMNS}"
    )))
    .bind(admin.tenant.id)
    .bind(id)
    .bind(&fields.name)
    .bind(duration)
    .bind(fields.slot_interval_minutes.unwrap_or(duration))
    .bind(fields.buffer_before_minutes.unwrap_or(0))
    .bind(fields.buffer_after_minutes.unwrap_or(0))
    .bind(fields.min_notice_minutes.unwrap_or(0))
    .bind(fields.max_days_ahead.unwrap_or(365))
    .bind(fields.price_minor)
    .bind(&fields.currency)
    .bind(fields.active.unwrap_or(true))
    .bind(fields.capacity.unwrap_or(1))
    .fetch_one(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        admin.audit("service.create", Some(id.to_string()), json!({})),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, JsonResponse(service)))
}

/// `PATCH /v1/admin/services/{id}`: changes the given fields.
pub async fn update(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
    Json(fields): Json<ServiceFields>,
) -> Result<JsonResponse<Service>, Problem> {
    let id = path_id(&id, "service")?;
    fields
        .validate()
        .map_err(|e| Problem::validation(field_errors(&e)))?;
    let mut tx = admin.db(&state).await?;
    let service: Option<Service> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE services SET
             name = COALESCE($3, name),
             duration_minutes = COALESCE($4, duration_minutes),
             slot_interval_minutes = COALESCE($5, slot_interval_minutes),
             buffer_before_minutes = COALESCE($6, buffer_before_minutes),
             buffer_after_minutes = COALESCE($7, buffer_after_minutes),
             min_notice_minutes = COALESCE($8, min_notice_minutes),
             max_days_ahead = COALESCE($9, max_days_ahead),
             price_minor = COALESCE($10, price_minor),
             currency = COALESCE($11, currency),
             active = COALESCE($12, active),
             capacity = COALESCE($13, capacity)
         WHERE tenant_id = $1 AND id = $2
         RETURNING {COLUMNS}"
    )))
    .bind(admin.tenant.id)
    .bind(id)
    .bind(&fields.name)
    .bind(fields.duration_minutes)
    .bind(fields.slot_interval_minutes)
    .bind(fields.buffer_before_minutes)
    .bind(fields.buffer_after_minutes)
    .bind(fields.min_notice_minutes)
    .bind(fields.max_days_ahead)
    .bind(fields.price_minor)
    .bind(&fields.currency)
    .bind(fields.active)
    .bind(fields.capacity)
    .fetch_optional(&mut *tx)
    .await?;
    let service = service.ok_or_else(|| Problem::not_found("no such service"))?;
    audit::record(
        &mut tx,
        admin.audit("service.update", Some(id.to_string()), json!({})),
    )
    .await?;
    tx.commit().await?;
    Ok(JsonResponse(service))
}

/// `DELETE /v1/admin/services/{id}`: deactivates the service; its bookings stay.
pub async fn deactivate(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    let id = path_id(&id, "service")?;
    let mut tx = admin.db(&state).await?;
    let changed =
        sqlx::query("UPDATE services SET active = false WHERE tenant_id = $1 AND id = $2")
            .bind(admin.tenant.id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
    if changed.rows_affected() == 0 {
        return Err(Problem::not_found("no such service"));
    }
    audit::record(
        &mut tx,
        admin.audit("service.deactivate", Some(id.to_string()), json!({})),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
