//! A resource's opening hours: the weekly pattern and the dates that depart from it.
//!
//! Times are `HH:MM` wall-clock times in the tenant's time zone, as the booking engine reads
//! them. A day may have several weekly intervals (the gaps between them are breaks); a date
//! exception is either closed all day or one interval that replaces that day's weekly hours.

use axum::Json as JsonResponse;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{NaiveDate, NaiveTime};
use common::schedule::OpeningInterval;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;
use validator::{Validate, ValidationError};

use super::auth::Admin;
use super::path_id;
use super::resources;
use crate::AppState;
use crate::audit;
use crate::json::{Json, field_errors};
use crate::problem::{FieldError, Problem};

/// The most intervals one week may have: enough for a break every hour of every day.
const MAX_INTERVALS: u64 = 7 * 24;

#[derive(Debug, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct WeeklyHours {
    #[validate(
        length(max = MAX_INTERVALS, message = "must have at most 168 intervals"),
        nested
    )]
    pub intervals: Vec<Interval>,
}

#[derive(Debug, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct Interval {
    #[validate(range(
        min = 1,
        max = 7,
        message = "must be an ISO weekday, 1 (Monday) to 7 (Sunday)"
    ))]
    pub weekday: i64,
    #[validate(custom(function = "clock"))]
    pub opens: String,
    #[validate(custom(function = "clock"))]
    pub closes: String,
}

/// One date's hours: `{"closed": true}`, or `{"opens": "10:00", "closes": "14:00"}`.
#[derive(Debug, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct ExceptionHours {
    pub closed: Option<bool>,
    #[validate(custom(function = "clock"))]
    pub opens: Option<String>,
    #[validate(custom(function = "clock"))]
    pub closes: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Exception {
    pub date: NaiveDate,
    pub closed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opens: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closes: Option<String>,
}

#[derive(sqlx::FromRow)]
struct ExceptionRow {
    date: NaiveDate,
    opens_at: Option<NaiveTime>,
    closes_at: Option<NaiveTime>,
}

impl From<ExceptionRow> for Exception {
    fn from(row: ExceptionRow) -> Self {
        Self {
            date: row.date,
            closed: row.opens_at.is_none(),
            opens: row.opens_at.map(clock_text),
            closes: row.closes_at.map(clock_text),
        }
    }
}

/// Reads `HH:MM`, 00:00 to 23:59.
// Limitation: a day cannot close at midnight (24:00), because chrono's time of day, which the
// engine reads hours into, ends at 23:59:59; close at 23:59 instead. Storing the closing time
// as minutes since midnight would lift this.
fn parse_clock(value: &str) -> Option<NaiveTime> {
    let well_formed = value.len() == 5
        && value.bytes().enumerate().all(|(i, b)| {
            if i == 2 {
                b == b':'
            } else {
                b.is_ascii_digit()
            }
        });
    well_formed
        .then(|| NaiveTime::parse_from_str(value, "%H:%M").ok())
        .flatten()
}

fn clock(value: &str) -> Result<(), ValidationError> {
    parse_clock(value).map(|_| ()).ok_or_else(|| {
        ValidationError::new("clock")
            .with_message("must be a time of day as HH:MM, 00:00 to 23:59".into())
    })
}

fn clock_text(time: NaiveTime) -> String {
    time.format("%H:%M").to_string()
}

fn field_error(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        message: message.into(),
    }
}

