//! The traffic plan: which booking requests to send, with what body, and what the service
//! should make of each. Everything random is drawn here, from one seeded generator, so a
//! run can be repeated with `DEMO_SEED`.
//!
//! Times are local to the tenant (its IANA zone) on the 30-minute grid from 09:00 to 17:00,
//! which is how `common::seed` sets up the demo tenants; `start` is sent as RFC 3339 with the
//! tenant's UTC offset on that day. The windows of contested groups are kept free of other
//! traffic from this run, so each named-resource group should have exactly one winner.

use chrono::{
    DateTime, Days, FixedOffset, NaiveDate, NaiveTime, SecondsFormat, TimeZone, Timelike, Utc,
};
use chrono_tz::Tz;
use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::api::{Service, Submission, Tenancy};
use crate::people::{self, Region};

/// The demo tenants `api seed-demo` creates, with their zones (`common::seed::DEMO_TENANTS`).
pub const DEMO_TENANTS: [(&str, Tz); 3] = [
    ("demo-london", chrono_tz::Europe::London),
    ("demo-newyork", chrono_tz::America::New_York),
    ("demo-sydney", chrono_tz::Australia::Sydney),
];

/// Opening hours of every demo resource, every day, in minutes after local midnight.
const OPENS: u32 = 9 * 60;
const CLOSES: u32 = 17 * 60;
/// The services' slot grid.
const GRID: u32 = 30;
/// Requests are for this many days ahead, at most.
const DAYS_AHEAD: u64 = 14;

/// A tenant and its catalogue, as read from the api.
#[derive(Debug, Clone)]
pub struct Catalogue {
    pub slug: String,
    pub zone: Tz,
    pub services: Vec<Service>,
}

/// Ways a body can be wrong, each refused by the api with a 4xx problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Invalid {
    MissingEmail,
    BadEmail,
    UnknownField,
    WrongType,
    StartWithoutOffset,
    MalformedJson,
}

impl Invalid {
    const ALL: [Self; 6] = [
        Self::MissingEmail,
        Self::BadEmail,
        Self::UnknownField,
        Self::WrongType,
        Self::StartWithoutOffset,
        Self::MalformedJson,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::MissingEmail => "missing customer email",
            Self::BadEmail => "bad email",
            Self::UnknownField => "unknown field",
            Self::WrongType => "wrong type",
            Self::StartWithoutOffset => "start without offset",
            Self::MalformedJson => "malformed JSON",
        }
    }
}

/// What the service should make of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// A free slot on the grid: confirmed, or rejected `slot_taken` if someone was first.
    Bookable,
    /// Accepted, then rejected with this reason.
    Rejected(&'static str),
    /// Refused by the api with a 4xx problem.
    Refused(Invalid),
}

/// Whether, and how, the request is sent again with the same `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay {
    None,
    /// The same body again after the 202: the same request id.
    Retry,
    /// Two copies at the same moment (a double click): the same request id for both.
    Concurrent,
    /// The same key with this other body after the 202: 422.
    ConflictingBody(Vec<u8>),
}

/// The slot a well-formed request asks for.
#[derive(Debug, Clone)]
pub struct Slot {
    pub service_id: Uuid,
    pub duration_minutes: i64,
    pub resource_id: Option<Uuid>,
    pub start: DateTime<Tz>,
}

#[derive(Debug, Clone)]
pub struct Planned {
    pub submission: Submission,
    pub expect: Expect,
    pub slot: Option<Slot>,
    pub replay: Replay,
}

/// Requests for one resource and start, sent in one burst.
#[derive(Debug, Clone)]
pub struct Group {
    pub label: String,
    /// The resource every member names; `None` when they let the service choose.
    pub resource_id: Option<Uuid>,
    /// How many resources offer the service (the most winners an unnamed group can have).
    pub resources: usize,
    pub members: Vec<Planned>,
}

#[derive(Debug, Clone)]
pub enum Unit {
    Single(Planned),
    Group(Group),
}

/// A stretch of a tenant's local day that this run's contested groups keep for themselves.
#[derive(Debug, Clone, Copy)]
struct Window {
    tenant: usize,
    date: NaiveDate,
    from: u32,
    to: u32,
}

impl Window {
    fn overlaps(&self, other: &Window) -> bool {
        self.tenant == other.tenant
            && self.date == other.date
            && self.from < other.to
            && other.from < self.to
    }
}

