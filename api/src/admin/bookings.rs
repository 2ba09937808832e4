//! The tenant's bookings for its administrators: a filtered list with cursor pagination,
//! and the same filters as a CSV download.
//!
//! Times are shown in the tenant's time zone, as RFC 3339 with the offset. The filters come
//! from the query string; a `+` in an offset must be sent as `%2B` there.

use axum::Json as JsonResponse;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

use super::auth::Admin;
use crate::AppState;
use crate::audit;
use crate::problem::{FieldError, Problem};
use crate::query::field;

/// Page size when the query gives no `limit`.
const DEFAULT_PAGE: i64 = 50;
/// The largest page a client may ask for.
const MAX_PAGE: i64 = 200;
/// The most rows one CSV export holds; the response says when there were more.
pub const MAX_EXPORT_ROWS: i64 = 10_000;
/// Set to `true` on an export that stopped at [`MAX_EXPORT_ROWS`].
const TRUNCATED_HEADER: &str = "x-export-truncated";

/// Where a booking stands; the `status` filter's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BookingStatus {
    Confirmed,
    Cancelled,
    Completed,
    NoShow,
}

impl BookingStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Confirmed => "confirmed",
            Self::Cancelled => "cancelled",
            Self::Completed => "completed",
            Self::NoShow => "no_show",
        }
    }

    fn parse(value: &str) -> Option<Self> {
        [
            Self::Confirmed,
            Self::Cancelled,
            Self::Completed,
            Self::NoShow,
        ]
        .into_iter()
        .find(|status| status.as_str() == value)
    }
}

/// Which bookings to show. Serialized as the export's audit detail.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Filters {
    /// Bookings starting at or after this instant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<DateTime<FixedOffset>>,
    /// Bookings starting before this instant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<DateTime<FixedOffset>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<BookingStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_id: Option<Uuid>,
}

/// The query string as sent. Every value is read as text and parsed here, so that each
/// error names its parameter; unknown and repeated parameters are refused by serde.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuery {
    from: Option<String>,
    to: Option<String>,
    status: Option<String>,
    resource_id: Option<String>,
    service_id: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// The list's query: filters, page size and where the page starts.
#[derive(Debug)]
pub struct ListQuery {
    pub filters: Filters,
    pub limit: i64,
    pub after: Option<Cursor>,
}

/// The export's query: filters only, the export is not paginated.
#[derive(Debug)]
pub struct ExportQuery(pub Filters);

