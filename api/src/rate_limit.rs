//! Rate limits by route class, with governor's GCRA limiters: one per class keyed by the
//! client's address ([`ClientIp`]), and a ceiling per tenant on booking creation keyed by
//! the tenant slug the request names, so a tenant flooded from many addresses still cannot
//! fill the queue for everyone.
//!
//! Answers carry the IETF RateLimit fields: `RateLimit-Policy: "bookings";q=10;w=60` names
//! the quota and `RateLimit: "bookings";r=7;t=18` says how much is left and in how many
//! seconds it is whole again. A refusal is a 429 with `Retry-After`.
//!
//! Limiters keep a state per key until swept; idle keys are swept every minute, so a flood
//! of addresses or made-up tenant names cannot grow memory without bound.

use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use common::config::Config;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

use crate::client_ip::ClientIp;
use crate::problem::Problem;
use crate::tenant::TenantClaim;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteClass {
    /// `POST /v1/bookings`; also subject to the tenant's ceiling.
    Bookings,
    /// The tenant's `GET` routes.
    Reads,
    /// `/v1/admin/...`.
    Admin,
}

/// One quota applied per key, with the policy name it is announced under.
pub struct Limiter<K: Hash + Eq + Clone, C: Clock = DefaultClock> {
    policy: &'static str,
    per_minute: u32,
    limiter: RateLimiter<K, DashMapStateStore<K>, C, StateInformationMiddleware>,
}

/// What a limiter said about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Admitted { remaining: u32, reset_seconds: u64 },
    Refused { retry_after_seconds: u64 },
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    fn per_minute(policy: &'static str, per_minute: u32) -> Self {
        Self::with_clock(policy, per_minute, DefaultClock::default())
    }
}

impl<K: Hash + Eq + Clone, C: Clock> Limiter<K, C> {
    /// `per_minute` requests in a burst, refilled evenly over the minute.
    fn with_clock(policy: &'static str, per_minute: u32, clock: C) -> Self {
        let per_minute = per_minute.max(1);
        let quota = Quota::per_minute(NonZeroU32::new(per_minute).expect("at least one"));
        Self {
            policy,
            per_minute,
            limiter: RateLimiter::dashmap_with_clock(quota, clock)
                .with_middleware::<StateInformationMiddleware>(),
        }
    }

    fn check(&self, key: &K) -> Verdict {
        match self.limiter.check_key(key) {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity();
                let quota = state.quota();
                let spent = quota.burst_size().get().saturating_sub(remaining);
                Verdict::Admitted {
                    remaining,
                    reset_seconds: whole_seconds(quota.replenish_interval() * spent),
                }
            }
            Err(not_until) => Verdict::Refused {
                retry_after_seconds: whole_seconds(
                    not_until.wait_time_from(self.limiter.clock().now()),
                ),
            },
        }
    }

    /// Forgets keys that have been idle long enough to be back at a full burst.
    fn sweep(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Keys currently held.
    pub fn len(&self) -> usize {
        self.limiter.len()
    }

    pub fn is_empty(&self) -> bool {
        self.limiter.is_empty()
    }

    /// `RateLimit-Policy` item: `"bookings";q=10;w=60`.
    fn policy_field(&self) -> String {
        format!("\"{}\";q={};w=60", self.policy, self.per_minute)
    }

    /// `RateLimit` item: `"bookings";r=7;t=18`.
    fn state_field(&self, remaining: u32, reset_seconds: u64) -> String {
        format!("\"{}\";r={remaining};t={reset_seconds}", self.policy)
    }

    fn announce(&self, headers: &mut HeaderMap, remaining: u32, reset_seconds: u64) {
        let fields = [
            ("ratelimit-policy", self.policy_field()),
            ("ratelimit", self.state_field(remaining, reset_seconds)),
        ];
        for (name, field) in fields {
            if let Ok(value) = HeaderValue::from_str(&field) {
                headers.insert(name, value);
            }
        }
    }

    /// The 429 for a request this limiter refused.
    fn refusal(&self, retry_after_seconds: u64) -> Response {
        let mut response = Problem::too_many_requests(retry_after_seconds).into_response();
        self.announce(response.headers_mut(), 0, retry_after_seconds);
        response
    }
}

/// Rounds up, so a client that waits as long as told is admitted.
fn whole_seconds(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

/// Every limiter the api applies.
pub struct RateLimits {
    bookings: Limiter<IpAddr>,
    reads: Limiter<IpAddr>,
    admin: Limiter<IpAddr>,
    tenant_bookings: Limiter<String>,
}

impl RateLimits {
    pub fn from_config(config: &Config) -> Arc<Self> {
        Arc::new(Self {
            bookings: Limiter::per_minute("bookings", config.rate_limit_bookings_per_minute),
            reads: Limiter::per_minute("reads", config.rate_limit_reads_per_minute),
            admin: Limiter::per_minute("admin", config.rate_limit_admin_per_minute),
            tenant_bookings: Limiter::per_minute(
                "tenant-bookings",
                config.rate_limit_tenant_bookings_per_minute,
            ),
        })
    }

    fn per_client(&self, class: RouteClass) -> &Limiter<IpAddr> {
        match class {
            RouteClass::Bookings => &self.bookings,
            RouteClass::Reads => &self.reads,
            RouteClass::Admin => &self.admin,
        }
    }

    /// Forgets clients and tenants that have been idle long enough to be back at a full
    /// burst.
    pub fn sweep(&self) {
        for limiter in [&self.bookings, &self.reads, &self.admin] {
            limiter.sweep();
        }
        self.tenant_bookings.sweep();
    }

    /// Sweeps idle keys every minute for as long as the limits exist.
    pub fn spawn_sweeper(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(60));
            loop {
                ticker.tick().await;
                match weak.upgrade() {
                    Some(limits) => limits.sweep(),
                    None => return,
                }
            }
        });
    }
}

