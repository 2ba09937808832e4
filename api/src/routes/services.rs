//! The tenant's catalogue.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use sqlx::Row;
use uuid::Uuid;

use crate::AppState;
use crate::problem::Problem;
use crate::tenant::CurrentTenant;

#[derive(Debug, Serialize)]
pub struct ServiceView {
    pub id: Uuid,
    pub name: String,
    pub duration_minutes: i32,
    /// Customers per slot: more than 1 for group sessions.
    pub capacity: i32,
    pub price: Price,
    pub resources: Vec<ResourceRef>,
}

#[derive(Debug, Serialize)]
pub struct Price {
    pub amount_minor: i64,
    pub currency: String,
}

#[derive(Debug, Serialize)]
pub struct ResourceRef {
    pub id: Uuid,
    pub name: String,
}

/// `GET /v1/services`: the tenant's active services and the resources offering each.
pub async fn list(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
) -> Result<Json<Vec<ServiceView>>, Problem> {
    let mut tx = common::db::tenant_tx(&state.pool, tenant.id).await?;
    let rows = sqlx::query(
        "SELECT s.id, s.name, s.duration_minutes, s.capacity, s.price_minor, s.currency,
                COALESCE(json_agg(json_build_object('id', r.id, 'name', r.name)
                         ORDER BY r.name, r.id) FILTER (WHERE r.id IS NOT NULL), '[]') AS resources
         FROM services s
         LEFT JOIN resource_services rs ON rs.tenant_id = s.tenant_id AND rs.service_id = s.id
         LEFT JOIN resources r ON r.tenant_id = rs.tenant_id AND r.id = rs.resource_id AND r.active
         WHERE s.tenant_id = $1 AND s.active
         GROUP BY s.id, s.name, s.duration_minutes, s.capacity, s.price_minor, s.currency
         ORDER BY s.name, s.id",
    )
    .bind(tenant.id)
    .fetch_all(&mut *tx)
    .await?;

    let services = rows
        .into_iter()
        .map(|row| {
            let resources: serde_json::Value = row.try_get("resources")?;
            let resources = resources
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| {
                    Some(ResourceRef {
                        id: r.get("id")?.as_str()?.parse().ok()?,
                        name: r.get("name")?.as_str()?.to_owned(),
                    })
                })
                .collect();
            let currency: String = row.try_get("currency")?;
            Ok(ServiceView {
                id: row.try_get("id")?,
                name: row.try_get("name")?,
                duration_minutes: row.try_get("duration_minutes")?,
                capacity: row.try_get("capacity")?,
                price: Price {
                    amount_minor: row.try_get("price_minor")?,
                    currency: currency.trim().to_owned(),
                },
                resources,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(Json(services))
}
