//! Per-client rate limits by route class, with governor's GCRA limiter keyed by address.
//!
//! The client is the socket peer. Idle keys are swept every minute so a flood of
//! addresses cannot grow memory without bound.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::problem::Problem;

#[derive(Debug, Clone, Copy)]
pub enum RouteClass {
    Bookings,
    Reads,
}

impl RouteClass {
    fn name(self) -> &'static str {
        match self {
            Self::Bookings => "bookings",
            Self::Reads => "reads",
        }
    }
}

pub struct Limiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    per_minute: u32,
}

pub struct RateLimits {
    bookings: Limiter,
    reads: Limiter,
}

impl Limiter {
    fn per_minute(per_minute: u32) -> Self {
        let per_minute = per_minute.max(1);
        let quota = Quota::per_minute(NonZeroU32::new(per_minute).expect("at least one"));
        Self {
            limiter: RateLimiter::keyed(quota),
            per_minute,
        }
    }
}

impl RateLimits {
    pub fn new(bookings_per_minute: u32, reads_per_minute: u32) -> Arc<Self> {
        Arc::new(Self {
            bookings: Limiter::per_minute(bookings_per_minute),
            reads: Limiter::per_minute(reads_per_minute),
        })
    }

    fn limiter(&self, class: RouteClass) -> &Limiter {
        match class {
            RouteClass::Bookings => &self.bookings,
            RouteClass::Reads => &self.reads,
        }
    }

    /// Forgets clients that have been idle long enough to be back at a full burst.
    pub fn sweep(&self) {
        for limiter in [&self.bookings, &self.reads] {
            limiter.limiter.retain_recent();
            limiter.limiter.shrink_to_fit();
        }
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

/// Middleware: admits the request or answers 429 with `Retry-After` and `RateLimit`
/// headers.
pub async fn enforce(
    State((limits, class)): State<(Arc<RateLimits>, RouteClass)>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let limiter = limits.limiter(class);
    let policy = format!("\"{}\";q={};w=60", class.name(), limiter.per_minute);
    match limiter.limiter.check_key(&peer.ip()) {
        Ok(()) => next.run(request).await,
        Err(not_until) => {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            metrics::counter!("booking_requests_refused_total", "reason" => "rate_limited")
                .increment(1);
            let mut response = Problem::too_many_requests(seconds).into_response();
            let headers = response.headers_mut();
            if let Ok(value) = HeaderValue::from_str(&policy) {
                headers.insert("ratelimit-policy", value);
            }
            let state = format!("\"{}\";r=0;t={seconds}", class.name());
            if let Ok(value) = HeaderValue::from_str(&state) {
                headers.insert("ratelimit", value);
            }
            response
        }
    }
}
