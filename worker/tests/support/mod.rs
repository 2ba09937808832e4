//! The system under test: a fresh PostgreSQL database and Redis queue per test, the real
//! api served on a loopback port, and the worker in-process or as its own process.
//!
//! Needs `DATABASE_URL` and `REDIS_URL` naming running servers (`make test` starts them).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{Datelike, Duration as Days, NaiveTime, TimeZone, Utc};
use common::config::Config;
use common::seed::SeededTenant;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub struct TestSystem {
    pub config: Config,
    pub pool: PgPool,
    pub api_url: String,
    pub client: reqwest::Client,
    pub outbox: tempfile::TempDir,
    pub shutdown: CancellationToken,
    worker_shutdown: Option<CancellationToken>,
}

impl TestSystem {
    /// A fresh database and queue, the api, and an in-process worker.
    pub async fn start() -> Self {
        let mut system = Self::start_without_worker().await;
        system.start_worker();
        system
    }

    /// A fresh database and queue and the api, with nothing consuming the queue yet.
    pub async fn start_without_worker() -> Self {
        common::telemetry::init_tracing();
        let mut config = Config::from_env().expect("configuration");
        let database_url = fresh_database(&config.database_url).await;
        config.database_url = database_url;
        config.queue_name = format!("test-{}", Uuid::now_v7().simple());
        config.worker_name = format!("test-worker-{}", Uuid::now_v7().simple());
        config.worker_metrics_addr = "127.0.0.1:0".parse().unwrap();
        config.heartbeat_interval = Duration::from_secs(1);
        config.smtp_url = None;
        let outbox = tempfile::tempdir().expect("outbox folder");
        config.outbox_dir = outbox.path().to_path_buf();

        let pool = inspection_pool(&config.database_url).await;
        common::db::migrate(&pool).await.expect("migrations");

        let shutdown = CancellationToken::new();
        let state = api::AppState::connect(config.clone())
            .await
            .expect("api state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api_url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(api::serve(listener, state, shutdown.clone()));

        Self {
            config,
            pool,
            api_url,
            client: reqwest::Client::new(),
            outbox,
            shutdown,
            worker_shutdown: None,
        }
    }

    /// Starts the worker inside the test process.
    pub fn start_worker(&mut self) {
        let token = self.shutdown.child_token();
        let config = Config {
            worker_name: format!("test-worker-{}", Uuid::now_v7().simple()),
            ..self.config.clone()
        };
        let stop = token.clone();
        tokio::spawn(async move {
            if let Err(err) = worker::run(config, stop).await {
                eprintln!("in-process worker stopped: {err:#}");
            }
        });
        self.worker_shutdown = Some(token);
    }

    /// Starts the real worker binary against this system's database and queue.
    pub fn spawn_worker_process(&self, smtp_url: Option<&str>) -> Child {
        self.spawn_worker_process_with(smtp_url, &[])
    }

    /// Like [`TestSystem::spawn_worker_process`], with extra environment variables.
    pub fn spawn_worker_process_with(&self, smtp_url: Option<&str>, env: &[(&str, &str)]) -> Child {
        let mut command = Command::new(env!("CARGO_BIN_EXE_worker"));
        command
            .env("DATABASE_URL", &self.config.database_url)
            .env("REDIS_URL", &self.config.redis_url)
            .env("QUEUE_NAME", &self.config.queue_name)
            .env("OUTBOX_DIR", self.outbox.path())
            .env("WORKER_METRICS_ADDR", "127.0.0.1:0")
            .env("WORKER_HEARTBEAT_SECONDS", "1")
            .env("RUST_LOG", "warn")
            .env_remove("WORKER_NAME")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .envs(env.iter().copied());
        match smtp_url {
            Some(url) => command.env("SMTP_URL", url),
            None => command.env_remove("SMTP_URL"),
        };
        command.spawn().expect("worker binary starts")
    }

    pub async fn seed_tenant(&self, slug: &str, zone: &str) -> SeededTenant {
        common::seed::seed_tenant(&self.pool, slug, &format!("Tenant {slug}"), zone)
            .await
            .expect("seed tenant")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api_url)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("api answers")
    }

