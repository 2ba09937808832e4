//! The pipeline under faults, against the real worker binary, PostgreSQL and Redis: workers
//! killed with SIGKILL again and again, stopped with SIGTERM, two at once, a request that
//! crashes its worker every time, a flood from one tenant, a full queue, Redis killed.
//!
//! The fault drill (`scripts/drill.sh`) runs the same faults at a larger scale, adds a
//! PostgreSQL restart and an SMTP outage, and prints the figures.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::join_all;
use serde_json::Value;
use support::{
    TestSystem, booking_body, count_by_status, double_bookings, local_start, wait_all_final,
    wait_exit,
};

const LONDON: &str = "Europe/London";
const FINAL_WITHIN: Duration = Duration::from_secs(60);

/// The `n`th of many distinct slots: 30 days x 8 hours x 3 resources.
fn distinct_slot(tenant: &common::seed::SeededTenant, n: usize) -> Value {
    let resource = tenant.resources[n % 3];
    let start = local_start(LONDON, 1 + (n / 24) as i64, 9 + ((n / 3) % 8) as u32, 0);
    booking_body(tenant.services[0].id, Some(resource), &start, n)
}

async fn decided(system: &TestSystem) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM booking_requests WHERE status NOT IN ('queued', 'processing')",
    )
    .fetch_one(&system.pool)
    .await
    .unwrap()
}

