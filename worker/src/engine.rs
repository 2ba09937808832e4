//! The booking engine: decides a tenant's open booking requests, oldest first, inside one
//! PostgreSQL transaction that holds the tenant's advisory lock.
//!
//! The database has the last word on overlaps: the exclusion constraint on `bookings`
//! refuses a second live booking of a resource in an occupied span, and that refusal
//! becomes a `slot_taken` rejection. Each request is decided under its own savepoint, so
//! one rejection never undoes another request's booking.

use std::str::FromStr;
use std::time::Instant;

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, Utc};
use chrono_tz::Tz;
use common::domain::{BookingRequestPayload, Customer, RejectReason, Tenant};
use common::schedule::{HoursViolation, OpeningInterval, check_opening_hours};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::messages::{self, Event};

/// How many open requests one transaction decides at most.
const BATCH_SIZE: i64 = 32;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("tenant {0} does not exist")]
    UnknownTenant(Uuid),
}

#[derive(Clone)]
pub struct Engine {
    pool: PgPool,
    max_attempts: i32,
    /// Drill hook: abort the process when deciding a request whose notes contain this.
    crash_marker: Option<String>,
}

/// What happened to one request, reported after the transaction commits.
#[derive(Debug, Clone)]
pub struct Decision {
    pub tenant_slug: String,
    pub request_id: Uuid,
    pub accepted_at: DateTime<Utc>,
    pub outcome: Outcome,
    pub decision_seconds: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Confirmed {
        booking_id: Uuid,
    },
    Rejected {
        reason: RejectReason,
        detail: String,
    },
    Failed {
        detail: String,
    },
}

#[derive(sqlx::FromRow)]
struct OpenRequest {
    id: Uuid,
    kind: String,
    attempts: i32,
    payload: serde_json::Value,
    accepted_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct ServiceRules {
    name: String,
    duration_minutes: i32,
    slot_interval_minutes: i32,
    buffer_before_minutes: i32,
    buffer_after_minutes: i32,
    min_notice_minutes: i32,
    max_days_ahead: i32,
}

impl Engine {
    pub fn new(pool: PgPool, max_attempts: i32) -> Self {
        Self {
            pool,
            max_attempts,
            crash_marker: None,
        }
    }

    /// Fault drill only (`WORKER_FAULT_CRASH_ON_NOTES`, refused in production): deciding a
    /// request whose notes contain `marker` aborts the process, after its attempt is counted.
    pub fn with_crash_marker(self, marker: Option<String>) -> Self {
        Self {
            crash_marker: marker,
            ..self
        }
    }

    /// Decides every open request of the tenant, oldest first, and returns the decisions
    /// once they are committed.
    pub async fn drain_tenant(&self, tenant_id: Uuid) -> Result<Vec<Decision>, EngineError> {
        self.drain_tenant_until(tenant_id, &CancellationToken::new())
            .await
    }

    /// Like [`Engine::drain_tenant`], but stops between batches once `stop` is cancelled,
    /// so a shutdown waits for one batch's commit, not for the tenant's whole backlog.
    pub async fn drain_tenant_until(
        &self,
        tenant_id: Uuid,
        stop: &CancellationToken,
    ) -> Result<Vec<Decision>, EngineError> {
        let tenant = common::db::tenant_by_id(&self.pool, tenant_id)
            .await?
            .ok_or(EngineError::UnknownTenant(tenant_id))?;
        let tz = Tz::from_str(&tenant.time_zone).unwrap_or(Tz::UTC);
        let mut decisions = Vec::new();
        while !stop.is_cancelled() {
            let batch = self.decide_batch(&tenant, tz).await?;
            if batch.is_empty() {
                return Ok(decisions);
            }
            decisions.extend(batch);
        }
        Ok(decisions)
    }

    async fn decide_batch(&self, tenant: &Tenant, tz: Tz) -> Result<Vec<Decision>, EngineError> {
        let mut tx = common::db::tenant_tx(&self.pool, tenant.id).await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('tenant:' || $1::text, 0))")
            .bind(tenant.id)
            .execute(&mut *tx)
            .await?;