    /// POSTs a booking for the tenant through the `/t/{slug}` prefix.
    pub async fn book(&self, slug: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/t/{slug}/v1/bookings")))
            .json(body)
            .send()
            .await
            .expect("api answers")
    }

    /// POSTs a booking that must be accepted; returns the status URL.
    pub async fn book_accepted(&self, slug: &str, body: &Value) -> String {
        let response = self.book(slug, body).await;
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, 202, "booking not accepted: {body}");
        body["status_url"].as_str().unwrap().to_owned()
    }

    /// Polls a status URL until the request is final, or fails the test after `limit`.
    pub async fn wait_final(&self, status_url: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let response = self.get(status_url).await;
            assert_eq!(response.status(), 200);
            let body: Value = response.json().await.unwrap();
            let status = body["status"].as_str().unwrap().to_owned();
            if matches!(status.as_str(), "confirmed" | "rejected" | "failed") {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "request still {status} after {limit:?}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the outbox folder holds `count` messages, or fails after `limit`.
    pub async fn wait_for_emails(&self, count: usize, limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        loop {
            let emails = read_emails(self.outbox.path());
            if emails.len() >= count {
                return emails;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {count} emails after {limit:?}",
                emails.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for TestSystem {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn read_emails(dir: &Path) -> Vec<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "eml"));
    files.sort();
    files
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .collect()
}

/// The tests' own view of the database: it sees every tenant's rows (as platform work), so
/// assertions can look anywhere. The api and worker under test use their own pools, which
/// see only what their tenant context allows.
async fn inspection_pool(database_url: &str) -> PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(5)
        .after_connect(|conn, _| {
            Box::pin(async move {
                sqlx::query("SET app.system = 'on'").execute(conn).await?;
                Ok(())
            })
        })
        .connect(database_url)
        .await
        .expect("test database")
}

/// Creates an empty database on the server `base_url` names and returns its URL.
async fn fresh_database(base_url: &str) -> String {
    let admin = common::db::connect(base_url, 1)
        .await
        .expect("DATABASE_URL reachable");
    let name = format!("test_{}", Uuid::now_v7().simple());
    // The name is ours: a fixed prefix and a UUID's hex digits.
    let create = format!("CREATE DATABASE {name}");
    sqlx::query(sqlx::AssertSqlSafe(create))
        .execute(&admin)
        .await
        .expect("create database");
    admin.close().await;
    let (server, _db) = base_url
        .rsplit_once('/')
        .expect("DATABASE_URL names a database");
    format!("{server}/{name}")
}

/// A start time `days` ahead at a local wall-clock time in `zone`, as RFC 3339 with the
/// zone's offset.
pub fn local_start(zone: &str, days: i64, hour: u32, minute: u32) -> String {
    let tz: chrono_tz::Tz = zone.parse().unwrap();
    let date = Utc::now().with_timezone(&tz).date_naive() + Days::days(days);
    let time = NaiveTime::from_hms_opt(hour, minute, 0).unwrap();
    let local = tz
        .from_local_datetime(&date.and_time(time))
        .earliest()
        .unwrap();
    let _ = local.weekday();
    local.fixed_offset().to_rfc3339()
}

pub fn booking_body(service: Uuid, resource: Option<Uuid>, start: &str, n: usize) -> Value {
    let mut body = json!({
        "service_id": service,
        "start": start,
        "customer": {"name": format!("Customer {n}"), "email": format!("customer{n}@example.com")},
    });
    if let Some(resource) = resource {
        body["resource_id"] = json!(resource);
    }
    body
}

/// How many booking requests this database holds.
pub async fn stored_requests(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM booking_requests")
        .fetch_one(pool)
        .await
        .expect("count requests")
}

/// Counts this database's booking requests by status.
pub async fn count_by_status(pool: &PgPool) -> std::collections::BTreeMap<String, i64> {
    sqlx::query_as::<_, (String, i64)>(
        "SELECT status, count(*) FROM booking_requests GROUP BY status",
    )
    .fetch_all(pool)
    .await
    .expect("count requests")
    .into_iter()
    .collect()
}

/// Polls until no booking request is open, or fails after `limit`.
pub async fn wait_all_final(pool: &PgPool, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let counts = count_by_status(pool).await;
        let open = counts.get("queued").unwrap_or(&0) + counts.get("processing").unwrap_or(&0);
        if open == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{open} requests still open after {limit:?}: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Request ids booked more than once (must be none).
pub async fn double_bookings(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT tenant_id, request_id FROM bookings
                               GROUP BY tenant_id, request_id HAVING count(*) > 1) d",
    )
    .fetch_one(pool)
    .await
    .expect("count double bookings")
}

/// Sends SIGTERM to a child process.
pub fn terminate(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "SIGTERM delivered");
}

