//! Tenant administration under `/v1/admin/...`, scoped to the tenant of the caller's
//! credentials (see [`auth`]). Every write is audited in its own transaction.

pub mod auth;
pub mod blackouts;
pub mod bookings;
pub mod changes;
pub mod customers;
pub mod hours;
pub mod notifications;
pub mod resources;
pub mod services;

use crate::Route;

/// The admin routes, for [`crate::route_table`]. They carry no rate-limit class: every
/// `/v1/admin/...` path is authenticated and limited before routing.
pub fn routes() -> Vec<Route> {
    use axum::http::Method;
    vec![
        Route::new("/v1/admin/bookings").on(Method::GET, bookings::list),
        Route::new("/v1/admin/bookings/export.csv").on(Method::GET, bookings::export),
        Route::new("/v1/admin/customers/export").on(Method::POST, customers::export),
        Route::new("/v1/admin/customers/erase").on(Method::POST, customers::erase),
        Route::new("/v1/admin/services")
            .on(Method::GET, services::list)
            .on(Method::POST, services::create),
        Route::new("/v1/admin/bookings/{id}/cancel").on(Method::POST, changes::cancel),
        Route::new("/v1/admin/bookings/{id}/reschedule").on(Method::POST, changes::reschedule),
        Route::new("/v1/admin/bookings/{id}/status").on(Method::POST, changes::set_status),
        Route::new("/v1/admin/services/{id}")
            .on(Method::GET, services::show)
            .on(Method::PATCH, services::update)
            .on(Method::DELETE, services::deactivate),
        Route::new("/v1/admin/resources")
            .on(Method::GET, resources::list)
            .on(Method::POST, resources::create),
        Route::new("/v1/admin/resources/{id}")
            .on(Method::GET, resources::show)
            .on(Method::PATCH, resources::update)
            .on(Method::DELETE, resources::deactivate),
        Route::new("/v1/admin/resources/{id}/services")
            .on(Method::PUT, resources::replace_services),
        Route::new("/v1/admin/resources/{id}/hours")
            .on(Method::GET, hours::show)
            .on(Method::PUT, hours::replace),
        Route::new("/v1/admin/resources/{id}/exceptions").on(Method::GET, hours::list_exceptions),
        Route::new("/v1/admin/resources/{id}/exceptions/{date}")
            .on(Method::PUT, hours::set_exception)
            .on(Method::DELETE, hours::delete_exception),
        Route::new("/v1/admin/blackouts")
            .on(Method::GET, blackouts::list)
            .on(Method::POST, blackouts::create),
        Route::new("/v1/admin/blackouts/{id}").on(Method::DELETE, blackouts::delete),
        Route::new("/v1/admin/notifications").on(Method::GET, notifications::list),
        Route::new("/v1/admin/notifications/{id}/replay").on(Method::POST, notifications::replay),
    ]
}

/// Parses a path id; anything that is not a UUID names nothing, so it is a 404.
pub fn path_id(raw: &str, what: &str) -> Result<uuid::Uuid, crate::problem::Problem> {
    raw.parse()
        .map_err(|_| crate::problem::Problem::not_found(format!("no such {what}")))
}
