//! The sweeper: every second, rings the actor of each tenant that has a request accepted
//! more than a moment ago and still open, whatever happened to its job, and updates the
//! backlog gauges. With the queue's jobs acknowledged as soon as the actor is rung, this is
//! what guarantees a decision when a worker dies mid-drain, Redis loses a job, or the
//! database was away: ringing an actor that is already draining costs nothing (rings
//! coalesce), so the threshold can be short.

use std::time::Duration;

use common::jobs::BookingQueue;
use redis::aio::ConnectionManager;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::actors::TenantActors;

/// A request open for longer than this gets its tenant's actor rung by the sweeper.
pub const STALE_AFTER: Duration = Duration::from_secs(2);

/// Finished jobs stay in Redis this long (for inspection), then are removed.
const KEEP_FINISHED_JOBS: Duration = Duration::from_secs(3600);
/// Finished jobs are removed every this many sweeps.
const VACUUM_EVERY_SWEEPS: u64 = 60;

pub async fn run(
    pool: PgPool,
    mut redis: ConnectionManager,
    mut queue: BookingQueue,
    actors: TenantActors,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(every);
    for sweeps in 0u64.. {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if sweeps % VACUUM_EVERY_SWEEPS == VACUUM_EVERY_SWEEPS - 1 {
            vacuum(&mut queue).await;
        }
        if let Err(err) = sweep(&pool, &actors, STALE_AFTER).await {
            tracing::warn!(error = %err, "sweep failed");
        }
        update_gauges(&pool, &mut redis, &queue).await;
    }
}

/// Rings the actor of every tenant with a request open for longer than `older_than`;
/// returns how many tenants. With a zero age it is the recovery pass a worker makes when it
/// starts: whatever a dead worker left open is taken up at once.
pub async fn sweep(
    pool: &PgPool,
    actors: &TenantActors,
    older_than: Duration,
) -> sqlx::Result<usize> {
    let mut tx = common::db::system_tx(pool).await?;
    // The partial index booking_requests_open holds exactly the open requests.
    let tenants: Vec<Uuid> = sqlx::query_scalar(
        "SELECT DISTINCT tenant_id FROM booking_requests
         WHERE status IN ('queued', 'processing')
           AND accepted_at < now() - make_interval(secs => $1)",
    )
    .bind(older_than.as_secs_f64())
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    for tenant_id in &tenants {
        if actors.wake(*tenant_id).is_err() {
            break;
        }
    }
    Ok(tenants.len())
}

/// Removes jobs that finished long ago, so Redis does not keep every job ever queued.
async fn vacuum(queue: &mut BookingQueue) {
    use apalis_core::backend::Vacuum;
    match queue.vacuum_before(KEEP_FINISHED_JOBS).await {
        Ok(removed) => tracing::debug!(removed, "finished jobs removed from Redis"),
        Err(err) => tracing::warn!(error = %err, "could not remove finished jobs from Redis"),
    }
}

async fn update_gauges(pool: &PgPool, redis: &mut ConnectionManager, queue: &BookingQueue) {
    let Ok(mut tx) = common::db::system_tx(pool).await else {
        return;
    };
    let pending: Result<i64, _> = sqlx::query_scalar(
        "SELECT count(*) FROM booking_requests WHERE status IN ('queued', 'processing')",
    )
    .fetch_one(&mut *tx)
    .await;
    if let Ok(pending) = pending {
        metrics::gauge!("booking_requests_pending").set(pending as f64);
    }
    let outbox: Result<(i64, i64), _> = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'pending'), count(*) FILTER (WHERE status = 'dead')
         FROM outbox WHERE status <> 'sent'",
    )
    .fetch_one(&mut *tx)
    .await;
    if let Ok((backlog, dead)) = outbox {
        metrics::gauge!("notification_outbox_backlog").set(backlog as f64);
        metrics::gauge!("notification_outbox_dead").set(dead as f64);
    }
    let depth: Result<i64, _> = redis::cmd("LLEN")
        .arg(queue.get_config().active_jobs_list())
        .query_async(redis)
        .await;
    if let Ok(depth) = depth {
        metrics::gauge!("booking_queue_depth").set(depth as f64);
    }
}
