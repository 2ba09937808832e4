//! Blackouts: periods when the whole tenant takes no bookings (holidays, closures).
//!
//! Instants are RFC 3339 with an offset on the way in, and are answered in the tenant's time
//! zone.

use axum::Json as JsonResponse;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, FixedOffset, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;
use validator::{Validate, ValidationError};

use super::auth::Admin;
use super::path_id;
use crate::AppState;
use crate::audit;
use crate::json::{Json, field_errors};
use crate::problem::{FieldError, Problem};

#[derive(Debug, Serialize)]
pub struct Blackout {
    pub id: Uuid,
    pub starts_at: DateTime<FixedOffset>,
    pub ends_at: DateTime<FixedOffset>,
    pub reason: String,
}

#[derive(sqlx::FromRow)]
struct BlackoutRow {
    id: Uuid,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    reason: String,
}

#[derive(Debug, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct NewBlackout {
    #[validate(custom(function = "rfc3339_with_offset"))]
    pub starts_at: String,
    #[validate(custom(function = "rfc3339_with_offset"))]
    pub ends_at: String,
    #[validate(custom(function = "reason_text"))]
    pub reason: Option<String>,
}

/// `?from=&to=`: only blackouts overlapping `[from, to)`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    pub from: Option<String>,
    pub to: Option<String>,
}

const RFC3339: &str =
    "must be an RFC 3339 date-time with an offset, like 2030-01-31T09:00:00+01:00";

fn rfc3339_with_offset(value: &str) -> Result<(), ValidationError> {
    DateTime::parse_from_rfc3339(value)
        .map(|_| ())
        .map_err(|_| ValidationError::new("rfc3339").with_message(RFC3339.into()))
}

fn reason_text(reason: &str) -> Result<(), ValidationError> {
    let printable = |c: char| !c.is_control() || matches!(c, '\n' | '\r' | '\t');
    if reason.chars().count() <= 500 && reason.chars().all(printable) {
        return Ok(());
    }
    Err(ValidationError::new("reason").with_message(
        "must be at most 500 characters, without control characters other than line breaks \
         and tabs"
            .into(),
    ))
}

/// Answers a blackout in the tenant's zone; an unreadable zone name falls back to UTC.
fn in_zone(admin: &Admin, row: BlackoutRow) -> Blackout {
    let local = |at: DateTime<Utc>| at.with_timezone(&admin.tenant.zone()).fixed_offset();
    Blackout {
        id: row.id,
        starts_at: local(row.starts_at),
        ends_at: local(row.ends_at),
        reason: row.reason,
    }
}

fn instant(field: &str, value: &str) -> Result<DateTime<Utc>, FieldError> {
    DateTime::parse_from_rfc3339(value)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|_| FieldError {
            field: field.into(),
            message: RFC3339.into(),
        })
}

/// `GET /v1/admin/blackouts[?from=&to=]`: the tenant's blackouts by start, all of them or
/// those overlapping the window.
pub async fn list(
    State(state): State<AppState>,
    admin: Admin,
    window: Result<Query<Window>, QueryRejection>,
) -> Result<JsonResponse<Vec<Blackout>>, Problem> {
    let Query(window) = window.map_err(|e| crate::query::problem(e, "from or to"))?;
    let mut errors = Vec::new();
    let mut bound = |field: &str, value: &Option<String>| match value {
        Some(value) => instant(field, value).map_err(|e| errors.push(e)).ok(),
        None => None,
    };
    let from = bound("from", &window.from);
    let to = bound("to", &window.to);
    if let (Some(from), Some(to)) = (from, to)
        && from >= to
    {
        errors.push(FieldError {
            field: "to".into(),
            message: "must be after from".into(),
        });
    }
    if !errors.is_empty() {
        return Err(Problem::validation(errors));
    }

    let rows: Vec<BlackoutRow> = sqlx::query_as(
        "SELECT id, starts_at, ends_at, reason FROM blackouts
         WHERE tenant_id = $1
           AND ($2::timestamptz IS NULL OR ends_at > $2)
           AND ($3::timestamptz IS NULL OR starts_at < $3)
         ORDER BY starts_at, id",
    )
    .bind(admin.tenant.id)
    .bind(from)
    .bind(to)
    .fetch_all(&mut *admin.db(&state).await?)
    .await?;
    Ok(JsonResponse(
        rows.into_iter().map(|row| in_zone(&admin, row)).collect(),
    ))
}

/// `POST /v1/admin/blackouts`: creates a blackout; 201 with it.
pub async fn create(
    State(state): State<AppState>,
    admin: Admin,
    Json(body): Json<NewBlackout>,
) -> Result<(StatusCode, JsonResponse<Blackout>), Problem> {
    body.validate()
        .map_err(|e| Problem::validation(field_errors(&e)))?;
    let starts_at =
        instant("starts_at", &body.starts_at).map_err(|e| Problem::validation(vec![e]))?;
    let ends_at = instant("ends_at", &body.ends_at).map_err(|e| Problem::validation(vec![e]))?;
    if starts_at >= ends_at {
        return Err(Problem::validation(vec![FieldError {
            field: "ends_at".into(),
            message: "must be after starts_at".into(),
        }]));
    }

    let id = Uuid::now_v7();
    let mut tx = admin.db(&state).await?;
    let row: BlackoutRow = sqlx::query_as(
        "INSERT INTO blackouts (tenant_id, id, starts_at, ends_at, reason)
         VALUES ($1, $2, $3, $4, $5)
         RETURNING id, starts_at, ends_at, reason",
    )
    .bind(admin.tenant.id)
    .bind(id)
    .bind(starts_at)
    .bind(ends_at)
    .bind(body.reason.as_deref().unwrap_or(""))
    .fetch_one(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        admin.audit(
            "blackout.create",
            Some(id.to_string()),
            json!({ "starts_at": starts_at, "ends_at": ends_at }),
        ),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, JsonResponse(in_zone(&admin, row))))
}

/// `DELETE /v1/admin/blackouts/{id}`: removes the blackout.
pub async fn delete(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    let id = path_id(&id, "blackout")?;
    let mut tx = admin.db(&state).await?;
    let removed: Option<(DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
        "DELETE FROM blackouts WHERE tenant_id = $1 AND id = $2 RETURNING starts_at, ends_at",
    )
    .bind(admin.tenant.id)
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((starts_at, ends_at)) = removed else {
        return Err(Problem::not_found("no such blackout"));
    };
    audit::record(
        &mut tx,
        admin.audit(
            "blackout.delete",
            Some(id.to_string()),
            json!({ "starts_at": starts_at, "ends_at": ends_at }),
        ),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
