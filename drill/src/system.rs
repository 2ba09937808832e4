//! The system a fault runs against: its own database on the drill's PostgreSQL, its own
//! Redis queue, the real api and worker binaries as child processes, and the drill's view
//! of the outcome (what the database holds, what the mail folder received).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use common::seed::SeededTenant;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

/// What every fault shares: the servers, the binaries, an HTTP client.
pub struct Drill {
    pub repo: PathBuf,
    pub bin_dir: PathBuf,
    pub work_dir: PathBuf,
    pub data_dir: PathBuf,
    pub pg_port: u16,
    pub redis_port: u16,
    pub client: reqwest::Client,
}

impl Drill {
    pub fn database_url(&self, name: &str) -> String {
        format!(
            "postgres://booking:booking@127.0.0.1:{}/{name}",
            self.pg_port
        )
    }

    pub fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.redis_port)
    }

    /// `scripts/services.sh <command>` against the drill's own servers.
    pub fn services(&self, command: &str) -> anyhow::Result<()> {
        let status = Command::new(self.repo.join("scripts/services.sh"))
            .arg(command)
            .env("DATA_DIR", &self.data_dir)
            .env("PG_PORT", self.pg_port.to_string())
            .env("REDIS_PORT", self.redis_port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .with_context(|| format!("running services.sh {command}"))?;
        if !status.success() {
            bail!("services.sh {command} failed: {status}");
        }
        Ok(())
    }
}

/// How one POST /v1/bookings was answered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Answer {
    Accepted(Uuid),
    /// 503: whether it carried `Retry-After` (its seconds), and whether the problem was
    /// `queue-full` (the backpressure bound) rather than `unavailable` (a store away).
    Unavailable {
        retry_after: Option<u64>,
        queue_full: bool,
    },
    /// 429 (a rate limit), with its `Retry-After` seconds.
    Limited {
        retry_after: Option<u64>,
    },
    Other(u16),
    /// No HTTP answer at all (connection refused or cut, or no answer within 20 s).
    Unanswered {
        timed_out: bool,
    },
}

/// How a client that is refused waits before it tries again.
#[derive(Debug, Clone, Copy)]
pub enum Patience {
    /// Again after 250 ms whatever it was told, to keep the drill short.
    Loose,
    /// As long as `Retry-After` says (250 ms without one), but never longer than `cap`,
    /// and gives up `within` after the first try.
    RetryAfter { cap: Duration, within: Duration },
}

/// The outcome of a fault, as printed.
#[derive(Debug, Default)]
pub struct Tally {
    pub accepted: usize,
    pub statuses: BTreeMap<String, i64>,
    pub double_bookings: i64,
    pub lost: usize,
    pub duplicate_messages: usize,
}

