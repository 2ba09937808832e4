//! The faults, one function each. Every one starts its own scenario (database, queue, api,
//! workers), does its damage while clients keep booking, lets the system recover, and
//! returns what came true.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use futures::future::join_all;
use uuid::Uuid;

use crate::system::{
    Answer, Drill, Patience, Refusals, Scenario, Tally, free_port, percentile, terminate, wait_exit,
};

/// What one fault reports.
pub struct Outcome {
    pub tally: Tally,
    /// From the end of the fault to the system working again.
    pub recovery: Option<Duration>,
    pub detail: String,
}

const SETTLE: Duration = Duration::from_secs(90);
const SMTP_OUTAGE: Duration = Duration::from_secs(120);

/// Posts `bodies` (tenant index, body) with `parallel` clients, retrying each until it is
/// accepted; returns the refusals met on the way.
async fn book_all(
    scenario: &Scenario<'_>,
    bodies: Vec<(usize, serde_json::Value)>,
    parallel: usize,
) -> anyhow::Result<Refusals> {
    let results: Vec<anyhow::Result<Refusals>> = futures::stream::iter(bodies)
        .map(|(tenant, body)| {
            let slug = scenario.slug(tenant);
            async move { scenario.post_until_accepted(&slug, &body).await }
        })
        .buffer_unordered(parallel)
        .collect()
        .await;
    let mut refusals = Refusals::default();
    for result in results {
        refusals += result?;
    }
    Ok(refusals)
}

/// `n` distinct slots spread over the scenario's tenants.
fn spread(scenario: &Scenario<'_>, n: usize) -> Vec<(usize, serde_json::Value)> {
    let tenants = scenario.tenants.len();
    (0..n)
        .map(|i| (i % tenants, scenario.slot_body(i % tenants, i / tenants)))
        .collect()
}

/// Settles the scenario: every request decided, every message sent or dead.
async fn settle(scenario: &Scenario<'_>) -> anyhow::Result<()> {
    scenario.wait_all_decided(SETTLE).await?;
    scenario.wait_outbox_settled(SETTLE).await?;
    Ok(())
}

/// A scenario whose worker will send to an SMTP server on a port of its own (not started
/// yet): the scenario, the port, `SMTP_URL`, and the folder for the server's mail.
async fn smtp_scenario<'a>(
    drill: &'a Drill,
    name: &'static str,
) -> anyhow::Result<(Scenario<'a>, u16, String, std::path::PathBuf)> {
    let port = free_port();
    let scenario = Scenario::start(drill, name, 3, &[]).await?;
    let mail = scenario.dir.join("mail");
    std::fs::create_dir_all(&mail)?;
    Ok((scenario, port, format!("smtp://127.0.0.1:{port}"), mail))
}

/// The worker SIGKILLed five times while deciding and sending (to a real SMTP server),
/// restarted each time.
pub async fn worker_sigkill(drill: &Drill) -> anyhow::Result<Outcome> {
    let (mut scenario, port, smtp_url, mail) = smtp_scenario(drill, "worker-sigkill").await?;
    let _sink = Sink::start(&drill.repo, port, &mail, &[])?;
    let env = [("SMTP_URL", smtp_url.as_str())];
    scenario.spawn_worker(&env)?;
    book_all(&scenario, spread(&scenario, 600), 16).await?;

    let mut recoveries = Vec::new();
    for _ in 0..5 {
        let before = scenario.count_decided().await;
        let mut worker = scenario.workers.pop().context("a worker runs")?;
        worker.kill()?;
        worker.wait()?;
        scenario.spawn_worker(&env)?;
        recoveries.push(
            scenario
                .wait_decided_beyond(before, Duration::from_secs(60))
                .await?,
        );
        if scenario.count_open().await? == 0 {
            break;
        }
    }
    settle(&scenario).await?;
    let worst = recoveries.iter().max().copied();
    Ok(Outcome {
        tally: scenario.tally(&mail).await?,
        recovery: worst,
        detail: format!(
            "kills={} (restart to next decision, worst of all kills); messages over SMTP",
            recoveries.len()
        ),
    })
}