/// How many of each kind, for a total of `requests` booking requests.
#[derive(Debug, Clone, Copy)]
struct Mix {
    invalid: usize,
    outside_hours: usize,
    off_grid: usize,
    in_past: usize,
    groups: usize,
    idempotent: usize,
}

impl Mix {
    fn for_total(requests: usize) -> Self {
        Self {
            invalid: (requests / 25).max(Invalid::ALL.len()),
            outside_hours: (requests / 40).max(1),
            off_grid: (requests / 40).max(1),
            in_past: (requests / 100).max(1),
            groups: (requests / 50).max(2),
            idempotent: (requests / 30).max(3),
        }
    }
}

pub struct Planner<'a> {
    rng: StdRng,
    tenants: &'a [Catalogue],
    reserved: Vec<Window>,
}

impl<'a> Planner<'a> {
    pub fn new(rng: StdRng, tenants: &'a [Catalogue]) -> Self {
        Self {
            rng,
            tenants,
            reserved: Vec::new(),
        }
    }

    /// About `requests` booking requests (never fewer than one of each kind), in the order
    /// they are to be sent: shuffled, so contested groups and mistakes mix with the rest.
    pub fn plan(mut self, requests: usize) -> Vec<Unit> {
        let mix = Mix::for_total(requests);
        let mut units = Vec::new();
        let mut planned = 0;
        for g in 0..mix.groups {
            // The last group names no resource: the service should fill every resource once.
            let named = g + 1 < mix.groups;
            let group = self.group(g % self.tenants.len(), named);
            planned += group.members.len();
            units.push(Unit::Group(group));
        }
        let mut singles = Vec::new();
        for i in 0..mix.invalid {
            singles.push(self.invalid(Invalid::ALL[i % Invalid::ALL.len()]));
        }
        for i in 0..mix.outside_hours {
            singles.push(self.outside_hours(i));
        }
        for i in 0..mix.off_grid {
            singles.push(self.off_grid(i));
        }
        for _ in 0..mix.in_past {
            singles.push(self.in_past());
        }
        let regular = requests
            .saturating_sub(planned + singles.len())
            .max(mix.idempotent);
        for _ in 0..regular {
            let request = self.regular();
            singles.push(request);
        }
        self.add_replays(&mut singles, mix.idempotent);
        units.extend(singles.into_iter().map(Unit::Single));
        units.shuffle(&mut self.rng);
        units
    }

    /// Marks `count` well-formed regular requests for replay: one with a conflicting body,
    /// a third sent twice at once, the rest retried after their 202.
    fn add_replays(&mut self, singles: &mut [Planned], count: usize) {
        let mut candidates: Vec<&mut Planned> = singles
            .iter_mut()
            .filter(|p| p.expect == Expect::Bookable)
            .collect();
        candidates.shuffle(&mut self.rng);
        for (i, request) in candidates.into_iter().take(count).enumerate() {
            request.submission.idempotency_key = Some(new_key());
            request.replay = match i {
                0 => {
                    let mut other: Value = serde_json::from_slice(&request.submission.body)
                        .unwrap_or_else(|_| json!({}));
                    other["notes"] = json!("Actually, could we make it a bit later?");
                    Replay::ConflictingBody(other.to_string().into_bytes())
                }
                i if i % 3 == 1 => Replay::Concurrent,
                _ => Replay::Retry,
            };
        }
    }

    fn group(&mut self, tenant: usize, named: bool) -> Group {
        let catalogue = &self.tenants()[tenant];
        let service = self.service(tenant);
        let window = self.free_window(tenant, &service, DAYS_AHEAD);
        self.reserved.push(window);
        let resource = named
            .then(|| service.resources.choose(&mut self.rng).cloned())
            .flatten();
        let start = local(catalogue.zone, window.date, window.from);
        let size = self.rng.random_range(5..=10);
        let members: Vec<Planned> = (0..size)
            .map(|_| {
                let slot = Slot {
                    service_id: service.id,
                    duration_minutes: service.duration_minutes,
                    resource_id: resource.as_ref().map(|r| r.id),
                    start,
                };
                self.well_formed(tenant, slot, Expect::Bookable)
            })
            .collect();
        let label = format!(
            "{} · {} · {} · {}",
            catalogue.slug,
            resource.map_or_else(|| "any resource".to_owned(), |r| r.name),
            service.name,
            start.format("%a %d %b %H:%M %:z"),
        );
        Group {
            label,
            resource_id: resource_id_of(&members),
            resources: service.resources.len(),
            members,
        }
    }

