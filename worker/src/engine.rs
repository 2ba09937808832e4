//! The booking engine: decides a tenant's open booking requests, oldest first, inside one
//! PostgreSQL transaction that holds the tenant's advisory lock.
//!
//! The database has the last word on overlaps: the exclusion constraint on `bookings`
//! refuses a second live booking of a resource in an occupied span, and that refusal
//! becomes a `slot_taken` rejection. Each request is decided under its own savepoint, so
//! one rejection never undoes another request's booking.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, FixedOffset, Utc};
use chrono_tz::Tz;
use common::domain::{BookingRequestPayload, Customer, RejectReason, Tenant};
use common::manage;
use common::rules::{self, Refusal, ResourceHours, ServiceRules};
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
    /// With a secret, every new booking gets a manage link (see [`common::manage`]).
    manage_link_secret: Option<Arc<str>>,
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

impl Engine {
    pub fn new(pool: PgPool, max_attempts: i32) -> Self {
        Self {
            pool,
            max_attempts,
            manage_link_secret: None,
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

    /// Gives new bookings manage links derived from `secret`.
    pub fn with_manage_links(self, secret: &str) -> Self {
        Self {
            manage_link_secret: Some(secret.into()),
            ..self
        }
    }

    /// What the engine would decide for a new booking request right now, without keeping
    /// anything: the decision runs under the tenant's lock in a transaction that is rolled
    /// back. For checking that availability and decisions agree.
    pub async fn dry_run(
        &self,
        tenant_id: Uuid,
        payload: BookingRequestPayload,
    ) -> Result<Outcome, EngineError> {
        let tenant = common::db::tenant_by_id(&self.pool, tenant_id)
            .await?
            .ok_or(EngineError::UnknownTenant(tenant_id))?;
        let tz = tenant.zone();
        let mut tx = common::db::tenant_tx(&self.pool, tenant.id).await?;
        lock_tenant(&mut tx, tenant.id).await?;
        let decided = self
            .create(&mut tx, &tenant, tz, Uuid::now_v7(), payload)
            .await?;
        tx.rollback().await?;
        Ok(match decided {
            Ok(booking_id) => Outcome::Confirmed { booking_id },
            Err(refusal) => Outcome::Rejected {
                reason: refusal.reason,
                detail: refusal.detail,
            },
        })
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
        let tz = tenant.zone();
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
        lock_tenant(&mut tx, tenant.id).await?;

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
                let outcome = self.decide(&mut savepoint, tenant, tz, &request).await?;
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

    /// Decides one request by its kind. Returns an error only for database failures other
    /// than the overlap and seat constraints; the caller then retries the batch later.
    async fn decide(
        &self,
        conn: &mut PgConnection,
        tenant: &Tenant,
        tz: Tz,
        request: &OpenRequest,
    ) -> Result<Outcome, EngineError> {
        let decided = match request.kind.as_str() {
            "cancel" => match serde_json::from_value::<CancelRequest>(request.payload.clone()) {
                Ok(change) => cancel(conn, tenant, tz, change.booking_id).await?,
                Err(_) => return Ok(unreadable()),
            },
            "reschedule" => {
                match serde_json::from_value::<RescheduleRequest>(request.payload.clone()) {
                    Ok(change) => self.reschedule(conn, tenant, tz, change).await?,
                    Err(_) => return Ok(unreadable()),
                }
            }
            _ => match serde_json::from_value(request.payload.clone()) {
                Ok(payload) => self.create(conn, tenant, tz, request.id, payload).await?,
                Err(_) => return Ok(unreadable()),
            },
        };
        Ok(match decided {
            Ok(booking_id) => Outcome::Confirmed { booking_id },
            Err(refusal) => Outcome::Rejected {
                reason: refusal.reason,
                detail: refusal.detail,
            },
        })
    }

    /// A new booking: the rules, then the first candidate resource that takes it.
    async fn create(
        &self,
        conn: &mut PgConnection,
        tenant: &Tenant,
        tz: Tz,
        request_id: Uuid,
        payload: BookingRequestPayload,
    ) -> Result<Result<Uuid, Refusal>, EngineError> {
        let Some(service) = rules::load_service(conn, tenant.id, payload.service_id).await? else {
            return Ok(Err(Refusal::new(
                RejectReason::UnknownService,
                "the service does not exist",
            )));
        };
        let start = payload.start.with_timezone(&Utc);
        if let Err(refusal) = check_time_rules(conn, tenant.id, &service, start).await? {
            return Ok(Err(refusal));
        }
        let candidates =
            rules::candidate_resources(conn, tenant.id, service.id, payload.resource_id).await?;

        let booking_id = Uuid::now_v7();
        let manage_token_hash = self
            .manage_link_secret
            .as_deref()
            .map(|secret| manage::token_hash(&manage::token(secret, tenant.id, booking_id)));
        let new = NewBooking {
            id: booking_id,
            request_id,
            payload: &payload,
            manage_token_hash,
        };
        let placed = place(
            conn,
            tenant.id,
            tz,
            &service,
            start,
            &candidates,
            Placing::New(&new),
        )
        .await?;
        if let Err(refusal) = placed {
            return Ok(Err(refusal));
        }

        let booking = messages::BookingDetails {
            booking_id,
            service_name: &service.name,
            start,
            end: start + service.length(),
            customer: &payload.customer,
            notes: payload.notes.as_deref(),
            sequence: 0,
            manage_link: new.manage_token_hash.is_some(),
            previous_start: None,
        };
        messages::queue(conn, tenant, tz, Event::Confirmed, &booking).await?;
        Ok(Ok(booking_id))
    }

    /// Moves a confirmed booking to another start (and perhaps resource), keeping its id.
    /// One UPDATE moves it, so the booking never holds both slots nor neither; the
    /// exclusion constraint checks the new time against every other booking.
    async fn reschedule(
        &self,
        conn: &mut PgConnection,
        tenant: &Tenant,
        tz: Tz,
        change: RescheduleRequest,
    ) -> Result<Result<Uuid, Refusal>, EngineError> {
        let Some(current) = load_booking(conn, tenant.id, change.booking_id).await? else {
            return Ok(Err(Refusal::new(
                RejectReason::UnknownBooking,
                "no such booking",
            )));
        };
        if current.status != "confirmed" {
            return Ok(Err(Refusal::new(
                RejectReason::NotReschedulable,
                "only a confirmed booking can be rescheduled",
            )));
        }
        let start = change.start.with_timezone(&Utc);
        let stays = change.resource_id.is_none_or(|r| r == current.resource_id);
        if start == current.starts_at && stays {
            // Already there: nothing moves, nothing is announced.
            return Ok(Ok(change.booking_id));
        }
        let Some(service) = rules::load_service(conn, tenant.id, current.service_id).await? else {
            return Ok(Err(Refusal::new(
                RejectReason::UnknownService,
                "the booking's service is no longer offered",
            )));
        };
        if let Err(refusal) = check_time_rules(conn, tenant.id, &service, start).await? {
            return Ok(Err(refusal));
        }
        let mut candidates =
            rules::candidate_resources(conn, tenant.id, service.id, change.resource_id).await?;
        // Without a resource asked for, the booking stays with its own when it can.
        if let Some(own) = candidates.iter().position(|r| *r == current.resource_id) {
            let own = candidates.remove(own);
            candidates.insert(0, own);
        }
        let placed = place(
            conn,
            tenant.id,
            tz,
            &service,
            start,
            &candidates,
            Placing::Move(change.booking_id),
        )
        .await?;
        let sequence = match placed {
            Ok(Placed::Moved { sequence }) => sequence,
            Ok(Placed::Inserted) => unreachable!("a move never inserts"),
            Err(refusal) => return Ok(Err(refusal)),
        };

        let customer = Customer {
            name: current.customer_name,
            email: current.customer_email,
            phone: current.customer_phone,
        };
        let booking = messages::BookingDetails {
            booking_id: change.booking_id,
            service_name: &service.name,
            start,
            end: start + service.length(),
            customer: &customer,
            notes: current.notes.as_deref(),
            sequence,
            manage_link: current.has_manage_link,
            previous_start: Some(current.starts_at),
        };
        messages::queue(conn, tenant, tz, Event::Rescheduled, &booking).await?;
        Ok(Ok(change.booking_id))
    }
}

/// A cancellation names the booking.
#[derive(Debug, serde::Deserialize)]
struct CancelRequest {
    booking_id: Uuid,
}

/// A reschedule names the booking, its new start and, optionally, the resource to move to.
#[derive(Debug, serde::Deserialize)]
struct RescheduleRequest {
    booking_id: Uuid,
    start: DateTime<FixedOffset>,
    #[serde(default)]
    resource_id: Option<Uuid>,
}

fn unreadable() -> Outcome {
    Outcome::Failed {
        detail: "the stored request is unreadable".into(),
    }
}

/// The rules that do not depend on the resource: notice, horizon and blackouts.
async fn check_time_rules(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    service: &ServiceRules,
    start: DateTime<Utc>,
) -> sqlx::Result<Result<(), Refusal>> {
    if let Err(refusal) = rules::check_timing(service, start, Utc::now()) {
        return Ok(Err(refusal));
    }
    let booked = service.booked(start);
    let blackouts = rules::blackouts(conn, tenant_id, booked).await?;
    Ok(rules::check_blackouts(&blackouts, booked))
}

struct NewBooking<'a> {
    id: Uuid,
    request_id: Uuid,
    payload: &'a BookingRequestPayload,
    manage_token_hash: Option<Vec<u8>>,
}

enum Placing<'a> {
    New(&'a NewBooking<'a>),
    Move(Uuid),
}

enum Placed {
    Inserted,
    Moved { sequence: i32 },
}

impl Placing<'_> {
    fn booking_id(&self) -> Uuid {
        match self {
            Self::New(new) => new.id,
            Self::Move(id) => *id,
        }
    }
}

