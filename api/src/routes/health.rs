//! Liveness, readiness and metrics.

use axum::extract::State;
use axum::http::StatusCode;
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

/// `GET /readyz`: PostgreSQL and Redis both answer; 503 naming the one that does not.
pub async fn ready(State(state): State<AppState>) -> Response {
    let database = sqlx::query_scalar::<_, i32>("SELECT 1")
        .fetch_one(&state.pool)
        .await
        .is_ok();
    let mut redis = state.redis.clone();
    let redis = redis::cmd("PING")
        .query_async::<String>(&mut redis)
        .await
        .is_ok();
    let status = if database && redis {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if status == StatusCode::OK { "ready" } else { "unavailable" },
        "database": if database { "up" } else { "down" },
        "redis": if redis { "up" } else { "down" },
    });
    (status, axum::Json(body)).into_response()
}

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
