//! Accepting booking requests. A request is validated, stored durably, queued, and answered
//! 202 with the URL to poll; the worker decides it.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, FixedOffset};
use common::domain::{BookingRequestPayload, Customer, RequestStatus, Tenant};
use common::jobs::BookingJob;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;
use validator::{Validate, ValidationError};

use crate::AppState;
use crate::json::{Json, field_errors};
use crate::problem::{FieldError, Problem};
use crate::tenant::CurrentTenant;

#[derive(Debug, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct CreateBooking {
    pub service_id: Uuid,
    #[serde(default)]
    pub resource_id: Option<Uuid>,
    #[validate(custom(function = "rfc3339_with_offset"))]
    pub start: String,
    #[validate(nested)]
    pub customer: CustomerBody,
    #[serde(default)]
    #[validate(
        length(max = 1000, message = "must be at most 1000 characters"),
        custom(function = "plain_text")
    )]
    pub notes: Option<String>,
}

#[derive(Debug, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct CustomerBody {
    #[validate(
        length(max = 200, message = "must be at most 200 characters"),
        custom(function = "not_blank")
    )]
    pub name: String,
    #[validate(
        length(max = 254, message = "must be at most 254 characters"),
        custom(function = "deliverable_email")
    )]
    pub email: String,
    #[serde(default)]
    #[validate(custom(function = "phone_number"))]
    pub phone: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Accepted {
    pub request_id: Uuid,
    pub status: RequestStatus,
    pub status_url: String,
}

/// RFC 3339 with an offset, in ASCII, at a real second (a leap second names no slot).
pub(crate) fn rfc3339_with_offset(value: &str) -> Result<(), ValidationError> {
    let parsed = DateTime::parse_from_rfc3339(value)
        .ok()
        .filter(|start| value.is_ascii() && start.timestamp_subsec_nanos() < 1_000_000_000);
    match parsed {
        Some(_) => Ok(()),
        None => Err(ValidationError::new("rfc3339").with_message(
            "must be an RFC 3339 date-time with an offset, like 2030-01-31T09:00:00+01:00".into(),
        )),
    }
}

/// Characters that take no room on screen: controls, and the invisible format characters
/// (zero-width spaces and joiners, direction marks, the byte-order mark).
fn invisible(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{feff}')
}