/// Puts the booking on the first candidate resource whose hours have the start, whose time
/// is free and, for a group service, whose session has a seat left. The database decides
/// "free" and "seat left": each try runs under a savepoint, and a violated exclusion or
/// seat constraint moves on to the next resource.
async fn place(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    tz: Tz,
    service: &ServiceRules,
    start: DateTime<Utc>,
    candidates: &[Uuid],
    placing: Placing<'_>,
) -> Result<Result<Placed, Refusal>, EngineError> {
    if candidates.is_empty() {
        return Ok(Err(Refusal::new(
            RejectReason::UnknownResource,
            "no active resource offers this service",
        )));
    }
    let date = start.with_timezone(&tz).date_naive();
    let booking_id = placing.booking_id();
    let mut hours_refusal = None;
    let mut full = false;
    let mut taken = false;
    let hours = ResourceHours::load_all(conn, tenant_id, candidates, date, date).await?;
    for &resource_id in candidates {
        if let Err(refusal) = rules::check_hours(tz, service, start, &hours[&resource_id].on(date))
        {
            hours_refusal.get_or_insert(refusal);
            continue;
        }
        let slot_key = service.slot_key(resource_id, start, booking_id);
        let Some(seat) = free_seat(conn, tenant_id, service, slot_key, booking_id).await? else {
            full = true;
            continue;
        };

        let mut attempt = sqlx::Connection::begin(&mut *conn).await?;
        let occupied = service.occupied(start);
        let written = match &placing {
            Placing::New(new) => sqlx::query_scalar::<_, i32>(
                "INSERT INTO bookings (tenant_id, id, request_id, service_id, resource_id,
                     starts_at, ends_at, occupied, slot_key, seat, seats, customer_name,
                     customer_email, customer_phone, notes, manage_token_hash)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, tstzrange($8, $9, '[)'), $10, $11, $12,
                         $13, $14, $15, $16, $17)
                 RETURNING sequence",
            )
            .bind(tenant_id)
            .bind(new.id)
            .bind(new.request_id)
            .bind(service.id)
            .bind(resource_id)
            .bind(start)
            .bind(start + service.length())
            .bind(occupied.from)
            .bind(occupied.until)
            .bind(slot_key)
            .bind(seat)
            .bind(service.capacity)
            .bind(&new.payload.customer.name)
            .bind(&new.payload.customer.email)
            .bind(&new.payload.customer.phone)
            .bind(&new.payload.notes)
            .bind(&new.manage_token_hash)
            .fetch_one(&mut *attempt)
            .await
            .map(|_| Placed::Inserted),
            Placing::Move(id) => sqlx::query_scalar::<_, i32>(
                "UPDATE bookings
                 SET resource_id = $3, starts_at = $4, ends_at = $5,
                     occupied = tstzrange($6, $7, '[)'), slot_key = $8, seat = $9, seats = $10,
                     sequence = sequence + 1, updated_at = now()
                 WHERE tenant_id = $1 AND id = $2 AND status = 'confirmed'
                 RETURNING sequence",
            )
            .bind(tenant_id)
            .bind(id)
            .bind(resource_id)
            .bind(start)
            .bind(start + service.length())
            .bind(occupied.from)
            .bind(occupied.until)
            .bind(slot_key)
            .bind(seat)
            .bind(service.capacity)
            .fetch_one(&mut *attempt)
            .await
            .map(|sequence| Placed::Moved { sequence }),
        };
        match written {
            Ok(placed) => {
                attempt.commit().await?;
                return Ok(Ok(placed));
            }
            Err(err) if is_overlap(&err) => {
                attempt.rollback().await?;
                taken = true;
            }
            Err(err) if is_seat_taken(&err) => {
                attempt.rollback().await?;
                full = true;
            }
            Err(err) => return Err(err.into()),
        }
    }
    Ok(Err(if taken {
        Refusal::new(RejectReason::SlotTaken, "the slot is already booked")
    } else if full {
        Refusal::new(
            RejectReason::CapacityFull,
            "every seat of the session is taken",
        )
    } else {
        hours_refusal
            .unwrap_or_else(|| Refusal::new(RejectReason::OutsideHours, "outside opening hours"))
    }))
}