/// Redis killed with SIGKILL while clients book, restarted after three seconds.
pub async fn redis_restart(drill: &Drill) -> anyhow::Result<Outcome> {
    let mut scenario = Scenario::start(drill, "redis-restart", 3, &[]).await?;
    scenario.spawn_worker(&[])?;
    let scenario = &scenario;
    book_all(scenario, spread(scenario, 150), 8).await?;

    // Clients keep booking through the outage.
    let bodies: Vec<_> = spread(scenario, 450).into_iter().skip(150).collect();
    let booking = book_all(scenario, bodies, 8);
    let fault = async {
        drill.services("redis-kill")?;
        let killed = Instant::now();
        let refused_while_down = wait_for_refusal(scenario).await?;
        while killed.elapsed() < Duration::from_secs(3) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drill.services("redis-start")?;
        let restarted = Instant::now();
        wait_for_acceptance(scenario).await?;
        Ok::<_, anyhow::Error>((refused_while_down, restarted.elapsed()))
    };
    let (refusals, fault) = tokio::join!(booking, fault);
    let refusals = refusals?;
    let (refused_while_down, recovery) = fault?;
    settle(scenario).await?;
    Ok(Outcome {
        tally: scenario.tally(&scenario.outbox).await?,
        recovery: Some(recovery),
        detail: format!(
            "answered 503 while down={refused_while_down}, 503s={} (without Retry-After: {}), \
             recovery = restart to first 202",
            refusals.unavailable, refusals.without_retry_after
        ),
    })
}

