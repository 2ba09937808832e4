//! Configuration from environment variables. Each variable is read here and nowhere else;
//! the README lists them with their defaults.

use std::env;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppEnv {
    Development,
    Production,
}

/// Settings both binaries need.
#[derive(Debug, Clone)]
pub struct Config {
    pub app_env: AppEnv,
    pub database_url: String,
    pub redis_url: String,
    /// Name of the Redis queue the api fills and the worker drains.
    pub queue_name: String,
    pub api_addr: SocketAddr,
    pub worker_metrics_addr: SocketAddr,
    pub base_domain: String,
    pub smtp_url: Option<String>,
    pub smtp_from: String,
    pub outbox_dir: PathBuf,
    pub rate_limit_bookings_per_minute: u32,
    pub rate_limit_reads_per_minute: u32,
    pub rate_limit_admin_per_minute: u32,
    pub public_base_url: Option<String>,
    /// Unique per process, so a restarted worker never collides with its own ghost.
    pub worker_name: String,
    pub worker_concurrency: usize,
    /// A request whose decision crashed or errored this many times is marked failed.
    pub max_decision_attempts: i32,
    pub notification_max_attempts: i32,
    pub heartbeat_interval: Duration,
}

const DEV_DATABASE_URL: &str = "postgres://booking:booking@127.0.0.1:55432/booking";
const DEV_REDIS_URL: &str = "redis://127.0.0.1:56379";

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        let app_env = match var_or("APP_ENV", "development").as_str() {
            "development" => AppEnv::Development,
            "production" => AppEnv::Production,
            other => bail!("APP_ENV must be development or production, not {other:?}"),
        };
        let production = app_env == AppEnv::Production;
        let database_url = required_in_production("DATABASE_URL", DEV_DATABASE_URL, production)?;
        let redis_url = required_in_production("REDIS_URL", DEV_REDIS_URL, production)?;
        let (bookings, reads, admin) = if production {
            (10, 100, 50)
        } else {
            (600, 6000, 3000)
        };

        Ok(Self {
            app_env,
            database_url,
            redis_url,
            queue_name: var_or("QUEUE_NAME", "booking-requests"),
            api_addr: parse_var("API_ADDR", "127.0.0.1:8080")?,
            worker_metrics_addr: parse_var("WORKER_METRICS_ADDR", "127.0.0.1:9091")?,
            base_domain: var_or("BASE_DOMAIN", "localhost").to_ascii_lowercase(),
            smtp_url: env::var("SMTP_URL").ok().filter(|s| !s.is_empty()),
            smtp_from: var_or("SMTP_FROM", "Bookings <bookings@localhost>"),
            outbox_dir: PathBuf::from(var_or("OUTBOX_DIR", ".data/outbox")),
            rate_limit_bookings_per_minute: parse_var(
                "RATE_LIMIT_BOOKINGS_PER_MINUTE",
                &bookings.to_string(),
            )?,
            rate_limit_reads_per_minute: parse_var(
                "RATE_LIMIT_READS_PER_MINUTE",
                &reads.to_string(),
            )?,
            rate_limit_admin_per_minute: parse_var(
                "RATE_LIMIT_ADMIN_PER_MINUTE",
                &admin.to_string(),
            )?,
            public_base_url: env::var("PUBLIC_BASE_URL").ok().filter(|s| !s.is_empty()),
            worker_name: env::var("WORKER_NAME")
                .unwrap_or_else(|_| format!("worker-{}", uuid::Uuid::now_v7().simple())),
            worker_concurrency: parse_var("WORKER_CONCURRENCY", "64")?,
            max_decision_attempts: parse_var("MAX_DECISION_ATTEMPTS", "5")?,
            notification_max_attempts: parse_var("NOTIFICATION_MAX_ATTEMPTS", "8")?,
            heartbeat_interval: Duration::from_secs(parse_var("WORKER_HEARTBEAT_SECONDS", "2")?),
        })
    }
}

fn var_or(name: &str, default: &str) -> String {
    env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn parse_var<T>(name: &str, default: &str) -> anyhow::Result<T>
where
    T: std::str::FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    var_or(name, default)
        .parse()
        .with_context(|| format!("{name} is not valid"))
}

fn required_in_production(name: &str, default: &str, production: bool) -> anyhow::Result<String> {
    match env::var(name) {
        Ok(value) if !value.is_empty() => Ok(value),
        _ if production => bail!("{name} must be set when APP_ENV=production"),
        _ => Ok(default.to_owned()),
    }
}
