//! The HTTP layer's one error type: RFC 9457 `application/problem+json`.
//!
//! Handlers return `Result<_, Problem>` and build errors with the constructors below. A
//! server error logs its cause once, with the request id, and tells the client only that
//! id: no internal text ever leaves the process.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::request_id;

#[derive(Debug, Clone, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

#[derive(Debug)]
pub struct Problem {
    status: StatusCode,
    kind: &'static str,
    title: &'static str,
    detail: String,
    errors: Vec<FieldError>,
    retry_after_seconds: Option<u64>,
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    request_id: String,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    errors: &'a [FieldError],
}

impl Problem {
    fn new(
        status: StatusCode,
        kind: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            status,
            kind,
            title,
            detail: detail.into(),
            errors: Vec::new(),
            retry_after_seconds: None,
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "Bad request",
            detail,
        )
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    /// The body could not be read as the expected JSON document.
    pub fn malformed_body(detail: impl Into<String>, errors: Vec<FieldError>) -> Self {
        Self {
            errors,
            ..Self::new(
                StatusCode::BAD_REQUEST,
                "malformed-body",
                "Malformed body",
                detail,
            )
        }
    }

    /// The body was well-formed but some fields are not acceptable.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        Self {
            errors,
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation-failed",
                "Validation failed",
                "some fields are not valid; see errors",
            )
        }
    }

    pub fn idempotency_conflict() -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency-key-reused",
            "Idempotency key reused",
            "this Idempotency-Key was used with a different request body",
        )
    }

    /// Missing or invalid credentials. The body says nothing about which part failed.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unauthorized",
            "valid credentials are required",
        )
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", "Conflict", detail)
    }

    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            "send the body as application/json",
        )
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "Payload too large",
            format!("the body may be at most {limit} bytes"),
        )
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "Method not allowed",
            "this route does not accept that method",
        )
    }

    pub fn too_many_requests(retry_after_seconds: u64) -> Self {
        Self {
            retry_after_seconds: Some(retry_after_seconds),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too many requests",
                "slow down and retry after the time given in Retry-After",
            )
        }
    }

    /// A dependency the request needs is unreachable; nothing was accepted.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self {
            retry_after_seconds: Some(5),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
                detail,
            )
        }
    }

    /// The booking queue holds as many open requests as it may; nothing was accepted.
    pub fn queue_full(retry_after_seconds: u64) -> Self {
        Self {
            retry_after_seconds: Some(retry_after_seconds),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "queue-full",
                "Booking queue full",
                "too many booking requests are waiting to be decided; retry after the time \
                 given in Retry-After",
            )
        }
    }

    pub fn timeout() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            "Request timeout",
            "the request took too long",
        )
    }

    /// Logs `cause` once with the request id and answers 500 without its text.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(http.request_id = %request_id::current(), error = %cause, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "something went wrong on our side; quote the request_id when reporting it",
        )
    }
}

/// Response middleware: an error answer that is not already a problem document (one of
/// axum's own rejections, say) is replaced by a problem with the same status, so that every
/// error a client sees has the same shape and no library's wording.
pub async fn ensure_problem(response: Response) -> Response {
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == b"application/problem+json");
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let title = status.canonical_reason().unwrap_or("Error");
    let detail = match status {
        StatusCode::BAD_REQUEST => "the request is malformed",
        StatusCode::NOT_FOUND => "nothing here",
        StatusCode::METHOD_NOT_ALLOWED => "this route does not accept that method",
        _ if status.is_client_error() => "the request cannot be served as sent",
        _ => "something went wrong on our side; quote the request_id when reporting it",
    };
    let mut problem = Problem::new(status, "http-error", "Error", detail);
    problem.title = title;
    let mut replaced = problem.into_response();
    for (name, value) in response.headers() {
        if name == header::ALLOW || name == header::RETRY_AFTER {
            replaced.headers_mut().insert(name.clone(), value.clone());
        }
    }
    replaced
}

impl From<sqlx::Error> for Problem {
    fn from(err: sqlx::Error) -> Self {
        match err {
            err if common::db::is_unavailable(&err) => {
                tracing::warn!(http.request_id = %request_id::current(), error = %err, "database unavailable");
                Self::unavailable("the booking database is unavailable; retry shortly")
            }
            other => Self::internal(other),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = Body {
            kind: format!("https://booking.invalid/problems/{}", self.kind),
            title: self.title,
            status: self.status.as_u16(),
            detail: &self.detail,
            request_id: request_id::current(),
            errors: &self.errors,
        };
        let json = serde_json::to_vec(&body).unwrap_or_default();
        let mut response = (self.status, json).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"admin\", charset=\"UTF-8\""),
            );
        }
        if let Some(seconds) = self.retry_after_seconds {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
