//! The worker: consumes booking jobs from Redis, hands each to its tenant's actor, which
//! decides it in PostgreSQL; sends the notification outbox; exports metrics.
//!
//! The queue only delivers. The durable record of every accepted request is its row in
//! `booking_requests`, so a sweeper also drains tenants whose requests have waited too long,
//! covering jobs that Redis lost or that apalis gave up on.

pub mod actors;
pub mod consumer;
pub mod engine;
pub mod messages;
pub mod notifier;
pub mod sweeper;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use common::config::Config;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::actors::TenantActors;
use crate::engine::Engine;
use crate::notifier::{Mailer, Notifier};

/// Runs the worker until `shutdown` is cancelled, then lets in-flight jobs finish.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let metrics = common::telemetry::install_recorder();
    let pool = common::db::connect(&config.database_url, 20)
        .await
        .context("connecting to PostgreSQL")?;
    let redis = common::jobs::connect_redis(&config.redis_url)
        .await
        .context("connecting to Redis")?;
    let queue =
        common::jobs::booking_queue(redis.clone(), &config.queue_name, config.heartbeat_interval);

    let outbox_wake = Arc::new(Notify::new());
    let engine = Engine::new(pool.clone(), config.max_decision_attempts)
        .with_manage_links(&config.manage_link_secret)
        .with_crash_marker(config.fault_crash_on_notes.clone());
    let actors = TenantActors::new(engine, outbox_wake.clone());
    let mailer = Mailer::from_config(config.smtp_url.as_deref(), config.outbox_dir.clone())?;
    let from = config
        .smtp_from
        .parse()
        .context("SMTP_FROM is not a valid mailbox")?;
    // The notifier has connections of its own: recording that a message went out must
    // never wait behind the deciding transactions, since until it is recorded a crash would
    // send the message again.
    let notifier_pool = common::db::connect(&config.database_url, 4)
        .await
        .context("connecting the notifier to PostgreSQL")?;
    let notifier = Notifier::new(
        notifier_pool,
        mailer,
        from,
        config.notification_max_attempts,
        outbox_wake,
    )
    .with_manage_links(&config.manage_link_secret, &public_base_url(&config))
    .with_connection_attempts(config.notification_max_connection_attempts);

    let metrics_listener = tokio::net::TcpListener::bind(config.worker_metrics_addr)
        .await
        .with_context(|| format!("binding {}", config.worker_metrics_addr))?;
    tracing::info!(addr = %config.worker_metrics_addr, worker = %config.worker_name, "worker started");

    // Recovery pass: whatever a worker that died left open is taken up now, not when its
    // jobs come round again.
    match sweeper::sweep(&pool, &actors, Duration::ZERO).await {
        Ok(tenants) => tracing::info!(
            tenants,
            "recovery pass rang every tenant with open requests"
        ),
        Err(err) => tracing::warn!(error = %err, "recovery pass failed; the sweeper retries"),
    }

    // The consumer ends only at shutdown or on an error it cannot recover from; either way
    // the rest of the worker stops with it. Once no job is being handled, each actor
    // finishes the batch it is deciding; requests left open stay queued for the next worker.
    let consumer_queue = queue.clone();
    let consumer_actors = actors.clone();
    let consuming = async {
        let result =
            consumer::run(consumer_queue, consumer_actors, &config, shutdown.clone()).await;
        shutdown.cancel();
        actors.shutdown().await;
        tracing::info!("worker stopped: every decision in flight committed");
        result
    };
    let tasks = tokio::join!(
        consuming,
        notifier.run(shutdown.clone()),
        sweeper::run(
            pool.clone(),
            redis,
            queue,
            actors.clone(),
            Duration::from_secs(1),
            shutdown.clone()
        ),
        serve_metrics(metrics_listener, metrics, shutdown.clone()),
    );
    tasks.0
}

async fn serve_metrics(
    listener: tokio::net::TcpListener,
    handle: metrics_exporter_prometheus::PrometheusHandle,
    shutdown: CancellationToken,
) {
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || async move { handle.render() }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok" }));
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(err) = served {
        tracing::error!(error = %err, "worker metrics server stopped");
    }
}

/// Where customers reach the api: `PUBLIC_BASE_URL`, or the api's own address.
fn public_base_url(config: &Config) -> String {
    config
        .public_base_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", config.api_addr))
}
