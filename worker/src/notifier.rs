//! Sends the outbox: claims due messages, sends each with lettre, and records the result.
//!
//! A claim pushes the message's next attempt into the future before sending, so two
//! notifier loops (in one process or several) never send the same message at once. A
//! temporary failure is retried with exponential backoff and jitter; a permanent SMTP
//! refusal, or too many attempts, marks the message dead. Every message is sent on its
//! own, so one bad recipient never holds up the others.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use futures::StreamExt;
use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart};
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How many messages one claim takes, and how many are sent at once.
const CLAIM_SIZE: i64 = 32;
const SENDS_IN_FLIGHT: usize = 8;
/// How long a claimed message stays reserved for the loop that claimed it.
const CLAIM_LEASE_SECONDS: i64 = 120;

pub enum Mailer {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Files(AsyncFileTransport<Tokio1Executor>),
}

/// Why a send failed, which decides whether it is tried again.
#[derive(Debug)]
pub enum SendFailure {
    Permanent(String),
    Temporary(String),
}

impl Mailer {
    /// SMTP when a URL is configured, otherwise `.eml` files in `outbox_dir`.
    pub fn from_config(smtp_url: Option<&str>, outbox_dir: PathBuf) -> anyhow::Result<Self> {
        match smtp_url {
            Some(url) => {
                let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)?
                    .timeout(Some(Duration::from_secs(15)))
                    .build();
                Ok(Self::Smtp(transport))
            }
            None => {
                std::fs::create_dir_all(&outbox_dir)?;
                Ok(Self::Files(AsyncFileTransport::new(outbox_dir)))
            }
        }
    }

    async fn send(&self, message: Message) -> Result<(), SendFailure> {
        match self {
            Self::Smtp(transport) => transport.send(message).await.map(|_| ()).map_err(|err| {
                if err.is_permanent() {
                    SendFailure::Permanent(err.to_string())
                } else {
                    SendFailure::Temporary(err.to_string())
                }
            }),
            Self::Files(transport) => transport
                .send(message)
                .await
                .map(|_| ())
                .map_err(|err| SendFailure::Temporary(err.to_string())),
        }
    }
}

pub struct Notifier {
    pool: PgPool,
    mailer: Mailer,
    from: Mailbox,
    max_attempts: i32,
    wake: Arc<Notify>,
    links: Option<ManageLinks>,
}

/// What the notifier needs to put a booking's manage link into the customer's message.
struct ManageLinks {
    secret: String,
    base_url: String,
}

#[derive(sqlx::FromRow)]
struct Claimed {
    tenant_id: Uuid,
    id: Uuid,
    attempts: i32,
    recipient: String,
    subject: String,
    body_text: String,
    body_html: String,
    message_id: String,
    booking_id: Uuid,
    tenant_slug: String,
    ics: Option<String>,
    ics_method: Option<String>,
    manage_link: bool,
}