/// Characters that reorder the text around them (bidirectional overrides and isolates):
/// in a name or a note they could make an email read differently from what was typed.
fn reorders_text(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn not_blank(value: &str) -> Result<(), ValidationError> {
    let visible = value.chars().any(|c| !c.is_whitespace() && !invisible(c));
    if !visible || value.chars().any(|c| c.is_control() || reorders_text(c)) {
        return Err(ValidationError::new("blank").with_message(
            "must be 1 to 200 visible characters, without control or text-direction characters"
                .into(),
        ));
    }
    Ok(())
}

/// Free text may span lines, but holds no other control characters (NUL among them).
fn plain_text(value: &str) -> Result<(), ValidationError> {
    if value
        .chars()
        .any(|c| (c.is_control() && !matches!(c, '\n' | '\r' | '\t')) || reorders_text(c))
    {
        return Err(ValidationError::new("control").with_message(
            "must not contain control characters other than line breaks, nor text-direction \
             characters"
                .into(),
        ));
    }
    Ok(())
}

/// An address the notifier can send to: the same parser decides here and there.
fn deliverable_email(value: &str) -> Result<(), ValidationError> {
    // The notifier addresses messages to a Mailbox, whose parser is stricter than
    // Address's (a quoted local part with a space passes one and not the other).
    let as_mailbox = |address: &lettre::Address| {
        value
            .parse::<lettre::message::Mailbox>()
            .is_ok_and(|mailbox| mailbox.email == *address)
    };
    match value.parse::<lettre::Address>() {
        Ok(address)
            if !address.domain().starts_with('[')
                && address.domain().contains('.')
                && as_mailbox(&address) =>
        {
            Ok(())
        }
        _ => {
            Err(ValidationError::new("email").with_message("must be a valid email address".into()))
        }
    }
}

fn phone_number(value: &str) -> Result<(), ValidationError> {
    let digits = value.chars().filter(char::is_ascii_digit).count();
    let allowed = value
        .chars()
        .all(|c| c.is_ascii_digit() || " +-().".contains(c));
    if allowed && (5..=20).contains(&digits) && value.len() <= 40 {
        return Ok(());
    }
    Err(ValidationError::new("phone")
        .with_message("must be a phone number of 5 to 20 digits, with + - ( ) . or spaces".into()))
}

/// `POST /v1/bookings`: accepts a booking request for the worker to decide.
pub async fn create(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    headers: HeaderMap,
    Json(body): Json<CreateBooking>,
) -> Result<Response, Problem> {
    let idempotency_key = idempotency_key(&headers)?;
    body.validate().map_err(|errors| {
        metrics::counter!("booking_requests_refused_total", "reason" => "invalid").increment(1);
        Problem::validation(field_errors(&errors))
    })?;
    let payload = into_payload(body)?;
    check_catalogue(&state, tenant.id, &payload).await?;

    let payload = serde_json::to_value(&payload).map_err(Problem::internal)?;
    submit(&state, &tenant, "create", idempotency_key, payload).await
}

/// Stores a booking request of the given kind and queues it for the tenant's actor: 202
/// with the status URL. The same idempotency key with the same payload answers the
/// original request, also while it is still being decided; with another payload, 422. A key
/// is remembered for `IDEMPOTENCY_KEY_TTL_HOURS` (24 h by default); after that it names a
/// new request. While too many requests wait to be decided the answer is 503 (see
/// [`crate::backpressure`]). If the queue cannot take the request, it is withdrawn and the
/// answer is 503 with `Retry-After`.
pub async fn submit(
    state: &AppState,
    tenant: &Tenant,
    kind: &str,
    idempotency_key: Option<String>,
    payload: serde_json::Value,
) -> Result<Response, Problem> {
    let fingerprint = fingerprint(kind, &payload);
    let ttl_seconds = state.config.idempotency_key_ttl.as_secs_f64();

    // A retry of an accepted request is answered even when the queue is full.
    if let Some(key) = &idempotency_key
        && let Some(response) = replay(state, tenant, key, &fingerprint).await?
    {
        return Ok(response);
    }
    state
        .queue_depth
        .admit(
            &state.pool,
            tenant.id,
            state.config.queue_max_depth,
            state.config.queue_max_tenant_depth,
        )
        .await?;

    let request_id = Uuid::now_v7();
    let mut tx = common::db::tenant_tx(&state.pool, tenant.id).await?;
    if let Some(key) = &idempotency_key {
        // An expired key is released, so the insert below may take it.
        sqlx::query(
            "UPDATE booking_requests SET idempotency_key = NULL
             WHERE tenant_id = $1 AND idempotency_key = $2
               AND accepted_at < now() - make_interval(secs => $3)",
        )
        .bind(tenant.id)
        .bind(key)
        .bind(ttl_seconds)
        .execute(&mut *tx)
        .await?;
    }
    let inserted: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO booking_requests
             (tenant_id, id, kind, idempotency_key, body_fingerprint, payload)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (tenant_id, idempotency_key) DO NOTHING
         RETURNING id",
    )
    .bind(tenant.id)
    .bind(request_id)
    .bind(kind)
    .bind(&idempotency_key)
    .bind(&fingerprint)
    .bind(&payload)
    .fetch_optional(&mut *tx)
    .await?;
    // Committed before queueing, so the worker always finds what the job names.
    tx.commit().await?;

    let Some(request_id) = inserted else {
        // Another request with this key was stored between our look-up and our insert.
        let key = idempotency_key.as_deref().unwrap_or_default();
        return match replay(state, tenant, key, &fingerprint).await? {
            Some(response) => Ok(response),
            None => Err(Problem::unavailable(
                "a request with this Idempotency-Key is being withdrawn; retry",
            )),
        };
    };
    state.queue_depth.accepted(tenant.id);

    let job = BookingJob {
        tenant_id: tenant.id,
        tenant_slug: tenant.slug.clone(),
        request_id,
    };
    let mut queue = state.queue.clone();
    if let Err(err) = common::jobs::enqueue(&mut queue, job).await {
        tracing::warn!(request.id = %request_id, error = %err, "could not queue a booking request");
        if withdraw(state, tenant.id, request_id).await {
            metrics::counter!("booking_requests_refused_total", "reason" => "queue_unavailable")
                .increment(1);
            return Err(Problem::unavailable(
                "bookings cannot be queued right now; retry shortly",
            ));
        }
        // A worker's sweep took the request up already: it is accepted after all, and it
        // will be decided without its job.
        tracing::info!(request.id = %request_id, "request taken up by a worker without its job");
    }

    metrics::counter!("booking_requests_accepted_total", "tenant" => tenant.slug.clone())
        .increment(1);
    tracing::info!(request.id = %request_id, request.kind = kind, "booking request accepted");
    Ok(accepted(&tenant.slug, request_id, RequestStatus::Queued))
}

