//! Tenant actors: one task per tenant that decides that tenant's requests one batch at a
//! time, so decisions within a tenant never race, while tenants proceed in parallel.
//!
//! Anyone may ask an actor to drain its tenant (the queue consumer for each job, the sweeper
//! for requests the queue lost). Requests that arrive while a drain runs are served by the
//! next drain together, so a burst costs a few drains, not one per request. Across worker
//! processes the tenant's advisory lock keeps the same order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, mpsc, oneshot};
use uuid::Uuid;

use crate::engine::{Decision, Engine, Outcome};

type Reply = oneshot::Sender<Result<(), String>>;

#[derive(Clone)]
pub struct TenantActors {
    engine: Engine,
    outbox_wake: Arc<Notify>,
    mailboxes: Arc<Mutex<HashMap<Uuid, mpsc::UnboundedSender<Reply>>>>,
}

impl TenantActors {
    pub fn new(engine: Engine, outbox_wake: Arc<Notify>) -> Self {
        Self {
            engine,
            outbox_wake,
            mailboxes: Arc::default(),
        }
    }

    /// Drains the tenant's open requests and waits until that drain has committed.
    pub async fn drain(&self, tenant_id: Uuid) -> Result<(), String> {
        let (reply, done) = oneshot::channel();
        self.mailbox(tenant_id)
            .send(reply)
            .map_err(|_| "the tenant actor stopped".to_owned())?;
        done.await
            .map_err(|_| "the tenant actor stopped".to_owned())?
    }

    fn mailbox(&self, tenant_id: Uuid) -> mpsc::UnboundedSender<Reply> {
        let mut mailboxes = self.mailboxes.lock().expect("actor registry poisoned");
        if let Some(sender) = mailboxes.get(&tenant_id).filter(|s| !s.is_closed()) {
            return sender.clone();
        }
        let (sender, receiver) = mpsc::unbounded_channel();
        tokio::spawn(run_actor(
            tenant_id,
            self.engine.clone(),
            self.outbox_wake.clone(),
            receiver,
        ));
        mailboxes.insert(tenant_id, sender.clone());
        sender
    }
}

async fn run_actor(
    tenant_id: Uuid,
    engine: Engine,
    outbox_wake: Arc<Notify>,
    mut mailbox: mpsc::UnboundedReceiver<Reply>,
) {
    // Limitation: an actor lives as long as the process; with very many tenants, idle
    // actors would want retiring after a quiet period.
    while let Some(first) = mailbox.recv().await {
        let mut waiting = vec![first];
        while let Ok(more) = mailbox.try_recv() {
            waiting.push(more);
        }

        let result = match engine.drain_tenant(tenant_id).await {
            Ok(decisions) => {
                record(&decisions);
                if decisions
                    .iter()
                    .any(|d| matches!(d.outcome, Outcome::Confirmed { .. }))
                {
                    outbox_wake.notify_one();
                }
                Ok(())
            }
            Err(err) => {
                tracing::error!(tenant.id = %tenant_id, error = %err, "tenant drain failed");
                metrics::counter!("worker_job_errors_total", "kind" => "drain").increment(1);
                Err(err.to_string())
            }
        };
        for reply in waiting {
            let _ = reply.send(result.clone());
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
