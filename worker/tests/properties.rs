//! Property tests of the scheduling rules against the real pipeline: random sequences of
//! creations, cancellations and reschedules, some sent concurrently, through the api, the
//! queue and the worker. After each sequence:
//!
//! - no two live bookings of a resource overlap, buffers included, unless they are seats of
//!   one group session; no session holds more customers than its service has seats;
//! - every request reached one final status, and a confirmed creation made one booking;
//! - availability agrees with the worker exactly: for every start on a five-minute grid
//!   across the day and every resource, the api offers the slot if and only if the worker's
//!   own decision (run and rolled back) would confirm it.
//!
//! `PROPTEST_CASES` sets how many sequences run (default 6); a failure prints the sequence.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use chrono::{DateTime, Duration as Span, FixedOffset, NaiveTime, TimeZone, Utc};
use common::domain::{BookingRequestPayload, Customer};
use futures::future::join_all;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use serde_json::{Value, json};
use support::TestSystem;
use uuid::Uuid;
use worker::engine::{Engine, Outcome};

const ZONE: &str = "Europe/London";
const DECIDED_WITHIN: Duration = Duration::from_secs(30);
/// The 30-minute service: a 15-minute slot grid and a 15-minute buffer after each booking.
const ONE_TO_ONE: usize = 0;
/// The 60-minute service: a group session of two seats, on a 30-minute grid.
const GROUP: usize = 1;
const GROUP_SEATS: i32 = 2;

#[derive(Debug, Clone)]
enum Op {
    /// Book `service` at slot `slot` of the day, on a resource or any.
    Create {
        service: usize,
        resource: Option<usize>,
        slot: usize,
    },
    /// Cancel the `booking`-th confirmed booking (modulo how many there are).
    Cancel { booking: usize },
    /// Move the `booking`-th confirmed booking to `slot`, on a resource or wherever it fits.
    Reschedule {
        booking: usize,
        resource: Option<usize>,
        slot: usize,
    },
}

/// Starts every 15 minutes from 08:30 to 17:15 local, and a few off the grid: some are
/// closed, some off-grid, most bookable.
fn slot_start(day: chrono::NaiveDate, slot: usize) -> DateTime<FixedOffset> {
    let tz: chrono_tz::Tz = ZONE.parse().unwrap();
    let minutes = 8 * 60 + 30 + 15 * (slot as i64 / 2) + if slot % 7 == 6 { 5 } else { 0 };
    let local = day.and_time(NaiveTime::MIN) + Span::minutes(minutes);
    tz.from_local_datetime(&local)
        .earliest()
        .unwrap()
        .fixed_offset()
}

fn op() -> impl Strategy<Value = Op> {
    let resource = proptest::option::weighted(0.6, 0..3usize);
    prop_oneof![
        4 => (0..2usize, resource.clone(), 0..72usize)
            .prop_map(|(service, resource, slot)| Op::Create { service, resource, slot }),
        1 => (0..64usize).prop_map(|booking| Op::Cancel { booking }),
        2 => (0..64usize, resource, 0..72usize)
            .prop_map(|(booking, resource, slot)| Op::Reschedule { booking, resource, slot }),
    ]
}

/// Waves of operations: the operations of one wave are sent at once.
fn waves() -> impl Strategy<Value = Vec<Vec<Op>>> {
    proptest::collection::vec(proptest::collection::vec(op(), 1..5), 1..6)
}

struct Fixture {
    slug: String,
    tenant_id: Uuid,
    services: Vec<Uuid>,
    resources: Vec<Uuid>,
    day: chrono::NaiveDate,
}

async fn fixture(system: &TestSystem, case: usize) -> Fixture {
    let slug = format!("prop-{case}");
    let seeded = system.seed_tenant(&slug, ZONE).await;
    let services: Vec<Uuid> = seeded.services.iter().map(|s| s.id).collect();
    sqlx::query(
        "UPDATE services SET duration_minutes = 30, slot_interval_minutes = 15,
                             buffer_after_minutes = 15, capacity = 1
         WHERE tenant_id = $1 AND id = $2",
    )
    .bind(seeded.id)
    .bind(services[ONE_TO_ONE])
    .execute(&system.pool)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE services SET duration_minutes = 60, slot_interval_minutes = 30, capacity = $3
         WHERE tenant_id = $1 AND id = $2",
    )
    .bind(seeded.id)
    .bind(services[GROUP])
    .bind(GROUP_SEATS)
    .execute(&system.pool)
    .await
    .unwrap();
    // A lunch break on every resource, so some starts fall in a gap between intervals.
    sqlx::query("UPDATE opening_hours SET closes_at = '12:00' WHERE tenant_id = $1")
        .bind(seeded.id)
        .execute(&system.pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO opening_hours (tenant_id, resource_id, weekday, opens_at, closes_at)
         SELECT tenant_id, resource_id, weekday, '13:00', '17:00' FROM opening_hours
         WHERE tenant_id = $1",
    )
    .bind(seeded.id)
    .execute(&system.pool)
    .await
    .unwrap();
    let tz: chrono_tz::Tz = ZONE.parse().unwrap();
    Fixture {
        slug,
        tenant_id: seeded.id,
        services,
        resources: seeded.resources.clone(),
        day: Utc::now().with_timezone(&tz).date_naive() + Span::days(3),
    }
}