/// The lowest seat number free in the session, or `None` when as many seats are taken as
/// the service has. For a one-to-one service, always seat 1 of the booking's own session.
/// The booking being placed does not count against itself.
async fn free_seat(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    service: &ServiceRules,
    slot_key: Uuid,
    booking_id: Uuid,
) -> sqlx::Result<Option<i32>> {
    if !service.is_group() {
        return Ok(Some(1));
    }
    let seats: Vec<i32> = sqlx::query_scalar(
        "SELECT seat FROM bookings
         WHERE tenant_id = $1 AND slot_key = $2 AND status <> 'cancelled' AND id <> $3",
    )
    .bind(tenant_id)
    .bind(slot_key)
    .bind(booking_id)
    .fetch_all(conn)
    .await?;
    if seats.len() >= service.capacity as usize {
        return Ok(None);
    }
    Ok((1..=service.capacity).find(|seat| !seats.contains(seat)))
}

#[derive(sqlx::FromRow)]
struct CurrentBooking {
    service_id: Uuid,
    resource_id: Uuid,
    status: String,
    starts_at: DateTime<Utc>,
    customer_name: String,
    customer_email: String,
    customer_phone: Option<String>,
    notes: Option<String>,
    has_manage_link: bool,
}

async fn load_booking(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    booking_id: Uuid,
) -> sqlx::Result<Option<CurrentBooking>> {
    sqlx::query_as(
        "SELECT service_id, resource_id, status, starts_at, customer_name, customer_email,
                customer_phone, notes, manage_token_hash IS NOT NULL AS has_manage_link
         FROM bookings WHERE tenant_id = $1 AND id = $2
         FOR UPDATE",
    )
    .bind(tenant_id)
    .bind(booking_id)
    .fetch_optional(conn)
    .await
}

