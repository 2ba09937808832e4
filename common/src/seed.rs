//! Tenants with a ready catalogue: the demo tenants that `make up` creates, and the tenants
//! tests create for themselves. Ids derive from the slug, so seeding twice changes nothing.

use chrono::NaiveTime;
use sqlx::PgPool;
use uuid::Uuid;

/// The demo tenants: one per continent, so the demo crosses time zones.
pub const DEMO_TENANTS: [(&str, &str, &str); 3] = [
    ("demo-london", "Demo London Salon", "Europe/London"),
    ("demo-newyork", "Demo New York Clinic", "America/New_York"),
    ("demo-sydney", "Demo Sydney Studio", "Australia/Sydney"),
];

#[derive(Debug, Clone)]
pub struct SeededService {
    pub id: Uuid,
    pub name: String,
    pub duration_minutes: i32,
}

#[derive(Debug, Clone)]
pub struct SeededTenant {
    pub id: Uuid,
    pub slug: String,
    pub time_zone: String,
    pub services: Vec<SeededService>,
    pub resources: Vec<Uuid>,
}

/// The currency a business in this zone most likely charges in.
fn currency_for(time_zone: &str) -> &'static str {
    match time_zone.split('/').next() {
        Some("America") => "USD",
        Some("Australia") => "AUD",
        Some("Europe") if time_zone == "Europe/London" => "GBP",
        Some("Europe") => "EUR",
        _ => "USD",
    }
}

fn derived_id(slug: &str, what: &str) -> Uuid {
    Uuid::new_v5(
        &Uuid::NAMESPACE_URL,
        format!("booking-seed:{slug}:{what}").as_bytes(),
    )
}

/// Creates (or finds) a tenant with a 30- and a 60-minute service, three resources that
/// offer both, and opening hours 09:00 to 17:00 local time every day.
pub async fn seed_tenant(
    pool: &PgPool,
    slug: &str,
    name: &str,
    time_zone: &str,
) -> Result<SeededTenant, sqlx::Error> {
    let tenant_id = derived_id(slug, "tenant");
    let mut tx = crate::db::tenant_tx(pool, tenant_id).await?;
    sqlx::query(
        "INSERT INTO tenants (id, slug, name, time_zone, contact_email)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
    )
    .bind(tenant_id)
    .bind(slug)
    .bind(name)
    .bind(time_zone)
    .bind(format!("bookings@{slug}.example"))
    .execute(&mut *tx)
    .await?;

    let mut services = Vec::new();
    for (label, minutes) in [("Short appointment", 30), ("Long appointment", 60)] {
        let id = derived_id(slug, &format!("service-{minutes}"));
        sqlx::query(
            "INSERT INTO services (tenant_id, id, name, duration_minutes, slot_interval_minutes,
                                   price_minor, currency)
             VALUES ($1, $2, $3, $4, 30, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(tenant_id)
        .bind(id)
        .bind(label)
        .bind(minutes)
        .bind(i64::from(minutes) * 100)
        .bind(currency_for(time_zone))
        .execute(&mut *tx)
        .await?;
        services.push(SeededService {
            id,
            name: label.to_owned(),
            duration_minutes: minutes,
        });
    }

    let mut resources = Vec::new();
    for n in 1..=3 {
        let id = derived_id(slug, &format!("resource-{n}"));
        sqlx::query(
            "INSERT INTO resources (tenant_id, id, name) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
        )
        .bind(tenant_id)
        .bind(id)
        .bind(format!("Chair {n}"))
        .execute(&mut *tx)
        .await?;
        for service in &services {
            sqlx::query(
                "INSERT INTO resource_services (tenant_id, resource_id, service_id)
                 VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .bind(tenant_id)
            .bind(id)
            .bind(service.id)
            .execute(&mut *tx)
            .await?;
        }
        let opens = NaiveTime::from_hms_opt(9, 0, 0).expect("valid time");
        let closes = NaiveTime::from_hms_opt(17, 0, 0).expect("valid time");
        for weekday in 1..=7i16 {
            sqlx::query(
                "INSERT INTO opening_hours (tenant_id, resource_id, weekday, opens_at, closes_at)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            )
            .bind(tenant_id)
            .bind(id)
            .bind(weekday)
            .bind(opens)
            .bind(closes)
            .execute(&mut *tx)
            .await?;
        }
        resources.push(id);
    }
    tx.commit().await?;

    Ok(SeededTenant {
        id: tenant_id,
        slug: slug.to_owned(),
        time_zone: time_zone.to_owned(),
        services,
        resources,
    })
}