/// Sends one operation and waits for its decision; returns the final status body.
async fn send(system: &TestSystem, fx: &Fixture, confirmed: &[Uuid], op: &Op, n: usize) -> Value {
    let manage = |booking: Uuid, action: &str| {
        let token = common::manage::token(&system.config.manage_link_secret, fx.tenant_id, booking);
        system.url(&format!("/t/{}/v1/manage/{token}/{action}", fx.slug))
    };
    let response = match op {
        Op::Create {
            service,
            resource,
            slot,
        } => {
            let mut body = json!({
                "service_id": fx.services[*service],
                "start": slot_start(fx.day, *slot).to_rfc3339(),
                "customer": {"name": format!("Prop {n}"), "email": format!("prop{n}@example.com")},
            });
            if let Some(resource) = resource {
                body["resource_id"] = json!(fx.resources[*resource]);
            }
            system.book(&fx.slug, &body).await
        }
        Op::Cancel { booking } if !confirmed.is_empty() => {
            let booking = confirmed[booking % confirmed.len()];
            system
                .client
                .post(manage(booking, "cancel"))
                .send()
                .await
                .unwrap()
        }
        Op::Reschedule {
            booking,
            resource,
            slot,
        } if !confirmed.is_empty() => {
            let booking = confirmed[booking % confirmed.len()];
            let mut body = json!({ "start": slot_start(fx.day, *slot).to_rfc3339() });
            if let Some(resource) = resource {
                body["resource_id"] = json!(fx.resources[*resource]);
            }
            system
                .client
                .post(manage(booking, "reschedule"))
                .json(&body)
                .send()
                .await
                .unwrap()
        }
        _ => return json!({"status": "skipped"}),
    };
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    if status == 422 {
        // A reschedule to a resource that does not offer the service is refused up front.
        return json!({"status": "refused", "body": body});
    }
    assert_eq!(status, 202, "{op:?}: {body}");
    let url = body["status_url"].as_str().unwrap().to_owned();
    system.wait_final(&url, DECIDED_WITHIN).await
}

async fn run_case(system: &TestSystem, case: usize, waves: &[Vec<Op>]) -> Result<(), String> {
    let fx = fixture(system, case).await;
    let mut confirmed: Vec<Uuid> = Vec::new();
    let mut n = 0;
    for wave in waves {
        let answers = join_all(wave.iter().enumerate().map(|(i, op)| {
            let confirmed = confirmed.clone();
            let fx = &fx;
            async move { (op, send(system, fx, &confirmed, op, n + i).await) }
        }))
        .await;
        n += wave.len();
        for (op, answer) in answers {
            if matches!(op, Op::Create { .. }) && answer["status"] == "confirmed" {
                confirmed.push(answer["booking"]["id"].as_str().unwrap().parse().unwrap());
            }
            if answer["status"] == "failed" {
                return Err(format!("{op:?} failed: {answer}"));
            }
        }
    }
    check_database(system, fx.tenant_id).await?;
    check_availability(system, &fx).await
}

