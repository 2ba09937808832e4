//! Sends the outbox: claims due messages, sends each with lettre, and records the result.
//!
//! A claim pushes the message's next attempt into the future before sending, so two
//! notifier loops (in one process or several) never send the same message at once. A
//! temporary failure is retried with exponential backoff and jitter; a permanent SMTP
//! refusal, or too many attempts, marks the message dead. Every message is sent on its
//! own, so one bad recipient never holds up the others.
//!
//! Failures are classed, and each class has its own schedule and bound:
//! - `permanent`: a 5xx reply (mailbox unknown, say), or a message that cannot be built.
//!   Sending again would get the same answer: dead at once.
//! - `transient`: a 4xx reply (greylisting, mailbox full, server busy). The server is up
//!   and asked us to come back: from 10 s doubling to an hour, dead after
//!   `NOTIFICATION_MAX_ATTEMPTS`.
//! - `connection`: no SMTP conversation at all (refused, reset, timed out, TLS). The server
//!   is away, which says nothing about the message: from 2 s doubling to 5 minutes, so
//!   delivery resumes soon after it returns, and dead only after
//!   `NOTIFICATION_MAX_CONNECTION_ATTEMPTS` (about an hour and a half by default). While
//!   messages wait for that reason, the notifier asks the server every few seconds whether
//!   it is back (a NOOP on a fresh connection); once it is, they are due at once, so a long
//!   outage does not end with minutes of backoff still to sit out.
//!
//! Every state change is guarded by the state it leaves (`... AND status = 'pending'`), and
//! each message keeps its `Message-ID` across attempts, so receivers can recognise a
//! repeat. Limitation: a server that accepted a message but whose `250` reply was lost
//! (connection cut at that instant) gets it again on the retry; the stable Message-ID is
//! what lets it be recognised as the same message.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use futures::StreamExt;
use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart};
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const SMTP_TIMEOUT: Duration = Duration::from_secs(15);
/// How often an unreachable SMTP server is asked whether it is back.
const PROBE_EVERY: Duration = Duration::from_secs(5);

/// How many messages one claim takes, and how many are sent at once.
/// They are equal, so every claimed message is being sent from the moment it is claimed and
/// the lease only has to cover one send.
const CLAIM_SIZE: i64 = 16;
const SENDS_IN_FLIGHT: usize = 16;
/// How long a claimed message stays reserved for the loop that claimed it.
/// It covers one send (SMTP timeout 15 s) and recording its result; it is also how long the
/// messages of a notifier that died mid-send wait before another takes them over.
const CLAIM_LEASE_SECONDS: i64 = 30;

pub enum Mailer {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Files(AsyncFileTransport<Tokio1Executor>),
}

/// Why a send failed, which decides whether and when it is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    Permanent,
    Transient,
    Connection,
}

impl FailureClass {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Permanent => "permanent",
            Self::Transient => "transient",
            Self::Connection => "connection",
        }
    }

    /// The wait before the next try after `attempts` failed ones: exponential, capped,
    /// with jitter so retries of many messages spread out.
    pub fn retry_delay(self, attempts: i32) -> Duration {
        let (first, cap) = match self {
            Self::Transient => (Duration::from_secs(10), Duration::from_secs(3600)),
            Self::Connection | Self::Permanent => {
                (Duration::from_secs(2), Duration::from_secs(300))
            }
        };
        let steps = usize::try_from(attempts.max(1) - 1).unwrap_or(0);
        ExponentialBuilder::default()
            .with_min_delay(first)
            .with_max_delay(cap)
            .with_jitter()
            .without_max_times()
            .build()
            .nth(steps)
            .unwrap_or(cap)
    }
}

#[derive(Debug)]
pub struct SendFailure {
    pub class: FailureClass,
    pub detail: String,
}

impl SendFailure {
    fn new(class: FailureClass, detail: impl std::fmt::Display) -> Self {
        Self {
            class,
            detail: detail.to_string(),
        }
    }
}

impl Mailer {
    /// SMTP when a URL is configured, otherwise `.eml` files in `outbox_dir`.
    pub fn from_config(smtp_url: Option<&str>, outbox_dir: PathBuf) -> anyhow::Result<Self> {
        match smtp_url {
            Some(url) => {
                let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)?
                    .timeout(Some(SMTP_TIMEOUT))
                    .build();
                Ok(Self::Smtp(transport))
            }
            None => {
                std::fs::create_dir_all(&outbox_dir)?;
                Ok(Self::Files(AsyncFileTransport::new(outbox_dir)))
            }
        }
    }

    /// Whether the SMTP server answers now. The folder of `.eml` files is not probed.
    async fn reachable(&self) -> bool {
        match self {
            Self::Smtp(transport) => transport.test_connection().await.unwrap_or(false),
            Self::Files(_) => false,
        }
    }

    async fn send(&self, message: Message) -> Result<(), SendFailure> {
        match self {
            Self::Smtp(transport) => transport.send(message).await.map(|_| ()).map_err(|err| {
                let class = if err.is_permanent() {
                    FailureClass::Permanent
                } else if err.is_transient() {
                    FailureClass::Transient
                } else {
                    // Connection refused or reset, timeouts, TLS, a garbled reply: the
                    // conversation itself failed.
                    FailureClass::Connection
                };
                SendFailure::new(class, err)
            }),
            Self::Files(transport) => transport
                .send(message)
                .await
                .map(|_| ())
                .map_err(|err| SendFailure::new(FailureClass::Connection, err)),
        }
    }
}