    /// A request for a slot that no contested group keeps.
    fn regular(&mut self) -> Planned {
        let tenant = self.rng.random_range(0..self.tenants.len());
        let service = self.service(tenant);
        // Half the demand falls on the next three days, as it does in real life.
        let days = if self.rng.random_bool(0.5) {
            3
        } else {
            DAYS_AHEAD
        };
        let window = self.free_window(tenant, &service, days);
        let slot = self.slot(tenant, &service, window.date, window.from);
        let mut request = self.well_formed(tenant, slot, Expect::Bookable);
        if self.rng.random_bool(0.2) {
            request.submission.idempotency_key = None;
        }
        request
    }

    /// Before opening, at or after closing, or running past closing.
    fn outside_hours(&mut self, i: usize) -> Planned {
        let tenant = self.rng.random_range(0..self.tenants.len());
        let service = self.service(tenant);
        let minute = match i % 4 {
            0 => 7 * 60,
            1 => 8 * 60 + 30,
            2 => CLOSES,
            _ => CLOSES - GRID, // fine for 30 minutes, runs past closing for 60
        };
        let service = if i % 4 == 3 {
            self.longest_service(tenant).unwrap_or(service)
        } else {
            service
        };
        let date = self.random_day(tenant, DAYS_AHEAD);
        let slot = self.slot(tenant, &service, date, minute);
        let expect = if minute + duration(&service) <= CLOSES && minute >= OPENS {
            Expect::Bookable
        } else {
            Expect::Rejected("outside_hours")
        };
        self.well_formed(tenant, slot, expect)
    }

    /// Inside opening hours but not on the 30-minute grid.
    fn off_grid(&mut self, i: usize) -> Planned {
        let tenant = self.rng.random_range(0..self.tenants.len());
        let service = self.service(tenant);
        let minute = [10 * 60 + 10, 11 * 60 + 45, 14 * 60 + 20, 9 * 60 + 15][i % 4];
        let date = self.random_day(tenant, DAYS_AHEAD);
        let slot = self.slot(tenant, &service, date, minute);
        self.well_formed(tenant, slot, Expect::Rejected("outside_hours"))
    }

    /// Yesterday at 10:00, someone with a stale browser tab.
    fn in_past(&mut self) -> Planned {
        let tenant = self.rng.random_range(0..self.tenants.len());
        let service = self.service(tenant);
        let today = today(self.tenants[tenant].zone);
        let date = today.checked_sub_days(Days::new(1)).unwrap_or(today);
        let slot = self.slot(tenant, &service, date, 10 * 60);
        self.well_formed(tenant, slot, Expect::Rejected("in_past"))
    }

    fn invalid(&mut self, kind: Invalid) -> Planned {
        let mut request = self.regular();
        let mut body: Value =
            serde_json::from_slice(&request.submission.body).unwrap_or_else(|_| json!({}));
        let bytes = match kind {
            Invalid::MissingEmail => {
                if let Some(customer) = body["customer"].as_object_mut() {
                    customer.remove("email");
                }
                body.to_string()
            }
            Invalid::BadEmail => {
                body["customer"]["email"] = json!("jane.doe(at)example.com");
                body.to_string()
            }
            Invalid::UnknownField => {
                body["coupon_code"] = json!("SPRING10");
                body.to_string()
            }
            Invalid::WrongType => {
                body["service_id"] = json!(42);
                body.to_string()
            }
            Invalid::StartWithoutOffset => {
                let start = body["start"].as_str().unwrap_or_default();
                body["start"] = json!(start.get(..19).unwrap_or(start));
                body.to_string()
            }
            Invalid::MalformedJson => {
                // Cut off half way, as a client that died mid-send would.
                let text = body.to_string();
                text.chars().take(text.chars().count() / 2).collect()
            }
        };
        request.submission.body = bytes.into_bytes();
        request.expect = Expect::Refused(kind);
        request.slot = None;
        request
    }

