//! Database access shared by both binaries: the pool, migrations and the lookups the api and
//! the worker both make.

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::domain::Tenant;

pub async fn connect(database_url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect(database_url)
        .await
}

pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    sqlx::migrate!("../migrations").run(pool).await
}

/// Begins a transaction that sees and changes only this tenant's rows (row-level security).
pub async fn tenant_tx(
    pool: &PgPool,
    tenant_id: Uuid,
) -> sqlx::Result<Transaction<'static, Postgres>> {
    let tx = pool.begin().await?;
    scope_to_tenant(tx, tenant_id).await
}

/// Like [`tenant_tx`], reading from one snapshot throughout (repeatable read), for answers
/// assembled from several queries that must agree with each other.
pub async fn tenant_snapshot_tx(
    pool: &PgPool,
    tenant_id: Uuid,
) -> sqlx::Result<Transaction<'static, Postgres>> {
    let tx = pool
        .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .await?;
    scope_to_tenant(tx, tenant_id).await
}

async fn scope_to_tenant(
    mut tx: Transaction<'static, Postgres>,
    tenant_id: Uuid,
) -> sqlx::Result<Transaction<'static, Postgres>> {
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
        .bind(tenant_id.to_string())
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// Begins a transaction for work that spans tenants: the sweeper, the notifier, finding a
/// key by its prefix, platform administration. Use it only where no single tenant applies.
pub async fn system_tx(pool: &PgPool) -> sqlx::Result<Transaction<'static, Postgres>> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT set_config('app.system', 'on', true)")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

pub async fn tenant_by_slug(pool: &PgPool, slug: &str) -> Result<Option<Tenant>, sqlx::Error> {
    sqlx::query_as::<_, Tenant>(
        "SELECT id, slug, name, time_zone, contact_email, active FROM tenants WHERE slug = $1",
    )
    .bind(slug)
    .fetch_optional(pool)
    .await
}

pub async fn tenant_by_id(pool: &PgPool, id: Uuid) -> Result<Option<Tenant>, sqlx::Error> {
    sqlx::query_as::<_, Tenant>(
        "SELECT id, slug, name, time_zone, contact_email, active FROM tenants WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Whether an error says the database could not be reached or is going away (connection
/// refused or dropped, pool exhausted, server shutting down or starting up), as opposed to
/// a statement the database refused. Work that failed this way was not the work's fault and
/// is retried without counting against it.
pub fn is_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // Class 08: connection exceptions; 57P01-57P03: admin shutdown, crash shutdown,
            // cannot connect now; 53300: too many connections.
            code.starts_with("08") || matches!(code.as_ref(), "57P01" | "57P02" | "57P03" | "53300")
        }),
        _ => false,
    }
}