/// `GET /v1/admin/resources/{id}/hours`: the weekly opening hours, by weekday and time.
pub async fn show(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<JsonResponse<WeeklyHours>, Problem> {
    let id = path_id(&id, "resource")?;
    resources::ensure_exists(&state, admin.tenant.id, id).await?;
    let mut conn = admin.db(&state).await?;
    weekly_hours(&mut conn, admin.tenant.id, id)
        .await
        .map(JsonResponse)
}

async fn weekly_hours(
    conn: &mut sqlx::PgConnection,
    tenant_id: Uuid,
    resource_id: Uuid,
) -> Result<WeeklyHours, Problem> {
    let rows: Vec<(i16, NaiveTime, NaiveTime)> = sqlx::query_as(
        "SELECT weekday, opens_at, closes_at FROM opening_hours
         WHERE tenant_id = $1 AND resource_id = $2 ORDER BY weekday, opens_at",
    )
    .bind(tenant_id)
    .bind(resource_id)
    .fetch_all(conn)
    .await?;
    let intervals = rows
        .into_iter()
        .map(|(weekday, opens, closes)| Interval {
            weekday: weekday.into(),
            opens: clock_text(opens),
            closes: clock_text(closes),
        })
        .collect();
    Ok(WeeklyHours { intervals })
}

/// `PUT /v1/admin/resources/{id}/hours`: replaces the whole week.
pub async fn replace(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
    Json(body): Json<WeeklyHours>,
) -> Result<JsonResponse<WeeklyHours>, Problem> {
    let id = path_id(&id, "resource")?;
    let intervals = parse_week(&body)?;

    let mut tx = admin.db(&state).await?;
    resources::lock(&mut tx, admin.tenant.id, id).await?;
    sqlx::query("DELETE FROM opening_hours WHERE tenant_id = $1 AND resource_id = $2")
        .bind(admin.tenant.id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let weekdays: Vec<i16> = intervals.iter().map(|i| i.weekday as i16).collect();
    let opens: Vec<NaiveTime> = intervals.iter().map(|i| i.opens).collect();
    let closes: Vec<NaiveTime> = intervals.iter().map(|i| i.closes).collect();
    sqlx::query(
        "INSERT INTO opening_hours (tenant_id, resource_id, weekday, opens_at, closes_at)
         SELECT $1, $2, * FROM unnest($3::smallint[], $4::time[], $5::time[])",
    )
    .bind(admin.tenant.id)
    .bind(id)
    .bind(&weekdays)
    .bind(&opens)
    .bind(&closes)
    .execute(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        admin.audit(
            "resource.hours.replace",
            Some(id.to_string()),
            json!({ "intervals": intervals.len() }),
        ),
    )
    .await?;
    let week = weekly_hours(&mut tx, admin.tenant.id, id).await?;
    tx.commit().await?;
    Ok(JsonResponse(week))
}

/// The week as opening intervals, or a 422 naming each `intervals[i]` that is malformed,
/// empty or overlaps another interval of its weekday. Touching intervals do not overlap.
fn parse_week(body: &WeeklyHours) -> Result<Vec<OpeningInterval>, Problem> {
    body.validate()
        .map_err(|e| Problem::validation(field_errors(&e)))?;

    let mut errors = Vec::new();
    let mut parsed: Vec<(usize, OpeningInterval)> = Vec::new();
    for (i, interval) in body.intervals.iter().enumerate() {
        let (Some(opens), Some(closes)) =
            (parse_clock(&interval.opens), parse_clock(&interval.closes))
        else {
            continue;
        };
        if opens >= closes {
            errors.push(field_error(
                format!("intervals[{i}]"),
                "must open before it closes",
            ));
            continue;
        }
        let weekday = interval.weekday as u32;
        parsed.push((
            i,
            OpeningInterval {
                weekday,
                opens,
                closes,
            },
        ));
    }

    parsed.sort_by_key(|(_, interval)| (interval.weekday, interval.opens));
    for pair in parsed.windows(2) {
        let ((earlier_index, earlier), (i, later)) = (&pair[0], &pair[1]);
        if later.weekday == earlier.weekday && later.opens < earlier.closes {
            errors.push(field_error(
                format!("intervals[{i}]"),
                format!("overlaps intervals[{earlier_index}] on the same weekday"),
            ));
        }
    }
    if !errors.is_empty() {
        errors.sort_by(|a, b| a.field.cmp(&b.field));
        return Err(Problem::validation(errors));
    }
    Ok(parsed.into_iter().map(|(_, interval)| interval).collect())
}

/// `GET /v1/admin/resources/{id}/exceptions`: the resource's date exceptions, by date.
pub async fn list_exceptions(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<JsonResponse<Vec<Exception>>, Problem> {
    let id = path_id(&id, "resource")?;
    resources::ensure_exists(&state, admin.tenant.id, id).await?;
    let rows: Vec<ExceptionRow> = sqlx::query_as(
        "SELECT date, opens_at, closes_at FROM hours_exceptions
         WHERE tenant_id = $1 AND resource_id = $2 ORDER BY date",
    )
    .bind(admin.tenant.id)
    .bind(id)
    .fetch_all(&mut *admin.db(&state).await?)
    .await?;
    Ok(JsonResponse(
        rows.into_iter().map(Exception::from).collect(),
    ))
}

/// `PUT /v1/admin/resources/{id}/exceptions/{date}`: sets one date's hours; 201 when the
/// date had no exception yet, 200 when it replaces one.
pub async fn set_exception(
    State(state): State<AppState>,
    admin: Admin,
    Path((id, date)): Path<(String, String)>,
    Json(body): Json<ExceptionHours>,
) -> Result<(StatusCode, JsonResponse<Exception>), Problem> {
    let id = path_id(&id, "resource")?;
    let date = parse_date(&date).ok_or_else(|| {
        Problem::validation(vec![field_error("date", "must be a date as YYYY-MM-DD")])
    })?;
    let hours = parse_day(&body)?;
    let (opens_at, closes_at) = hours.unzip();

    let mut tx = admin.db(&state).await?;
    resources::lock(&mut tx, admin.tenant.id, id).await?;
    let existed: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM hours_exceptions
                        WHERE tenant_id = $1 AND resource_id = $2 AND date = $3)",
    )
    .bind(admin.tenant.id)
    .bind(id)
    .bind(date)
    .fetch_one(&mut *tx)
    .await?;
    let row: ExceptionRow = sqlx::query_as(
        "INSERT INTO hours_exceptions (tenant_id, resource_id, date, opens_at, closes_at)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (tenant_id, resource_id, date) DO UPDATE
         SET opens_at = excluded.opens_at, closes_at = excluded.closes_at, updated_at = now()
         RETURNING date, opens_at, closes_at",
    )
    .bind(admin.tenant.id)
    .bind(id)
    .bind(date)
    .bind(opens_at)
    .bind(closes_at)
    .fetch_one(&mut *tx)
    .await?;
    let exception = Exception::from(row);
    audit::record(
        &mut tx,
        admin.audit(
            "resource.exception.set",
            Some(id.to_string()),
            json!({ "date": exception.date, "closed": exception.closed,
                    "opens": exception.opens, "closes": exception.closes }),
        ),
    )
    .await?;
    tx.commit().await?;

    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, JsonResponse(exception)))
}

