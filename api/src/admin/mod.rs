//! Tenant administration under `/v1/admin/...`, scoped to the tenant of the caller's
//! credentials (see [`auth`]). Every write is audited in its own transaction.

pub mod auth;
pub mod blackouts;
pub mod bookings;
pub mod cancel;
pub mod customers;
pub mod hours;
pub mod resources;
pub mod services;

use axum::Router;
use axum::routing::{delete, get, put};

use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/bookings", get(bookings::list))
        .route("/v1/admin/bookings/export.csv", get(bookings::export))
        .route(
            "/v1/admin/customers/export",
            axum::routing::post(customers::export),
        )
        .route(
            "/v1/admin/customers/erase",
            axum::routing::post(customers::erase),
        )
        .route(
            "/v1/admin/services",
            get(services::list).post(services::create),
        )
        .route(
            "/v1/admin/bookings/{id}/cancel",
            axum::routing::post(cancel::cancel),
        )
        .route(
            "/v1/admin/services/{id}",
            get(services::show)
                .patch(services::update)
                .delete(services::deactivate),
        )
        .route(
            "/v1/admin/resources",
            get(resources::list).post(resources::create),
        )
        .route(
            "/v1/admin/resources/{id}",
            get(resources::show)
                .patch(resources::update)
                .delete(resources::deactivate),
        )
        .route(
            "/v1/admin/resources/{id}/services",
            put(resources::replace_services),
        )
        .route(
            "/v1/admin/resources/{id}/hours",
            get(hours::show).put(hours::replace),
        )
        .route(
            "/v1/admin/resources/{id}/exceptions",
            get(hours::list_exceptions),
        )
        .route(
            "/v1/admin/resources/{id}/exceptions/{date}",
            put(hours::set_exception).delete(hours::delete_exception),
        )
        .route(
            "/v1/admin/blackouts",
            get(blackouts::list).post(blackouts::create),
        )
        .route("/v1/admin/blackouts/{id}", delete(blackouts::delete))
}

/// Parses a path id; anything that is not a UUID names nothing, so it is a 404.
pub fn path_id(raw: &str, what: &str) -> Result<uuid::Uuid, crate::problem::Problem> {
    raw.parse()
        .map_err(|_| crate::problem::Problem::not_found(format!("no such {what}")))
}
