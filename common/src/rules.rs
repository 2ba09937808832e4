//! A tenant's booking rules, in one place for the worker that decides requests and the api
//! that offers availability, so a slot offered is a slot that would be confirmed.
//!
//! The rules, in the order a request meets them: the service exists and is active; the
//! start is in the future, at least the service's minimum notice ahead and at most its
//! maximum days ahead; no blackout period overlaps the booking; the start is one of the
//! resource's slots that day ([`schedule::day_slots`]); the resource's time, buffers
//! included, is free ([`conflicts`], which the database's exclusion constraint has the last
//! word on); and a group session has a seat left.

use std::collections::HashMap;

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, Utc};
use chrono_tz::Tz;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::RejectReason;
use crate::schedule::{self, HoursViolation, OpeningInterval};

/// A half-open interval of time, `[from, until)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub from: DateTime<Utc>,
    pub until: DateTime<Utc>,
}

impl Span {
    pub fn overlaps(&self, other: &Span) -> bool {
        self.from < other.until && other.from < self.until
    }
}

/// What a service's bookings must respect.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ServiceRules {
    pub id: Uuid,
    pub name: String,
    pub duration_minutes: i32,
    pub slot_interval_minutes: i32,
    pub buffer_before_minutes: i32,
    pub buffer_after_minutes: i32,
    pub min_notice_minutes: i32,
    pub max_days_ahead: i32,
    pub capacity: i32,
}

impl ServiceRules {
    pub fn length(&self) -> Duration {
        Duration::minutes(self.duration_minutes.into())
    }

    pub fn interval(&self) -> Duration {
        Duration::minutes(self.slot_interval_minutes.into())
    }

    /// The booking itself, `[start, end)`.
    pub fn booked(&self, start: DateTime<Utc>) -> Span {
        Span {
            from: start,
            until: start + self.length(),
        }
    }

    /// The time the resource is taken: the booking with the buffers before and after it.
    pub fn occupied(&self, start: DateTime<Utc>) -> Span {
        Span {
            from: start - Duration::minutes(self.buffer_before_minutes.into()),
            until: start + self.length() + Duration::minutes(self.buffer_after_minutes.into()),
        }
    }

    pub fn is_group(&self) -> bool {
        self.capacity > 1
    }

    /// The key bookings of one slot share. A group session's seats share the key of
    /// (service, resource, start); an ordinary booking's key is its own id, shared with
    /// nobody. Two live bookings of a resource may overlap only if their keys are equal.
    pub fn slot_key(&self, resource_id: Uuid, start: DateTime<Utc>, booking_id: Uuid) -> Uuid {
        if !self.is_group() {
            return booking_id;
        }
        let mut digest = Sha256::new();
        digest.update(b"group-session\0");
        digest.update(self.id.as_bytes());
        digest.update(resource_id.as_bytes());
        digest.update(start.timestamp().to_be_bytes());
        let bytes: [u8; 16] = digest.finalize()[..16].try_into().expect("16 bytes");
        uuid::Builder::from_custom_bytes(bytes).into_uuid()
    }
}

/// Why a start is refused, as the public API says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: RejectReason,
    pub detail: String,
}

impl Refusal {
    pub fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

/// The start is in the future, with the service's notice, within its booking horizon.
pub fn check_timing(
    service: &ServiceRules,
    start: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), Refusal> {
    if start <= now {
        return Err(Refusal::new(
            RejectReason::InPast,
            "the start is in the past",
        ));
    }
    if start < now + Duration::minutes(service.min_notice_minutes.into()) {
        return Err(Refusal::new(
            RejectReason::TooSoon,
            format!(
                "bookings need {} minutes' notice",
                service.min_notice_minutes
            ),
        ));
    }
    if start > now + Duration::days(service.max_days_ahead.into()) {
        return Err(Refusal::new(
            RejectReason::TooFarAhead,
            format!("bookings open {} days ahead", service.max_days_ahead),
        ));
    }
    Ok(())
}

/// No blackout period overlaps the booking (its buffers may).
pub fn check_blackouts(blackouts: &[Span], booked: Span) -> Result<(), Refusal> {
    if blackouts.iter().any(|blackout| blackout.overlaps(&booked)) {
        return Err(Refusal::new(
            RejectReason::Blackout,
            "the business is closed then",
        ));
    }
    Ok(())
}

/// The start is one of the resource's slots on its local day.
pub fn check_hours(
    tz: Tz,
    service: &ServiceRules,
    start: DateTime<Utc>,
    hours: &[OpeningInterval],
) -> Result<(), Refusal> {
    schedule::check_opening_hours(tz, start, service.length(), hours, service.interval()).map_err(
        |violation| match violation {
            HoursViolation::Closed => {
                Refusal::new(RejectReason::OutsideHours, "outside opening hours")
            }
            HoursViolation::OffGrid => Refusal::new(
                RejectReason::OutsideHours,
                format!(
                    "the start is not on the service's {}-minute slot grid",
                    service.slot_interval_minutes
                ),
            ),
        },
    )
}

/// A live booking as far as the overlap rule is concerned.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Occupancy {
    pub resource_id: Uuid,
    pub occupied_from: DateTime<Utc>,
    pub occupied_until: DateTime<Utc>,
    pub slot_key: Uuid,
}

