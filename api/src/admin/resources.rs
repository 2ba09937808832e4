//! Resources: the staff, rooms or machines a booking occupies, and which services each offers.

use std::collections::HashSet;

use axum::Json as JsonResponse;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;
use validator::{Validate, ValidationError};

use super::auth::Admin;
use super::path_id;
use crate::AppState;
use crate::audit;
use crate::json::{Json, field_errors};
use crate::problem::{FieldError, Problem};

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct Resource {
    pub id: Uuid,
    pub name: String,
    pub active: bool,
    pub service_ids: Vec<Uuid>,
}

/// A new resource, or (all fields optional) changes to one. `service_ids`, when given,
/// replaces the services the resource offers.
#[derive(Debug, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct ResourceFields {
    #[validate(custom(function = "resource_name"))]
    pub name: Option<String>,
    pub active: Option<bool>,
    pub service_ids: Option<Vec<Uuid>>,
}

/// The body of `PUT /v1/admin/resources/{id}/services`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Offering {
    pub service_ids: Vec<Uuid>,
}

fn resource_name(name: &str) -> Result<(), ValidationError> {
    let length = name.chars().count();
    if (1..=200).contains(&length) && !name.trim().is_empty() && !name.contains(char::is_control) {
        return Ok(());
    }
    Err(ValidationError::new("name").with_message(
        "must be 1 to 200 characters, not all blank, without control characters".into(),
    ))
}

const SELECT: &str = "SELECT r.id, r.name, r.active,
        COALESCE(array_agg(rs.service_id ORDER BY rs.service_id)
                 FILTER (WHERE rs.service_id IS NOT NULL), '{}') AS service_ids
    FROM resources r
    LEFT JOIN resource_services rs ON rs.tenant_id = r.tenant_id AND rs.resource_id = r.id";

/// `GET /v1/admin/resources`: every resource, active or not.
pub async fn list(
    State(state): State<AppState>,
    admin: Admin,
) -> Result<JsonResponse<Vec<Resource>>, Problem> {
    let resources = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT} WHERE r.tenant_id = $1 GROUP BY r.tenant_id, r.id ORDER BY r.name, r.id"
    )))
    .bind(admin.tenant.id)
    .fetch_all(&mut *admin.db(&state).await?)
    .await?;
    Ok(JsonResponse(resources))
}

/// `GET /v1/admin/resources/{id}`
pub async fn show(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<JsonResponse<Resource>, Problem> {
    let id = path_id(&id, "resource")?;
    let mut conn = admin.db(&state).await?;
    find(&mut conn, admin.tenant.id, id).await.map(JsonResponse)
}

async fn find(conn: &mut PgConnection, tenant_id: Uuid, id: Uuid) -> Result<Resource, Problem> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT} WHERE r.tenant_id = $1 AND r.id = $2 GROUP BY r.tenant_id, r.id"
    )))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| Problem::not_found("no such resource"))
}

/// `POST /v1/admin/resources`: creates a resource; 201 with it.
pub async fn create(
    State(state): State<AppState>,
    admin: Admin,
    Json(fields): Json<ResourceFields>,
) -> Result<(StatusCode, JsonResponse<Resource>), Problem> {
    fields
        .validate()
        .map_err(|e| Problem::validation(field_errors(&e)))?;
    let Some(name) = &fields.name else {
        return Err(Problem::validation(vec![FieldError {
            field: "name".into(),
            message: "is required".into(),
        }]));
    };

    let id = Uuid::now_v7();
    let mut tx = admin.db(&state).await?;
    let service_ids = match &fields.service_ids {
        Some(ids) => tenant_services(&mut tx, admin.tenant.id, ids).await?,
        None => Vec::new(),
    };
    sqlx::query("INSERT INTO resources (tenant_id, id, name, active) VALUES ($1, $2, $3, $4)")
        .bind(admin.tenant.id)
        .bind(id)
        .bind(name)
        .bind(fields.active.unwrap_or(true))
        .execute(&mut *tx)
        .await?;
    replace_offering(&mut tx, admin.tenant.id, id, &service_ids).await?;
    audit::record(
        &mut tx,
        admin.audit(
            "resource.create",
            Some(id.to_string()),
            json!({ "service_ids": service_ids }),
        ),
    )
    .await?;
    let resource = find(&mut tx, admin.tenant.id, id).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, JsonResponse(resource)))
}