impl Notifier {
    pub fn new(
        pool: PgPool,
        mailer: Mailer,
        from: Mailbox,
        max_attempts: i32,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            pool,
            mailer,
            from,
            max_attempts,
            wake,
            links: None,
        }
    }

    /// Puts manage links, derived from `secret` and served under `base_url`, into the
    /// customer's messages that ask for one.
    pub fn with_manage_links(self, secret: &str, base_url: &str) -> Self {
        Self {
            links: Some(ManageLinks {
                secret: secret.to_owned(),
                base_url: base_url.to_owned(),
            }),
            ..self
        }
    }

    /// Sends due messages until `shutdown` resolves; wakes when told new messages exist,
    /// and at least once a second for retries that have come due.
    pub async fn run(&self, shutdown: CancellationToken) {
        loop {
            let sent = match self.send_due().await {
                Ok(count) => count,
                Err(err) => {
                    tracing::error!(error = %err, "notifier could not read the outbox");
                    0
                }
            };
            if sent > 0 {
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// Claims and sends one batch of due messages; returns how many were claimed.
    pub async fn send_due(&self) -> sqlx::Result<usize> {
        let claimed = self.claim().await?;
        let count = claimed.len();
        futures::stream::iter(claimed)
            .for_each_concurrent(SENDS_IN_FLIGHT, |message| self.deliver(message))
            .await;
        Ok(count)
    }

    /// Claims due messages of every tenant: the notifier serves them all.
    async fn claim(&self) -> sqlx::Result<Vec<Claimed>> {
        let mut tx = common::db::system_tx(&self.pool).await?;
        let claimed = sqlx::query_as(
            "UPDATE outbox o
             SET attempts = o.attempts + 1,
                 next_attempt_at = now() + make_interval(secs => $2)
             FROM (SELECT tenant_id, id FROM outbox
                   WHERE status = 'pending' AND next_attempt_at <= now()
                   ORDER BY next_attempt_at LIMIT $1
                   FOR UPDATE SKIP LOCKED) due
             WHERE o.tenant_id = due.tenant_id AND o.id = due.id
             RETURNING o.tenant_id, o.id, o.attempts, o.recipient, o.subject, o.body_text,
                       o.body_html, o.message_id, o.booking_id, o.ics, o.ics_method,
                       o.manage_link,
                       (SELECT slug FROM tenants t WHERE t.id = o.tenant_id) AS tenant_slug",
        )
        .bind(CLAIM_SIZE)
        .bind(CLAIM_LEASE_SECONDS as f64)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(claimed)
    }

    async fn deliver(&self, message: Claimed) {
        let result = match self.build(&message) {
            Ok(email) => self.mailer.send(email).await,
            Err(detail) => Err(SendFailure::Permanent(detail)),
        };
        let recorded = match result {
            Ok(()) => {
                metrics::counter!("notifications_total", "outcome" => "sent").increment(1);
                self.mark_sent(&message).await
            }
            Err(SendFailure::Permanent(detail)) => {
                tracing::warn!(outbox.id = %message.id, error = %detail, "message refused for good");
                self.mark_dead(&message, &detail).await
            }
            Err(SendFailure::Temporary(detail)) if message.attempts >= self.max_attempts => {
                tracing::warn!(outbox.id = %message.id, error = %detail, "message gave up after retries");
                self.mark_dead(&message, &detail).await
            }
            Err(SendFailure::Temporary(detail)) => {
                metrics::counter!("notifications_total", "outcome" => "retry").increment(1);
                self.schedule_retry(&message, &detail).await
            }
        };
        if let Err(err) = recorded {
            tracing::error!(outbox.id = %message.id, error = %err, "could not record a send result");
        }
    }

    fn build(&self, message: &Claimed) -> Result<Message, String> {
        let to: Mailbox = message
            .recipient
            .parse()
            .map_err(|_| "the recipient address is not valid".to_owned())?;
        let (mut text, mut html) = (message.body_text.clone(), message.body_html.clone());
        if let (true, Some(links)) = (message.manage_link, &self.links) {
            let token = common::manage::token(&links.secret, message.tenant_id, message.booking_id);
            let link = common::manage::link(&links.base_url, &message.tenant_slug, &token);
            text.push_str(&format!(
                "\nTo cancel or change this booking, use this private link: {link}\n"
            ));
            let link = html_escape::encode_double_quoted_attribute(&link);
            html.push_str(&format!(
                "<p><a href=\"{link}\">Cancel or change this booking</a> (a private link: \
                 do not share it)</p>"
            ));
        }
        let body = MultiPart::alternative_plain_html(text, html);
        let body = match (&message.ics, &message.ics_method) {
            (Some(ics), Some(method)) => {
                let content_type =
                    ContentType::parse(&format!("text/calendar; charset=utf-8; method={method}"))
                        .map_err(|err| err.to_string())?;
                MultiPart::mixed().multipart(body).singlepart(
                    Attachment::new("booking.ics".to_owned()).body(ics.clone(), content_type),
                )
            }
            _ => body,
        };
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(&message.subject)
            .message_id(Some(message.message_id.clone()))
            .multipart(body)
            .map_err(|err| err.to_string())
    }

    async fn mark_sent(&self, message: &Claimed) -> sqlx::Result<()> {
        let mut tx = common::db::tenant_tx(&self.pool, message.tenant_id).await?;
        sqlx::query(
            "UPDATE outbox SET status = 'sent', sent_at = now(), last_error = NULL
             WHERE tenant_id = $1 AND id = $2 AND status = 'pending'",
        )
        .bind(message.tenant_id)
        .bind(message.id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    async fn mark_dead(&self, message: &Claimed, detail: &str) -> sqlx::Result<()> {
        metrics::counter!("notifications_total", "outcome" => "dead").increment(1);
        let mut tx = common::db::tenant_tx(&self.pool, message.tenant_id).await?;
        sqlx::query(
            "UPDATE outbox SET status = 'dead', last_error = $3
             WHERE tenant_id = $1 AND id = $2 AND status = 'pending'",
        )
        .bind(message.tenant_id)
        .bind(message.id)
        .bind(detail)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    async fn schedule_retry(&self, message: &Claimed, detail: &str) -> sqlx::Result<()> {
        let delay = retry_delay(message.attempts);
        let mut tx = common::db::tenant_tx(&self.pool, message.tenant_id).await?;
        sqlx::query(
            "UPDATE outbox SET next_attempt_at = now() + make_interval(secs => $3), last_error = $4
             WHERE tenant_id = $1 AND id = $2 AND status = 'pending'",
        )
        .bind(message.tenant_id)
        .bind(message.id)
        .bind(delay.as_secs_f64())
        .bind(detail)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }
}

/// The wait before the next try after `attempts` failed ones: exponential from two
/// seconds, capped at an hour, with jitter so retries of many messages spread out.
pub fn retry_delay(attempts: i32) -> Duration {
    let steps = usize::try_from(attempts.max(1) - 1).unwrap_or(0);
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(2))
        .with_max_delay(Duration::from_secs(3600))
        .with_jitter()
        .without_max_times()
        .build()
        .nth(steps)
        .unwrap_or(Duration::from_secs(3600))
}