        let open = open_requests(&mut tx, tenant.id).await?;
        if open.is_empty() {
            tx.commit().await?;
            return Ok(Vec::new());
        }
        let batch = retried_requests_alone(open);
        let batch = self.record_attempt(tenant.id, batch).await?;
        let ids: Vec<Uuid> = batch.iter().map(|r| r.id).collect();
        match self.decide_recorded(tx, tenant, tz, batch).await {
            Err(EngineError::Database(err)) if common::db::is_unavailable(&err) => {
                self.refund_attempt(tenant.id, &ids).await;
                Err(err.into())
            }
            decided => decided,
        }
    }

    /// Decides the batch whose attempt is counted, and commits.
    async fn decide_recorded(
        &self,
        mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
        tenant: &Tenant,
        tz: Tz,
        batch: Vec<OpenRequest>,
    ) -> Result<Vec<Decision>, EngineError> {
        let mut decisions = Vec::with_capacity(batch.len());
        for request in batch {
            let started = Instant::now();
            let outcome = if request.attempts + 1 > self.max_attempts {
                Outcome::Failed {
                    detail: format!("the decision failed {} times", request.attempts),
                }
            } else {
                self.crash_if_marked(&request);
                let mut savepoint = sqlx::Connection::begin(&mut *tx).await?;
                let outcome = match request.kind.as_str() {
                    "cancel" => cancel(&mut savepoint, tenant, tz, &request).await?,
                    _ => self.decide(&mut savepoint, tenant, tz, &request).await?,
                };
                if matches!(outcome, Outcome::Confirmed { .. }) {
                    savepoint.commit().await?;
                } else {
                    savepoint.rollback().await?;
                }
                outcome
            };
            store_outcome(&mut tx, tenant.id, request.id, &outcome).await?;
            decisions.push(Decision {
                tenant_slug: tenant.slug.clone(),
                request_id: request.id,
                accepted_at: request.accepted_at,
                outcome,
                decision_seconds: started.elapsed().as_secs_f64(),
            });
        }
        tx.commit().await?;
        Ok(decisions)
    }

    /// Counts the attempt outside the deciding transaction, so a decision that crashes
    /// the process still counts and a request that always crashes is eventually failed.
    /// Returns the requests still open when counted: one withdrawn meanwhile (the api could
    /// not queue it) is not decided.
    async fn record_attempt(
        &self,
        tenant_id: Uuid,
        batch: Vec<OpenRequest>,
    ) -> sqlx::Result<Vec<OpenRequest>> {
        let ids: Vec<Uuid> = batch.iter().map(|r| r.id).collect();
        let mut tx = common::db::tenant_tx(&self.pool, tenant_id).await?;
        let counted: Vec<Uuid> = sqlx::query_scalar(
            "UPDATE booking_requests SET attempts = attempts + 1, status = 'processing'
             WHERE tenant_id = $1 AND id = ANY($2) AND status IN ('queued', 'processing')
             RETURNING id",
        )
        .bind(tenant_id)
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(batch
            .into_iter()
            .filter(|r| counted.contains(&r.id))
            .collect())
    }

    /// Takes back the attempt counted for a batch whose decision failed because the
    /// database went away: an outage is nobody's fault and must never fail a request. Tries
    /// until the database answers again (or about two minutes have passed).
    async fn refund_attempt(&self, tenant_id: Uuid, ids: &[Uuid]) {
        use backon::{ExponentialBuilder, Retryable};
        let refund = || async {
            let mut tx = common::db::tenant_tx(&self.pool, tenant_id).await?;
            sqlx::query(
                "UPDATE booking_requests SET attempts = greatest(attempts - 1, 0)
                 WHERE tenant_id = $1 AND id = ANY($2) AND status IN ('queued', 'processing')",
            )
            .bind(tenant_id)
            .bind(ids)
            .execute(&mut *tx)
            .await?;
            tx.commit().await
        };
        let retries = ExponentialBuilder::default()
            .with_min_delay(std::time::Duration::from_millis(200))
            .with_max_delay(std::time::Duration::from_secs(5))
            .with_max_times(30);
        if let Err(err) = refund.retry(retries).await {
            // Limitation: a refund that cannot be written within the retries (or a process
            // that dies during an outage) leaves the attempt charged; it takes
            // MAX_DECISION_ATTEMPTS such outages in a row to fail a request.
            tracing::error!(tenant.id = %tenant_id, error = %err, "could not refund decision attempts after an outage");
        }
    }

