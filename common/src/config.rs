//! Configuration from environment variables. Each variable is read here and nowhere else;
//! the README lists them with their defaults.

use std::env;
use std::net::{IpAddr, SocketAddr};
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
    /// Booking creations per minute for one tenant, from all clients together.
    pub rate_limit_tenant_bookings_per_minute: u32,
    /// Addresses and CIDR ranges of the proxies whose `X-Forwarded-For` is believed. Each
    /// entry is checked here so a typo stops the process at start; the api parses them.
    pub trusted_proxies: Vec<String>,
    /// A connection that has not sent complete request headers within this is closed.
    pub header_read_timeout: Duration,
    /// Client ranges that may read the api's `/metrics` (it names every tenant).
    pub metrics_allowed: Vec<String>,
    /// Exact origins (`https://app.example.com`) that browsers may call the api from; empty
    /// means no CORS headers at all.
    pub cors_origins: Vec<String>,
    /// Host names the api answers for: `api.example.com`, or `.example.com` for any of its
    /// subdomains. Lowercase, without ports.
    pub allowed_hosts: Vec<String>,
    pub public_base_url: Option<String>,
    /// Unique per process, so a restarted worker never collides with its own ghost.
    pub worker_name: String,
    pub worker_concurrency: usize,
    /// A request whose decision crashed or errored this many times is marked failed.
    pub max_decision_attempts: i32,
    /// A message refused with temporary (4xx) replies this often is dead-lettered.
    pub notification_max_attempts: i32,
    /// A message that could not reach the SMTP server this often is dead-lettered.
    pub notification_max_connection_attempts: i32,
    pub heartbeat_interval: Duration,
    /// The key customers' manage links are derived from (see [`crate::manage`]).
    pub manage_link_secret: String,
    /// The api refuses new booking requests (503) while this many are open in all.
    pub queue_max_depth: i64,
    /// ... or while this many are open for the requesting tenant, so one tenant's flood
    /// fills its own share and not everyone's.
    pub queue_max_tenant_depth: i64,
    /// How long an `Idempotency-Key` is remembered; afterwards it may name a new request.
    pub idempotency_key_ttl: Duration,
    /// Fault drill hook: the worker aborts when deciding a request whose notes contain this.
    /// Refused in production.
    pub fault_crash_on_notes: Option<String>,
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
        let smtp_url = env::var("SMTP_URL").ok().filter(|s| !s.is_empty());
        if production {
            check_production_secrets(&database_url, &redis_url, smtp_url.as_deref())?;
        }
        let manage_link_secret = var_or("MANAGE_LINK_SECRET", DEV_MANAGE_LINK_SECRET);
        if production {
            check_manage_link_secret(&manage_link_secret)?;
        }
        let (bookings, reads, admin, tenant_bookings) = if production {
            (10, 100, 50, 600)
        } else {
            (600, 6000, 3000, 6000)
        };
        let base_domain = var_or("BASE_DOMAIN", "localhost").to_ascii_lowercase();
        let allowed_hosts = allowed_hosts(
            env::var("ALLOWED_HOSTS").ok().as_deref(),
            production,
            &base_domain,
        )?;

        let queue_max_depth: i64 = parse_var("QUEUE_MAX_DEPTH", "100000")?;
        let queue_max_tenant_depth: i64 = parse_var("QUEUE_MAX_TENANT_DEPTH", "20000")?;
        check_queue_bounds(queue_max_depth, queue_max_tenant_depth)?;

        Ok(Self {
            app_env,
            database_url,
            redis_url,
            queue_name: var_or("QUEUE_NAME", "booking-requests"),
            api_addr: parse_var("API_ADDR", "127.0.0.1:8080")?,
            worker_metrics_addr: parse_var("WORKER_METRICS_ADDR", "127.0.0.1:9091")?,
            base_domain,
            smtp_url,
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
            rate_limit_tenant_bookings_per_minute: parse_var(
                "RATE_LIMIT_TENANT_BOOKINGS_PER_MINUTE",
                &tenant_bookings.to_string(),
            )?,
            trusted_proxies: trusted_proxies(env::var("TRUSTED_PROXIES").ok().as_deref())?,
            header_read_timeout: Duration::from_secs(parse_var(
                "HEADER_READ_TIMEOUT_SECONDS",
                "10",
            )?),
            metrics_allowed: trusted_proxies(Some(&var_or(
                "METRICS_ALLOWED",
                "127.0.0.0/8,::1,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7",
            )))?,
            cors_origins: cors_origins(env::var("CORS_ORIGINS").ok().as_deref())?,
            allowed_hosts,
            public_base_url: env::var("PUBLIC_BASE_URL").ok().filter(|s| !s.is_empty()),
            worker_name: env::var("WORKER_NAME")
                .unwrap_or_else(|_| format!("worker-{}", uuid::Uuid::now_v7().simple())),
            worker_concurrency: parse_var("WORKER_CONCURRENCY", "64")?,
            max_decision_attempts: parse_var("MAX_DECISION_ATTEMPTS", "5")?,
            notification_max_attempts: parse_var("NOTIFICATION_MAX_ATTEMPTS", "8")?,
            notification_max_connection_attempts: parse_var(
                "NOTIFICATION_MAX_CONNECTION_ATTEMPTS",
                "24",
            )?,
            heartbeat_interval: Duration::from_secs(parse_var("WORKER_HEARTBEAT_SECONDS", "2")?),
            manage_link_secret,
            queue_max_depth,
            queue_max_tenant_depth,
            idempotency_key_ttl: Duration::from_secs(
                parse_var::<u64>("IDEMPOTENCY_KEY_TTL_HOURS", "24")? * 3600,
            ),
            fault_crash_on_notes: fault_hook(
                env::var("WORKER_FAULT_CRASH_ON_NOTES").ok(),
                production,
            )?,
        })
    }
}