/// `DELETE /v1/admin/resources/{id}/exceptions/{date}`: the date follows the weekly hours
/// again.
pub async fn delete_exception(
    State(state): State<AppState>,
    admin: Admin,
    Path((id, date)): Path<(String, String)>,
) -> Result<StatusCode, Problem> {
    let id = path_id(&id, "resource")?;
    let date = parse_date(&date).ok_or_else(|| Problem::not_found("no such exception"))?;

    let mut tx = admin.db(&state).await?;
    resources::lock(&mut tx, admin.tenant.id, id).await?;
    let deleted = sqlx::query(
        "DELETE FROM hours_exceptions WHERE tenant_id = $1 AND resource_id = $2 AND date = $3",
    )
    .bind(admin.tenant.id)
    .bind(id)
    .bind(date)
    .execute(&mut *tx)
    .await?;
    if deleted.rows_affected() == 0 {
        return Err(Problem::not_found("no such exception"));
    }
    audit::record(
        &mut tx,
        admin.audit(
            "resource.exception.delete",
            Some(id.to_string()),
            json!({ "date": date }),
        ),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Reads `YYYY-MM-DD`.
fn parse_date(value: &str) -> Option<NaiveDate> {
    let well_formed = value.len() == 10 && value.starts_with(|c: char| c.is_ascii_digit());
    well_formed
        .then(|| NaiveDate::parse_from_str(value, "%Y-%m-%d").ok())
        .flatten()
}

/// A date's single opening interval, or `None` when it is closed all day; a 422 names the
/// fields at fault.
fn parse_day(body: &ExceptionHours) -> Result<Option<(NaiveTime, NaiveTime)>, Problem> {
    let mut errors = body
        .validate()
        .err()
        .map(|e| field_errors(&e))
        .unwrap_or_default();

    if body.closed == Some(true) {
        for (field, given) in [("opens", &body.opens), ("closes", &body.closes)] {
            if given.is_some() {
                errors.push(field_error(field, "must be left out when closed is true"));
            }
        }
        return if errors.is_empty() {
            Ok(None)
        } else {
            Err(Problem::validation(errors))
        };
    }

    for (field, given) in [("opens", &body.opens), ("closes", &body.closes)] {
        if given.is_none() {
            errors.push(field_error(field, "is required unless closed is true"));
        }
    }
    let opens = body.opens.as_deref().and_then(parse_clock);
    let closes = body.closes.as_deref().and_then(parse_clock);
    if let (Some(opens), Some(closes)) = (opens, closes) {
        if opens >= closes {
            errors.push(field_error("closes", "must be after opens"));
        }
        if errors.is_empty() {
            return Ok(Some((opens, closes)));
        }
    }
    errors.sort_by(|a, b| a.field.cmp(&b.field));
    Err(Problem::validation(errors))
}