    fn crash_if_marked(&self, request: &OpenRequest) {
        let Some(marker) = &self.crash_marker else {
            return;
        };
        let notes = request.payload.get("notes").and_then(|n| n.as_str());
        if notes.is_some_and(|notes| notes.contains(marker.as_str())) {
            tracing::error!(request.id = %request.id, "fault drill: aborting the worker");
            std::process::abort();
        }
    }

    /// Decides one request. Returns an error only for database failures other than the
    /// overlap constraint; the caller then retries the whole batch later.
    async fn decide(
        &self,
        conn: &mut PgConnection,
        tenant: &Tenant,
        tz: Tz,
        request: &OpenRequest,
    ) -> Result<Outcome, EngineError> {
        let payload: BookingRequestPayload = match serde_json::from_value(request.payload.clone()) {
            Ok(payload) => payload,
            Err(_) => {
                return Ok(Outcome::Failed {
                    detail: "the stored request is unreadable".into(),
                });
            }
        };
        let Some(service) = load_service(conn, tenant.id, payload.service_id).await? else {
            return Ok(reject(
                RejectReason::UnknownService,
                "the service does not exist",
            ));
        };

        let start = payload.start.with_timezone(&Utc);
        let end = start + Duration::minutes(service.duration_minutes.into());
        if let Some(rejection) = check_notice(&service, start, Utc::now()) {
            return Ok(rejection);
        }
        if in_blackout(conn, tenant.id, start, end).await? {
            return Ok(reject(
                RejectReason::Blackout,
                "the business is closed then",
            ));
        }

        let candidates = candidate_resources(conn, tenant.id, &payload).await?;
        if candidates.is_empty() {
            return Ok(reject(
                RejectReason::UnknownResource,
                "no active resource offers this service",
            ));
        }

        let occupied_from = start - Duration::minutes(service.buffer_before_minutes.into());
        let occupied_until = end + Duration::minutes(service.buffer_after_minutes.into());
        let mut hours_rejection = None;
        let mut any_open = false;
        for resource_id in candidates {
            let local_date = start.with_timezone(&tz).date_naive();
            let hours = opening_hours(conn, tenant.id, resource_id, local_date).await?;
            let interval = service.slot_interval_minutes.into();
            if let Err(violation) = check_opening_hours(tz, start, end, &hours, interval) {
                hours_rejection.get_or_insert(hours_violation(violation, interval));
                continue;
            }
            any_open = true;

            let booking_id = Uuid::now_v7();
            let mut attempt = sqlx::Connection::begin(&mut *conn).await?;
            let inserted = sqlx::query(
                "INSERT INTO bookings (tenant_id, id, request_id, service_id, resource_id,
                     starts_at, ends_at, occupied, customer_name, customer_email,
                     customer_phone, notes)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, tstzrange($8, $9, '[)'), $10, $11, $12, $13)",
            )
            .bind(tenant.id)
            .bind(booking_id)
            .bind(request.id)
            .bind(payload.service_id)
            .bind(resource_id)
            .bind(start)
            .bind(end)
            .bind(occupied_from)
            .bind(occupied_until)
            .bind(&payload.customer.name)
            .bind(&payload.customer.email)
            .bind(&payload.customer.phone)
            .bind(&payload.notes)
            .execute(&mut *attempt)
            .await;
            match inserted {
                Ok(_) => attempt.commit().await?,
                Err(err) if is_overlap(&err) => {
                    attempt.rollback().await?;
                    continue;
                }
                Err(err) => return Err(err.into()),
            }

            let booking = messages::BookingDetails {
                booking_id,
                service_name: &service.name,
                start,
                end,
                customer: &payload.customer,
                notes: payload.notes.as_deref(),
            };
            messages::queue(conn, tenant, tz, Event::Confirmed, &booking).await?;
            return Ok(Outcome::Confirmed { booking_id });
        }

        if any_open {
            Ok(reject(
                RejectReason::SlotTaken,
                "the slot is already booked",
            ))
        } else {
            Ok(hours_rejection
                .unwrap_or_else(|| reject(RejectReason::OutsideHours, "outside opening hours")))
        }
    }
}