/// The overlap and capacity rules, read back from the database.
async fn check_database(system: &TestSystem, tenant_id: Uuid) -> Result<(), String> {
    let clashes: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "SELECT a.id, b.id FROM bookings a
         JOIN bookings b ON b.tenant_id = a.tenant_id AND b.resource_id = a.resource_id
                        AND a.id < b.id AND a.occupied && b.occupied
         JOIN services s ON s.tenant_id = a.tenant_id AND s.id = a.service_id
         WHERE a.tenant_id = $1 AND a.status <> 'cancelled' AND b.status <> 'cancelled'
           AND NOT (a.slot_key = b.slot_key AND a.service_id = b.service_id
                    AND a.starts_at = b.starts_at AND s.capacity > 1)",
    )
    .bind(tenant_id)
    .fetch_all(&system.pool)
    .await
    .unwrap();
    if !clashes.is_empty() {
        return Err(format!("overlapping live bookings: {clashes:?}"));
    }
    let overfull: Vec<(Uuid, i64, i32)> = sqlx::query_as(
        "SELECT b.slot_key, count(*), max(s.capacity) FROM bookings b
         JOIN services s ON s.tenant_id = b.tenant_id AND s.id = b.service_id
         WHERE b.tenant_id = $1 AND b.status <> 'cancelled'
         GROUP BY b.slot_key HAVING count(*) > max(s.capacity)",
    )
    .bind(tenant_id)
    .fetch_all(&system.pool)
    .await
    .unwrap();
    if !overfull.is_empty() {
        return Err(format!("sessions over capacity: {overfull:?}"));
    }
    let (open, doubled): (i64, i64) = sqlx::query_as(
        "SELECT
            (SELECT count(*) FROM booking_requests
             WHERE tenant_id = $1 AND status NOT IN ('confirmed', 'rejected', 'failed')),
            (SELECT count(*) FROM (SELECT request_id FROM bookings WHERE tenant_id = $1
                                   GROUP BY request_id HAVING count(*) > 1) d)",
    )
    .bind(tenant_id)
    .fetch_one(&system.pool)
    .await
    .unwrap();
    if open > 0 || doubled > 0 {
        return Err(format!(
            "{open} requests never decided, {doubled} requests booked twice"
        ));
    }
    Ok(())
}

/// Availability for the whole day against the worker's decision for every start on a
/// five-minute grid, per resource and for "any resource".
async fn check_availability(system: &TestSystem, fx: &Fixture) -> Result<(), String> {
    let engine = Engine::new(system.pool.clone(), 5);
    let tz: chrono_tz::Tz = ZONE.parse().unwrap();
    for (s, service) in fx.services.iter().enumerate() {
        let path = format!(
            "/t/{}/v1/availability?service_id={service}&from={day}&to={day}",
            fx.slug,
            day = fx.day
        );
        let response = system.get(&path).await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        let offered: BTreeSet<(DateTime<Utc>, Uuid)> = body["slots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|slot| {
                let start = DateTime::parse_from_rfc3339(slot["start"].as_str().unwrap())
                    .unwrap()
                    .with_timezone(&Utc);
                (
                    start,
                    slot["resource_id"].as_str().unwrap().parse().unwrap(),
                )
            })
            .collect();
        let offered_any: BTreeSet<DateTime<Utc>> = offered.iter().map(|(s, _)| *s).collect();

        let midnight = tz
            .from_local_datetime(&fx.day.and_time(NaiveTime::MIN))
            .earliest()
            .unwrap();
        let mut accepted = BTreeSet::new();
        let mut accepted_any = BTreeSet::new();
        let mut verdicts: HashMap<(DateTime<Utc>, Option<Uuid>), bool> = HashMap::new();
        for step in (8 * 12)..(18 * 12) {
            let start = (midnight + Span::minutes(5 * step)).with_timezone(&Utc);
            for resource in fx.resources.iter().map(Some).chain([None]) {
                let payload = BookingRequestPayload {
                    service_id: *service,
                    resource_id: resource.copied(),
                    start: start.fixed_offset(),
                    customer: Customer {
                        name: "Probe".into(),
                        email: "probe@example.com".into(),
                        phone: None,
                    },
                    notes: None,
                };
                let outcome = engine.dry_run(fx.tenant_id, payload).await.unwrap();
                let yes = matches!(outcome, Outcome::Confirmed { .. });
                verdicts.insert((start, resource.copied()), yes);
                match (yes, resource) {
                    (true, Some(resource)) => {
                        accepted.insert((start, *resource));
                    }
                    (true, None) => {
                        accepted_any.insert(start);
                    }
                    _ => {}
                }
            }
        }
        if offered != accepted {
            let offered_only: Vec<_> = offered.difference(&accepted).collect();
            let accepted_only: Vec<_> = accepted.difference(&offered).collect();
            return Err(format!(
                "service {s}: offered but refused {offered_only:?}; accepted but hidden \
                 {accepted_only:?}"
            ));
        }
        if offered_any != accepted_any {
            return Err(format!(
                "service {s}: any-resource starts differ: offered {offered_any:?}, accepted \
                 {accepted_any:?}"
            ));
        }
    }
    Ok(())
}

#[test]
fn random_changes_never_overlap_or_overrun_and_availability_matches_the_worker() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let system = runtime.block_on(TestSystem::start());
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(6);
    let mut runner = TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        max_shrink_iters: 16,
        ..ProptestConfig::default()
    });
    let case = std::sync::atomic::AtomicUsize::new(0);
    let result = runner.run(&waves(), |waves| {
        let case = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        runtime
            .block_on(run_case(&system, case, &waves))
            .map_err(TestCaseError::fail)
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}