/// Cancels a confirmed booking. A booking is cancelled once; a cancelled booking is never
/// revived, so its slot may already belong to someone else.
async fn cancel(
    conn: &mut PgConnection,
    tenant: &Tenant,
    tz: Tz,
    booking_id: Uuid,
) -> Result<Result<Uuid, Refusal>, EngineError> {
    let cancelled: Option<CancelledBooking> = sqlx::query_as(
        "UPDATE bookings b SET status = 'cancelled', sequence = b.sequence + 1, updated_at = now()
         FROM services s
         WHERE b.tenant_id = $1 AND b.id = $2 AND b.status = 'confirmed'
           AND s.tenant_id = b.tenant_id AND s.id = b.service_id
         RETURNING s.name AS service_name, b.starts_at, b.ends_at, b.customer_name,
                   b.customer_email, b.customer_phone, b.notes, b.sequence",
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
        return Ok(Err(if exists {
            Refusal::new(RejectReason::NotCancellable, "the booking is not confirmed")
        } else {
            Refusal::new(RejectReason::UnknownBooking, "no such booking")
        }));
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
        sequence: cancelled.sequence,
        manage_link: false,
        previous_start: None,
    };
    messages::queue(conn, tenant, tz, Event::Cancelled, &booking).await?;
    Ok(Ok(booking_id))
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
    sequence: i32,
}

fn is_seat_taken(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db)
        if db.kind() == sqlx::error::ErrorKind::UniqueViolation
            && db.constraint() == Some("bookings_one_seat_each"))
}

/// Takes the tenant's decision lock until the transaction ends: decisions of one tenant are
/// serialized across every worker process.
async fn lock_tenant(conn: &mut PgConnection, tenant_id: Uuid) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('tenant:' || $1::text, 0))")
        .bind(tenant_id)
        .execute(conn)
        .await?;
    Ok(())
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