/// Waits for a child to exit by itself, or fails after `limit`.
pub async fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("child status") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "process still running after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits for a child process to exit after SIGKILL.
pub fn kill_hard(child: &mut Child) {
    child.kill().expect("SIGKILL the worker");
    child.wait().expect("reap the worker");
}

/// A real SMTP server process (scripts/smtp_sink.py) that stores each message it accepts
/// as a file, and refuses the recipients it is told to.
pub struct SmtpSink {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl SmtpSink {
    pub fn start(refuse: &[&str]) -> Self {
        Self::start_on(0, refuse, tempfile::tempdir().expect("mail folder"))
    }

    /// Starts on a given port (0 for any), keeping mail in `dir`.
    pub fn start_on(port: u16, refuse: &[&str], dir: tempfile::TempDir) -> Self {
        Self::start_with(port, refuse, &[], dir)
    }

    /// Starts on a given port (0 for any), keeping mail in `dir`, answering 550 to the
    /// `refuse` recipients and 451 (try again later) to the `defer` ones.
    pub fn start_with(port: u16, refuse: &[&str], defer: &[&str], dir: tempfile::TempDir) -> Self {
        use std::io::{BufRead, BufReader};
        let script = std::env::var("SMTP_SINK").unwrap_or_else(|_| {
            concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/smtp_sink.py").to_owned()
        });
        let mut command = Command::new("/usr/bin/python3");
        command
            .arg(script)
            .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--dir"])
            .arg(dir.path());
        for address in refuse {
            command.args(["--refuse", address]);
        }
        for address in defer {
            command.args(["--defer", address]);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .expect("SMTP sink starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("sink output");
        let port = line
            .trim()
            .strip_prefix("LISTENING ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("SMTP sink did not start: {line:?}"));
        Self { child, port, dir }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    pub fn messages(&self) -> Vec<String> {
        read_emails(self.dir.path())
    }

    /// Stops the server and hands back its mail folder.
    pub fn stop(mut self) -> tempfile::TempDir {
        self.child.kill().ok();
        self.child.wait().ok();
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

impl TestSystem {
    /// A fresh database and queue and an api whose configuration `adjust` has changed; no
    /// worker. The api that [`TestSystem::start_without_worker`] starts stays idle beside it.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        let mut system = Self::start_without_worker().await;
        adjust(&mut system.config);
        let state = api::AppState::connect(system.config.clone())
            .await
            .expect("api state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        system.api_url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(api::serve(listener, state, system.shutdown.clone()));
        system
    }
}

/// A client whose connections come from `local`, a loopback address such as `127.0.0.2`:
/// the api on 127.0.0.1 sees it as another peer, so one test can play several clients.
pub fn client_from(local: &str) -> reqwest::Client {
    let address: std::net::IpAddr = local.parse().expect("an IP address");
    reqwest::Client::builder()
        .local_address(address)
        .build()
        .expect("client")
}
