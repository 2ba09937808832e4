//! The apalis consumer: each job names a booking request; handling it means draining that
//! request's tenant through the tenant actor. A job is acknowledged only after the drain
//! committed, so a crash before that leaves it to be redelivered.

use apalis::prelude::*;
use common::config::Config;
use common::jobs::{BookingJob, BookingQueue};
use tokio_util::sync::CancellationToken;

use crate::actors::TenantActors;

/// apalis would retry a failing job 25 times; past this many tries the job is aborted and
/// the request is left to the sweeper, which drains from the database.
const MAX_JOB_ATTEMPTS: usize = 10;

/// How often an idle consumer asks Redis for new jobs. Without it, an idle consumer only
/// looks again at its next heartbeat, which would add up to a heartbeat to the latency of
/// the first booking after a quiet spell.
const IDLE_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

pub async fn run(
    queue: BookingQueue,
    actors: TenantActors,
    config: &Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let name = config.worker_name.clone();
    let concurrency = config.worker_concurrency;
    Monitor::new()
        .register(move |restarts| {
            WorkerBuilder::new(format!("{name}-{restarts}"))
                .backend(queue.clone().poll_with_interval(IDLE_POLL_INTERVAL))
                .data(actors.clone())
                .concurrency(concurrency)
                .parallelize(tokio::spawn)
                .build(handle_job)
        })
        .should_restart(|worker, err| {
            tracing::error!(worker = %worker.name(), error = %err, "queue consumer stopped; restarting");
            true
        })
        .shutdown_timeout(std::time::Duration::from_secs(30))
        .run_with_signal(async move {
            shutdown.cancelled().await;
            Ok(())
        })
        .await?;
    Ok(())
}

async fn handle_job(
    job: BookingJob,
    actors: Data<TenantActors>,
    attempt: Attempt,
) -> Result<(), BoxDynError> {
    let span = tracing::info_span!("booking_job", tenant.slug = %job.tenant_slug, request.id = %job.request_id);
    let _entered = span.enter();
    match actors.drain(job.tenant_id).await {
        Ok(()) => Ok(()),
        Err(err) if attempt.current() + 1 >= MAX_JOB_ATTEMPTS => Err(AbortError::new(err).into()),
        Err(err) => Err(err.into()),
    }
}
