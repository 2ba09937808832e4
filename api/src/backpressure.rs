//! Backpressure: the api refuses new booking requests (503 with `Retry-After`) while too
//! many are waiting to be decided, in all (`QUEUE_MAX_DEPTH`) or for the requesting tenant
//! (`QUEUE_MAX_TENANT_DEPTH`). The per-tenant bound is what keeps a flooding tenant from
//! filling the whole queue and locking the others out.
//!
//! The depth is the number of open rows in `booking_requests` (the partial index
//! `booking_requests_open` holds exactly those), the durable record the worker decides
//! from, rather than the Redis list, which only carries doorbells. Counting on every POST
//! would cost a scan per request under exactly the load that needs shedding, so each api
//! process remembers a count for [`FRESH_FOR`] and adds what it accepted since. The bound
//! is therefore soft across processes: several apis together may overshoot it by what the
//! others accepted within that window.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use uuid::Uuid;

use crate::problem::Problem;

// Limitation: the bound is soft across api processes (each adds only what it accepted
// itself between counts); a shared counter, say a Redis INCR/DECR kept by api and worker,
// would make it exact at the price of one more round trip per request.

/// How long a counted depth is trusted.
const FRESH_FOR: Duration = Duration::from_millis(250);
/// What a refused client is told to wait.
const RETRY_AFTER_SECONDS: u64 = 2;

/// Counts kept per scope: `None` for every tenant together, `Some(id)` for one tenant.
#[derive(Default)]
pub struct QueueDepth {
    counted: Mutex<HashMap<Option<Uuid>, (Instant, i64)>>,
}

impl QueueDepth {
    /// Refuses with 503 when either bound is reached.
    pub async fn admit(
        &self,
        pool: &PgPool,
        tenant_id: Uuid,
        max_total: i64,
        max_tenant: i64,
    ) -> Result<(), Problem> {
        for (scope, max) in [(None, max_total), (Some(tenant_id), max_tenant)] {
            let depth = match self.cached(scope) {
                Some(depth) => depth,
                None => self.count(pool, scope).await?,
            };
            if depth >= max {
                let reason = if scope.is_some() {
                    "tenant_queue_full"
                } else {
                    "queue_full"
                };
                metrics::counter!("booking_requests_refused_total", "reason" => reason)
                    .increment(1);
                return Err(Problem::queue_full(RETRY_AFTER_SECONDS));
            }
        }
        Ok(())
    }

    /// Counts a request this api just accepted, until the next count includes it.
    pub fn accepted(&self, tenant_id: Uuid) {
        let mut counted = self.counted.lock().expect("queue depth poisoned");
        for scope in [None, Some(tenant_id)] {
            if let Some((_, depth)) = counted.get_mut(&scope) {
                *depth += 1;
            }
        }
    }

    fn cached(&self, scope: Option<Uuid>) -> Option<i64> {
        let counted = self.counted.lock().expect("queue depth poisoned");
        counted
            .get(&scope)
            .filter(|(at, _)| at.elapsed() < FRESH_FOR)
            .map(|(_, depth)| *depth)
    }

    async fn count(&self, pool: &PgPool, scope: Option<Uuid>) -> sqlx::Result<i64> {
        let mut tx = match scope {
            Some(tenant_id) => common::db::tenant_tx(pool, tenant_id).await?,
            None => common::db::system_tx(pool).await?,
        };
        let depth: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM booking_requests
             WHERE status IN ('queued', 'processing') AND ($1::uuid IS NULL OR tenant_id = $1)",
        )
        .bind(scope)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut counted = self.counted.lock().expect("queue depth poisoned");
        counted.insert(scope, (Instant::now(), depth));
        // Tenants that stopped booking are forgotten rather than kept forever.
        counted.retain(|_, (at, _)| at.elapsed() < FRESH_FOR * 40);
        Ok(depth)
    }
}
