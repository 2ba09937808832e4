//! `GET /v1/availability`: the slots a booking request would get, computed by the same
//! rules the worker decides with ([`common::rules`]).
//!
//! `from` and `to` are RFC 3339 instants with an offset, or dates (`2030-01-31`), which
//! name the tenant's local days: `from` a day's first instant, `to` the end of that day.
//! Slots are listed when they start in `[from, to)`, at most [`MAX_DAYS`] days; their
//! times carry the tenant's offset at that instant.

use axum::Json;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, Utc};
use chrono_tz::Tz;
use common::domain::local_rfc3339;
use common::rules::{self, Span};
use common::schedule::local_instant;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::AppState;
use crate::problem::{FieldError, Problem};
use crate::query::field;
use crate::tenant::CurrentTenant;

/// The longest window one request may ask about: 31 days, counted in the tenant's local
/// days when both bounds are dates (so a month with a clock change still fits).
pub const MAX_DAYS: i64 = 31;
/// The years a bound may name.
const YEARS: std::ops::RangeInclusive<i32> = 1900..=9998;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuery {
    service_id: Option<String>,
    resource_id: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

/// The query as given, checked for shape; the window is resolved in the tenant's zone.
pub struct AvailabilityQuery {
    service_id: Uuid,
    resource_id: Option<Uuid>,
    from: Bound,
    to: Bound,
}

#[derive(Clone, Copy)]
enum Bound {
    Instant(DateTime<Utc>),
    Date(NaiveDate),
}

impl<S: Send + Sync> FromRequestParts<S> for AvailabilityQuery {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let Query(raw) = Query::<RawQuery>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| {
                crate::query::problem(rejection, "service_id, resource_id, from or to")
            })?;
        let mut errors = Vec::new();
        let id = |name: &str, value: Option<&str>, errors: &mut Vec<FieldError>| {
            value?
                .parse::<Uuid>()
                .map_err(|_| errors.push(field(name, "must be a UUID")))
                .ok()
        };
        let service_id = id("service_id", raw.service_id.as_deref(), &mut errors);
        if raw.service_id.is_none() {
            errors.push(field("service_id", "is required"));
        }
        let resource_id = id("resource_id", raw.resource_id.as_deref(), &mut errors);
        let from = bound("from", raw.from.as_deref(), &mut errors);
        let to = bound("to", raw.to.as_deref(), &mut errors);
        match (service_id, from, to) {
            (Some(service_id), Some(from), Some(to)) if errors.is_empty() => Ok(Self {
                service_id,
                resource_id,
                from,
                to,
            }),
            _ => Err(Problem::validation(errors)),
        }
    }
}

fn bound(name: &str, value: Option<&str>, errors: &mut Vec<FieldError>) -> Option<Bound> {
    let Some(text) = value else {
        errors.push(field(name, "is required"));
        return None;
    };
    let parsed = if let Ok(instant) = DateTime::parse_from_rfc3339(text) {
        // A leap second names no slot, as for a booking's start.
        (instant.timestamp_subsec_nanos() < 1_000_000_000)
            .then(|| Bound::Instant(instant.with_timezone(&Utc)))
    } else {
        NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .ok()
            .map(Bound::Date)
    };
    if let Some(bound) = parsed {
        let year = match bound {
            Bound::Instant(instant) => instant.year(),
            Bound::Date(date) => date.year(),
        };
        if YEARS.contains(&year) {
            return Some(bound);
        }
        errors.push(field(
            name,
            format!("must be in the years {} to {}", YEARS.start(), YEARS.end()),
        ));
        return None;
    }
    errors.push(field(
        name,
        "must be a date like 2030-01-31 or an RFC 3339 date-time with an offset, like \
         2030-01-31T09:00:00+01:00 (write + as %2B in a query string)",
    ));
    None
}

impl AvailabilityQuery {
    /// The window in absolute time: dates are the tenant's local days.
    fn window(&self, tz: Tz) -> Result<Span, Problem> {
        let midnight = NaiveTime::MIN;
        let from = match self.from {
            Bound::Instant(instant) => instant,
            Bound::Date(date) => local_instant(tz, date, midnight, false),
        };
        let until = match self.to {
            Bound::Instant(instant) => instant,
            Bound::Date(date) => match date.succ_opt() {
                Some(next) => local_instant(tz, next, midnight, false),
                None => return Err(Problem::validation(vec![field("to", "is out of range")])),
            },
        };
        if until <= from {
            return Err(Problem::validation(vec![field(
                "to",
                "must be later than from",
            )]));
        }
        let too_long = match (self.from, self.to) {
            (Bound::Date(first), Bound::Date(last)) => (last - first).num_days() + 1 > MAX_DAYS,
            _ => until - from > Duration::days(MAX_DAYS),
        };
        if too_long {
            return Err(Problem::validation(vec![field(
                "to",
                format!("must be at most {MAX_DAYS} days after from"),
            )]));
        }
        Ok(Span { from, until })
    }
}

#[derive(Debug, Serialize)]
pub struct Availability {
    pub service_id: Uuid,
    pub time_zone: String,
    pub from: String,
    pub to: String,
    pub slots: Vec<SlotView>,
}

#[derive(Debug, Serialize)]
pub struct SlotView {
    pub start: String,
    pub end: String,
    pub resource_id: Uuid,
    /// Present for group services: the seats still free in the session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seats_left: Option<i64>,
}

/// `GET /v1/availability?service_id=&from=&to=[&resource_id=]`.
pub async fn show(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    query: AvailabilityQuery,
) -> Result<Json<Availability>, Problem> {
    let tz = tenant.zone();
    let window = query.window(tz)?;
    let mut tx = common::db::tenant_snapshot_tx(&state.pool, tenant.id).await?;
    let Some(service) = rules::load_service(&mut tx, tenant.id, query.service_id).await? else {
        return Err(Problem::validation(vec![field(
            "service_id",
            "no such service",
        )]));
    };
    let resources =
        rules::candidate_resources(&mut tx, tenant.id, service.id, query.resource_id).await?;
    if query.resource_id.is_some() && resources.is_empty() {
        return Err(Problem::validation(vec![field(
            "resource_id",
            "no such resource offers this service",
        )]));
    }
    let slots = rules::availability(
        &mut tx,
        tenant.id,
        tz,
        &service,
        &resources,
        window,
        Utc::now(),
    )
    .await?;
    tx.commit().await?;

    Ok(Json(Availability {
        service_id: service.id,
        time_zone: tz.name().to_owned(),
        from: local_rfc3339(tz, window.from),
        to: local_rfc3339(tz, window.until),
        slots: slots
            .into_iter()
            .map(|slot| SlotView {
                start: local_rfc3339(tz, slot.start),
                end: local_rfc3339(tz, slot.end),
                resource_id: slot.resource_id,
                seats_left: slot.seats_left,
            })
            .collect(),
    }))
}