/// Middleware: admits the request or answers 429. Admitted answers carry the client's
/// `RateLimit` state; the tenant's ceiling is announced only when it refuses, since how
/// much of it is left says how busy the tenant is.
pub async fn enforce(
    State((limits, class)): State<(Arc<RateLimits>, RouteClass)>,
    request: Request,
    next: Next,
) -> Response {
    let client = request
        .extensions()
        .get::<ClientIp>()
        .copied()
        .unwrap_or(ClientIp(IpAddr::V4(Ipv4Addr::UNSPECIFIED)));
    let limiter = limits.per_client(class);

    let (remaining, reset_seconds) = match limiter.check(&client.rate_limit_key()) {
        Verdict::Admitted {
            remaining,
            reset_seconds,
        } => (remaining, reset_seconds),
        Verdict::Refused {
            retry_after_seconds,
        } => {
            refused(class, limiter.policy, client);
            return limiter.refusal(retry_after_seconds);
        }
    };

    if class == RouteClass::Bookings
        && let Some(slug) = claimed_tenant(&request)
        && let Verdict::Refused {
            retry_after_seconds,
        } = limits.tenant_bookings.check(slug)
    {
        refused(class, limits.tenant_bookings.policy, client);
        return limits.tenant_bookings.refusal(retry_after_seconds);
    }

    let mut response = next.run(request).await;
    limiter.announce(response.headers_mut(), remaining, reset_seconds);
    response
}

/// Middleware for the whole service: the admin limit on every `/v1/admin/...` path, applied
/// before credentials are checked so that guessing them is limited too.
pub async fn enforce_on_admin_paths(
    State(limits): State<Arc<RateLimits>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if path == "/v1/admin" || path.starts_with("/v1/admin/") {
        enforce(State((limits, RouteClass::Admin)), request, next).await
    } else {
        next.run(request).await
    }
}

/// The tenant slug the request names, if it could name a tenant at all: requests without
/// one, with conflicting ones, or with one longer than any slug are refused by tenant
/// resolution and create nothing.
fn claimed_tenant(request: &Request) -> Option<&String> {
    match request.extensions().get::<TenantClaim>()? {
        TenantClaim::Slug(slug) if slug.len() <= 63 => Some(slug),
        _ => None,
    }
}

fn refused(class: RouteClass, policy: &'static str, client: ClientIp) {
    // At debug level only: a flood would otherwise flood the logs too, and addresses stay
    // out of the info-level logs.
    tracing::debug!(
        client.address = %client.0,
        rate_limit.policy = policy,
        "request refused by rate limit"
    );
    if class == RouteClass::Bookings {
        metrics::counter!(
            "booking_requests_refused_total",
            "reason" => "rate_limited",
            "policy" => policy,
        )
        .increment(1);
    }
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;

    fn address(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
    }

    #[test]
    fn idle_keys_are_swept_so_memory_stays_bounded() {
        let clock = FakeRelativeClock::default();
        let limiter = Limiter::with_clock("reads", 60, clock.clone());

        for n in 0..10_000 {
            assert!(matches!(
                limiter.check(&address(n)),
                Verdict::Admitted { .. }
            ));
        }
        assert_eq!(limiter.len(), 10_000);

        // Keys in use survive a sweep.
        limiter.sweep();
        assert_eq!(limiter.len(), 10_000);

        // A minute on, only the client still sending is kept.
        clock.advance(Duration::from_secs(61));
        let active = address(20_000);
        limiter.check(&active);
        limiter.sweep();
        assert_eq!(limiter.len(), 1);

        clock.advance(Duration::from_secs(61));
        limiter.sweep();
        assert!(limiter.is_empty());
    }

    #[test]
    fn a_burst_is_admitted_then_refused_until_the_next_refill() {
        let clock = FakeRelativeClock::default();
        let limiter = Limiter::with_clock("bookings", 3, clock.clone());
        let key = address(1);

        let remaining: Vec<Verdict> = (0..3).map(|_| limiter.check(&key)).collect();
        assert_eq!(
            remaining,
            [
                Verdict::Admitted {
                    remaining: 2,
                    reset_seconds: 20
                },
                Verdict::Admitted {
                    remaining: 1,
                    reset_seconds: 40
                },
                Verdict::Admitted {
                    remaining: 0,
                    reset_seconds: 60
                },
            ]
        );
        assert_eq!(
            limiter.check(&key),
            Verdict::Refused {
                retry_after_seconds: 20
            }
        );
        // Another key has its own budget.
        assert!(matches!(
            limiter.check(&address(2)),
            Verdict::Admitted { remaining: 2, .. }
        ));

        clock.advance(Duration::from_millis(19_500));
        assert_eq!(
            limiter.check(&key),
            Verdict::Refused {
                retry_after_seconds: 1
            }
        );
        clock.advance(Duration::from_millis(500));
        assert!(matches!(limiter.check(&key), Verdict::Admitted { .. }));
    }

    #[test]
    fn fields_follow_the_ietf_ratelimit_headers() {
        let limiter: Limiter<IpAddr> = Limiter::per_minute("tenant-bookings", 600);
        assert_eq!(limiter.policy_field(), "\"tenant-bookings\";q=600;w=60");
        assert_eq!(limiter.state_field(0, 7), "\"tenant-bookings\";r=0;t=7");
    }
}