/// One tenant's share of the queue must leave room for the others: with a tenant bound at or
/// above the global one, a single flooding tenant could fill the whole queue.
pub fn check_queue_bounds(total: i64, per_tenant: i64) -> anyhow::Result<()> {
    if total < 1 || per_tenant < 1 {
        bail!("QUEUE_MAX_DEPTH and QUEUE_MAX_TENANT_DEPTH must be at least 1");
    }
    if per_tenant >= total {
        bail!(
            "QUEUE_MAX_TENANT_DEPTH ({per_tenant}) must be below QUEUE_MAX_DEPTH ({total}), or one \
             tenant's flood could shut every other tenant out"
        );
    }
    Ok(())
}

const DEV_MANAGE_LINK_SECRET: &str = "development-only-manage-link-secret";

/// Manage links are as safe as their key: in production it must be set, long, and not the
/// development default.
pub fn check_manage_link_secret(secret: &str) -> anyhow::Result<()> {
    if secret == DEV_MANAGE_LINK_SECRET || secret.len() < 32 {
        bail!(
            "MANAGE_LINK_SECRET must be set to a random secret of at least 32 characters in production"
        );
    }
    Ok(())
}

/// `WORKER_FAULT_CRASH_ON_NOTES`: a drill hook that crashes the worker on purpose, so it is
/// never accepted in production.
fn fault_hook(value: Option<String>, production: bool) -> anyhow::Result<Option<String>> {
    let marker = value.filter(|m| !m.is_empty());
    if production && marker.is_some() {
        bail!("WORKER_FAULT_CRASH_ON_NOTES is a fault-drill hook and is refused in production");
    }
    Ok(marker)
}

/// Passwords that ship with this project or with the servers' packages: never in production.
const DEFAULT_PASSWORDS: [&str; 6] = [
    "booking", "postgres", "password", "secret", "changeme", "redis",
];

/// Production refuses to start on a development setup: default or missing passwords for
/// PostgreSQL and Redis, PostgreSQL without TLS, or no SMTP server (messages would only be
/// written to a local folder).
pub fn check_production_secrets(
    database_url: &str,
    redis_url: &str,
    smtp_url: Option<&str>,
) -> anyhow::Result<()> {
    let database = url::Url::parse(database_url).context("DATABASE_URL is not a URL")?;
    check_password("DATABASE_URL", &database)?;
    let ssl_mode = database
        .query_pairs()
        .find(|(key, _)| key == "sslmode")
        .map(|(_, value)| value.into_owned());
    if !matches!(
        ssl_mode.as_deref(),
        Some("require" | "verify-ca" | "verify-full")
    ) {
        bail!("DATABASE_URL must require TLS in production: add sslmode=verify-full (or require)");
    }
    let redis = url::Url::parse(redis_url).context("REDIS_URL is not a URL")?;
    check_password("REDIS_URL", &redis)?;
    if smtp_url.is_none() {
        bail!("SMTP_URL must be set in production; without it messages only reach a local folder");
    }
    Ok(())
}