    /// A well-formed request for `slot`, from a new customer.
    fn well_formed(&mut self, tenant: usize, slot: Slot, expect: Expect) -> Planned {
        let catalogue = &self.tenants()[tenant];
        let region = Region::of_zone(catalogue.zone.name());
        let customer = people::customer(&mut self.rng, region);
        let mut body = json!({
            "service_id": slot.service_id,
            "start": slot.start.fixed_offset().to_rfc3339_opts(SecondsFormat::Secs, false),
            "customer": customer,
        });
        if let Some(resource_id) = slot.resource_id {
            body["resource_id"] = json!(resource_id);
        }
        if let Some(notes) = people::notes(&mut self.rng) {
            body["notes"] = json!(notes);
        }
        let tenancy = if self.rng.random_bool(0.3) {
            Tenancy::Header
        } else {
            Tenancy::PathPrefix
        };
        Planned {
            submission: Submission {
                slug: catalogue.slug.clone(),
                tenancy,
                body: body.to_string().into_bytes(),
                idempotency_key: Some(new_key()),
            },
            expect,
            slot: Some(slot),
            replay: Replay::None,
        }
    }

    /// A slot with a random resource, or none (a quarter of the time: any free resource).
    fn slot(&mut self, tenant: usize, service: &Service, date: NaiveDate, minute: u32) -> Slot {
        let resource_id = if self.rng.random_bool(0.25) {
            None
        } else {
            service.resources.choose(&mut self.rng).map(|r| r.id)
        };
        Slot {
            service_id: service.id,
            duration_minutes: service.duration_minutes,
            resource_id,
            start: local(self.tenants[tenant].zone, date, minute),
        }
    }

    /// The catalogues, borrowed for `'a` rather than through `self`.
    fn tenants(&self) -> &'a [Catalogue] {
        self.tenants
    }

    fn service(&mut self, tenant: usize) -> Service {
        let services = &self.tenants[tenant].services;
        services
            .choose(&mut self.rng)
            .cloned()
            .expect("check_catalogues: every tenant has a service")
    }

    fn longest_service(&self, tenant: usize) -> Option<Service> {
        self.tenants[tenant]
            .services
            .iter()
            .max_by_key(|s| s.duration_minutes)
            .cloned()
    }

    /// A random window for `service` on the grid, 1 to `max_days` ahead, that overlaps no
    /// kept window; after many tries, whatever came last.
    fn free_window(&mut self, tenant: usize, service: &Service, max_days: u64) -> Window {
        let mut window = self.random_window(tenant, service, max_days);
        for _ in 0..200 {
            if !self.reserved.iter().any(|w| w.overlaps(&window)) {
                break;
            }
            window = self.random_window(tenant, service, max_days);
        }
        window
    }

    fn random_window(&mut self, tenant: usize, service: &Service, max_days: u64) -> Window {
        let from = self.grid_minute(service.duration_minutes);
        Window {
            tenant,
            date: self.random_day(tenant, max_days),
            from,
            to: from + duration(service),
        }
    }

    /// A start on the grid such that the service ends by closing time.
    fn grid_minute(&mut self, duration_minutes: i64) -> u32 {
        let length = u32::try_from(duration_minutes).unwrap_or(GRID);
        let last = CLOSES.saturating_sub(length).max(OPENS);
        let steps = (last - OPENS) / GRID;
        OPENS + GRID * self.rng.random_range(0..=steps)
    }

    /// A local date 1 to `max_days` days after the tenant's today.
    fn random_day(&mut self, tenant: usize, max_days: u64) -> NaiveDate {
        let today = today(self.tenants[tenant].zone);
        let days = self.rng.random_range(1..=max_days);
        today.checked_add_days(Days::new(days)).unwrap_or(today)
    }
}

/// Checks that every tenant offers at least one service with at least one resource.
pub fn check_catalogues(tenants: &[Catalogue]) -> anyhow::Result<()> {
    anyhow::ensure!(
        !tenants.is_empty(),
        "no demo tenant has a service the demo models; did `api seed-demo` run?"
    );
    for tenant in tenants {
        let usable = tenant.services.iter().any(|s| !s.resources.is_empty());
        anyhow::ensure!(
            usable,
            "tenant {} has no service with resources; did `api seed-demo` run?",
            tenant.slug
        );
    }
    Ok(())
}