/// `PATCH /v1/admin/resources/{id}`: changes the given fields.
pub async fn update(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
    Json(fields): Json<ResourceFields>,
) -> Result<JsonResponse<Resource>, Problem> {
    let id = path_id(&id, "resource")?;
    fields
        .validate()
        .map_err(|e| Problem::validation(field_errors(&e)))?;

    let mut tx = admin.db(&state).await?;
    let changed = sqlx::query(
        "UPDATE resources SET name = COALESCE($3, name), active = COALESCE($4, active)
         WHERE tenant_id = $1 AND id = $2",
    )
    .bind(admin.tenant.id)
    .bind(id)
    .bind(&fields.name)
    .bind(fields.active)
    .execute(&mut *tx)
    .await?;
    if changed.rows_affected() == 0 {
        return Err(Problem::not_found("no such resource"));
    }
    let mut detail = json!({});
    if let Some(ids) = &fields.service_ids {
        let service_ids = tenant_services(&mut tx, admin.tenant.id, ids).await?;
        replace_offering(&mut tx, admin.tenant.id, id, &service_ids).await?;
        detail = json!({ "service_ids": service_ids });
    }
    audit::record(
        &mut tx,
        admin.audit("resource.update", Some(id.to_string()), detail),
    )
    .await?;
    let resource = find(&mut tx, admin.tenant.id, id).await?;
    tx.commit().await?;
    Ok(JsonResponse(resource))
}

/// `DELETE /v1/admin/resources/{id}`: deactivates the resource; its bookings stay, and it
/// takes no new ones.
pub async fn deactivate(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    let id = path_id(&id, "resource")?;
    let mut tx = admin.db(&state).await?;
    let changed =
        sqlx::query("UPDATE resources SET active = false WHERE tenant_id = $1 AND id = $2")
            .bind(admin.tenant.id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
    if changed.rows_affected() == 0 {
        return Err(Problem::not_found("no such resource"));
    }
    audit::record(
        &mut tx,
        admin.audit("resource.deactivate", Some(id.to_string()), json!({})),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /v1/admin/resources/{id}/services`: replaces the services the resource offers.
pub async fn replace_services(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
    Json(offering): Json<Offering>,
) -> Result<JsonResponse<Resource>, Problem> {
    let id = path_id(&id, "resource")?;
    let mut tx = admin.db(&state).await?;
    lock(&mut tx, admin.tenant.id, id).await?;
    let service_ids = tenant_services(&mut tx, admin.tenant.id, &offering.service_ids).await?;
    replace_offering(&mut tx, admin.tenant.id, id, &service_ids).await?;
    audit::record(
        &mut tx,
        admin.audit(
            "resource.services.replace",
            Some(id.to_string()),
            json!({ "service_ids": service_ids }),
        ),
    )
    .await?;
    let resource = find(&mut tx, admin.tenant.id, id).await?;
    tx.commit().await?;
    Ok(JsonResponse(resource))
}

/// Checks that every id names a service of the tenant (active or not) and returns them
/// without repeats; a 422 names each `service_ids[i]` that does not.
async fn tenant_services(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    ids: &[Uuid],
) -> Result<Vec<Uuid>, Problem> {
    let known: HashSet<Uuid> =
        sqlx::query_scalar("SELECT id FROM services WHERE tenant_id = $1 AND id = ANY($2)")
            .bind(tenant_id)
            .bind(ids)
            .fetch_all(conn)
            .await?
            .into_iter()
            .collect();
    let unknown: Vec<FieldError> = ids
        .iter()
        .enumerate()
        .filter(|(_, id)| !known.contains(id))
        .map(|(i, _)| FieldError {
            field: format!("service_ids[{i}]"),
            message: "is not a service of this tenant".into(),
        })
        .collect();
    if !unknown.is_empty() {
        return Err(Problem::validation(unknown));
    }

    let mut seen = HashSet::new();
    Ok(ids.iter().copied().filter(|id| seen.insert(*id)).collect())
}

async fn replace_offering(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    resource_id: Uuid,
    service_ids: &[Uuid],
) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM resource_services WHERE tenant_id = $1 AND resource_id = $2")
        .bind(tenant_id)
        .bind(resource_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO resource_services (tenant_id, resource_id, service_id)
         SELECT $1, $2, unnest($3::uuid[])",
    )
    .bind(tenant_id)
    .bind(resource_id)
    .bind(service_ids)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Finds the tenant's resource and holds it until the transaction ends, so that concurrent
/// replacements of what belongs to it (services, hours, exceptions) take turns. The lock
/// does not block bookings, which only take a key-share lock on the resource.
pub(super) async fn lock(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<(), Problem> {
    sqlx::query("SELECT 1 FROM resources WHERE tenant_id = $1 AND id = $2 FOR NO KEY UPDATE")
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(conn)
        .await?
        .map(|_| ())
        .ok_or_else(|| Problem::not_found("no such resource"))
}

/// 404 unless the tenant has this resource.
pub(super) async fn ensure_exists(
    state: &AppState,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<(), Problem> {
    let found: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM resources WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .fetch_optional(&mut *common::db::tenant_tx(&state.pool, tenant_id).await?)
            .await?;
    found
        .map(|_| ())
        .ok_or_else(|| Problem::not_found("no such resource"))
}