/// Polls with a probe booking until the api refuses it with 503 (the store is away).
async fn wait_for_refusal(scenario: &Scenario<'_>) -> anyhow::Result<bool> {
    let body = scenario.slot_body(0, 5000);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        let key = Uuid::now_v7().to_string();
        match scenario.post(&scenario.slug(0), &body, &key).await {
            Answer::Unavailable { retry_after, .. } => return Ok(retry_after.is_some()),
            Answer::Accepted(_) => bail!("a probe was accepted while a store was away"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    Ok(false)
}

/// Polls with probe bookings until one is accepted again.
async fn wait_for_acceptance(scenario: &Scenario<'_>) -> anyhow::Result<()> {
    let started = Instant::now();
    for n in 5001.. {
        let key = Uuid::now_v7().to_string();
        if let Answer::Accepted(_) = scenario
            .post(&scenario.slug(0), &scenario.slot_body(0, n), &key)
            .await
        {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("nothing accepted within a minute of the restart");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// PostgreSQL stopped (fast shutdown) while the worker decides and clients book, started
/// again after five seconds.
pub async fn postgres_restart(drill: &Drill) -> anyhow::Result<Outcome> {
    let mut scenario = Scenario::start(drill, "postgres-restart", 3, &[]).await?;
    scenario.spawn_worker(&[])?;
    let scenario = &scenario;
    book_all(scenario, spread(scenario, 600), 16).await?;

    let booking = book_all(
        scenario,
        spread(scenario, 900).into_iter().skip(600).collect(),
        8,
    );
    let fault = async {
        drill.services("postgres-stop")?;
        let stopped = Instant::now();
        let ready = scenario
            .drill
            .client
            .get(format!("{}/readyz", scenario.api_url))
            .send()
            .await?;
        let readiness: serde_json::Value = ready.json().await.unwrap_or_default();
        while stopped.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drill.services("postgres-start")?;
        let started = Instant::now();
        let before = scenario.count_decided().await;
        scenario
            .wait_decided_beyond(before.max(0), Duration::from_secs(60))
            .await?;
        Ok::<_, anyhow::Error>((readiness, started.elapsed()))
    };
    let (refusals, fault) = tokio::join!(booking, fault);
    let refusals = refusals?;
    let (readiness, recovery) = fault?;
    settle(scenario).await?;
    let tally = scenario.tally(&scenario.outbox).await?;
    Ok(Outcome {
        tally,
        recovery: Some(recovery),
        detail: format!(
            "/readyz while down: database={}, 503s={} (without Retry-After: {}), \
             recovery = start to next decision",
            readiness["database"].as_str().unwrap_or("?"),
            refusals.unavailable,
            refusals.without_retry_after
        ),
    })
}

/// A real SMTP server process (scripts/smtp_sink.py).
struct Sink {
    child: Child,
}

impl Sink {
    fn start(repo: &Path, port: u16, dir: &Path, refuse: &[&str]) -> anyhow::Result<Self> {
        let mut command = Command::new("/usr/bin/python3");
        command
            .arg(repo.join("scripts/smtp_sink.py"))
            .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--dir"])
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for address in refuse {
            command.args(["--refuse", address]);
        }
        let mut child = command.spawn().context("starting smtp_sink.py")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("sink output")?).read_line(&mut line)?;
        if !line.starts_with("LISTENING") {
            bail!("the SMTP sink did not start: {line:?}");
        }
        Ok(Self { child })
    }

    fn stop(mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// The SMTP server down while bookings pour in, then back with one recipient refusing;
/// the dead letter replayed through the admin API once that mailbox works.
pub async fn smtp_outage(drill: &Drill) -> anyhow::Result<Outcome> {
    let (mut scenario, port, smtp_url, mail) = smtp_scenario(drill, "smtp-outage").await?;
    scenario.spawn_worker(&[("SMTP_URL", &smtp_url)])?;

    // Down from the start: bookings must still be decided at full speed.
    let refused = "customer0@drill.example";
    let started = Instant::now();
    book_all(&scenario, spread(&scenario, 300), 16).await?;
    scenario.wait_all_decided(SETTLE).await?;
    let decided_in = started.elapsed();
    let retrying: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE status = 'pending' AND failure_class = 'connection'",
    )
    .fetch_one(&scenario.pool)
    .await?;

    // The server stays away for two minutes: long enough for the retries to back off to
    // waits of a minute and more.
    while started.elapsed() < SMTP_OUTAGE {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let backed_off: Option<f64> = sqlx::query_scalar(
        "SELECT max(extract(epoch FROM next_attempt_at - now()))::float8 FROM outbox
         WHERE status = 'pending'",
    )
    .fetch_one(&scenario.pool)
    .await?;

    // Back, refusing one recipient for good.
    let sink = Sink::start(&drill.repo, port, &mail, &[refused])?;
    let back = Instant::now();
    scenario
        .wait_outbox_settled(Duration::from_secs(180))
        .await?;
    let recovery = back.elapsed();
    let dead: Vec<(Uuid, Option<String>)> =
        sqlx::query_as("SELECT id, failure_class FROM outbox WHERE status = 'dead'")
            .fetch_all(&scenario.pool)
            .await?;

    // The mailbox works again: an admin replays the dead letters, each exactly once.
    sink.stop();
    let sink = Sink::start(&drill.repo, port, &mail, &[])?;
    let tenant = sqlx::query_scalar::<_, Uuid>(
        "SELECT DISTINCT tenant_id FROM outbox WHERE status = 'dead'",
    )
    .fetch_all(&scenario.pool)
    .await?;
    let mut replayed = 0;
    for tenant_id in tenant {
        let key = api::credentials::issue_api_key(&scenario.pool, tenant_id, "drill").await?;
        let listed: serde_json::Value = drill
            .client
            .get(format!(
                "{}/v1/admin/notifications?status=dead",
                scenario.api_url
            ))
            .bearer_auth(&key.key)
            .send()
            .await?
            .json()
            .await?;
        for message in listed["notifications"].as_array().into_iter().flatten() {
            let id = message["id"].as_str().unwrap_or_default();
            for _ in 0..2 {
                // Twice, as a hurried operator would: the second must change nothing.
                let answer = drill
                    .client
                    .post(format!(
                        "{}/v1/admin/notifications/{id}/replay",
                        scenario.api_url
                    ))
                    .bearer_auth(&key.key)
                    .send()
                    .await?;
                replayed += usize::from(answer.status() == 200);
            }
        }
    }
    scenario
        .wait_outbox_settled(Duration::from_secs(60))
        .await?;
    let still_dead: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE status = 'dead'")
        .fetch_one(&scenario.pool)
        .await?;
    scenario.stop_all();
    drop(sink);

    let classes: Vec<String> = dead
        .iter()
        .map(|(_, class)| class.clone().unwrap_or_default())
        .collect();
    Ok(Outcome {
        tally: scenario.tally(&mail).await?,
        recovery: Some(recovery),
        detail: format!(
            "300 decided in {:.1}s with SMTP down ({retrying} messages retrying), down for {}s \
             (next retry then up to {:.0}s away), dead-lettered={} {classes:?}, replays \
             accepted={replayed} (of {} tries), dead after replay={still_dead}, recovery = \
             server back to outbox settled",
            decided_in.as_secs_f64(),
            SMTP_OUTAGE.as_secs(),
            backed_off.unwrap_or_default(),
            dead.len(),
            dead.len() * 2,
        ),
    })
}

/// Two worker processes at once; five waves of contenders for the same slots.
pub async fn two_workers(drill: &Drill) -> anyhow::Result<Outcome> {
    let mut scenario = Scenario::start(drill, "two-workers", 3, &[]).await?;
    scenario.spawn_worker(&[])?;
    scenario.spawn_worker(&[])?;
    let scenario = &scenario;
    let mut waves: Vec<Vec<Uuid>> = Vec::new();
    for wave in 0..5 {
        let posts = (0..scenario.tenants.len()).flat_map(|tenant| {
            (0..16).map(move |slot| async move {
                let body = scenario.contested_body(tenant, slot, wave);
                let key = Uuid::now_v7().to_string();
                scenario.post(&scenario.slug(tenant), &body, &key).await
            })
        });
        let answers = join_all(posts).await;
        let mut ids = Vec::new();
        for answer in answers {
            match answer {
                Answer::Accepted(id) => ids.push(id),
                other => bail!("wave {wave}: {other:?}"),
            }
        }
        waves.push(ids);
    }
    settle(scenario).await?;

    // A slot must go to the first wave; no request may be decided before one of an
    // earlier wave of its tenant.
    let not_first: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM booking_requests WHERE id = ANY($1) AND status <> 'confirmed'",
    )
    .bind(&waves[0])
    .fetch_one(&scenario.pool)
    .await?;
    let mut overtaken = 0i64;
    for pair in waves.windows(2) {
        overtaken += sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM booking_requests later JOIN booking_requests earlier
                 ON earlier.tenant_id = later.tenant_id
             WHERE earlier.id = ANY($1) AND later.id = ANY($2)
               AND later.decided_at < earlier.decided_at",
        )
        .bind(&pair[0])
        .bind(&pair[1])
        .fetch_one(&scenario.pool)
        .await?;
    }
    Ok(Outcome {
        tally: scenario.tally(&scenario.outbox).await?,
        recovery: None,
        detail: format!(
            "first-wave requests not confirmed={not_first}, decisions out of acceptance \
             order={overtaken}"
        ),
    })
}

/// A request whose decision aborts the worker process every time.
pub async fn crash_every_time(drill: &Drill) -> anyhow::Result<Outcome> {
    const MARKER: &str = "DRILL-CRASH";
    let env = [("WORKER_FAULT_CRASH_ON_NOTES", MARKER)];
    let mut scenario = Scenario::start(drill, "crash-every-time", 1, &[]).await?;
    let mut poison = scenario.slot_body(0, 0);
    poison["notes"] = MARKER.into();
    scenario
        .post_until_accepted(&scenario.slug(0), &poison)
        .await?;
    book_all(
        &scenario,
        (1..40).map(|n| (0, scenario.slot_body(0, n))).collect(),
        8,
    )
    .await?;

    scenario.spawn_worker(&env)?;
    let mut crashes = 0;
    let started = Instant::now();
    loop {
        let mut worker = scenario.workers.pop().context("a worker runs")?;
        if let Some(status) = worker.try_wait()? {
            if !status.success() {
                crashes += 1;
            }
            scenario.spawn_worker(&env)?;
        } else {
            scenario.workers.push(worker);
        }
        let status: String =
            sqlx::query_scalar("SELECT status FROM booking_requests WHERE payload->>'notes' = $1")
                .bind(MARKER)
                .fetch_one(&scenario.pool)
                .await?;
        if status == "failed" {
            break;
        }
        if started.elapsed() > Duration::from_secs(120) || crashes > 20 {
            bail!("the crashing request is not stopped: {crashes} crashes, still {status}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stopped_after = started.elapsed();
    settle(&scenario).await?;
    let attempts: i32 =
        sqlx::query_scalar("SELECT attempts FROM booking_requests WHERE payload->>'notes' = $1")
            .bind(MARKER)
            .fetch_one(&scenario.pool)
            .await?;
    Ok(Outcome {
        tally: scenario.tally(&scenario.outbox).await?,
        recovery: Some(stopped_after),
        detail: format!(
            "worker crashes={crashes}, poison request failed after attempts={attempts}, \
             recovery = first start to poison failed"
        ),
    })
}

/// One tenant floods; two others book a little at a time meanwhile. The flooder's share
/// of the queue is bounded (`QUEUE_MAX_TENANT_DEPTH`).
pub async fn tenant_flood(drill: &Drill) -> anyhow::Result<Outcome> {
    // Every bound that could refuse a quiet tenant is set here rather than left to the
    // defaults: the rate limits far above what the drill sends (every drill client is
    // 127.0.0.1, so a per-address limit would be shared by the flooder and the quiet
    // tenants), the global depth far above the flood, only the flooder's own share bounded.
    let api_env = [
        ("QUEUE_MAX_TENANT_DEPTH", "400"),
        ("QUEUE_MAX_DEPTH", "100000"),
        ("RATE_LIMIT_BOOKINGS_PER_MINUTE", "10000000"),
        ("RATE_LIMIT_TENANT_BOOKINGS_PER_MINUTE", "10000000"),
    ];
    let mut scenario = Scenario::start(drill, "tenant-flood", 3, &api_env).await?;
    scenario.spawn_worker(&[])?;
    let scenario = &scenario;

    // The flood: 3000 requests, 24 at a time, for 40 contested slots; a 503 is counted
    // and not retried (a flooder is not owed a place).
    let flood = futures::stream::iter(0..3000)
        .map(|n| async move {
            let body = scenario.contested_body(0, n % 40, n);
            scenario
                .post(&scenario.slug(0), &body, &Uuid::now_v7().to_string())
                .await
        })
        .buffer_unordered(24)
        .collect::<Vec<Answer>>();
    // The others: one request every 100 ms each, once the flood is under way. They retry a
    // refusal as told by `Retry-After` (at most 5 s between tries) and give up on a request
    // not accepted within 30 s: the flood must not keep them out at all.
    let patience = Patience::RetryAfter {
        cap: Duration::from_secs(5),
        within: Duration::from_secs(30),
    };
    let others = async {
        let mut refusals = Refusals::default();
        // Once 200 of the flood are in, or after 30 s whatever came of it (a flood refused
        // from the start must not hang the drill).
        let waiting = Instant::now();
        while scenario.accepted.lock().expect("accepted list").len() < 200
            && waiting.elapsed() < Duration::from_secs(30)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for n in 0..40 {
            for tenant in 1..3 {
                refusals += scenario
                    .post_patiently(
                        &scenario.slug(tenant),
                        &scenario.slot_body(tenant, n),
                        patience,
                    )
                    .await
                    .with_context(|| {
                        format!(
                            "tenant {} (not flooding), request {n}: answers before it in \
                             {}/answers.log",
                            scenario.slug(tenant),
                            scenario.dir.display()
                        )
                    })?;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok::<_, anyhow::Error>(refusals)
    };
    let (flood, others) = tokio::join!(flood, others);
    let quiet = others?;
    let count = |pick: fn(&Answer) -> bool| flood.iter().filter(|a| pick(a)).count();
    let refused = count(|a| matches!(a, Answer::Unavailable { .. }));
    let flood_other = count(|a| !matches!(a, Answer::Accepted(_) | Answer::Unavailable { .. }));
    settle(scenario).await?;

    let latency = |tenants: Vec<Uuid>| async move {
        let mut seconds: Vec<f64> = sqlx::query_scalar(
            "SELECT extract(epoch FROM decided_at - accepted_at)::float8 FROM booking_requests
             WHERE tenant_id = ANY($1) AND decided_at IS NOT NULL",
        )
        .bind(&tenants)
        .fetch_all(&scenario.pool)
        .await?;
        seconds.sort_by(f64::total_cmp);
        Ok::<_, anyhow::Error>(seconds)
    };
    let flooder = latency(vec![scenario.tenants[0].id]).await?;
    let others = latency(vec![scenario.tenants[1].id, scenario.tenants[2].id]).await?;
    let describe = |s: &[f64]| {
        format!(
            "p50={:.3}s p95={:.3}s max={:.3}s",
            percentile(s, 50.0),
            percentile(s, 95.0),
            percentile(s, 100.0)
        )
    };
    Ok(Outcome {
        tally: scenario.tally(&scenario.outbox).await?,
        recovery: None,
        detail: format!(
            "accept-to-decision: other tenants {} (n={}); flooder {} (n={}); flooder 503s={refused} \
             (other answers {flood_other}); other tenants' refusals: {quiet}, longest wait for \
             a 202 {:.2}s",
            describe(&others),
            others.len(),
            describe(&flooder),
            flooder.len(),
            quiet.waited.as_secs_f64(),
        ),
    })
}

async fn stored(scenario: &Scenario<'_>) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM booking_requests")
        .fetch_one(&scenario.pool)
        .await?)
}

/// SIGTERM to the worker mid-drain, then to the api with requests in flight.
pub async fn sigterm(drill: &Drill) -> anyhow::Result<Outcome> {
    let mut scenario = Scenario::start(drill, "sigterm", 3, &[]).await?;
    book_all(&scenario, spread(&scenario, 900), 16).await?;

    // The worker: stopped while it has a backlog; it must exit by itself, cleanly, with
    // every batch it began committed.
    scenario.spawn_worker(&[])?;
    scenario
        .wait_decided_beyond(0, Duration::from_secs(30))
        .await?;
    let mut worker = scenario.workers.pop().context("a worker runs")?;
    terminate(&worker)?;
    let asked = Instant::now();
    let status = wait_exit(&mut worker, Duration::from_secs(40)).await?;
    let worker_exit = asked.elapsed();
    let half_done: i64 =
        sqlx::query_scalar("SELECT count(*) FROM booking_requests WHERE status = 'processing'")
            .fetch_one(&scenario.pool)
            .await?;
    let decided_by_then = scenario.count_decided().await;

    // The api: SIGTERM while 64 bookings are on their way.
    let posts = (0..64).map(|n| {
        let scenario = &scenario;
        async move {
            let body = scenario.slot_body(n % 3, 1000 + n);
            let key = Uuid::now_v7().to_string();
            scenario.post(&scenario.slug(n % 3), &body, &key).await
        }
    });
    let api = scenario.api.as_ref().context("the api runs")?;
    let stored_before = stored(&scenario).await?;
    let (answers, terminated) = tokio::join!(join_all(posts), async {
        // As soon as the api is storing the first of them.
        while stored(&scenario).await? == stored_before {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        terminate(api)
    });
    terminated?;
    let mut api = scenario.api.take().context("the api runs")?;
    let api_status = wait_exit(&mut api, Duration::from_secs(30)).await?;
    let answered = answers
        .iter()
        .filter(|a| !matches!(a, Answer::Unanswered { .. }))
        .count();
    // Stored requests no client was told about would be half-done work.
    let accepted = scenario.accepted.lock().expect("accepted list").clone();
    let unannounced: i64 =
        sqlx::query_scalar("SELECT count(*) FROM booking_requests WHERE NOT (id = ANY($1))")
            .bind(&accepted)
            .fetch_one(&scenario.pool)
            .await?;

    scenario.start_api().await?;
    scenario.spawn_worker(&[])?;
    settle(&scenario).await?;
    let charged_twice: i64 =
        sqlx::query_scalar("SELECT count(*) FROM booking_requests WHERE attempts > 1")
            .fetch_one(&scenario.pool)
            .await?;
    Ok(Outcome {
        tally: scenario.tally(&scenario.outbox).await?,
        recovery: Some(worker_exit),
        detail: format!(
            "worker exit={status} after {:.2}s with {decided_by_then} decided, left processing={half_done}, \
             decided twice={charged_twice}; api exit={api_status}, bookings sent around its SIGTERM answered={answered}/64 \
             (the rest were not let in), stored but never answered={unannounced}; recovery = SIGTERM to worker exit",
            worker_exit.as_secs_f64()
        ),
    })
}
