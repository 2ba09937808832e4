//! One module per endpoint group; each handler's doc names the route it serves.

pub mod availability;
pub mod booking_requests;
pub mod bookings;
pub mod health;
pub mod manage;
pub mod services;
