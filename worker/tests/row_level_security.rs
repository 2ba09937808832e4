//! Row-level security: the database itself keeps tenants apart, behind the application's
//! own scoping. Checked through the services' own role and pool, not the tests' view.

mod support;

use std::time::Duration;

use support::{TestSystem, booking_body, local_start};
use uuid::Uuid;

const LONDON: &str = "Europe/London";

const TENANT_TABLES: [&str; 12] = [
    "services",
    "resources",
    "resource_services",
    "opening_hours",
    "hours_exceptions",
    "blackouts",
    "bookings",
    "booking_requests",
    "outbox",
    "api_keys",
    "admin_users",
    "audit_log",
];

async fn count(conn: &mut sqlx::PgConnection, table: &str) -> i64 {
    let query = format!("SELECT count(*) FROM {table}");
    sqlx::query_scalar(sqlx::AssertSqlSafe(query))
        .fetch_one(conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_tenant_context_a_query_sees_and_changes_nothing() {
    let system = TestSystem::start().await;
    let a = system.seed_tenant("rls-a", LONDON).await;
    let b = system.seed_tenant("rls-b", LONDON).await;
    for (slug, tenant) in [("rls-a", &a), ("rls-b", &b)] {
        let body = booking_body(
            tenant.services[0].id,
            None,
            &local_start(LONDON, 2, 10, 0),
            1,
        );
        let url = system.book_accepted(slug, &body).await;
        system.wait_final(&url, Duration::from_secs(30)).await;
        let key = api::credentials::issue_api_key(&system.pool, tenant.id, "k")
            .await
            .unwrap();
        let admin = system
            .client
            .get(system.url("/v1/admin/services"))
            .header("Authorization", format!("Bearer {}", key.key))
            .send()
            .await
            .unwrap();
        assert_eq!(admin.status(), 200, "an audited admin request");
        api::credentials::create_admin_user(&system.pool, tenant.id, "owner", "long enough secret")
            .await
            .unwrap();
    }
    sqlx::query(
        "INSERT INTO blackouts (tenant_id, id, starts_at, ends_at)
         VALUES ($1, gen_random_uuid(), now() + interval '30 days', now() + interval '31 days')",
    )
    .bind(a.id)
    .execute(&system.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO hours_exceptions (tenant_id, resource_id, date) VALUES ($1, $2, current_date + 40)",
    )
    .bind(a.id)
    .bind(a.resources[0])
    .execute(&system.pool)
    .await
    .unwrap();

    // The services' pool, as the api and worker open it.
    let app_pool = common::db::connect(&system.config.database_url, 2)
        .await
        .unwrap();
    let role_bypasses: bool = sqlx::query_scalar(
        "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(&app_pool)
    .await
    .unwrap();
    assert!(
        !role_bypasses,
        "the services' role must not bypass row-level security"
    );

    let mut conn = app_pool.acquire().await.unwrap();
    for table in TENANT_TABLES {
        let everything = count(&mut system.pool.acquire().await.unwrap(), table).await;
        assert!(everything > 0, "{table} holds rows for this test");
        assert_eq!(
            count(&mut conn, table).await,
            0,
            "{table} without tenant context"
        );
    }
    let changed = sqlx::query("UPDATE bookings SET notes = 'tampered'")
        .execute(&mut *conn)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(changed, 0);

    // With tenant A's context: A's rows only, and no writing rows for B.
    let mut tx = common::db::tenant_tx(&app_pool, a.id).await.unwrap();
    let tenants: Vec<Uuid> = sqlx::query_scalar("SELECT DISTINCT tenant_id FROM bookings")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(tenants, [a.id]);
    let services: i64 = sqlx::query_scalar("SELECT count(*) FROM services WHERE tenant_id = $1")
        .bind(b.id)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(
        services, 0,
        "B's rows are invisible even when asked for by id"
    );
    let foreign_write = sqlx::query(
        "INSERT INTO blackouts (tenant_id, id, starts_at, ends_at)
         VALUES ($1, gen_random_uuid(), now(), now() + interval '1 hour')",
    )
    .bind(b.id)
    .execute(&mut *tx)
    .await;
    let code = foreign_write
        .expect_err("a row for another tenant is refused")
        .as_database_error()
        .and_then(|e| e.code().map(|c| c.into_owned()));
    assert_eq!(
        code.as_deref(),
        Some("42501"),
        "insufficient_privilege from the policy"
    );
}