fn check_password(name: &str, url: &url::Url) -> anyhow::Result<()> {
    match url.password() {
        None | Some("") => bail!("{name} must carry a password in production"),
        Some(password) if DEFAULT_PASSWORDS.contains(&password.to_ascii_lowercase().as_str()) => {
            bail!("{name} uses a default password; set a real secret for production")
        }
        Some(_) => Ok(()),
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

/// The comma-separated items of a list variable, trimmed, without empty ones.
fn list_items(value: Option<&str>) -> Vec<String> {
    value
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `TRUSTED_PROXIES`: addresses (`10.0.0.7`) and CIDR ranges (`10.0.0.0/8`, `fd00::/8`).
fn trusted_proxies(value: Option<&str>) -> anyhow::Result<Vec<String>> {
    let entries = list_items(value);
    for entry in &entries {
        if !is_address_or_range(entry) {
            bail!("TRUSTED_PROXIES entry {entry:?} is not an IP address or CIDR range");
        }
    }
    Ok(entries)
}

fn is_address_or_range(entry: &str) -> bool {
    let Some((address, prefix)) = entry.split_once('/') else {
        return entry.parse::<IpAddr>().is_ok();
    };
    let max = match address.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => 32,
        Ok(IpAddr::V6(_)) => 128,
        Err(_) => return false,
    };
    (1..=3).contains(&prefix.len())
        && prefix.bytes().all(|b| b.is_ascii_digit())
        && prefix.parse::<u32>().is_ok_and(|length| length <= max)
}

/// `CORS_ORIGINS`: exact origins, `scheme://host[:port]`, compared as browsers send them.
fn cors_origins(value: Option<&str>) -> anyhow::Result<Vec<String>> {
    let origins: Vec<String> = list_items(value)
        .into_iter()
        .map(|origin| origin.trim_end_matches('/').to_ascii_lowercase())
        .collect();
    for origin in &origins {
        let rest = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"));
        let valid = rest.is_some_and(|authority| {
            !authority.is_empty()
                && authority
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        });
        if !valid {
            bail!("CORS_ORIGINS entry {origin:?} is not an origin like https://app.example.com");
        }
    }
    Ok(origins)
}

/// `ALLOWED_HOSTS`: required in production; in development, the loopback names and the
/// base domain with its subdomains.
fn allowed_hosts(
    value: Option<&str>,
    production: bool,
    base_domain: &str,
) -> anyhow::Result<Vec<String>> {
    let mut hosts: Vec<String> = list_items(value)
        .into_iter()
        .map(|host| host.trim_end_matches('.').to_ascii_lowercase())
        .collect();
    if hosts.is_empty() {
        if production {
            bail!("ALLOWED_HOSTS must be set when APP_ENV=production");
        }
        hosts = ["localhost", ".localhost", "127.0.0.1", "[::1]"]
            .map(str::to_owned)
            .to_vec();
        hosts.push(base_domain.to_owned());
        hosts.push(format!(".{base_domain}"));
    }
    for host in &hosts {
        let name = host.strip_prefix('.').unwrap_or(host);
        let bracketed_ipv6 = name
            .strip_prefix('[')
            .and_then(|inner| inner.strip_suffix(']'))
            .is_some_and(|inner| inner.parse::<std::net::Ipv6Addr>().is_ok());
        let plain_name = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !(bracketed_ipv6 || plain_name) {
            bail!(
                "ALLOWED_HOSTS entry {host:?} is not a host name (`api.example.com`, \
                 `.example.com` for its subdomains; no port)"
            );
        }
    }
    Ok(hosts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenants_share_of_the_queue_must_be_below_the_whole() {
        assert!(check_queue_bounds(100_000, 20_000).is_ok());
        assert!(check_queue_bounds(300, 400).is_err());
        assert!(check_queue_bounds(400, 400).is_err());
        assert!(check_queue_bounds(0, 0).is_err());
    }

    #[test]
    fn production_refuses_a_default_or_short_manage_link_secret() {
        assert!(check_manage_link_secret(DEV_MANAGE_LINK_SECRET).is_err());
        assert!(check_manage_link_secret("too-short").is_err());
        assert!(
            check_manage_link_secret("a-real-random-secret-of-48-characters-0123456789").is_ok()
        );
    }

    #[test]
    fn production_refuses_default_secrets_and_plain_database_connections() {
        let good_db = "postgres://app:s3cret-Long@db.internal/booking?sslmode=verify-full";
        let good_redis = "redis://:an0ther-secret@redis.internal:6379";
        let smtp = Some("smtps://mailer:pw@smtp.example.com");
        assert!(check_production_secrets(good_db, good_redis, smtp).is_ok());

        let refused = |db: &str, redis: &str, smtp: Option<&str>| {
            check_production_secrets(db, redis, smtp)
                .unwrap_err()
                .to_string()
        };
        assert!(refused(super::DEV_DATABASE_URL, good_redis, smtp).contains("DATABASE_URL"));
        let no_tls = "postgres://app:s3cret-Long@db.internal/booking";
        assert!(refused(no_tls, good_redis, smtp).contains("sslmode"));
        let weak_tls = "postgres://app:s3cret-Long@db.internal/booking?sslmode=prefer";
        assert!(refused(weak_tls, good_redis, smtp).contains("sslmode"));
        let no_password = "postgres://app@db.internal/booking?sslmode=require";
        assert!(refused(no_password, good_redis, smtp).contains("password"));
        assert!(refused(good_db, super::DEV_REDIS_URL, smtp).contains("REDIS_URL"));
        assert!(refused(good_db, "redis://:redis@r", smtp).contains("default password"));
        assert!(refused(good_db, good_redis, None).contains("SMTP_URL"));
    }

    #[test]
    fn the_crash_drill_hook_is_refused_in_production() {
        let marker = || Some("CRASH-ME".to_owned());
        assert!(fault_hook(marker(), true).is_err());
        assert_eq!(fault_hook(marker(), false).unwrap(), marker());
        assert_eq!(fault_hook(Some(String::new()), true).unwrap(), None);
        assert_eq!(fault_hook(None, true).unwrap(), None);
    }

    #[test]
    fn production_requires_allowed_hosts() {
        let refused = allowed_hosts(None, true, "bookings.example").unwrap_err();
        assert!(refused.to_string().contains("ALLOWED_HOSTS"));
        assert!(allowed_hosts(Some(" , "), true, "bookings.example").is_err());
        assert_eq!(
            allowed_hosts(Some("API.example.com, .example.com."), true, "x").unwrap(),
            ["api.example.com", ".example.com"]
        );
    }

    #[test]
    fn development_allows_loopback_and_the_base_domain() {
        let hosts = allowed_hosts(None, false, "bookings.test").unwrap();
        for host in [
            "localhost",
            ".localhost",
            "127.0.0.1",
            "[::1]",
            "bookings.test",
            ".bookings.test",
        ] {
            assert!(hosts.iter().any(|h| h == host), "{host} missing");
        }
    }

    #[test]
    fn malformed_host_entries_are_refused() {
        for bad in ["api.example.com:8080", "*.example.com", "a/b", "[::1", "."] {
            assert!(allowed_hosts(Some(bad), false, "x").is_err(), "{bad}");
        }
    }

    #[test]
    fn trusted_proxies_are_addresses_or_ranges() {
        assert_eq!(
            trusted_proxies(Some("10.0.0.0/8, 192.168.1.7,fd00::/8")).unwrap(),
            ["10.0.0.0/8", "192.168.1.7", "fd00::/8"]
        );
        assert!(trusted_proxies(None).unwrap().is_empty());
        for bad in [
            "10.0.0.0/33",
            "10.0.0.0/",
            "10.0.0/8",
            "proxy.local",
            "::/129",
            "1.2.3.4/+8",
        ] {
            assert!(trusted_proxies(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn cors_origins_are_exact_origins() {
        assert_eq!(
            cors_origins(Some("https://App.example.com/, http://localhost:3000")).unwrap(),
            ["https://app.example.com", "http://localhost:3000"]
        );
        for bad in [
            "*",
            "app.example.com",
            "https://*.example.com",
            "https://a.com/path",
            "null",
        ] {
            assert!(cors_origins(Some(bad)).is_err(), "{bad}");
        }
    }
}