/// The local days the demo books on, as `(first, last)`: 1 to [`DAYS_AHEAD`] days after the
/// tenant's today.
pub fn booking_days(zone: Tz) -> (NaiveDate, NaiveDate) {
    let today = today(zone);
    (
        today.checked_add_days(Days::new(1)).unwrap_or(today),
        today
            .checked_add_days(Days::new(DAYS_AHEAD))
            .unwrap_or(today),
    )
}

/// Why the demo cannot plan with `service` from what the api says about it (its catalogue
/// entry and the starts it offers over [`booking_days`]), or `None` when it can: the demo
/// expects one seat per slot (a contested slot has one winner per resource), and slots
/// every 30 minutes from 09:00 with the last ending by 17:00, every day of those days.
/// Starts missing here and there are fine (booked by earlier runs); a start off that grid,
/// or a day with nothing offered at all, means other hours, grid or horizon.
pub fn unmodelled(
    service: &Service,
    zone: Tz,
    offered: &[DateTime<FixedOffset>],
) -> Option<String> {
    if service.resources.is_empty() {
        return Some("no resources".to_owned());
    }
    if service.capacity != 1 {
        return Some(format!(
            "group service ({} seats per slot): a contested slot has up to {} winners per \
             resource, the demo expects one",
            service.capacity, service.capacity
        ));
    }
    let length = duration(service);
    if length == 0 || length > CLOSES - OPENS {
        return Some(format!(
            "{} minutes long: no slot fits the demo's 09:00-17:00 day",
            service.duration_minutes
        ));
    }
    let grid = |minute: u32| {
        minute >= OPENS && minute + length <= CLOSES && (minute - OPENS).is_multiple_of(GRID)
    };
    let hhmm = |minute: u32| format!("{:02}:{:02}", minute / 60, minute % 60);
    let mut days = std::collections::BTreeSet::new();
    let mut minutes = std::collections::BTreeSet::new();
    for start in offered {
        let local = start.with_timezone(&zone);
        let minute = local.time().num_seconds_from_midnight() / 60;
        if local.time().second() != 0 || !grid(minute) {
            return Some(format!(
                "offers {} on {}: not on the demo's 30-minute grid from 09:00 ending by 17:00 \
                 (other hours or slot interval)",
                hhmm(minute),
                local.date_naive()
            ));
        }
        days.insert(local.date_naive());
        minutes.insert(minute);
    }
    // Every start of the grid is offered on some day and resource, unless the service has
    // a coarser slot interval or shorter hours.
    if let Some(never) = (OPENS..=CLOSES - length)
        .step_by(GRID as usize)
        .find(|minute| !minutes.contains(minute))
    {
        return Some(format!(
            "never offers {} in the {DAYS_AHEAD} days the demo books on: a coarser slot \
             interval or shorter hours than the demo's 30-minute grid from 09:00 to 17:00",
            hhmm(never)
        ));
    }
    let (first, last) = booking_days(zone);
    let missing = first
        .iter_days()
        .take_while(|day| *day <= last)
        .filter(|day| !days.contains(day))
        .collect::<Vec<_>>();
    if let Some(day) = missing.first() {
        return Some(format!(
            "offers nothing on {} of the {} days the demo books on (first {day}): other hours, \
             notice, horizon or blackouts",
            missing.len(),
            DAYS_AHEAD
        ));
    }
    None
}

fn resource_id_of(members: &[Planned]) -> Option<Uuid> {
    members.first()?.slot.as_ref()?.resource_id
}

fn duration(service: &Service) -> u32 {
    u32::try_from(service.duration_minutes).unwrap_or(GRID)
}

fn today(zone: Tz) -> NaiveDate {
    Utc::now().with_timezone(&zone).date_naive()
}

/// `minute` after local midnight on `date` in `zone`. Opening hours never fall in a DST gap
/// in these zones; if one did, the hour after the gap is used.
fn local(zone: Tz, date: NaiveDate, minute: u32) -> DateTime<Tz> {
    let time = NaiveTime::from_hms_opt(minute / 60, minute % 60, 0).unwrap_or(NaiveTime::MIN);
    let naive = date.and_time(time);
    zone.from_local_datetime(&naive)
        .earliest()
        .unwrap_or_else(|| zone.from_utc_datetime(&naive))
}

fn new_key() -> String {
    format!("demo-{}", Uuid::new_v4())
}