pub struct Scenario<'a> {
    pub drill: &'a Drill,
    pub database_url: String,
    pub queue: String,
    pub dir: PathBuf,
    pub outbox: PathBuf,
    /// Sees every tenant's rows (platform context), for counting.
    pub pool: PgPool,
    pub tenants: Vec<SeededTenant>,
    pub api: Option<Child>,
    /// The process id of the api last started, to say whether it still runs.
    pub api_pid: Option<u32>,
    pub api_url: String,
    api_env: Vec<(String, String)>,
    pub workers: Vec<Child>,
    /// Every request answered 202, by id.
    pub accepted: Mutex<Vec<Uuid>>,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl<'a> Scenario<'a> {
    /// A fresh database with `tenant_count` seeded tenants and an api serving it.
    pub async fn start(
        drill: &'a Drill,
        name: &'static str,
        tenant_count: usize,
        api_env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let db_name = format!("drill_{}", name.replace('-', "_"));
        let admin = common::db::connect(&drill.database_url("booking"), 1).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"
        )))
        .execute(&admin)
        .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db_name}")))
            .execute(&admin)
            .await?;
        admin.close().await;
        let database_url = drill.database_url(&db_name);

        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(2))
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::query("SET app.system = 'on'").execute(conn).await?;
                    Ok(())
                })
            })
            .connect(&database_url)
            .await?;
        common::db::migrate(&pool).await?;
        let mut tenants = Vec::new();
        for n in 0..tenant_count {
            let slug = format!("drill-{n}");
            tenants.push(
                common::seed::seed_tenant(&pool, &slug, &format!("Drill {n}"), "Europe/London")
                    .await?,
            );
        }

        let dir = drill.work_dir.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        let outbox = dir.join("outbox");
        std::fs::create_dir_all(&outbox)?;
        let mut scenario = Self {
            drill,
            database_url,
            queue: format!("drill-{name}-{}", Uuid::now_v7().simple()),
            dir,
            outbox,
            pool,
            tenants,
            api: None,
            api_pid: None,
            api_url: String::new(),
            api_env: api_env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            workers: Vec::new(),
            accepted: Mutex::default(),
        };
        scenario.start_api().await?;
        Ok(scenario)
    }

    fn command(&self, binary: &str, log: &str) -> anyhow::Result<Command> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(log))?;
        let mut command = Command::new(self.drill.bin_dir.join(binary));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &self.database_url)
            .env("REDIS_URL", self.drill.redis_url())
            .env("QUEUE_NAME", &self.queue)
            .env("OUTBOX_DIR", &self.outbox)
            // `info` by default, so that `target/drill/run/<fault>/` says what the processes
            // did; `DRILL_LOG` sets another filter.
            .env(
                "RUST_LOG",
                std::env::var("DRILL_LOG").unwrap_or_else(|_| "info".to_owned()),
            )
            .env("WORKER_HEARTBEAT_SECONDS", "1")
            .env("WORKER_METRICS_ADDR", "127.0.0.1:0")
            .env("RATE_LIMIT_BOOKINGS_PER_MINUTE", "10000000")
            .env("RATE_LIMIT_TENANT_BOOKINGS_PER_MINUTE", "10000000")
            .env("RATE_LIMIT_READS_PER_MINUTE", "10000000")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        Ok(command)
    }

    /// Starts (or restarts) the api on a new port and waits until it answers.
    pub async fn start_api(&mut self) -> anyhow::Result<()> {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut command = self.command("api", "api.log")?;
        command.arg("serve").env("API_ADDR", &addr);
        for (key, value) in &self.api_env {
            command.env(key, value);
        }
        let api = command.spawn().context("starting the api")?;
        self.api_pid = Some(api.id());
        self.api = Some(api);
        self.api_url = format!("http://{addr}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let answer = self
                .drill
                .client
                .get(format!("{}/healthz", self.api_url))
                .send()
                .await;
            if answer.is_ok_and(|a| a.status().is_success()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the api did not answer within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts one more worker process.
    pub fn spawn_worker(&mut self, env: &[(&str, &str)]) -> anyhow::Result<()> {
        let mut command = self.command("worker", "worker.log")?;
        command.envs(env.iter().copied());
        self.workers
            .push(command.spawn().context("starting a worker")?);
        Ok(())
    }

    pub fn slug(&self, tenant: usize) -> String {
        self.tenants[tenant].slug.clone()
    }

    /// A booking of the `n`th distinct slot of a tenant: 60 days x 8 hours x 3 resources.
    pub fn slot_body(&self, tenant: usize, n: usize) -> Value {
        let tenant = &self.tenants[tenant];
        let day = 1 + (n / 24) as i64;
        let hour = 9 + ((n / 3) % 8) as u32;
        self.body(tenant, Some(tenant.resources[n % 3]), day, hour, n)
    }

    /// A booking of one slot everyone wants.
    pub fn contested_body(&self, tenant: usize, slot: usize, n: usize) -> Value {
        let tenant = &self.tenants[tenant];
        let day = 2 + (slot / 8) as i64;
        let hour = 9 + (slot % 8) as u32;
        self.body(tenant, Some(tenant.resources[0]), day, hour, n)
    }

    fn body(
        &self,
        tenant: &SeededTenant,
        resource: Option<Uuid>,
        day: i64,
        hour: u32,
        n: usize,
    ) -> Value {
        use chrono::TimeZone;
        let tz = chrono_tz::Europe::London;
        let date = chrono::Utc::now().with_timezone(&tz).date_naive() + chrono::Duration::days(day);
        let time = chrono::NaiveTime::from_hms_opt(hour, 0, 0).expect("a time of day");
        let start = tz
            .from_local_datetime(&date.and_time(time))
            .earliest()
            .expect("a local time")
            .fixed_offset()
            .to_rfc3339();
        json!({
            "service_id": tenant.services[0].id,
            "resource_id": resource,
            "start": start,
            "customer": {"name": format!("Drill customer {n}"), "email": format!("customer{n}@drill.example")},
        })
    }

    /// One POST, with an `Idempotency-Key`.
    pub async fn post(&self, slug: &str, body: &Value, key: &str) -> Answer {
        let sent = self
            .drill
            .client
            .post(format!("{}/t/{slug}/v1/bookings", self.api_url))
            .header("Idempotency-Key", format!("\"{key}\""))
            .json(body)
            .timeout(Duration::from_secs(20))
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(err) => {
                return Answer::Unanswered {
                    timed_out: err.is_timeout(),
                };
            }
        };
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        match response.status().as_u16() {
            202 => {
                let body: Value = response.json().await.unwrap_or_default();
                match body["request_id"].as_str().and_then(|id| id.parse().ok()) {
                    Some(id) => {
                        self.accepted.lock().expect("accepted list").push(id);
                        Answer::Accepted(id)
                    }
                    None => Answer::Other(202),
                }
            }
            503 => {
                let body: Value = response.json().await.unwrap_or_default();
                Answer::Unavailable {
                    retry_after,
                    queue_full: body["type"]
                        .as_str()
                        .is_some_and(|t| t.ends_with("/queue-full")),
                }
            }
            429 => Answer::Limited { retry_after },
            other => Answer::Other(other),
        }
    }

    /// Posts like a well-behaved client: the same `Idempotency-Key` again after a 503, a
    /// 429 or no answer, until accepted, waiting between tries as `Loose` patience says.
    /// Returns the refusals it met.
    pub async fn post_until_accepted(&self, slug: &str, body: &Value) -> anyhow::Result<Refusals> {
        self.post_patiently(slug, body, Patience::Loose).await
    }

    /// Like [`Self::post_until_accepted`], with the given patience. Every refusal is counted
    /// (and, for tenants other than the first, written with its time to `answers.log` in the
    /// scenario's folder); giving up reports what the client was answered and whether the
    /// api process still runs.
    pub async fn post_patiently(
        &self,
        slug: &str,
        body: &Value,
        patience: Patience,
    ) -> anyhow::Result<Refusals> {
        let key = Uuid::now_v7().to_string();
        let mut refusals = Refusals::default();
        let started = Instant::now();
        let within = match patience {
            Patience::Loose => Duration::from_secs(120),
            Patience::RetryAfter { within, .. } => within,
        };
        loop {
            let answer = self.post(slug, body, &key).await;
            let told = match answer {
                Answer::Accepted(_) => {
                    refusals.waited = refusals.waited.max(started.elapsed());
                    return Ok(refusals);
                }
                Answer::Unavailable {
                    retry_after,
                    queue_full,
                } => {
                    refusals.unavailable += 1;
                    refusals.queue_full += usize::from(queue_full);
                    refusals.without_retry_after += usize::from(retry_after.is_none());
                    retry_after
                }
                Answer::Limited { retry_after } => {
                    refusals.rate_limited += 1;
                    refusals.without_retry_after += usize::from(retry_after.is_none());
                    retry_after
                }
                Answer::Unanswered { timed_out } => {
                    refusals.no_answer += 1;
                    refusals.timed_out += usize::from(timed_out);
                    None
                }
                Answer::Other(status) => bail!(
                    "POST answered {status} after {:.1}s ({refusals})",
                    started.elapsed().as_secs_f64()
                ),
            };
            self.note_refusal(slug, &key, started.elapsed(), &answer);
            if started.elapsed() > within {
                bail!(
                    "not accepted within {within:?} ({refusals}; api {})",
                    self.api_state()
                );
            }
            let pause = match patience {
                Patience::Loose => Duration::from_millis(250),
                Patience::RetryAfter { cap, .. } => told
                    .map_or(Duration::from_millis(250), Duration::from_secs)
                    .min(cap),
            };
            tokio::time::sleep(pause).await;
        }
    }

    /// Appends one refused answer to `answers.log` in the scenario's folder.
    fn note_refusal(&self, slug: &str, key: &str, after: Duration, answer: &Answer) {
        use std::io::Write as _;
        let line = format!(
            "{} tenant={slug} key={key} after={:.3}s {answer:?}\n",
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            after.as_secs_f64()
        );
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("answers.log"))
        {
            let _ = file.write_all(line.as_bytes());
        }
    }

    /// Whether the api process still runs, for messages about requests it did not take.
    pub fn api_state(&self) -> String {
        match self.api_pid {
            None => "not started".to_owned(),
            Some(pid) => match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                Ok(stat) => {
                    let state = stat
                        .rsplit_once(')')
                        .and_then(|(_, rest)| rest.split_whitespace().next())
                        .unwrap_or("?");
                    format!("pid {pid} state {state}")
                }
                Err(_) => format!("pid {pid} gone"),
            },
        }
    }

    pub async fn count_decided(&self) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM booking_requests WHERE status NOT IN ('queued', 'processing')",
        )
        .fetch_one(&self.pool)
        .await
        .unwrap_or(-1)
    }

    pub async fn count_open(&self) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT count(*) FROM booking_requests WHERE status IN ('queued', 'processing')",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Polls until the database holds more than `than` decided requests; the time it took.
    pub async fn wait_decided_beyond(
        &self,
        than: i64,
        limit: Duration,
    ) -> anyhow::Result<Duration> {
        let started = Instant::now();
        while self.count_decided().await <= than {
            if started.elapsed() > limit {
                bail!("no decision past {than} within {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(started.elapsed())
    }

    /// Polls until no request is open; the time it took.
    pub async fn wait_all_decided(&self, limit: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        loop {
            match self.count_open().await {
                Ok(0) => return Ok(started.elapsed()),
                _ if started.elapsed() > limit => bail!("requests still open after {limit:?}"),
                _ => tokio::time::sleep(Duration::from_millis(25)).await,
            }
        }
    }

    /// Polls until no message is waiting to be sent; the time it took.
    pub async fn wait_outbox_settled(&self, limit: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        loop {
            let pending: Result<i64, _> =
                sqlx::query_scalar("SELECT count(*) FROM outbox WHERE status = 'pending'")
                    .fetch_one(&self.pool)
                    .await;
            match pending {
                Ok(0) => return Ok(started.elapsed()),
                _ if started.elapsed() > limit => bail!("messages still pending after {limit:?}"),
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Counts what came true: statuses, double bookings, accepted requests missing or
    /// still open, and copies of a message beyond the first in `mail_dir`.
    pub async fn tally(&self, mail_dir: &Path) -> anyhow::Result<Tally> {
        let accepted: Vec<Uuid> = self.accepted.lock().expect("accepted list").clone();
        let mut unique = accepted.clone();
        unique.sort();
        unique.dedup();
        let statuses: BTreeMap<String, i64> = sqlx::query_as::<_, (String, i64)>(
            "SELECT status, count(*) FROM booking_requests WHERE id = ANY($1) GROUP BY status",
        )
        .bind(&unique)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .collect();
        let final_count: i64 = ["confirmed", "rejected", "failed"]
            .iter()
            .filter_map(|s| statuses.get(*s))
            .sum();
        let double_bookings: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT tenant_id, request_id FROM bookings
                                   GROUP BY tenant_id, request_id HAVING count(*) > 1) d",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(Tally {
            accepted: unique.len(),
            lost: unique.len() - usize::try_from(final_count).unwrap_or(0),
            statuses,
            double_bookings,
            duplicate_messages: duplicate_messages(mail_dir),
        })
    }

    /// SIGKILLs every process of the scenario.
    pub fn stop_all(&mut self) {
        for mut child in self.workers.drain(..).chain(self.api.take()) {
            child.kill().ok();
            child.wait().ok();
        }
    }
}

impl Drop for Scenario<'_> {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// What a client was answered before it was accepted.
#[derive(Debug, Default, Clone, Copy)]
pub struct Refusals {
    /// 503s, of which `queue_full` were `queue-full` (the rest `unavailable`).
    pub unavailable: usize,
    pub queue_full: usize,
    /// 429s.
    pub rate_limited: usize,
    /// 503s and 429s without `Retry-After`.
    pub without_retry_after: usize,
    /// No HTTP answer, of which `timed_out` after 20 s.
    pub no_answer: usize,
    pub timed_out: usize,
    /// The longest time from a first try to its 202.
    pub waited: Duration,
}

impl std::ops::AddAssign for Refusals {
    fn add_assign(&mut self, other: Self) {
        self.unavailable += other.unavailable;
        self.queue_full += other.queue_full;
        self.rate_limited += other.rate_limited;
        self.without_retry_after += other.without_retry_after;
        self.no_answer += other.no_answer;
        self.timed_out += other.timed_out;
        self.waited = self.waited.max(other.waited);
    }
}

impl std::fmt::Display for Refusals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "503 queue-full={} 503 unavailable={} 429={} no answer={} (timed out {}), \
             without Retry-After={}",
            self.queue_full,
            self.unavailable - self.queue_full,
            self.rate_limited,
            self.no_answer,
            self.timed_out,
            self.without_retry_after
        )
    }
}

/// Copies beyond the first of each `Message-ID` among the `.eml` files in `dir`.
pub fn duplicate_messages(dir: &Path) -> usize {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "eml") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let id = text
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("message-id")
                    .then(|| value.trim().to_owned())
            })
            .unwrap_or_else(|| path.display().to_string());
        *seen.entry(id).or_default() += 1;
    }
    seen.values().map(|copies| copies - 1).sum()
}

/// Sends SIGTERM to a child process.
pub fn terminate(child: &Child) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    if !status.success() {
        bail!("kill -TERM {} failed", child.id());
    }
    Ok(())
}

/// Waits for a child to exit by itself, up to `limit`.
pub async fn wait_exit(
    child: &mut Child,
    limit: Duration,
) -> anyhow::Result<std::process::ExitStatus> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if started.elapsed() > limit {
            bail!("process {} still running after {limit:?}", child.id());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Percentiles (0-100) of a list of seconds.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}