impl<S: Send + Sync> FromRequestParts<S> for ListQuery {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let raw = raw_query(parts, state).await?;
        let mut errors = Vec::new();
        let filters = parse_filters(&raw, &mut errors);
        let limit = match raw.limit.as_deref() {
            None => DEFAULT_PAGE,
            Some(text) => match text.parse::<i64>() {
                Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
                _ => {
                    errors.push(field(
                        "limit",
                        format!("must be a whole number from 1 to {MAX_PAGE}"),
                    ));
                    DEFAULT_PAGE
                }
            },
        };
        if !errors.is_empty() {
            return Err(Problem::validation(errors));
        }
        let after = raw.cursor.as_deref().map(Cursor::decode).transpose()?;
        Ok(Self {
            filters,
            limit,
            after,
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ExportQuery {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let raw = raw_query(parts, state).await?;
        let mut errors = Vec::new();
        let filters = parse_filters(&raw, &mut errors);
        for (name, given) in [("limit", &raw.limit), ("cursor", &raw.cursor)] {
            if given.is_some() {
                errors.push(field(name, "is not accepted: the export is not paginated"));
            }
        }
        if !errors.is_empty() {
            return Err(Problem::validation(errors));
        }
        Ok(Self(filters))
    }
}

/// axum's `Query`, with its plain-text rejection replaced by a problem naming the parameter.
async fn raw_query<S: Send + Sync>(parts: &mut Parts, state: &S) -> Result<RawQuery, Problem> {
    Query::<RawQuery>::from_request_parts(parts, state)
        .await
        .map(|Query(raw)| raw)
        .map_err(|rejection| {
            crate::query::problem(
                rejection,
                "from, to, status, resource_id, service_id, limit or cursor",
            )
        })
}

fn parse_filters(raw: &RawQuery, errors: &mut Vec<FieldError>) -> Filters {
    let instant = |name: &str, value: &Option<String>, errors: &mut Vec<FieldError>| {
        let text = value.as_deref()?;
        DateTime::parse_from_rfc3339(text)
            .map_err(|_| {
                errors.push(field(
                    name,
                    "must be an RFC 3339 date-time with an offset, like \
                     2030-01-31T09:00:00+01:00 (write + as %2B in a query string)",
                ));
            })
            .ok()
    };
    let id = |name: &str, value: &Option<String>, errors: &mut Vec<FieldError>| {
        let text = value.as_deref()?;
        text.parse::<Uuid>()
            .map_err(|_| errors.push(field(name, "must be a UUID")))
            .ok()
    };

    let from = instant("from", &raw.from, errors);
    let to = instant("to", &raw.to, errors);
    if let (Some(from), Some(to)) = (from, to)
        && from >= to
    {
        errors.push(field("to", "must be later than from"));
    }
    let status = raw.status.as_deref().and_then(|text| {
        let status = BookingStatus::parse(text);
        if status.is_none() {
            errors.push(field(
                "status",
                "must be one of confirmed, cancelled, completed, no_show",
            ));
        }
        status
    });
    Filters {
        from,
        to,
        status,
        resource_id: id("resource_id", &raw.resource_id, errors),
        service_id: id("service_id", &raw.service_id, errors),
    }
}

/// The position after the last booking of a page: its start and id, in the list's order.
/// Opaque to clients: base64url of a version byte, the start in microseconds since the
/// epoch (big-endian) and the id's 16 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub starts_at: DateTime<Utc>,
    pub id: Uuid,
}

impl Cursor {
    const VERSION: u8 = 1;
    const LEN: usize = 1 + 8 + 16;

