//! A request id for every request: generated here, returned in `X-Request-Id`, carried in
//! the request's span and in every problem body, so a client's report finds the log line.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The current request's id, or `-` outside a request.
pub fn current() -> String {
    REQUEST_ID
        .try_with(Clone::clone)
        .unwrap_or_else(|_| "-".to_owned())
}

pub async fn assign(request: Request, next: Next) -> Response {
    let id = uuid::Uuid::now_v7().to_string();
    let span = tracing::info_span!(
        "http_request",
        http.request_id = %id,
        tenant.slug = tracing::field::Empty,
        http.method = %request.method(),
    );
    let mut response = REQUEST_ID
        .scope(
            id.clone(),
            tracing::Instrument::instrument(next.run(request), span),
        )
        .await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}
