//! The audit log: every admin write, authentication success and failure, export and GDPR
//! action, as a row in `audit_log` and a line on the `audit` log target.
//!
//! An entry names the actor, tenant, action, target, client address and request id. It never
//! holds a password, a key or a customer's email address.

use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::request_id;

#[derive(Debug, Clone)]
pub struct Entry<'a> {
    pub tenant_id: Option<Uuid>,
    pub actor: &'a str,
    pub action: &'a str,
    pub target: Option<String>,
    pub client_ip: Option<String>,
    pub detail: Value,
}

pub async fn record(conn: &mut PgConnection, entry: Entry<'_>) -> sqlx::Result<()> {
    let request_id = request_id::current();
    tracing::info!(
        target: "audit",
        tenant_id = ?entry.tenant_id,
        actor = entry.actor,
        action = entry.action,
        target_id = entry.target.as_deref().unwrap_or("-"),
        request_id = %request_id,
        detail = %entry.detail,
        "audit"
    );
    sqlx::query(
        "INSERT INTO audit_log (tenant_id, actor, action, target, client_ip, request_id, detail)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(entry.tenant_id)
    .bind(entry.actor)
    .bind(entry.action)
    .bind(entry.target)
    .bind(entry.client_ip)
    .bind(request_id)
    .bind(entry.detail)
    .execute(conn)
    .await?;
    Ok(())
}