/// Whether a booking of `resource_id` taking `occupied` under `slot_key` would clash with a
/// live booking: the same rule as the `bookings_no_overlap` exclusion constraint.
pub fn conflicts(
    existing: &[Occupancy],
    resource_id: Uuid,
    occupied: Span,
    slot_key: Uuid,
) -> bool {
    existing.iter().any(|booking| {
        booking.resource_id == resource_id
            && booking.slot_key != slot_key
            && occupied.overlaps(&Span {
                from: booking.occupied_from,
                until: booking.occupied_until,
            })
    })
}

/// A resource's opening hours: the weekly intervals, and the dates that differ from them.
#[derive(Debug, Clone, Default)]
pub struct ResourceHours {
    weekly: Vec<OpeningInterval>,
    /// `None`: closed all day; otherwise that day's one interval.
    exceptions: HashMap<NaiveDate, Option<(NaiveTime, NaiveTime)>>,
}

impl ResourceHours {
    /// The intervals that apply on a local date: its exception when it has one, otherwise
    /// the weekly hours of its weekday.
    pub fn on(&self, date: NaiveDate) -> Vec<OpeningInterval> {
        let weekday = date.weekday().number_from_monday();
        match self.exceptions.get(&date) {
            Some(Some((opens, closes))) => vec![OpeningInterval {
                weekday,
                opens: *opens,
                closes: *closes,
            }],
            Some(None) => Vec::new(),
            None => self
                .weekly
                .iter()
                .filter(|interval| interval.weekday == weekday)
                .copied()
                .collect(),
        }
    }

    /// Loads the hours of each of `resources`: the weekly intervals and the exceptions dated
    /// `first..=last`, in two queries whatever the number of resources.
    pub async fn load_all(
        conn: &mut PgConnection,
        tenant_id: Uuid,
        resources: &[Uuid],
        first: NaiveDate,
        last: NaiveDate,
    ) -> sqlx::Result<HashMap<Uuid, Self>> {
        let weekly: Vec<(Uuid, i16, NaiveTime, NaiveTime)> = sqlx::query_as(
            "SELECT resource_id, weekday, opens_at, closes_at FROM opening_hours
             WHERE tenant_id = $1 AND resource_id = ANY($2)",
        )
        .bind(tenant_id)
        .bind(resources)
        .fetch_all(&mut *conn)
        .await?;
        let exceptions: Vec<(Uuid, NaiveDate, Option<NaiveTime>, Option<NaiveTime>)> =
            sqlx::query_as(
                "SELECT resource_id, date, opens_at, closes_at FROM hours_exceptions
                 WHERE tenant_id = $1 AND resource_id = ANY($2) AND date BETWEEN $3 AND $4",
            )
            .bind(tenant_id)
            .bind(resources)
            .bind(first)
            .bind(last)
            .fetch_all(conn)
            .await?;
        let mut all: HashMap<Uuid, Self> = resources
            .iter()
            .map(|resource| (*resource, Self::default()))
            .collect();
        for (resource, weekday, opens, closes) in weekly {
            all.entry(resource)
                .or_default()
                .weekly
                .push(OpeningInterval {
                    weekday: weekday as u32,
                    opens,
                    closes,
                });
        }
        for (resource, date, opens, closes) in exceptions {
            all.entry(resource)
                .or_default()
                .exceptions
                .insert(date, opens.zip(closes));
        }
        Ok(all)
    }
}

pub async fn load_service(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    service_id: Uuid,
) -> sqlx::Result<Option<ServiceRules>> {
    sqlx::query_as(
        "SELECT id, name, duration_minutes, slot_interval_minutes, buffer_before_minutes,
                buffer_after_minutes, min_notice_minutes, max_days_ahead, capacity
         FROM services WHERE tenant_id = $1 AND id = $2 AND active",
    )
    .bind(tenant_id)
    .bind(service_id)
    .fetch_optional(conn)
    .await
}

/// The resources that may take a booking of the service: the one asked for, or every
/// active resource offering it, in the order "any resource" tries them (by name, then id).
pub async fn candidate_resources(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    service_id: Uuid,
    resource_id: Option<Uuid>,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "SELECT r.id FROM resources r
         JOIN resource_services rs ON rs.tenant_id = r.tenant_id AND rs.resource_id = r.id
         WHERE r.tenant_id = $1 AND rs.service_id = $2 AND r.active
           AND ($3::uuid IS NULL OR r.id = $3)
         ORDER BY r.name, r.id",
    )
    .bind(tenant_id)
    .bind(service_id)
    .bind(resource_id)
    .fetch_all(conn)
    .await
}