/// Cancels the booking a cancel request names. A booking is cancelled once; a cancelled
/// booking is never revived, so its slot may already belong to someone else.
async fn cancel(
    conn: &mut PgConnection,
    tenant: &Tenant,
    tz: Tz,
    request: &OpenRequest,
) -> Result<Outcome, EngineError> {
    let Some(booking_id) = request.payload.get("booking_id").and_then(|v| v.as_str()) else {
        return Ok(Outcome::Failed {
            detail: "the stored request is unreadable".into(),
        });
    };
    let Ok(booking_id) = booking_id.parse::<Uuid>() else {
        return Ok(Outcome::Failed {
            detail: "the stored request is unreadable".into(),
        });
    };
    let cancelled: Option<CancelledBooking> = sqlx::query_as(
        "UPDATE bookings b SET status = 'cancelled', updated_at = now()
         FROM services s
         WHERE b.tenant_id = $1 AND b.id = $2 AND b.status = 'confirmed'
           AND s.tenant_id = b.tenant_id AND s.id = b.service_id
         RETURNING s.name AS service_name, b.starts_at, b.ends_at, b.customer_name,
                   b.customer_email, b.customer_phone, b.notes",
    )
    .bind(tenant.id)
    .bind(booking_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(cancelled) = cancelled else {
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM bookings WHERE tenant_id = $1 AND id = $2)",
        )
        .bind(tenant.id)
        .bind(booking_id)
        .fetch_one(&mut *conn)
        .await?;
        return Ok(if exists {
            reject(RejectReason::NotCancellable, "the booking is not confirmed")
        } else {
            reject(RejectReason::UnknownBooking, "no such booking")
        });
    };

    let customer = Customer {
        name: cancelled.customer_name,
        email: cancelled.customer_email,
        phone: cancelled.customer_phone,
    };
    let booking = messages::BookingDetails {
        booking_id,
        service_name: &cancelled.service_name,
        start: cancelled.starts_at,
        end: cancelled.ends_at,
        customer: &customer,
        notes: cancelled.notes.as_deref(),
    };
    messages::queue(conn, tenant, tz, Event::Cancelled, &booking).await?;
    Ok(Outcome::Confirmed { booking_id })
}

#[derive(sqlx::FromRow)]
struct CancelledBooking {
    service_name: String,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    customer_name: String,
    customer_email: String,
    customer_phone: Option<String>,
    notes: Option<String>,
}

async fn in_blackout(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM blackouts
                        WHERE tenant_id = $1 AND starts_at < $3 AND ends_at > $2)",
    )
    .bind(tenant_id)
    .bind(start)
    .bind(end)
    .fetch_one(conn)
    .await
}

fn reject(reason: RejectReason, detail: &str) -> Outcome {
    Outcome::Rejected {
        reason,
        detail: detail.to_owned(),
    }
}

fn hours_violation(violation: HoursViolation, interval: i64) -> Outcome {
    match violation {
        HoursViolation::Closed => reject(RejectReason::OutsideHours, "outside opening hours"),
        HoursViolation::OffGrid => Outcome::Rejected {
            reason: RejectReason::OutsideHours,
            detail: format!("the start is not on the service's {interval}-minute slot grid"),
        },
    }
}

fn check_notice(
    service: &ServiceRules,
    start: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<Outcome> {
    if start <= now {
        return Some(reject(RejectReason::InPast, "the start is in the past"));
    }
    if start < now + Duration::minutes(service.min_notice_minutes.into()) {
        let detail = format!(
            "bookings need {} minutes' notice",
            service.min_notice_minutes
        );
        return Some(Outcome::Rejected {
            reason: RejectReason::TooSoon,
            detail,
        });
    }
    if start > now + Duration::days(service.max_days_ahead.into()) {
        let detail = format!("bookings open {} days ahead", service.max_days_ahead);
        return Some(Outcome::Rejected {
            reason: RejectReason::TooFarAhead,
            detail,
        });
    }
    None
}

fn is_overlap(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.kind() == sqlx::error::ErrorKind::ExclusionViolation)
}

