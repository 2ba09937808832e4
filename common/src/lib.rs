//! What the api and the worker share: configuration, domain types, the job payload that
//! travels through Redis, database access and telemetry setup.

pub mod config;
pub mod db;
pub mod domain;
pub mod jobs;
pub mod manage;
pub mod rules;
pub mod schedule;
pub mod seed;
pub mod shutdown;
pub mod telemetry;