/// The tenant's blackout periods overlapping `span`.
pub async fn blackouts(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    span: Span,
) -> sqlx::Result<Vec<Span>> {
    let rows: Vec<(DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT starts_at, ends_at FROM blackouts
         WHERE tenant_id = $1 AND starts_at < $3 AND ends_at > $2",
    )
    .bind(tenant_id)
    .bind(span.from)
    .bind(span.until)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(from, until)| Span { from, until })
        .collect())
}

/// Live bookings of the resources whose occupied time overlaps `span`.
pub async fn occupancy(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    resources: &[Uuid],
    span: Span,
) -> sqlx::Result<Vec<Occupancy>> {
    sqlx::query_as(
        "SELECT resource_id, lower(occupied) AS occupied_from, upper(occupied) AS occupied_until,
                slot_key
         FROM bookings
         WHERE tenant_id = $1 AND resource_id = ANY($2) AND status <> 'cancelled'
           AND occupied && tstzrange($3, $4, '[)')",
    )
    .bind(tenant_id)
    .bind(resources)
    .bind(span.from)
    .bind(span.until)
    .fetch_all(conn)
    .await
}

/// Seats taken in each live group session, by slot key.
pub async fn seats_taken(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    slot_keys: &[Uuid],
) -> sqlx::Result<HashMap<Uuid, i64>> {
    let rows: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT slot_key, count(*) FROM bookings
         WHERE tenant_id = $1 AND slot_key = ANY($2) AND status <> 'cancelled'
         GROUP BY slot_key",
    )
    .bind(tenant_id)
    .bind(slot_keys)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().collect())
}

/// A slot on offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub resource_id: Uuid,
    /// For group services, the seats still free; `None` for one-to-one services.
    pub seats_left: Option<i64>,
}

/// Every slot of the service starting in `window` that a request made at `now` would get,
/// absent a race: the rules above applied to every start of every one of `resources` (the
/// [`candidate_resources`]), in start order, then resource order. Reads inside the caller's
/// transaction, which should be a snapshot so the answer is consistent.
pub async fn availability(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    tz: Tz,
    service: &ServiceRules,
    resources: &[Uuid],
    window: Span,
    now: DateTime<Utc>,
) -> sqlx::Result<Vec<Slot>> {
    // A slot belongs to the local date it starts on; every such date lies between these.
    let first = window.from.with_timezone(&tz).date_naive();
    let last = window.until.with_timezone(&tz).date_naive();
    let margin =
        Duration::minutes((service.buffer_before_minutes + service.buffer_after_minutes).into())
            + service.length();
    let around = Span {
        from: window.from - margin,
        until: window.until + margin,
    };
    let blackouts = blackouts(conn, tenant_id, around).await?;
    let existing = occupancy(conn, tenant_id, resources, around).await?;
    let hours = ResourceHours::load_all(conn, tenant_id, resources, first, last).await?;

    let mut candidates = Vec::new();
    for &resource in resources {
        let hours = &hours[&resource];
        for date in first.iter_days().take_while(|date| *date <= last) {
            let starts = schedule::day_slots(
                tz,
                date,
                &hours.on(date),
                service.length(),
                service.interval(),
            );
            for start in starts {
                let inside = window.from <= start && start < window.until;
                if inside
                    && check_timing(service, start, now).is_ok()
                    && check_blackouts(&blackouts, service.booked(start)).is_ok()
                {
                    candidates.push((start, resource));
                }
            }
        }
    }

    // A fresh id stands for the booking being placed: for one-to-one services it shares a
    // key with nothing, as a new booking's own id would.
    let placeholder = Uuid::now_v7();
    let keys: Vec<Uuid> = candidates
        .iter()
        .map(|(start, resource)| service.slot_key(*resource, *start, placeholder))
        .collect();
    let taken = if service.is_group() {
        seats_taken(conn, tenant_id, &keys).await?
    } else {
        HashMap::new()
    };

    let mut slots: Vec<Slot> = candidates
        .into_iter()
        .zip(keys)
        .filter(|((start, resource), key)| {
            !conflicts(&existing, *resource, service.occupied(*start), *key)
        })
        .filter_map(|((start, resource), key)| {
            let seats_left = service
                .is_group()
                .then(|| i64::from(service.capacity) - taken.get(&key).copied().unwrap_or(0));
            if seats_left.is_some_and(|left| left <= 0) {
                return None;
            }
            Some(Slot {
                start,
                end: start + service.length(),
                resource_id: resource,
                seats_left,
            })
        })
        .collect();
    let order: HashMap<Uuid, usize> = resources.iter().enumerate().map(|(i, r)| (*r, i)).collect();
    slots.sort_by_key(|slot| (slot.start, order[&slot.resource_id]));
    Ok(slots)
}
