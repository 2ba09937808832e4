//! The apalis consumer. A job is a doorbell: it names a booking request, whose durable
//! record is its row in PostgreSQL. Handling a job rings the tenant's actor and returns at
//! once, so the next job, whichever tenant it belongs to, is read within milliseconds.
//!
//! Why not wait for the decision: Redis holds one FIFO queue for every tenant. A handler
//! that waited for its tenant's drain would let one tenant's flood occupy every handler
//! slot, and another tenant's job would sit behind the whole flood. Ringing and returning
//! lets each tenant's actor decide in parallel with the others, so a flood delays only the
//! flooding tenant.
//!
//! What makes acknowledging before the decision safe: the request row is committed before
//! the job is queued; a worker that dies after acknowledging leaves the row open, and the
//! startup recovery pass (on any worker that starts) and the sweeper (every second, on
//! every worker) ring the actor of every tenant with an open request. No accepted request
//! depends on the job surviving.

use std::time::Duration;

use apalis::prelude::*;
use common::config::Config;
use common::jobs::{BookingJob, BookingQueue};
use tokio_util::sync::CancellationToken;

use crate::actors::TenantActors;

/// A job fails only while the worker is shutting down (the actors are stopped); apalis then
/// reschedules it. Past this many tries it is aborted; the sweeper still finds the request.
const MAX_JOB_ATTEMPTS: usize = 10;

/// A consumer that ran at least this long before it stopped is restarted after the shortest
/// pause again: its failure is a new one, not the same one repeating.
const HEALTHY_RUN: Duration = Duration::from_secs(30);
/// Longest pause between consumer restarts (Redis down for long, say).
const MAX_RESTART_PAUSE: Duration = Duration::from_secs(5);
const MIN_RESTART_PAUSE: Duration = Duration::from_millis(250);

/// How often an idle consumer asks Redis for new jobs. Without it, an idle consumer only
/// looks again at its next heartbeat, which would add up to a heartbeat to the latency of
/// the first booking after a quiet spell.
const IDLE_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Consumes the queue until `shutdown`. When the consumer stops on an error (Redis gone,
/// say), it is started again after a pause that grows to half a minute, under a new name.
pub async fn run(
    queue: BookingQueue,
    actors: TenantActors,
    config: &Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut pause = MIN_RESTART_PAUSE;
    for generation in 0u64.. {
        let name = format!("{}-{generation}", config.worker_name);
        let started = std::time::Instant::now();
        let stopped = consume(
            &name,
            queue.clone(),
            actors.clone(),
            config,
            shutdown.clone(),
        )
        .await;
        if shutdown.is_cancelled() {
            return Ok(());
        }
        match stopped {
            Ok(()) => tracing::warn!(worker = %name, "queue consumer stopped; starting it again"),
            Err(err) => {
                tracing::error!(worker = %name, error = %err, "queue consumer failed; starting it again")
            }
        }
        metrics::counter!("worker_job_errors_total", "kind" => "consumer_restart").increment(1);
        if started.elapsed() >= HEALTHY_RUN {
            pause = MIN_RESTART_PAUSE;
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(MAX_RESTART_PAUSE);
    }
    Ok(())
}

async fn consume(
    name: &str,
    queue: BookingQueue,
    actors: TenantActors,
    config: &Config,
    shutdown: CancellationToken,
) -> Result<(), MonitorError> {
    let name = name.to_owned();
    let concurrency = config.worker_concurrency;
    Monitor::new()
        .register(move |_| {
            WorkerBuilder::new(name.clone())
                .backend(queue.clone().poll_with_interval(IDLE_POLL_INTERVAL))
                .data(actors.clone())
                .concurrency(concurrency)
                .parallelize(tokio::spawn)
                .build(handle_job)
        })
        .shutdown_timeout(Duration::from_secs(30))
        .run_with_signal(async move {
            shutdown.cancelled().await;
            Ok(())
        })
        .await
}

async fn handle_job(
    job: BookingJob,
    actors: Data<TenantActors>,
    attempt: Attempt,
) -> Result<(), BoxDynError> {
    let span = tracing::info_span!(
        "booking_job",
        tenant.slug = %job.tenant_slug,
        request.id = %job.request_id,
    );
    let _entered = span.enter();
    match actors.wake(job.tenant_id) {
        Ok(()) => Ok(()),
        Err(err) if attempt.current() + 1 >= MAX_JOB_ATTEMPTS => Err(AbortError::new(err).into()),
        Err(err) => Err(err.into()),
    }
}