/// The request stored under an unexpired `key`: with the same fingerprint, the original
/// request's 202 again; with another, 422. `None` when the key names no live request.
async fn replay(
    state: &AppState,
    tenant: &Tenant,
    key: &str,
    fingerprint: &str,
) -> Result<Option<Response>, Problem> {
    let mut tx = common::db::tenant_tx(&state.pool, tenant.id).await?;
    let stored: Option<(Uuid, String, RequestStatus)> = sqlx::query_as(
        "SELECT id, body_fingerprint, status FROM booking_requests
         WHERE tenant_id = $1 AND idempotency_key = $2
           AND accepted_at >= now() - make_interval(secs => $3)",
    )
    .bind(tenant.id)
    .bind(key)
    .bind(state.config.idempotency_key_ttl.as_secs_f64())
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    let Some((id, stored_fingerprint, status)) = stored else {
        return Ok(None);
    };
    if stored_fingerprint != fingerprint {
        metrics::counter!("booking_requests_refused_total", "reason" => "idempotency_conflict")
            .increment(1);
        return Err(Problem::idempotency_conflict());
    }
    Ok(Some(accepted(&tenant.slug, id, status)))
}

/// Removes a request that could not be queued, so that it was never accepted. Returns
/// false when a worker has already counted an attempt at it (its sweep found the row): the
/// request then stays, and is decided like any other.
async fn withdraw(state: &AppState, tenant_id: Uuid, request_id: Uuid) -> bool {
    let deleted = async {
        let mut tx = common::db::tenant_tx(&state.pool, tenant_id).await?;
        let deleted = sqlx::query(
            "DELETE FROM booking_requests
             WHERE tenant_id = $1 AND id = $2 AND status = 'queued' AND attempts = 0",
        )
        .bind(tenant_id)
        .bind(request_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok::<_, sqlx::Error>(deleted.rows_affected() == 1)
    }
    .await;
    match deleted {
        Ok(deleted) => deleted,
        Err(err) => {
            // Limitation: if this delete fails too, the request stays stored and the sweeper
            // still decides it, although the client was told 503.
            tracing::error!(request.id = %request_id, error = %err, "could not withdraw an unqueued request");
            true
        }
    }
}

fn accepted(slug: &str, request_id: Uuid, status: RequestStatus) -> Response {
    let status_url = format!("/t/{slug}/v1/booking-requests/{request_id}");
    let location = HeaderValue::from_str(&status_url).ok();
    let mut response = (
        StatusCode::ACCEPTED,
        axum::Json(Accepted {
            request_id,
            status,
            status_url,
        }),
    )
        .into_response();
    if let Some(location) = location {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// Reads `Idempotency-Key` as a structured-field string (`"…"`); a bare token is accepted
/// too. Printable ASCII, 1 to 255 characters.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let mut values = headers.get_all("idempotency-key").iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let invalid = || {
        Problem::validation(vec![FieldError {
            field: "Idempotency-Key".into(),
            message:
                "must be given once, as a quoted string of 1 to 255 printable ASCII characters"
                    .into(),
        }])
    };
    let raw = value.to_str().map_err(|_| invalid())?.trim();
    let key = raw
        .strip_prefix('"')
        .and_then(|k| k.strip_suffix('"'))
        .unwrap_or(raw);
    let acceptable = values.next().is_none()
        && !key.trim().is_empty()
        && key
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\');
    if key.is_empty() || key.len() > 255 || !acceptable {
        return Err(invalid());
    }
    Ok(Some(key.to_owned()))
}

fn into_payload(body: CreateBooking) -> Result<BookingRequestPayload, Problem> {
    let start: DateTime<FixedOffset> = DateTime::parse_from_rfc3339(&body.start)
        .map_err(|_| Problem::bad_request("invalid start"))?;
    Ok(BookingRequestPayload {
        service_id: body.service_id,
        resource_id: body.resource_id,
        start,
        customer: Customer {
            name: body.customer.name,
            email: body.customer.email,
            phone: body.customer.phone,
        },
        notes: body.notes,
    })
}

/// The service must exist for this tenant, and the resource, when named, must offer it.
async fn check_catalogue(
    state: &AppState,
    tenant_id: Uuid,
    payload: &BookingRequestPayload,
) -> Result<(), Problem> {
    let mut tx = common::db::tenant_tx(&state.pool, tenant_id).await?;
    let (service_ok, resource_ok): (bool, bool) = sqlx::query_as(
        "SELECT
            EXISTS (SELECT 1 FROM services WHERE tenant_id = $1 AND id = $2 AND active),
            $3::uuid IS NULL OR EXISTS (
                SELECT 1 FROM resource_services rs
                JOIN resources r ON r.tenant_id = rs.tenant_id AND r.id = rs.resource_id
                WHERE rs.tenant_id = $1 AND rs.service_id = $2 AND rs.resource_id = $3
                  AND r.active)",
    )
    .bind(tenant_id)
    .bind(payload.service_id)
    .bind(payload.resource_id)
    .fetch_one(&mut *tx)
    .await?;
    let mut errors = Vec::new();
    if !service_ok {
        errors.push(FieldError {
            field: "service_id".into(),
            message: "no such service".into(),
        });
    } else if !resource_ok {
        errors.push(FieldError {
            field: "resource_id".into(),
            message: "no such resource offers this service".into(),
        });
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Problem::validation(errors))
    }
}