/// A request that was attempted before (its decision crashed or failed) is decided alone,
/// so the requests queued behind it are not charged for its failures.
fn retried_requests_alone(open: Vec<OpenRequest>) -> Vec<OpenRequest> {
    let mut batch = Vec::with_capacity(open.len());
    for request in open {
        if !batch.is_empty() && request.attempts > 0 {
            break;
        }
        let retried = request.attempts > 0;
        batch.push(request);
        if retried {
            break;
        }
    }
    batch
}

async fn open_requests(conn: &mut PgConnection, tenant_id: Uuid) -> sqlx::Result<Vec<OpenRequest>> {
    sqlx::query_as(
        "SELECT id, kind, attempts, payload, accepted_at FROM booking_requests
         WHERE tenant_id = $1 AND status IN ('queued', 'processing')
         ORDER BY seq LIMIT $2",
    )
    .bind(tenant_id)
    .bind(BATCH_SIZE)
    .fetch_all(conn)
    .await
}

async fn load_service(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    service_id: Uuid,
) -> sqlx::Result<Option<ServiceRules>> {
    sqlx::query_as(
        "SELECT name, duration_minutes, slot_interval_minutes, buffer_before_minutes,
                buffer_after_minutes, min_notice_minutes, max_days_ahead
         FROM services WHERE tenant_id = $1 AND id = $2 AND active",
    )
    .bind(tenant_id)
    .bind(service_id)
    .fetch_optional(conn)
    .await
}

/// The resources that may take the booking: the one asked for, or every active resource
/// offering the service, in a stable order.
async fn candidate_resources(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    payload: &BookingRequestPayload,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "SELECT r.id FROM resources r
         JOIN resource_services rs ON rs.tenant_id = r.tenant_id AND rs.resource_id = r.id
         WHERE r.tenant_id = $1 AND rs.service_id = $2 AND r.active
           AND ($3::uuid IS NULL OR r.id = $3)
         ORDER BY r.name, r.id",
    )
    .bind(tenant_id)
    .bind(payload.service_id)
    .bind(payload.resource_id)
    .fetch_all(conn)
    .await
}

/// The resource's opening intervals on a local date: that date's exception when there is
/// one (closed, or other hours), otherwise its weekly hours.
pub async fn opening_hours(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    resource_id: Uuid,
    date: NaiveDate,
) -> sqlx::Result<Vec<OpeningInterval>> {
    let weekday = date.weekday().number_from_monday();
    let exception: Option<(Option<NaiveTime>, Option<NaiveTime>)> = sqlx::query_as(
        "SELECT opens_at, closes_at FROM hours_exceptions
         WHERE tenant_id = $1 AND resource_id = $2 AND date = $3",
    )
    .bind(tenant_id)
    .bind(resource_id)
    .bind(date)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(exception) = exception {
        return Ok(match exception {
            (Some(opens), Some(closes)) => vec![OpeningInterval {
                weekday,
                opens,
                closes,
            }],
            _ => Vec::new(),
        });
    }

    let rows: Vec<(NaiveTime, NaiveTime)> = sqlx::query_as(
        "SELECT opens_at, closes_at FROM opening_hours
         WHERE tenant_id = $1 AND resource_id = $2 AND weekday = $3",
    )
    .bind(tenant_id)
    .bind(resource_id)
    .bind(weekday as i16)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(opens, closes)| OpeningInterval {
            weekday,
            opens,
            closes,
        })
        .collect())
}

async fn store_outcome(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    request_id: Uuid,
    outcome: &Outcome,
) -> sqlx::Result<()> {
    let (status, reason, detail, booking_id) = match outcome {
        Outcome::Confirmed { booking_id } => ("confirmed", None, None, Some(*booking_id)),
        Outcome::Rejected { reason, detail } => (
            "rejected",
            Some(reason.as_str()),
            Some(detail.as_str()),
            None,
        ),
        Outcome::Failed { detail } => ("failed", None, Some(detail.as_str()), None),
    };
    sqlx::query(
        "UPDATE booking_requests
         SET status = $3, reason = $4, detail = $5, booking_id = $6, decided_at = clock_timestamp()
         WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant_id)
    .bind(request_id)
    .bind(status)
    .bind(reason)
    .bind(detail)
    .bind(booking_id)
    .execute(conn)
    .await?;
    Ok(())
}
