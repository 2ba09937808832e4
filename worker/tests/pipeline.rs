//! The booking pipeline end to end, against real PostgreSQL and Redis: accept, queue,
//! decide, notify.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use futures::future::join_all;
use serde_json::Value;
use support::{TestSystem, booking_body, local_start};

const LONDON: &str = "Europe/London";
const DECIDED_WITHIN: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn booking_is_confirmed_and_both_emails_are_written() {
    let system = TestSystem::start().await;
    let tenant = system.seed_tenant("acme", LONDON).await;
    let start = local_start(LONDON, 3, 10, 0);
    let body = booking_body(tenant.services[0].id, Some(tenant.resources[0]), &start, 1);

    let response = system.book("acme", &body).await;
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let accepted: Value = response.json().await.unwrap();
    assert_eq!(accepted["status"], "queued");
    assert_eq!(accepted["status_url"], location.as_str());

    let decided = system.wait_final(&location, DECIDED_WITHIN).await;
    assert_eq!(decided["status"], "confirmed", "{decided}");
    let booking = &decided["booking"];
    assert_eq!(booking["resource_id"], tenant.resources[0].to_string());
    assert_eq!(booking["service_id"], tenant.services[0].id.to_string());
    assert_eq!(booking["status"], "confirmed");
    let start_instant = chrono::DateTime::parse_from_rfc3339(&start).unwrap();
    let booked_start =
        chrono::DateTime::parse_from_rfc3339(booking["start"].as_str().unwrap()).unwrap();
    assert_eq!(booked_start, start_instant);

    let emails = system.wait_for_emails(2, DECIDED_WITHIN).await;
    assert_eq!(emails.len(), 2);
    assert!(
        emails
            .iter()
            .any(|m| m.contains("To: customer1@example.com"))
    );
    assert!(
        emails
            .iter()
            .any(|m| m.contains("To: bookings@acme.example"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_requests_for_one_slot_confirm_exactly_one() {
    let system = TestSystem::start().await;
    let tenant = system.seed_tenant("rush", LONDON).await;
    let start = local_start(LONDON, 5, 14, 0);
    let resource = tenant.resources[1];

    let submissions = (0..20).map(|n| {
        let body = booking_body(tenant.services[0].id, Some(resource), &start, n);
        let system = &system;
        async move { system.book_accepted("rush", &body).await }
    });
    let urls = join_all(submissions).await;
    let decisions = join_all(
        urls.iter()
            .map(|url| system.wait_final(url, DECIDED_WITHIN)),
    )
    .await;

    let confirmed = decisions
        .iter()
        .filter(|d| d["status"] == "confirmed")
        .count();
    let taken = decisions
        .iter()
        .filter(|d| d["reason"] == "slot_taken")
        .count();
    assert_eq!(confirmed, 1, "{decisions:?}");
    assert_eq!(taken, 19, "{decisions:?}");

    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM bookings WHERE resource_id = $1")
        .bind(resource)
        .fetch_one(&system.pool)
        .await
        .unwrap();
    assert_eq!(stored, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overlapping_bookings_are_refused_and_back_to_back_ones_allowed() {
    let system = TestSystem::start().await;
    let tenant = system.seed_tenant("overlap", LONDON).await;
    let (short, long) = (tenant.services[0].id, tenant.services[1].id);
    let resource = Some(tenant.resources[0]);

    let decide = |service, hour, minute, n| {
        let body = booking_body(service, resource, &local_start(LONDON, 4, hour, minute), n);
        let system = &system;
        async move {
            let url = system.book_accepted("overlap", &body).await;
            system.wait_final(&url, DECIDED_WITHIN).await
        }
    };

    // 60 minutes from 10:00 holds 10:00 to 11:00.
    assert_eq!(decide(long, 10, 0, 1).await["status"], "confirmed");
    // Starts inside it.
    let inside = decide(short, 10, 30, 2).await;
    assert_eq!(inside["reason"], "slot_taken", "{inside}");
    // Starts before and runs into it.
    let into = decide(long, 9, 30, 3).await;
    assert_eq!(into["reason"], "slot_taken", "{into}");
    // Ends exactly where it starts, and starts exactly where it ends.
    assert_eq!(decide(short, 9, 30, 4).await["status"], "confirmed");
    assert_eq!(decide(short, 11, 0, 5).await["status"], "confirmed");

    // The database refuses the overlap by itself, whatever the application checks.
    let direct = sqlx::query(
        "INSERT INTO bookings (tenant_id, id, request_id, service_id, resource_id, starts_at,
             ends_at, occupied, customer_name, customer_email)
         SELECT tenant_id, gen_random_uuid(), gen_random_uuid(), service_id, resource_id,
                starts_at + interval '15 minutes', ends_at + interval '15 minutes',
                tstzrange(starts_at + interval '15 minutes', ends_at + interval '15 minutes'),
                'x', 'x@example.com'
         FROM bookings WHERE tenant_id = $1 LIMIT 1",
    )
    .bind(tenant.id)
    .execute(&system.pool)
    .await;
    let err = direct.expect_err("overlap must violate the exclusion constraint");
    let code = err
        .as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.to_string());
    assert_eq!(code.as_deref(), Some("23P01"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rules_reject_with_machine_readable_reasons() {
    let system = TestSystem::start().await;
    let tenant = system.seed_tenant("rules", LONDON).await;
    let service = tenant.services[0].id;
    let resource = Some(tenant.resources[0]);
    let past = (chrono::Utc::now() - chrono::Duration::days(1)).to_rfc3339();
    let far = local_start(LONDON, 400, 10, 0);
    let cases = [
        ("in_past", past),
        ("too_far_ahead", far),
        ("outside_hours", local_start(LONDON, 2, 7, 0)),
        ("outside_hours", local_start(LONDON, 2, 16, 45)),
        ("outside_hours", local_start(LONDON, 2, 10, 10)),
    ];
    for (n, (reason, start)) in cases.into_iter().enumerate() {
        let url = system
            .book_accepted("rules", &booking_body(service, resource, &start, n))
            .await;
        let decided = system.wait_final(&url, DECIDED_WITHIN).await;
        assert_eq!(decided["status"], "rejected", "{start}: {decided}");
        assert_eq!(decided["reason"], reason, "{start}: {decided}");
        assert!(decided.get("booking").is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn booking_without_a_resource_takes_any_free_one() {
    let system = TestSystem::start().await;
    let tenant = system.seed_tenant("anyone", LONDON).await;
    let start = local_start(LONDON, 6, 11, 0);

    let submissions = (0..4).map(|n| {
        let body = booking_body(tenant.services[0].id, None, &start, n);
        let system = &system;
        async move { system.book_accepted("anyone", &body).await }
    });
    let urls = join_all(submissions).await;
    let decisions = join_all(urls.iter().map(|u| system.wait_final(u, DECIDED_WITHIN))).await;

    let mut resources: Vec<String> = decisions
        .iter()
        .filter(|d| d["status"] == "confirmed")
        .map(|d| d["booking"]["resource_id"].as_str().unwrap().to_owned())
        .collect();
    resources.sort();
    resources.dedup();
    assert_eq!(
        resources.len(),
        3,
        "three resources, three bookings: {decisions:?}"
    );
    let taken: Vec<_> = decisions
        .iter()
        .filter(|d| d["reason"] == "slot_taken")
        .collect();
    assert_eq!(taken.len(), 1, "{decisions:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_idempotency_key_returns_the_same_request() {
    let system = TestSystem::start().await;
    let tenant = system.seed_tenant("idem", LONDON).await;
    let body = booking_body(
        tenant.services[0].id,
        None,
        &local_start(LONDON, 3, 12, 0),
        1,
    );
    let post = |body: Value, key: &'static str| {
        let system = &system;
        async move {
            system
                .client
                .post(system.url("/t/idem/v1/bookings"))
                .header("Idempotency-Key", key)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };

    let first: Value = post(body.clone(), "\"key-1\"").await.json().await.unwrap();
    let again = post(body.clone(), "\"key-1\"").await;
    assert_eq!(again.status(), 202);
    let again: Value = again.json().await.unwrap();
    assert_eq!(first["request_id"], again["request_id"]);

    let mut other = body.clone();
    other["customer"]["name"] = "Someone Else".into();
    let conflict = post(other, "\"key-1\"").await;
    assert_eq!(conflict.status(), 422);
    let problem: Value = conflict.json().await.unwrap();
    assert!(
        problem["type"]
            .as_str()
            .unwrap()
            .ends_with("idempotency-key-reused")
    );

    let decided = system
        .wait_final(first["status_url"].as_str().unwrap(), DECIDED_WITHIN)
        .await;
    assert_eq!(decided["status"], "confirmed");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM booking_requests")
        .fetch_one(&system.pool)
        .await
        .unwrap();
    assert_eq!(rows, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_worker_loses_no_request_and_books_none_twice() {
    let system = TestSystem::start_without_worker().await;
    let tenant = system.seed_tenant("crashy", LONDON).await;

    // Sixty distinct slots: five days, four hours, three resources.
    let mut urls = Vec::new();
    for n in 0..60 {
        let resource = tenant.resources[n % 3];
        let start = local_start(LONDON, 1 + (n / 12) as i64, 9 + ((n / 3) % 4) as u32, 0);
        let body = booking_body(tenant.services[0].id, Some(resource), &start, n);
        urls.push(system.book_accepted("crashy", &body).await);
    }

    let mut worker = system.spawn_worker_process(None);
    wait_until_some_decided(&system).await;
    support::kill_hard(&mut worker);

    let mut worker = system.spawn_worker_process(None);
    let decisions = join_all(
        urls.iter()
            .map(|u| system.wait_final(u, Duration::from_secs(60))),
    )
    .await;
    worker.kill().ok();
    worker.wait().ok();

    let mut by_status: HashMap<String, usize> = HashMap::new();
    for decision in &decisions {
        *by_status
            .entry(decision["status"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(by_status.get("failed"), None, "{by_status:?}");
    let doubled: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT request_id FROM bookings GROUP BY request_id
                               HAVING count(*) > 1) d",
    )
    .fetch_one(&system.pool)
    .await
    .unwrap();
    assert_eq!(doubled, 0);
    let (bookings, confirmed): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM bookings),
                (SELECT count(*) FROM booking_requests WHERE status = 'confirmed')",
    )
    .fetch_one(&system.pool)
    .await
    .unwrap();
    assert_eq!(bookings, confirmed);
    assert_eq!(confirmed as usize, by_status["confirmed"]);
    // Rows of the first 60 slots: 5 days x 4 hours x 3 resources, all distinct.
    assert_eq!(confirmed, 60);
    let messages: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&system.pool)
        .await
        .unwrap();
    assert_eq!(messages, 2 * confirmed);
}

async fn wait_until_some_decided(system: &TestSystem) {
    let deadline = std::time::Instant::now() + DECIDED_WITHIN;
    loop {
        let decided: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM booking_requests WHERE status NOT IN ('queued', 'processing')",
        )
        .fetch_one(&system.pool)
        .await
        .unwrap();
        if decided > 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the worker decided nothing"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn request_whose_job_redis_lost_is_still_decided() {
    let system = TestSystem::start_without_worker().await;
    let tenant = system.seed_tenant("forgotten", LONDON).await;
    let body = booking_body(
        tenant.services[0].id,
        None,
        &local_start(LONDON, 2, 10, 0),
        1,
    );
    let url = system.book_accepted("forgotten", &body).await;

    // Redis loses every key of this queue, as after a restart without persistence.
    let mut redis = common::jobs::connect_redis(&system.config.redis_url)
        .await
        .unwrap();
    let pattern = format!("*{}*", system.config.queue_name);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(&pattern)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(!keys.is_empty(), "the job was queued under {pattern}");
    let _: () = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut redis)
        .await
        .unwrap();
    // Old enough for the sweeper.
    sqlx::query("UPDATE booking_requests SET accepted_at = now() - interval '1 minute'")
        .execute(&system.pool)
        .await
        .unwrap();

    let mut system = system;
    system.start_worker();
    let decided = system.wait_final(&url, DECIDED_WITHIN).await;
    assert_eq!(decided["status"], "confirmed", "{decided}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn request_whose_decision_keeps_crashing_is_failed_and_others_proceed() {
    let system = TestSystem::start_without_worker().await;
    let tenant = system.seed_tenant("poison", LONDON).await;
    let service = tenant.services[0].id;
    let first = system
        .book_accepted(
            "poison",
            &booking_body(service, None, &local_start(LONDON, 2, 10, 0), 1),
        )
        .await;
    let second = system
        .book_accepted(
            "poison",
            &booking_body(service, None, &local_start(LONDON, 2, 11, 0), 2),
        )
        .await;
    // The first request's decision has crashed the worker as often as it is allowed to: the
    // attempt counter, written before each decision, says so.
    let first_id: uuid::Uuid = first.rsplit('/').next().unwrap().parse().unwrap();
    sqlx::query("UPDATE booking_requests SET attempts = $2, status = 'processing' WHERE id = $1")
        .bind(first_id)
        .bind(system.config.max_decision_attempts)
        .execute(&system.pool)
        .await
        .unwrap();

    let engine =
        worker::engine::Engine::new(system.pool.clone(), system.config.max_decision_attempts);
    let decisions = engine.drain_tenant(tenant.id).await.unwrap();
    assert_eq!(decisions.len(), 2);

    let failed = system.wait_final(&first, DECIDED_WITHIN).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    let confirmed = system.wait_final(&second, DECIDED_WITHIN).await;
    assert_eq!(confirmed["status"], "confirmed", "{confirmed}");
    let attempts: i32 = sqlx::query_scalar("SELECT attempts FROM booking_requests WHERE id <> $1")
        .bind(first_id)
        .fetch_one(&system.pool)
        .await
        .unwrap();
    assert_eq!(
        attempts, 1,
        "the request behind the poisoned one was charged once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn blackouts_and_date_exceptions_override_the_weekly_hours() {
    let system = TestSystem::start().await;
    let tenant = system.seed_tenant("calendar", LONDON).await;
    let service = tenant.services[0].id;
    let resource = tenant.resources[0];
    let day = |days: i64| {
        let tz: chrono_tz::Tz = LONDON.parse().unwrap();
        chrono::Utc::now().with_timezone(&tz).date_naive() + chrono::Duration::days(days)
    };

    // Day 3: closed by exception. Day 4: open only 18:00 to 20:00 by exception.
    sqlx::query(
        "INSERT INTO hours_exceptions (tenant_id, resource_id, date, opens_at, closes_at)
         VALUES ($1, $2, $3, NULL, NULL), ($1, $2, $4, '18:00', '20:00')",
    )
    .bind(tenant.id)
    .bind(resource)
    .bind(day(3))
    .bind(day(4))
    .execute(&system.pool)
    .await
    .unwrap();
    // Day 5: a blackout over the lunch hours.
    let blackout_from = local_start(LONDON, 5, 12, 0);
    let blackout_until = local_start(LONDON, 5, 14, 0);
    sqlx::query(
        "INSERT INTO blackouts (tenant_id, id, starts_at, ends_at, reason)
         VALUES ($1, gen_random_uuid(), $2::timestamptz, $3::timestamptz, 'staff training')",
    )
    .bind(tenant.id)
    .bind(&blackout_from)
    .bind(&blackout_until)
    .execute(&system.pool)
    .await
    .unwrap();

    let cases = [
        (3, 10, "rejected", Some("outside_hours")),
        (4, 10, "rejected", Some("outside_hours")),
        (4, 18, "confirmed", None),
        (5, 12, "rejected", Some("blackout")),
        (5, 13, "rejected", Some("blackout")),
        (5, 14, "confirmed", None),
        (6, 10, "confirmed", None),
    ];
    for (n, (days, hour, status, reason)) in cases.into_iter().enumerate() {
        let start = local_start(LONDON, days, hour, 0);
        let url = system
            .book_accepted(
                "calendar",
                &booking_body(service, Some(resource), &start, n),
            )
            .await;
        let decided = system.wait_final(&url, DECIDED_WITHIN).await;
        assert_eq!(decided["status"], status, "{start}: {decided}");
        if let Some(reason) = reason {
            assert_eq!(decided["reason"], reason, "{start}: {decided}");
        }
    }
}
