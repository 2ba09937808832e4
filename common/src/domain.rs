//! Domain types shared by the api and the worker.

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A booking request as accepted by the api: validated, and stored verbatim as the
/// request's payload for the worker to decide.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BookingRequestPayload {
    pub service_id: Uuid,
    pub resource_id: Option<Uuid>,
    pub start: DateTime<FixedOffset>,
    pub customer: Customer,
    pub notes: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    pub name: String,
    pub email: String,
    pub phone: Option<String>,
}

/// Where a booking request stands. `Confirmed`, `Rejected` and `Failed` are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum RequestStatus {
    Queued,
    Processing,
    Confirmed,
    Rejected,
    Failed,
}

impl RequestStatus {
    pub fn is_final(self) -> bool {
        matches!(self, Self::Confirmed | Self::Rejected | Self::Failed)
    }
}

/// Why a request was rejected: the machine-readable `reason` of the public API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    SlotTaken,
    OutsideHours,
    InPast,
    TooSoon,
    TooFarAhead,
    UnknownService,
    UnknownResource,
    Blackout,
    CapacityFull,
    /// A cancellation named a booking the tenant does not have.
    UnknownBooking,
    /// A cancellation named a booking that is no longer confirmed.
    NotCancellable,
    /// A reschedule named a booking that is no longer confirmed.
    NotReschedulable,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SlotTaken => "slot_taken",
            Self::OutsideHours => "outside_hours",
            Self::InPast => "in_past",
            Self::TooSoon => "too_soon",
            Self::TooFarAhead => "too_far_ahead",
            Self::UnknownService => "unknown_service",
            Self::UnknownResource => "unknown_resource",
            Self::Blackout => "blackout",
            Self::CapacityFull => "capacity_full",
            Self::UnknownBooking => "unknown_booking",
            Self::NotCancellable => "not_cancellable",
            Self::NotReschedulable => "not_reschedulable",
        }
    }
}

/// A tenant as the request path sees it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Tenant {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    pub time_zone: String,
    pub contact_email: String,
    pub active: bool,
}

impl Tenant {
    /// The tenant's IANA zone; UTC if the stored name is not one (it is checked when the
    /// tenant is created).
    pub fn zone(&self) -> chrono_tz::Tz {
        self.time_zone.parse().unwrap_or(chrono_tz::Tz::UTC)
    }
}

/// An instant as the api shows booking and slot times: RFC 3339 in whole seconds, with the
/// offset `tz` has at that instant.
pub fn local_rfc3339(tz: chrono_tz::Tz, instant: chrono::DateTime<chrono::Utc>) -> String {
    instant
        .with_timezone(&tz)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}