    pub fn encode(&self) -> String {
        let mut bytes = Vec::with_capacity(Self::LEN);
        bytes.push(Self::VERSION);
        bytes.extend_from_slice(&self.starts_at.timestamp_micros().to_be_bytes());
        bytes.extend_from_slice(self.id.as_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    pub fn decode(text: &str) -> Result<Self, Problem> {
        let invalid = || {
            Problem::bad_request(
                "cursor: not a cursor this API issued; start again without one and follow \
                 next_cursor",
            )
        };
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| invalid())?;
        if bytes.len() != Self::LEN || bytes[0] != Self::VERSION {
            return Err(invalid());
        }
        let micros = i64::from_be_bytes(bytes[1..9].try_into().map_err(|_| invalid())?);
        let starts_at = DateTime::from_timestamp_micros(micros).ok_or_else(invalid)?;
        let id = Uuid::from_slice(&bytes[9..]).map_err(|_| invalid())?;
        Ok(Self { starts_at, id })
    }
}

/// A booking as stored, with the names of its service and resource.
#[derive(Debug, sqlx::FromRow)]
pub struct BookingRow {
    pub id: Uuid,
    pub request_id: Uuid,
    pub service_id: Uuid,
    pub service_name: String,
    pub resource_id: Uuid,
    pub resource_name: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub status: String,
    pub customer_name: String,
    pub customer_email: String,
    pub customer_phone: Option<String>,
    pub notes: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The columns of [`BookingRow`], from `bookings b` joined to `services s` and
/// `resources r`.
pub const BOOKING_ROW_SQL: &str = "SELECT b.id, b.request_id, b.service_id, s.name AS service_name,
        b.resource_id, r.name AS resource_name, b.starts_at, b.ends_at, b.status,
        b.customer_name, b.customer_email, b.customer_phone, b.notes, b.created_at, b.updated_at
    FROM bookings b
    JOIN services s ON s.tenant_id = b.tenant_id AND s.id = b.service_id
    JOIN resources r ON r.tenant_id = b.tenant_id AND r.id = b.resource_id";

#[derive(Debug, Serialize)]
pub struct Booking {
    pub id: Uuid,
    pub request_id: Uuid,
    pub service_id: Uuid,
    pub resource_id: Uuid,
    pub start: DateTime<FixedOffset>,
    pub end: DateTime<FixedOffset>,
    pub status: String,
    pub customer: CustomerView,
    pub notes: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize)]
pub struct CustomerView {
    pub name: String,
    pub email: String,
    pub phone: Option<String>,
}

impl BookingRow {
    pub fn view(&self, tz: Tz) -> Booking {
        Booking {
            id: self.id,
            request_id: self.request_id,
            service_id: self.service_id,
            resource_id: self.resource_id,
            start: local(self.starts_at, tz),
            end: local(self.ends_at, tz),
            status: self.status.clone(),
            customer: CustomerView {
                name: self.customer_name.clone(),
                email: self.customer_email.clone(),
                phone: self.customer_phone.clone(),
            },
            notes: self.notes.clone(),
            created_at: self.created_at,
        }
    }
}

/// The tenant's time zone; UTC if the stored name is not one (the catalogue checks it).
pub fn tenant_zone(admin: &Admin) -> Tz {
    admin.tenant.zone()
}

fn local(instant: DateTime<Utc>, tz: Tz) -> DateTime<FixedOffset> {
    instant.with_timezone(&tz).fixed_offset()
}

/// As the JSON shows it: `Z` for a zero offset, fractions of a second only when there are.
fn rfc3339(instant: DateTime<FixedOffset>) -> String {
    instant.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

#[derive(Debug, Serialize)]
pub struct Page {
    pub bookings: Vec<Booking>,
    pub next_cursor: Option<String>,
}

/// `GET /v1/admin/bookings`: one page of the tenant's bookings, ordered by start and id.
pub async fn list(
    State(state): State<AppState>,
    admin: Admin,
    query: ListQuery,
) -> Result<JsonResponse<Page>, Problem> {
    let mut rows = fetch(
        &state,
        admin.tenant.id,
        &query.filters,
        query.after,
        query.limit + 1,
    )
    .await?;

    let more = rows.len() as i64 > query.limit;
    rows.truncate(query.limit as usize);
    let next_cursor = rows.last().filter(|_| more).map(|last| {
        Cursor {
            starts_at: last.starts_at,
            id: last.id,
        }
        .encode()
    });
    let tz = tenant_zone(&admin);
    Ok(JsonResponse(Page {
        bookings: rows.iter().map(|row| row.view(tz)).collect(),
        next_cursor,
    }))
}

/// `GET /v1/admin/bookings/export.csv`: the bookings the filters select, at most
/// [`MAX_EXPORT_ROWS`] of them, as a CSV download. Audited with the filters and row count.
pub async fn export(
    State(state): State<AppState>,
    admin: Admin,
    ExportQuery(filters): ExportQuery,
) -> Result<Response, Problem> {
    let mut rows = fetch(&state, admin.tenant.id, &filters, None, MAX_EXPORT_ROWS + 1).await?;
    let truncated = rows.len() as i64 > MAX_EXPORT_ROWS;
    rows.truncate(MAX_EXPORT_ROWS as usize);
    let csv = write_csv(&rows, tenant_zone(&admin)).map_err(Problem::internal)?;

    let mut conn = admin.db(&state).await?;
    let detail = json!({ "filters": filters, "rows": rows.len(), "truncated": truncated });
    audit::record(&mut conn, admin.audit("bookings.export", None, detail)).await?;
    conn.commit().await?;

    let mut response = (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"bookings.csv\"",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        csv,
    )
        .into_response();
    response.headers_mut().insert(
        TRUNCATED_HEADER,
        HeaderValue::from_static(if truncated { "true" } else { "false" }),
    );
    Ok(response)
}

/// The tenant's bookings that pass the filters and come after `after`, in list order.
/// Only the predicates in use are written out, so the planner can walk
/// `bookings_by_start` from the cursor instead of filtering from the first booking.
async fn fetch(
    state: &AppState,
    tenant_id: Uuid,
    filters: &Filters,
    after: Option<Cursor>,
    limit: i64,
) -> Result<Vec<BookingRow>, Problem> {
    let mut query = QueryBuilder::<Postgres>::new(BOOKING_ROW_SQL);
    query.push(" WHERE b.tenant_id = ").push_bind(tenant_id);
    if let Some(from) = filters.from {
        query.push(" AND b.starts_at >= ").push_bind(from);
    }
    if let Some(to) = filters.to {
        query.push(" AND b.starts_at < ").push_bind(to);
    }
    if let Some(status) = filters.status {
        query.push(" AND b.status = ").push_bind(status.as_str());
    }
    if let Some(resource_id) = filters.resource_id {
        query.push(" AND b.resource_id = ").push_bind(resource_id);
    }
    if let Some(service_id) = filters.service_id {
        query.push(" AND b.service_id = ").push_bind(service_id);
    }
    if let Some(after) = after {
        query
            .push(" AND (b.starts_at, b.id) > (")
            .push_bind(after.starts_at)
            .push(", ")
            .push_bind(after.id)
            .push(")");
    }
    query
        .push(" ORDER BY b.starts_at, b.id LIMIT ")
        .push_bind(limit);

    let mut tx = common::db::tenant_tx(&state.pool, tenant_id).await?;
    let rows = query.build_query_as().fetch_all(&mut *tx).await?;
    Ok(rows)
}

const CSV_COLUMNS: [&str; 10] = [
    "id",
    "start",
    "end",
    "status",
    "service",
    "resource",
    "customer_name",
    "customer_email",
    "customer_phone",
    "notes",
];

fn write_csv(rows: &[BookingRow], tz: Tz) -> Result<Vec<u8>, csv::Error> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(CSV_COLUMNS)?;
    for row in rows {
        let record = [
            row.id.to_string(),
            rfc3339(local(row.starts_at, tz)),
            rfc3339(local(row.ends_at, tz)),
            row.status.clone(),
            row.service_name.clone(),
            row.resource_name.clone(),
            row.customer_name.clone(),
            row.customer_email.clone(),
            row.customer_phone.clone().unwrap_or_default(),
            row.notes.clone().unwrap_or_default(),
        ];
        writer.write_record(record.map(spreadsheet_safe))?;
    }
    writer.into_inner().map_err(|err| err.into_error().into())
}

/// A cell a spreadsheet will show as text: one that would start a formula (`=`, `+`, `-`,
/// `@`, tab or carriage return) gets a leading `'`. Stored text stays as the customer gave
/// it; this is where it meets a spreadsheet.
fn spreadsheet_safe(cell: String) -> String {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}")
    } else {
        cell
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_refuses_anything_else() {
        let cursor = Cursor {
            starts_at: DateTime::from_timestamp_micros(1_900_000_000_123_456).unwrap(),
            id: Uuid::now_v7(),
        };
        assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), cursor);