/// A digest of the request as understood, so the same booking sent with different
/// whitespace or key order is still the same request.
fn fingerprint(kind: &str, payload: &serde_json::Value) -> String {
    let mut digest = Sha256::new();
    digest.update(kind.as_bytes());
    digest.update([0]);
    digest.update(serde_json::to_vec(payload).unwrap_or_default());
    hex::encode(digest.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(value: &str) -> Result<Option<String>, Problem> {
        let mut headers = HeaderMap::new();
        headers.insert("idempotency-key", HeaderValue::from_str(value).unwrap());
        idempotency_key(&headers)
    }

    #[test]
    fn idempotency_key_is_a_quoted_string_or_a_bare_token() {
        assert_eq!(key("\"abc-123\"").unwrap().as_deref(), Some("abc-123"));
        assert_eq!(key("abc-123").unwrap().as_deref(), Some("abc-123"));
        assert_eq!(idempotency_key(&HeaderMap::new()).unwrap(), None);
        for bad in ["\"\"", "\"a\\\"b\"", &format!("\"{}\"", "k".repeat(256))] {
            assert!(key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_and_notes_refuse_text_direction_overrides() {
        assert!(not_blank("Zoë O'Brien").is_ok());
        assert!(not_blank("\u{202e}evil").is_err());
        assert!(plain_text("line one\nline two").is_ok());
        assert!(plain_text("pay \u{2066}here\u{2069}").is_err());
    }

    #[test]
    fn an_email_is_accepted_only_if_the_notifier_can_address_it() {
        assert!(deliverable_email("ada@example.com").is_ok());
        assert!(deliverable_email("ada+tag@example.co.uk").is_ok());
        for bad in [
            "\"a b\"@example.com",
            "ada@localhost",
            "ada@[127.0.0.1]",
            "not an email",
        ] {
            assert!(deliverable_email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn phone_numbers_need_digits_and_plain_punctuation() {
        assert!(phone_number("+44 20 7946 0958").is_ok());
        assert!(phone_number("(212) 555-0100").is_ok());
        assert!(phone_number("call me").is_err());
        assert!(phone_number("123").is_err());
    }
}
