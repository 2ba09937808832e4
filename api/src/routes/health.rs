//! Liveness, readiness and metrics.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::AppState;
use crate::client_ip::ClientIp;
use crate::problem::Problem;
use ipnet::IpNet;

/// `GET /healthz`: the process answers.
pub async fn live() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

/// `GET /readyz`: PostgreSQL and Redis both answer: 200. Otherwise 503 problem+json with
/// `Retry-After`, naming the store that does not answer (`database`, `redis`: up or down),
/// so an operator sees at once which one is away.
pub async fn ready(State(state): State<AppState>) -> Response {
    let database = tokio::time::timeout(
        READINESS_TIMEOUT,
        sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&state.pool),
    )
    .await
    .is_ok_and(|answer| answer.is_ok());
    let mut redis = state.redis.clone();
    let redis = tokio::time::timeout(
        READINESS_TIMEOUT,
        redis::cmd("PING").query_async::<String>(&mut redis),
    )
    .await
    .is_ok_and(|answer| answer.is_ok());
    let state_of = |up: bool| if up { "up" } else { "down" };
    if database && redis {
        let body = json!({"status": "ready", "database": "up", "redis": "up"});
        return axum::Json(body).into_response();
    }
    let down: Vec<&str> = [("database", database), ("redis", redis)]
        .into_iter()
        .filter(|(_, up)| !up)
        .map(|(name, _)| name)
        .collect();
    let body = json!({
        "type": "https://booking.invalid/problems/not-ready",
        "title": "Not ready",
        "status": 503,
        "detail": format!("not answering: {}", down.join(", ")),
        "request_id": crate::request_id::current(),
        "database": state_of(database),
        "redis": state_of(redis),
    });
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [
            (header::CONTENT_TYPE, "application/problem+json"),
            (header::RETRY_AFTER, "5"),
        ],
        body.to_string(),
    )
        .into_response()
}

/// A store that has not answered readiness within this is reported down.
const READINESS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// `GET /metrics`: Prometheus text, for clients in `METRICS_ALLOWED` only (loopback and
/// private networks by default), since it names every tenant; others get a 404.
pub async fn metrics(State(state): State<AppState>, ClientIp(client): ClientIp) -> Response {
    let allowed = state.config.metrics_allowed.iter().any(|range| {
        range
            .parse::<IpNet>()
            .or_else(|_| range.parse::<std::net::IpAddr>().map(IpNet::from))
            .is_ok_and(|range| range.contains(&client))
    });
    if !allowed {
        return Problem::not_found("no such route").into_response();
    }
    state.metrics.render().into_response()
}