pub struct Notifier {
    pool: PgPool,
    mailer: Mailer,
    from: Mailbox,
    /// Bound for transient (4xx) failures.
    max_attempts: i32,
    /// Bound for connection failures.
    max_connection_attempts: i32,
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
            max_connection_attempts: max_attempts.saturating_mul(3),
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

    /// Sets the bound for connection failures (three times `max_attempts` unless set).
    pub fn with_connection_attempts(self, max_connection_attempts: i32) -> Self {
        Self {
            max_connection_attempts,
            ..self
        }
    }

    /// Sends due messages until `shutdown` resolves; wakes when told new messages exist,
    /// and at least once a second for retries that have come due.
    pub async fn run(&self, shutdown: CancellationToken) {
        let mut last_probe = std::time::Instant::now();
        loop {
            if last_probe.elapsed() >= PROBE_EVERY {
                last_probe = std::time::Instant::now();
                if let Err(err) = self.release_if_server_back().await {
                    tracing::warn!(error = %err, "could not release messages waiting for the SMTP server");
                }
            }
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

    /// When messages wait because the SMTP server could not be reached and the server
    /// answers now, makes them due at once; returns how many.
    pub async fn release_if_server_back(&self) -> sqlx::Result<u64> {
        let mut tx = common::db::system_tx(&self.pool).await?;
        let waiting: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM outbox WHERE status = 'pending'
                            AND failure_class = 'connection' AND next_attempt_at > now())",
        )
        .fetch_one(&mut *tx)
        .await?;
        if !waiting || !self.mailer.reachable().await {
            return Ok(0);
        }
        // Limitation: every waiting message becomes due together; claims of CLAIM_SIZE at
        // a time are what spreads them over the returning server.
        let released = sqlx::query(
            "UPDATE outbox SET next_attempt_at = now()
             WHERE status = 'pending' AND failure_class = 'connection' AND next_attempt_at > now()",
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        tracing::info!(
            released,
            "the SMTP server answers again; waiting messages are due"
        );
        self.wake.notify_one();
        Ok(released)
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
            Err(detail) => Err(SendFailure::new(FailureClass::Permanent, detail)),
        };
        // A result is recorded again and again while the database is away (it was sent:
        // forgetting that would send it twice once the lease runs out).
        let record = || async {
            match &result {
                Ok(()) => self.mark_sent(&message).await,
                Err(failure) if message.attempts >= self.bound(failure.class) => {
                    self.mark_dead(&message, failure).await
                }
                Err(failure) => self.schedule_retry(&message, failure).await,
            }
        };
        let recorded = record
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(100))
                    .with_max_delay(Duration::from_secs(2))
                    .with_max_times(20),
            )
            .when(common::db::is_unavailable)
            .await;
        match (&result, recorded) {
            (_, Err(err)) => {
                // Limitation: if the database stays away longer than the retries (about half
                // a minute), the message is sent again after its lease; its Message-ID is
                // unchanged, so the receiver can tell.
                tracing::error!(outbox.id = %message.id, error = %err, "could not record a send result");
            }
            (Ok(()), Ok(())) => {
                metrics::counter!("notifications_total", "outcome" => "sent", "class" => "")
                    .increment(1);
            }
            (Err(failure), Ok(())) => {
                let class = failure.class.as_str();
                let outcome = if message.attempts >= self.bound(failure.class) {
                    tracing::warn!(outbox.id = %message.id, failure.class = class, error = %failure.detail, attempts = message.attempts, "message dead-lettered");
                    "dead"
                } else {
                    tracing::info!(outbox.id = %message.id, failure.class = class, error = %failure.detail, attempts = message.attempts, "message will be retried");
                    "retry"
                };
                metrics::counter!("notifications_total", "outcome" => outcome, "class" => class)
                    .increment(1);
            }
        }
    }

    /// How many attempts a failure of this class is allowed.
    fn bound(&self, class: FailureClass) -> i32 {
        match class {
            FailureClass::Permanent => 0,
            FailureClass::Transient => self.max_attempts,
            FailureClass::Connection => self.max_connection_attempts,
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

    async fn mark_dead(&self, message: &Claimed, failure: &SendFailure) -> sqlx::Result<()> {
        let mut tx = common::db::tenant_tx(&self.pool, message.tenant_id).await?;
        sqlx::query(
            "UPDATE outbox SET status = 'dead', last_error = $3, failure_class = $4, dead_at = now()
             WHERE tenant_id = $1 AND id = $2 AND status = 'pending'",
        )
        .bind(message.tenant_id)
        .bind(message.id)
        .bind(&failure.detail)
        .bind(failure.class.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    async fn schedule_retry(&self, message: &Claimed, failure: &SendFailure) -> sqlx::Result<()> {
        let delay = failure.class.retry_delay(message.attempts);
        let mut tx = common::db::tenant_tx(&self.pool, message.tenant_id).await?;
        sqlx::query(
            "UPDATE outbox SET next_attempt_at = now() + make_interval(secs => $3),
                               last_error = $4, failure_class = $5
             WHERE tenant_id = $1 AND id = $2 AND status = 'pending'",
        )
        .bind(message.tenant_id)
        .bind(message.id)
        .bind(delay.as_secs_f64())
        .bind(&failure.detail)
        .bind(failure.class.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }
}
