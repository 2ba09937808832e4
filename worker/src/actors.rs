//! Tenant actors: one task per tenant that decides that tenant's requests one batch at a
//! time, so decisions within a tenant never race, while tenants proceed in parallel.
//!
//! Anyone may ring an actor's doorbell (the queue consumer for each job, the sweeper for
//! requests that stayed open, the startup recovery pass). Rings that arrive while a drain
//! runs are served by the next drain together, so a burst costs a few drains, not one per
//! request. Across worker processes the tenant's advisory lock keeps the same order.
//!
//! At shutdown each actor finishes the batch it is deciding (its transaction commits) and
//! stops before the next one; what is left open stays `queued` for the next worker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::engine::{Decision, Engine, Outcome};

#[derive(Debug, thiserror::Error)]
#[error("the tenant actors are shutting down")]
pub struct ActorsStopped;

#[derive(Clone)]
pub struct TenantActors {
    engine: Engine,
    outbox_wake: Arc<Notify>,
    mailboxes: Arc<Mutex<HashMap<Uuid, mpsc::UnboundedSender<()>>>>,
    stop: CancellationToken,
    running: TaskTracker,
}

impl TenantActors {
    pub fn new(engine: Engine, outbox_wake: Arc<Notify>) -> Self {
        Self {
            engine,
            outbox_wake,
            mailboxes: Arc::default(),
            stop: CancellationToken::new(),
            running: TaskTracker::new(),
        }
    }

    /// Asks the tenant's actor to drain its open requests, without waiting for it.
    pub fn wake(&self, tenant_id: Uuid) -> Result<(), ActorsStopped> {
        self.mailbox(tenant_id)?.send(()).map_err(|_| ActorsStopped)
    }

    /// Stops every actor after the batch it is deciding has committed, and waits for them.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.running.close();
        self.running.wait().await;
    }

    fn mailbox(&self, tenant_id: Uuid) -> Result<mpsc::UnboundedSender<()>, ActorsStopped> {
        if self.stop.is_cancelled() {
            return Err(ActorsStopped);
        }
        let mut mailboxes = self.mailboxes.lock().expect("actor registry poisoned");
        if let Some(sender) = mailboxes.get(&tenant_id).filter(|s| !s.is_closed()) {
            return Ok(sender.clone());
        }
        let (sender, receiver) = mpsc::unbounded_channel();
        self.running.spawn(run_actor(
            tenant_id,
            self.engine.clone(),
            self.outbox_wake.clone(),
            receiver,
            self.stop.clone(),
        ));
        mailboxes.insert(tenant_id, sender.clone());
        Ok(sender)
    }
}

async fn run_actor(
    tenant_id: Uuid,
    engine: Engine,
    outbox_wake: Arc<Notify>,
    mut mailbox: mpsc::UnboundedReceiver<()>,
    stop: CancellationToken,
) {
    // Limitation: an actor lives as long as the process; with very many tenants, idle
    // actors would want retiring after a quiet period.
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            ring = mailbox.recv() => if ring.is_none() {
                return;
            },
        }
        // Rings that came in meanwhile are all served by this drain.
        while mailbox.try_recv().is_ok() {}

        match engine.drain_tenant_until(tenant_id, &stop).await {
            Ok(decisions) => {
                record(&decisions);
                if decisions
                    .iter()
                    .any(|d| matches!(d.outcome, Outcome::Confirmed { .. }))
                {
                    outbox_wake.notify_one();
                }
            }
            Err(err) => {
                // The sweeper rings again within seconds; an outage costs no attempts.
                tracing::error!(tenant.id = %tenant_id, error = %err, "tenant drain failed");
                metrics::counter!("worker_job_errors_total", "kind" => "drain").increment(1);
            }
        }
    }
}

fn record(decisions: &[Decision]) {
    let now = chrono::Utc::now();
    for decision in decisions {
        let (outcome, reason) = match &decision.outcome {
            Outcome::Confirmed { .. } => ("confirmed", ""),
            Outcome::Rejected { reason, .. } => ("rejected", reason.as_str()),
            Outcome::Failed { .. } => ("failed", ""),
        };
        tracing::info!(
            tenant.slug = %decision.tenant_slug,
            request.id = %decision.request_id,
            outcome,
            reason,
            "booking request decided"
        );
        let labels = [
            ("tenant", decision.tenant_slug.clone()),
            ("outcome", outcome.to_owned()),
            ("reason", reason.to_owned()),
        ];
        metrics::counter!("booking_decisions_total", &labels).increment(1);
        metrics::histogram!("booking_decision_duration_seconds").record(decision.decision_seconds);
        let waited = (now - decision.accepted_at).to_std().unwrap_or_default();
        metrics::histogram!("booking_accept_to_decision_seconds").record(waited.as_secs_f64());
    }
}