        let encoded = cursor.encode();
        for bad in [
            "",
            "not a cursor",
            "AAAA",
            &encoded[..encoded.len() - 2],
            &format!("{encoded}AA"),
            &URL_SAFE_NO_PAD.encode([9u8; 25]),
        ] {
            assert!(Cursor::decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn formula_starts_are_quoted() {
        assert_eq!(spreadsheet_safe("=1+1".into()), "'=1+1");
        assert_eq!(spreadsheet_safe("+1".into()), "'+1");
        assert_eq!(spreadsheet_safe("-1".into()), "'-1");
        assert_eq!(spreadsheet_safe("@SUM(A1)".into()), "'@SUM(A1)");
        assert_eq!(spreadsheet_safe("\tx".into()), "'\tx");
        assert_eq!(spreadsheet_safe("\rx".into()), "'\rx");
        assert_eq!(spreadsheet_safe("Ada = Lovelace".into()), "Ada = Lovelace");
        assert_eq!(spreadsheet_safe("".into()), "");
    }

    #[test]
    fn statuses_parse_by_their_names_only() {
        assert_eq!(BookingStatus::parse("no_show"), Some(BookingStatus::NoShow));
        assert_eq!(BookingStatus::parse("Confirmed"), None);
        assert_eq!(BookingStatus::parse("pending"), None);
    }
}
