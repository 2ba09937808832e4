//! Cross-origin access for browser clients, from `CORS_ORIGINS`, with tower-http's CORS
//! layer.
//!
//! Only a request from a listed origin goes through that layer. Everything else passes by
//! without any CORS header: the layer would otherwise answer every preflight with the
//! methods and headers it allows, whatever the origin, and with an empty list nothing at
//! all should be announced.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::Response;
use tower::{Layer, ServiceExt};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// How long a browser may cache a preflight answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

#[derive(Clone)]
pub struct CorsPolicy {
    origins: Arc<[HeaderValue]>,
    layer: CorsLayer,
}

impl CorsPolicy {
    /// From `CORS_ORIGINS` entries: exact origins such as `https://app.example.com`.
    pub fn new(origins: &[String]) -> Self {
        let origins: Arc<[HeaderValue]> = origins
            .iter()
            .filter_map(|origin| HeaderValue::from_str(origin).ok())
            .collect();
        let layer = CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins.iter().cloned()))
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::DELETE,
                Method::PATCH,
                Method::OPTIONS,
            ])
            .allow_headers([
                header::CONTENT_TYPE,
                HeaderName::from_static("idempotency-key"),
                header::AUTHORIZATION,
                HeaderName::from_static("x-tenant"),
            ])
            .expose_headers([
                header::LOCATION,
                header::RETRY_AFTER,
                HeaderName::from_static("x-request-id"),
                HeaderName::from_static("ratelimit"),
                HeaderName::from_static("ratelimit-policy"),
            ])
            .max_age(PREFLIGHT_MAX_AGE);
        Self { origins, layer }
    }

    fn lists(&self, request: &Request) -> bool {
        request
            .headers()
            .get(header::ORIGIN)
            .is_some_and(|origin| self.origins.contains(origin))
    }
}

/// Middleware: runs a request from a listed origin through the CORS layer (which answers
/// preflights itself), and any other request straight on.
pub async fn apply(State(policy): State<CorsPolicy>, request: Request, next: Next) -> Response {
    if !policy.lists(&request) {
        let mut response = next.run(request).await;
        if !policy.origins.is_empty() {
            // The answer differs by origin; caches must not hand this one to a listed one.
            response
                .headers_mut()
                .append(header::VARY, HeaderValue::from_static("origin"));
        }
        return response;
    }
    match policy.layer.layer(next).oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}
