//! The apalis consumer: each job names a booking request; handling it means draining that
//! request's tenant through the tenant actor. A job is acknowledged only after the drain
//! committed, so a crash before that leaves it to be redelivered.

use std::time::Duration;

use apalis::prelude::*;
use common::config::Config;
use common::jobs::{BookingJob, BookingQueue};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::actors::TenantActors;

/// apalis would retry a failing job 25 times; past this many tries the job is aborted and
/// the request is left to the sweeper, which drains from the database.
const MAX_JOB_ATTEMPTS: usize = 10;

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
    let mut pause = Duration::from_millis(250);
    for generation in 0u64.. {
        let name = format!("{}-{generation}", config.worker_name);
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
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_secs(30));
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
    match actors.drain(job.tenant_id).instrument(span).await {
        Ok(()) => Ok(()),
        Err(err) if attempt.current() + 1 >= MAX_JOB_ATTEMPTS => Err(AbortError::new(err).into()),
        Err(err) => Err(err.into()),
    }
}