/// Polls until more than `than` requests are decided.
async fn wait_decided_beyond(system: &TestSystem, than: i64) {
    let deadline = Instant::now() + FINAL_WITHIN;
    while decided(system).await <= than {
        assert!(
            Instant::now() < deadline,
            "no progress past {than} decisions"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Submits bodies 16 at a time; every one must be accepted.
async fn submit_all(system: &TestSystem, slug: &str, bodies: Vec<Value>) {
    futures::stream::iter(bodies)
        .map(|body| async move { system.book_accepted(slug, &body).await })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn worker_killed_again_and_again_loses_nothing_and_books_nothing_twice() {
    let system = TestSystem::start_without_worker().await;
    let tenant = system.seed_tenant("killed", LONDON).await;
    submit_all(
        &system,
        "killed",
        (0..150).map(|n| distinct_slot(&tenant, n)).collect(),
    )
    .await;

    for _ in 0..3 {
        let before = decided(&system).await;
        let mut worker = system.spawn_worker_process(None);
        wait_decided_beyond(&system, before).await;
        support::kill_hard(&mut worker);
    }
    let mut worker = system.spawn_worker_process(None);
    wait_all_final(&system.pool, FINAL_WITHIN).await;
    worker.kill().ok();
    worker.wait().ok();

    let counts = count_by_status(&system.pool).await;
    assert_eq!(counts.get("confirmed"), Some(&150), "{counts:?}");
    assert_eq!(double_bookings(&system.pool).await, 0);
    let (bookings, messages): (i64, i64) =
        sqlx::query_as("SELECT (SELECT count(*) FROM bookings), (SELECT count(*) FROM outbox)")
            .fetch_one(&system.pool)
            .await
            .unwrap();
    assert_eq!(bookings, 150);
    assert_eq!(messages, 300, "one message per booking and recipient");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_lets_the_worker_finish_its_batch_and_leaves_nothing_half_done() {
    let system = TestSystem::start_without_worker().await;
    let tenant = system.seed_tenant("sigterm", LONDON).await;
    submit_all(
        &system,
        "sigterm",
        (0..300).map(|n| distinct_slot(&tenant, n)).collect(),
    )
    .await;

    let mut worker = system.spawn_worker_process(None);
    wait_decided_beyond(&system, 0).await;
    support::terminate(&worker);
    let status = wait_exit(&mut worker, Duration::from_secs(30)).await;
    assert!(
        status.success(),
        "the worker exits cleanly on SIGTERM: {status}"
    );

    // Every batch it started was committed: nothing is left marked as being decided.
    let counts = count_by_status(&system.pool).await;
    assert_eq!(counts.get("processing"), None, "{counts:?}");
    assert_eq!(counts.get("failed"), None, "{counts:?}");

    let mut worker = system.spawn_worker_process(None);
    wait_all_final(&system.pool, FINAL_WITHIN).await;
    worker.kill().ok();
    worker.wait().ok();
    let attempts: Vec<i32> = sqlx::query_scalar("SELECT DISTINCT attempts FROM booking_requests")
        .fetch_all(&system.pool)
        .await
        .unwrap();
    assert_eq!(
        attempts,
        vec![1],
        "every request was decided in one attempt"
    );
    assert_eq!(
        count_by_status(&system.pool).await.get("confirmed"),
        Some(&300)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_worker_processes_keep_first_come_first_served_per_tenant() {
    let system = TestSystem::start_with(|config| {
        config.rate_limit_bookings_per_minute = 100_000;
    })
    .await;
    let tenants = [
        system.seed_tenant("fcfs-one", LONDON).await,
        system.seed_tenant("fcfs-two", LONDON).await,
    ];
    let slugs = ["fcfs-one", "fcfs-two"];
    let mut workers = [
        system.spawn_worker_process(None),
        system.spawn_worker_process(None),
    ];

    // Ten slots per tenant and five contenders per slot, sent in five waves while both
    // workers decide: every request of a wave is sent at once (both tenants, all slots),
    // and a wave starts only when the one before is accepted, so "accepted first" is
    // unambiguous between waves.
    let mut waves: Vec<Vec<String>> = Vec::new();
    for wave in 0..5 {
        let sends = tenants.iter().zip(slugs).flat_map(|(tenant, slug)| {
            (0..10).map(move |slot| {
                let start = local_start(LONDON, 2 + (slot / 5) as i64, 10 + (slot % 5) as u32, 0);
                let body = booking_body(
                    tenant.services[0].id,
                    Some(tenant.resources[0]),
                    &start,
                    wave,
                );
                (slug, body)
            })
        });
        let system = &system;
        let urls = join_all(
            sends.map(|(slug, body)| async move { system.book_accepted(slug, &body).await }),
        )
        .await;
        waves.push(
            urls.iter()
                .map(|url| url.rsplit('/').next().unwrap().to_owned())
                .collect(),
        );
    }
    wait_all_final(&system.pool, FINAL_WITHIN).await;
    for worker in &mut workers {
        worker.kill().ok();
        worker.wait().ok();
    }

    // Every slot went to its first wave's request; the later ones found it taken.
    for (wave, ids) in waves.iter().enumerate() {
        let statuses: Vec<String> = sqlx::query_scalar(
            "SELECT coalesce(reason, status) FROM booking_requests WHERE id::text = ANY($1)",
        )
        .bind(ids)
        .fetch_all(&system.pool)
        .await
        .unwrap();
        let expected = if wave == 0 { "confirmed" } else { "slot_taken" };
        assert!(
            statuses.len() == 20 && statuses.iter().all(|s| s == expected),
            "wave {wave}: {statuses:?}"
        );
    }
    // Per tenant, each wave was decided only after the whole wave before it.
    for pair in waves.windows(2) {
        let overtaken: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM booking_requests later JOIN booking_requests earlier
                 ON earlier.tenant_id = later.tenant_id
             WHERE earlier.id::text = ANY($1) AND later.id::text = ANY($2)
               AND later.decided_at < earlier.decided_at",
        )
        .bind(&pair[0])
        .bind(&pair[1])
        .fetch_one(&system.pool)
        .await
        .unwrap();
        assert_eq!(
            overtaken, 0,
            "a later request was decided before an earlier one"
        );
    }
    assert_eq!(double_bookings(&system.pool).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn request_that_crashes_its_worker_every_time_is_failed_after_the_attempt_bound() {
    const MARKER: &str = "FAULT-DRILL-CRASH";
    let system = TestSystem::start_without_worker().await;
    let tenant = system.seed_tenant("poisoned", LONDON).await;
    let mut poison = distinct_slot(&tenant, 0);
    poison["notes"] = format!("please {MARKER}").into();
    let poison_url = system.book_accepted("poisoned", &poison).await;
    let good_url = system
        .book_accepted("poisoned", &distinct_slot(&tenant, 1))
        .await;

    let env = [("WORKER_FAULT_CRASH_ON_NOTES", MARKER)];
    let mut crashes = 0;
    let deadline = Instant::now() + FINAL_WITHIN;
    let mut worker = system.spawn_worker_process_with(None, &env);
    loop {
        if let Some(status) = worker.try_wait().unwrap() {
            assert!(!status.success(), "the worker crashed: {status}");
            crashes += 1;
            assert!(crashes <= 10, "the crashing request is not being stopped");
            worker = system.spawn_worker_process_with(None, &env);
        }
        let poison_status: String = sqlx::query_scalar(
            "SELECT status FROM booking_requests WHERE payload->>'notes' LIKE '%' || $1 || '%'",
        )
        .bind(MARKER)
        .fetch_one(&system.pool)
        .await
        .unwrap();
        if poison_status == "failed" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {poison_status} after {crashes} crashes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    assert_eq!(crashes, system.config.max_decision_attempts);
    let failed = system.wait_final(&poison_url, FINAL_WITHIN).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    let good = system.wait_final(&good_url, FINAL_WITHIN).await;
    assert_eq!(
        good["status"], "confirmed",
        "the request behind it proceeds: {good}"
    );
    worker.kill().ok();
    worker.wait().ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_tenants_flood_does_not_hold_back_another_tenant() {
    let system = TestSystem::start_with(|config| {
        config.rate_limit_bookings_per_minute = 1_000_000;
        config.rate_limit_tenant_bookings_per_minute = 1_000_000;
        // Few jobs at once, so that a consumer that held a job until its tenant's backlog
        // was decided would leave the quiet tenant's job waiting behind the flood's.
        config.worker_concurrency = 2;
    })
    .await;
    let flood = system.seed_tenant("flood", LONDON).await;
    let quiet = system.seed_tenant("quiet", LONDON).await;
    // 800 requests for one contested slot: each costs a decision.
    let start = local_start(LONDON, 4, 10, 0);
    let bodies = (0..800)
        .map(|n| booking_body(flood.services[0].id, Some(flood.resources[0]), &start, n))
        .collect();
    submit_all(&system, "flood", bodies).await;

    // The worker starts on the flood's 800 jobs; once it is deciding them (its recovery
    // pass is over), the quiet tenant's job joins the queue behind them.
    let mut system = system;
    system.start_worker();
    wait_decided_beyond(&system, 0).await;
    let url = system
        .book_accepted("quiet", &distinct_slot(&quiet, 0))
        .await;
    let decided = system.wait_final(&url, FINAL_WITHIN).await;
    assert_eq!(decided["status"], "confirmed", "{decided}");

    let still_open_then: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM booking_requests
         WHERE tenant_id = $1
           AND (decided_at IS NULL OR decided_at > (SELECT decided_at FROM booking_requests
                                                   WHERE tenant_id = $2))",
    )
    .bind(flood.id)
    .bind(quiet.id)
    .fetch_one(&system.pool)
    .await
    .unwrap();
    assert!(
        still_open_then > 0,
        "the quiet tenant was decided only after the whole flood"
    );
    wait_all_final(&system.pool, FINAL_WITHIN).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_answers_503_with_retry_after_per_tenant_and_in_all() {
    let system = TestSystem::start_with(|config| {
        config.queue_max_tenant_depth = 3;
        config.queue_max_depth = 5;
    })
    .await;
    let a = system.seed_tenant("full-a", LONDON).await;
    let b = system.seed_tenant("full-b", LONDON).await;
    let post = |slug: &'static str, body: Value, key: String| {
        let system = &system;
        async move {
            system
                .client
                .post(system.url(&format!("/t/{slug}/v1/bookings")))
                .header("Idempotency-Key", format!("\"{key}\""))
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    let assert_full = |response: reqwest::Response| async move {
        assert_eq!(response.status(), 503);
        assert!(response.headers().contains_key("retry-after"));
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let problem: Value = response.json().await.unwrap();
        assert!(problem["type"].as_str().unwrap().ends_with("queue-full"));
    };

    for n in 0..3 {
        let answer = post("full-a", distinct_slot(&a, n), format!("a-{n}")).await;
        assert_eq!(answer.status(), 202);
    }
    // A has its three open requests: its fourth is refused...
    assert_full(post("full-a", distinct_slot(&a, 3), "a-3".into()).await).await;
    // ...but a retry of one it was accepted is answered as before.
    assert_eq!(
        post("full-a", distinct_slot(&a, 0), "a-0".into())
            .await
            .status(),
        202
    );
    // B still gets in, until the queue as a whole holds five.
    for n in 0..2 {
        let answer = post("full-b", distinct_slot(&b, n), format!("b-{n}")).await;
        assert_eq!(answer.status(), 202);
    }
    assert_full(post("full-b", distinct_slot(&b, 2), "b-2".into()).await).await;

    let stored = support::stored_requests(&system.pool).await;
    assert_eq!(stored, 5, "nothing refused was stored");
}

/// A Redis server of the test's own, so it can be killed without disturbing other tests.
struct OwnRedis {
    child: std::process::Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl OwnRedis {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::start_on(port, tempfile::tempdir().unwrap())
    }

    /// The persistence the README documents: append-only file, fsync every second.
    fn start_on(port: u16, dir: tempfile::TempDir) -> Self {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, port, dir }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL; hands back the data folder.
    fn kill(mut self) -> (u16, tempfile::TempDir) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        (self.port, dir)
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_and_restarted_loses_no_accepted_request() {
    let redis = OwnRedis::start();
    let url = redis.url();
    let mut system = TestSystem::start_with(|config| config.redis_url = url).await;
    let tenant = system.seed_tenant("redisless", LONDON).await;
    for n in 0..10 {
        system
            .book_accepted("redisless", &distinct_slot(&tenant, n))
            .await;
    }

    let (port, dir) = redis.kill();
    // Redis is away: nothing is accepted that cannot be queued, and readiness says why.
    let refused = system.book("redisless", &distinct_slot(&tenant, 10)).await;
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    let ready = system.get("/readyz").await;
    assert_eq!(ready.status(), 503);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["redis"], "down");
    let stored = support::stored_requests(&system.pool).await;
    assert_eq!(stored, 10, "the refused request was withdrawn");

    // Redis comes back with its append-only file; the api accepts again.
    let _redis = OwnRedis::start_on(port, dir);
    let deadline = Instant::now() + FINAL_WITHIN;
    let mut accepted = 10;
    loop {
        let answer = system.book("redisless", &distinct_slot(&tenant, 11)).await;
        if answer.status() == 202 {
            accepted += 1;
            break;
        }
        assert_eq!(answer.status(), 503);
        assert!(Instant::now() < deadline, "the api did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    system.start_worker();
    wait_all_final(&system.pool, FINAL_WITHIN).await;
    let counts = count_by_status(&system.pool).await;
    assert_eq!(counts.get("confirmed"), Some(&accepted), "{counts:?}");
    assert_eq!(double_bookings(&system.pool).await, 0);
}

/// What a PostgreSQL restart does to a worker: its connections are cut by the server in the
/// middle of a decision. Cut a decision more often than `MAX_DECISION_ATTEMPTS` allows,
/// and the request is still decided, not failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_cut_mid_decision_never_fail_a_request() {
    let system = TestSystem::start_without_worker().await;
    let tenant = system.seed_tenant("outage", LONDON).await;
    let url = system
        .book_accepted("outage", &distinct_slot(&tenant, 0))
        .await;
    let max_attempts = system.config.max_decision_attempts;
    let engine_pool = common::db::connect(&system.config.database_url, 2)
        .await
        .unwrap();
    let engine = worker::engine::Engine::new(engine_pool, max_attempts);

    for cut in 0..max_attempts + 2 {
        // Hold the bookings table, so the decision waits inside its transaction...
        let mut blocker = system.pool.begin().await.unwrap();
        sqlx::query("LOCK TABLE bookings IN ACCESS EXCLUSIVE MODE")
            .execute(&mut *blocker)
            .await
            .unwrap();
        let deciding = {
            let engine = engine.clone();
            tokio::spawn(async move { engine.drain_tenant(tenant.id).await })
        };
        // ...and once it waits there, the server terminates its connection.
        let deadline = Instant::now() + FINAL_WITHIN;
        let waiting: i32 = loop {
            let waiting: Option<i32> = sqlx::query_scalar(
                "SELECT pid FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_optional(&system.pool)
            .await
            .unwrap();
            if let Some(pid) = waiting {
                break pid;
            }
            assert!(
                Instant::now() < deadline,
                "the decision never reached the bookings"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
            .bind(waiting)
            .fetch_one(&system.pool)
            .await
            .unwrap();
        assert!(terminated);
        blocker.rollback().await.unwrap();

        let outcome = deciding.await.unwrap();
        assert!(outcome.is_err(), "cut {cut}: the decision was interrupted");
        let (status, attempts): (String, i32) =
            sqlx::query_as("SELECT status, attempts FROM booking_requests")
                .fetch_one(&system.pool)
                .await
                .unwrap();
        assert_eq!(
            (status.as_str(), attempts),
            ("processing", 0),
            "cut {cut}: still open, and the attempt was given back"
        );
    }

    let decisions = engine.drain_tenant(tenant.id).await.unwrap();
    assert_eq!(decisions.len(), 1);
    let decided = system.wait_final(&url, FINAL_WITHIN).await;
    assert_eq!(decided["status"], "confirmed", "{decided}");
    assert_eq!(double_bookings(&system.pool).await, 0);
}
