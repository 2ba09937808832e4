//! Scheduling through the running system: availability on daylight-saving days in both
//! hemispheres, availability against each booking rule, the availability query's limits,
//! "any resource", group sessions, reschedule and cancel (by the admin and through the
//! customer's manage link), the calendar attachments, and the booking status endpoint.
//!
//! Every test talks to the real api over HTTP; the worker decides from Redis into
//! PostgreSQL and writes its messages as `.eml` files, which are read back with crates
//! independent of the ones that wrote them (mail-parser for MIME, ical for iCalendar).

mod support;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use chrono::{
    DateTime, Duration as Span, FixedOffset, LocalResult, NaiveDate, NaiveDateTime, NaiveTime,
    Offset, SecondsFormat, TimeZone, Utc,
};
use chrono_tz::Tz;
use futures::future::join_all;
use mail_parser::{MessageParser, MimeHeaders};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{TestSystem, booking_body};
use uuid::Uuid;

const LONDON: &str = "Europe/London";
const DECIDED_WITHIN: Duration = Duration::from_secs(30);
const MAILED_WITHIN: Duration = Duration::from_secs(30);

/// A tenant as its admin and its customers reach it: the admin with an API key, customers
/// through the `/t/{slug}` prefix.
struct Business<'a> {
    system: &'a TestSystem,
    slug: String,
    tenant_id: Uuid,
    tz: Tz,
    key: String,
}

impl<'a> Business<'a> {
    async fn open(system: &'a TestSystem, slug: &str, zone: &str) -> Self {
        let tenant = system.seed_tenant(slug, zone).await;
        let issued = api::credentials::issue_api_key(&system.pool, tenant.id, "test")
            .await
            .expect("issue an API key");
        Self {
            system,
            slug: slug.to_owned(),
            tenant_id: tenant.id,
            tz: zone.parse().unwrap(),
            key: issued.key,
        }
    }

    /// Sends a request; answers the status, the Content-Type and the JSON body (null when
    /// empty).
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        admin: bool,
    ) -> (StatusCode, String, Value) {
        let mut request = self.system.client.request(method, self.system.url(path));
        if admin {
            request = request.bearer_auth(&self.key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.expect("api answers");
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = response.bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("a JSON body")
        };
        (status, content_type, body)
    }

    async fn admin(&self, method: Method, path: &str, body: Option<&Value>) -> (StatusCode, Value) {
        let (status, _, body) = self.send(method, path, body, true).await;
        (status, body)
    }

    /// A customer's request under the tenant's path prefix.
    async fn public(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> (StatusCode, String, Value) {
        let path = format!("/t/{}{path}", self.slug);
        self.send(method, &path, body, false).await
    }

    /// A new active service with `fields`, bookable ten years ahead (set with PATCH).
    async fn service(&self, fields: Value) -> Uuid {
        let mut body = json!({"name": "Service", "price_minor": 1000, "currency": "GBP"});
        body.as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        let (status, created) = self
            .admin(Method::POST, "/v1/admin/services", Some(&body))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let id: Uuid = created["id"].as_str().unwrap().parse().unwrap();
        self.patch_service(id, json!({"max_days_ahead": 3650}))
            .await;
        id
    }

    async fn patch_service(&self, id: Uuid, fields: Value) {
        let path = format!("/v1/admin/services/{id}");
        let (status, body) = self.admin(Method::PATCH, &path, Some(&fields)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    /// A new resource offering `services`, open every day in `intervals` (`HH:MM` pairs).
    async fn resource(&self, name: &str, services: &[Uuid], intervals: &[(&str, &str)]) -> Uuid {
        let body = json!({"name": name, "service_ids": services});
        let (status, created) = self
            .admin(Method::POST, "/v1/admin/resources", Some(&body))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let id: Uuid = created["id"].as_str().unwrap().parse().unwrap();
        let week: Vec<Value> = (1..=7)
            .flat_map(|weekday| {
                intervals.iter().map(move |(opens, closes)| {
                    json!({"weekday": weekday, "opens": opens, "closes": closes})
                })
            })
            .collect();
        let path = format!("/v1/admin/resources/{id}/hours");
        let (status, body) = self
            .admin(Method::PUT, &path, Some(&json!({ "intervals": week })))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        id
    }

    /// `GET /v1/availability?{query}`.
    async fn availability(&self, query: &str) -> (StatusCode, String, Value) {
        self.public(Method::GET, &format!("/v1/availability?{query}"), None)
            .await
    }

    /// The slots of a service (on one resource, or any) between two dates, inclusive.
    async fn slots(
        &self,
        service: Uuid,
        resource: Option<Uuid>,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Vec<Value> {
        let mut query = format!("service_id={service}&from={from}&to={to}");
        if let Some(resource) = resource {
            query.push_str(&format!("&resource_id={resource}"));
        }
        let (status, _, body) = self.availability(&query).await;
        assert_eq!(status, StatusCode::OK, "{query}: {body}");
        body["slots"].as_array().unwrap().clone()
    }

    /// A local wall-clock time on a date as RFC 3339 with the zone's (earlier) offset.
    fn at(&self, date: NaiveDate, hh_mm: &str) -> String {
        let time = NaiveTime::parse_from_str(hh_mm, "%H:%M").unwrap();
        let local = self
            .tz
            .from_local_datetime(&date.and_time(time))
            .earliest()
            .unwrap();
        rfc3339(local.fixed_offset())
    }

    /// The tenant's local date `days` from today.
    fn day(&self, days: i64) -> NaiveDate {
        Utc::now().with_timezone(&self.tz).date_naive() + Span::days(days)
    }

    /// Submits a booking request and waits for its final status.
    async fn book(&self, service: Uuid, resource: Option<Uuid>, start: &str, n: usize) -> Value {
        let url = self
            .system
            .book_accepted(&self.slug, &booking_body(service, resource, start, n))
            .await;
        self.system.wait_final(&url, DECIDED_WITHIN).await
    }

    /// Books a slot that must be confirmed; returns the booking.
    async fn book_confirmed(
        &self,
        service: Uuid,
        resource: Option<Uuid>,
        start: &str,
        n: usize,
    ) -> Value {
        let decided = self.book(service, resource, start, n).await;
        assert_eq!(decided["status"], "confirmed", "{start}: {decided}");
        decided["booking"].clone()
    }

    /// POSTs a change (cancel, reschedule) as the admin or through a manage link: 202,
    /// then the change's final status.
    async fn change(&self, path: &str, body: &Value, admin: bool) -> Value {
        let path = if admin {
            path.to_owned()
        } else {
            format!("/t/{}{path}", self.slug)
        };
        let (status, _, accepted) = self.send(Method::POST, &path, Some(body), admin).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{path}: {accepted}");
        let url = accepted["status_url"].as_str().unwrap();
        self.system.wait_final(url, DECIDED_WITHIN).await
    }

    async fn reschedule(&self, booking: &str, start: &str) -> Value {
        let path = format!("/v1/admin/bookings/{booking}/reschedule");
        self.change(&path, &json!({ "start": start }), true).await
    }

    async fn cancel(&self, booking: &str) -> Value {
        let path = format!("/v1/admin/bookings/{booking}/cancel");
        self.change(&path, &json!({}), true).await
    }
}

fn rfc3339(at: DateTime<FixedOffset>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, false)
}

fn instant(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|_| panic!("not RFC 3339: {text}"))
        .with_timezone(&Utc)
}

fn start_of(slot: &Value) -> DateTime<FixedOffset> {
    DateTime::parse_from_rfc3339(slot["start"].as_str().unwrap()).unwrap()
}

/// The local `HH:MM` of each slot starting on `date`, in order.
fn local_times(slots: &[Value], date: NaiveDate) -> Vec<String> {
    slots
        .iter()
        .map(start_of)
        .filter(|start| start.date_naive() == date)
        .map(|start| start.format("%H:%M").to_string())
        .collect()
}

/// Every `HH:MM` from `first` to `last` inclusive, `step` minutes apart.
fn times(first: &str, last: &str, step: i64) -> Vec<String> {
    let mut at = NaiveTime::parse_from_str(first, "%H:%M").unwrap();
    let last = NaiveTime::parse_from_str(last, "%H:%M").unwrap();
    let mut all = Vec::new();
    while at <= last {
        all.push(at.format("%H:%M").to_string());
        at += Span::minutes(step);
    }
    all
}

fn without(all: Vec<String>, gone: &[&str]) -> Vec<String> {
    all.into_iter()
        .filter(|t| !gone.contains(&t.as_str()))
        .collect()
}

fn reason(decided: &Value) -> &str {
    assert_eq!(decided["status"], "rejected", "{decided}");
    decided["reason"].as_str().unwrap()
}

fn id_of(booking: &Value) -> String {
    booking["id"].as_str().unwrap().to_owned()
}

// ---------------------------------------------------------------------------------------
// Daylight saving time
// ---------------------------------------------------------------------------------------

/// A change of a zone's UTC offset: the instant, and the offsets before and after.
#[derive(Debug, Clone, Copy)]
struct OffsetChange {
    at: DateTime<Utc>,
    before: FixedOffset,
    after: FixedOffset,
}

impl OffsetChange {
    fn forward(&self) -> bool {
        self.after.local_minus_utc() > self.before.local_minus_utc()
    }
}

/// Every offset change of `tz` in `year`, found from the zone database by chrono-tz.
fn offset_changes(tz: Tz, year: i32) -> Vec<OffsetChange> {
    let offset = |at: DateTime<Utc>| tz.offset_from_utc_datetime(&at.naive_utc()).fix();
    let mut at = Utc.with_ymd_and_hms(year, 1, 1, 0, 0, 0).unwrap();
    let end = Utc.with_ymd_and_hms(year + 1, 1, 1, 0, 0, 0).unwrap();
    let mut changes = Vec::new();
    while at < end {
        let next = at + Span::minutes(15);
        if offset(at) != offset(next) {
            changes.push(OffsetChange {
                at: next,
                before: offset(at),
                after: offset(next),
            });
        }
        at = next;
    }
    changes
}

/// The opening hours of the daylight-saving test: overnight across every change in these
/// zones (Santiago's fall-back repeats 23:00 to midnight), morning and afternoon.
const DST_HOURS: [(&str, &str); 4] = [
    ("00:00", "04:00"),
    ("09:00", "12:00"),
    ("13:00", "17:00"),
    ("20:00", "23:59"),
];
const DST_SLOT_MINUTES: i64 = 15;
const DST_GRID_MINUTES: i64 = 30;

/// What the availability of `date` must be, from the zone's own resolution of each local
/// time on the half-hour grid of every opening interval: a local time that does not exist
/// gives no slot, one that happens twice gives two (earlier offset first). Valid for these
/// zones, whose changes are whole hours on the grid.
fn expected_dst_slots(tz: Tz, date: NaiveDate) -> Vec<String> {
    let mut starts: Vec<DateTime<Tz>> = Vec::new();
    for (opens, closes) in DST_HOURS {
        let opens = NaiveTime::parse_from_str(opens, "%H:%M").unwrap();
        let closes = date.and_time(NaiveTime::parse_from_str(closes, "%H:%M").unwrap());
        let mut local = date.and_time(opens);
        while local + Span::minutes(DST_SLOT_MINUTES) <= closes {
            match tz.from_local_datetime(&local) {
                LocalResult::None => {}
                LocalResult::Single(at) => starts.push(at),
                LocalResult::Ambiguous(first, second) => starts.extend([first, second]),
            }
            local += Span::minutes(DST_GRID_MINUTES);
        }
    }
    starts.sort();
    starts
        .into_iter()
        .map(|at| rfc3339(at.fixed_offset()))
        .collect()
}

/// The local times on the half-hour grid that `tz` skips or repeats on `date`.
fn grid_times(tz: Tz, date: NaiveDate, want_ambiguous: bool) -> Vec<NaiveDateTime> {
    (0..48)
        .map(|n| date.and_time(NaiveTime::MIN) + Span::minutes(n * DST_GRID_MINUTES))
        .filter(|local| match tz.from_local_datetime(local) {
            LocalResult::None => !want_ambiguous,
            LocalResult::Ambiguous(..) => want_ambiguous,
            LocalResult::Single(_) => false,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dst_days_skip_missing_times_repeat_doubled_ones_and_book_at_the_offered_instant() {
    let system = TestSystem::start().await;
    let zones = [
        ("dst-london", "Europe/London"),
        ("dst-newyork", "America/New_York"),
        ("dst-sydney", "Australia/Sydney"),
        ("dst-santiago", "America/Santiago"),
    ];
    let mut customer = 0;
    let mut checked = Vec::new();
    for (slug, zone) in zones {
        let business = Business::open(&system, slug, zone).await;
        let tz = business.tz;
        let service = business
            .service(json!({
                "duration_minutes": DST_SLOT_MINUTES,
                "slot_interval_minutes": DST_GRID_MINUTES,
            }))
            .await;
        let resource = business
            .resource("Night desk", &[service], &DST_HOURS)
            .await;

        let changes = offset_changes(tz, 2027);
        assert_eq!(changes.len(), 2, "{zone}: {changes:?}");
        assert!(
            changes.iter().any(OffsetChange::forward) && !changes.iter().all(OffsetChange::forward),
            "{zone}: one change each way"
        );
        for change in changes {
            // The local date on which clocks show the new offset first.
            let date = change.at.with_timezone(&tz).date_naive();
            let slots = business.slots(service, Some(resource), date, date).await;
            let offered: Vec<String> = slots
                .iter()
                .map(|s| s["start"].as_str().unwrap().to_owned())
                .collect();

            // Each slot names a real local time with the offset in force at its instant.
            for slot in &slots {
                let start = start_of(slot);
                let real = tz.offset_from_utc_datetime(&start.naive_utc()).fix();
                assert_eq!(*start.offset(), real, "{zone}: {slot}");
                let end = DateTime::parse_from_rfc3339(slot["end"].as_str().unwrap()).unwrap();
                assert_eq!(
                    end - start,
                    Span::minutes(DST_SLOT_MINUTES),
                    "{zone}: {slot}"
                );
            }
            let local = |s: &String| DateTime::parse_from_rfc3339(s).unwrap().naive_local();

            // A local time the clocks skip is never offered.
            for skipped in grid_times(tz, date, false) {
                assert!(
                    !offered.iter().any(|s| local(s) == skipped),
                    "{zone} {date}: {skipped} does not exist but is offered: {offered:?}"
                );
            }
            // A local time that happens twice is offered twice, each with its own offset.
            for repeated in grid_times(tz, date, true) {
                let twice: Vec<&String> = offered.iter().filter(|s| local(s) == repeated).collect();
                assert_eq!(twice.len(), 2, "{zone} {date}: {repeated}: {offered:?}");
                assert_eq!(
                    (
                        *DateTime::parse_from_rfc3339(twice[0]).unwrap().offset(),
                        *DateTime::parse_from_rfc3339(twice[1]).unwrap().offset()
                    ),
                    (change.before, change.after),
                    "{zone} {date}: {repeated}"
                );
            }
            // Morning and afternoon come after every change in these zones but Santiago's
            // fall-back (at midnight, so it repeats the evening before): they carry the new
            // offset, not the one in force at midnight.
            let changed_by_morning =
                change.at.with_timezone(&tz).time() < NaiveTime::from_hms_opt(9, 0, 0).unwrap();
            if changed_by_morning {
                let nine = NaiveTime::from_hms_opt(9, 0, 0).unwrap();
                let five = NaiveTime::from_hms_opt(17, 0, 0).unwrap();
                let daytime: Vec<&String> = offered
                    .iter()
                    .filter(|s| (nine..five).contains(&local(s).time()))
                    .collect();
                assert_eq!(daytime.len(), 14, "{zone} {date}: {offered:?}");
                for slot in &daytime {
                    assert_eq!(
                        *DateTime::parse_from_rfc3339(slot).unwrap().offset(),
                        change.after,
                        "{zone} {date}: {slot} carries the offset of midnight"
                    );
                }
            }
            // And the whole day is exactly what the zone's rules say.
            assert_eq!(
                offered,
                expected_dst_slots(tz, date),
                "{zone} {date} ({change:?})"
            );

            // An afternoon slot, and the second occurrence of a repeated time, are confirmed
            // at the very instant offered.
            let afternoon = offered
                .iter()
                .find(|s| local(s).time() >= NaiveTime::from_hms_opt(13, 0, 0).unwrap())
                .unwrap()
                .clone();
            let mut to_book = vec![afternoon];
            if let Some(repeated) = grid_times(tz, date, true).first() {
                let second = offered.iter().rfind(|s| local(s) == *repeated).unwrap();
                to_book.push(second.clone());
            }
            let mut left = offered.len();
            for start in to_book {
                customer += 1;
                left -= 1;
                let booking = business
                    .book_confirmed(service, Some(resource), &start, customer)
                    .await;
                assert_eq!(instant(booking["start"].as_str().unwrap()), instant(&start));
                assert_eq!(
                    instant(booking["end"].as_str().unwrap()),
                    instant(&start) + Span::minutes(DST_SLOT_MINUTES)
                );
                assert_eq!(booking["resource_id"], json!(resource));
                // Booked, the slot is offered no more; its twin of the other offset stays.
                let after = business.slots(service, Some(resource), date, date).await;
                assert!(
                    !after
                        .iter()
                        .any(|s| instant(s["start"].as_str().unwrap()) == instant(&start)),
                    "{zone}: {start} still offered after booking"
                );
                assert_eq!(after.len(), left, "{zone}: {start}");
            }
            checked.push(format!("{zone} {date}"));
        }
    }
    assert_eq!(checked.len(), 8, "{checked:?}");
}

// ---------------------------------------------------------------------------------------
// Availability and the booking rules
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn availability_follows_breaks_exceptions_blackouts_buffers_notice_horizon_and_bookings() {
    let system = TestSystem::start().await;
    let business = Business::open(&system, "rules", LONDON).await;
    // 30 minutes on a 30-minute grid, and the resource needs 30 minutes after each booking.
    let service = business
        .service(json!({
            "duration_minutes": 30,
            "slot_interval_minutes": 30,
            "buffer_after_minutes": 30,
        }))
        .await;
    let resource = business
        .resource(
            "Chair",
            &[service],
            &[("09:00", "12:00"), ("13:00", "17:00")],
        )
        .await;
    let [plain, short, closed, blacked, booked] = [10, 11, 12, 13, 14].map(|d| business.day(d));
    let full_day = [times("09:00", "11:30", 30), times("13:00", "16:30", 30)].concat();

    let path = format!("/v1/admin/resources/{resource}/exceptions/{short}");
    let (status, body) = business
        .admin(
            Method::PUT,
            &path,
            Some(&json!({"opens": "10:00", "closes": "12:00"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let path = format!("/v1/admin/resources/{resource}/exceptions/{closed}");
    let (status, body) = business
        .admin(Method::PUT, &path, Some(&json!({"closed": true})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let blackout = json!({
        "starts_at": business.at(blacked, "14:00"),
        "ends_at": business.at(blacked, "15:00"),
        "reason": "Staff training",
    });
    let (status, body) = business
        .admin(Method::POST, "/v1/admin/blackouts", Some(&blackout))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let slots = business.slots(service, None, plain, booked).await;
    assert!(slots.iter().all(|s| s["resource_id"] == json!(resource)));
    assert!(
        slots.iter().all(|s| s.get("seats_left").is_none()),
        "one-to-one service"
    );
    // The lunch break is never offered.
    assert_eq!(local_times(&slots, plain), full_day);
    // An exception replaces the whole day's weekly hours; a closed day offers nothing.
    assert_eq!(local_times(&slots, short), times("10:00", "11:30", 30));
    assert_eq!(local_times(&slots, closed), Vec::<String>::new());
    // A blackout removes the slots that overlap it; touching it is fine.
    assert_eq!(
        local_times(&slots, blacked),
        without(full_day.clone(), &["14:00", "14:30"])
    );

    // What is not offered, the worker refuses, for the same reason.
    let refused = [
        (plain, "12:00", "outside_hours"),
        (short, "13:00", "outside_hours"),
        (closed, "10:00", "outside_hours"),
        (blacked, "14:30", "blackout"),
    ];
    for (n, (date, time, why)) in refused.into_iter().enumerate() {
        let decided = business
            .book(service, Some(resource), &business.at(date, time), n)
            .await;
        assert_eq!(reason(&decided), why, "{date} {time}");
    }

    // A booking takes its slot, and its buffer and the neighbours' buffers take the
    // neighbouring slots: 09:30 would run into it, 10:30 into its buffer.
    let taken = business
        .book_confirmed(service, Some(resource), &business.at(booked, "10:00"), 10)
        .await;
    let slots = business.slots(service, None, booked, booked).await;
    assert_eq!(
        local_times(&slots, booked),
        without(full_day.clone(), &["09:30", "10:00", "10:30"])
    );
    let decided = business
        .book(service, Some(resource), &business.at(booked, "10:30"), 11)
        .await;
    assert_eq!(reason(&decided), "slot_taken");
    // Cancelled, its slots come back.
    let cancelled = business.cancel(&id_of(&taken)).await;
    assert_eq!(cancelled["status"], "confirmed", "{cancelled}");
    let slots = business.slots(service, None, booked, booked).await;
    assert_eq!(local_times(&slots, booked), full_day);

    // Minimum notice: three days' notice removes the slots before then, and only those.
    let (first, last) = (business.day(0), business.day(6));
    let before = business.slots(service, None, first, last).await;
    let asked = Utc::now();
    business
        .patch_service(service, json!({"min_notice_minutes": 3 * 24 * 60}))
        .await;
    let noticed = business.slots(service, None, first, last).await;
    let answered = Utc::now();
    let earliest = |slots: &[Value]| {
        slots
            .iter()
            .map(|s| instant(s["start"].as_str().unwrap()))
            .min()
    };
    assert!(
        earliest(&noticed).unwrap() >= asked + Span::days(3),
        "{noticed:?}"
    );
    let kept: Vec<&Value> = before
        .iter()
        .filter(|s| instant(s["start"].as_str().unwrap()) >= answered + Span::days(3))
        .collect();
    assert!(!kept.is_empty());
    assert!(
        kept.iter().all(|s| noticed.contains(s)),
        "slots past the notice stay"
    );
    let too_soon = before
        .iter()
        .find(|s| instant(s["start"].as_str().unwrap()) < asked + Span::days(2))
        .expect("a slot within two days");
    let decided = business
        .book(
            service,
            Some(resource),
            too_soon["start"].as_str().unwrap(),
            12,
        )
        .await;
    assert_eq!(reason(&decided), "too_soon");
    business
        .patch_service(service, json!({"min_notice_minutes": 0}))
        .await;

    // Maximum days ahead: with 20, nothing later than 20 days from now is offered.
    let (first, last) = (business.day(17), business.day(23));
    let before = business.slots(service, None, first, last).await;
    business
        .patch_service(service, json!({"max_days_ahead": 20}))
        .await;
    let limited = business.slots(service, None, first, last).await;
    let answered = Utc::now();
    let horizon = answered + Span::days(20);
    assert!(!limited.is_empty());
    assert!(
        limited
            .iter()
            .all(|s| instant(s["start"].as_str().unwrap()) <= horizon),
        "{limited:?}"
    );
    assert!(limited.iter().all(|s| before.contains(s)));
    let beyond = before
        .iter()
        .find(|s| instant(s["start"].as_str().unwrap()) > horizon + Span::days(1))
        .expect("a slot beyond the horizon");
    let decided = business
        .book(
            service,
            Some(resource),
            beyond["start"].as_str().unwrap(),
            13,
        )
        .await;
    assert_eq!(reason(&decided), "too_far_ahead");
}

// ---------------------------------------------------------------------------------------
// The availability query
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn availability_query_out_of_range_or_malformed_is_422_naming_the_field() {
    let system = TestSystem::start_without_worker().await;
    let business = Business::open(&system, "queries", LONDON).await;
    let service = business.service(json!({"duration_minutes": 30})).await;
    let resource = business
        .resource("Chair", &[service], &[("09:00", "17:00")])
        .await;
    let other = Uuid::now_v7();
    let day = business.day(5);
    let month = day + Span::days(30);
    let at = |days: i64| business.at(business.day(days), "09:00").replace('+', "%2B");

    let refused = [
        (format!("from={day}&to={day}"), "service_id"),
        (format!("service_id=&from={day}&to={day}"), "service_id"),
        (
            format!("service_id=not-a-uuid&from={day}&to={day}"),
            "service_id",
        ),
        (
            format!("service_id={other}&from={day}&to={day}"),
            "service_id",
        ),
        (format!("service_id={service}&to={day}"), "from"),
        (format!("service_id={service}&from={day}"), "to"),
        (
            format!("service_id={service}&from=tomorrow&to={day}"),
            "from",
        ),
        (
            format!("service_id={service}&from=2030-02-30&to={day}"),
            "from",
        ),
        (
            format!("service_id={service}&from={day}&to=31/12/2030"),
            "to",
        ),
        // A `+` left unescaped is a space, so the offset is gone.
        (
            format!(
                "service_id={service}&from={}&to={day}",
                at(5).replace("%2B", "+")
            ),
            "from",
        ),
        (
            format!("service_id={service}&from={}&to={}", at(5), at(5)),
            "to",
        ),
        (
            format!("service_id={service}&from={}&to={}", at(6), at(5)),
            "to",
        ),
        (
            format!("service_id={service}&from={day}&to={}", day - Span::days(1)),
            "to",
        ),
        (
            format!(
                "service_id={service}&from={day}&to={}",
                month + Span::days(1)
            ),
            "to",
        ),
        (
            format!("service_id={service}&from={}&to={}", at(1), at(33)),
            "to",
        ),
        (
            format!("service_id={service}&from={day}&to={day}&resource_id=x"),
            "resource_id",
        ),
        (
            format!("service_id={service}&from={day}&to={day}&resource_id={other}"),
            "resource_id",
        ),
        (
            format!("service_id={service}&from={day}&to={day}&colour=red"),
            "colour",
        ),
        (
            format!("service_id={service}&from={day}&from={day}&to={day}"),
            "from",
        ),
        (
            format!("service_id={service}&from=9999-12-01&to=9999-12-31"),
            "from",
        ),
        (
            format!("service_id={service}&from=2027-01-10T10:00:60Z&to=2027-01-11T10:00:00Z"),
            "from",
        ),
    ];
    for (query, field) in &refused {
        let (status, content_type, problem) = business.availability(query).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{query}: {problem}"
        );
        assert_eq!(content_type, "application/problem+json", "{query}");
        assert_eq!(problem["status"], 422, "{query}: {problem}");
        let fields: Vec<&str> = problem["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("{query}: no errors: {problem}"))
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert!(
            fields.contains(field),
            "{query}: expected {field} in {problem}"
        );
    }

    // At the limits the query is answered: one day, 31 days of dates' worth, instants
    // with an escaped offset, the far future (nothing bookable there).
    let accepted = [
        format!("service_id={service}&from={day}&to={day}"),
        format!(
            "service_id={service}&from={day}&to={}",
            day + Span::days(30)
        ),
        format!("service_id={service}&from={}&to={}", at(1), at(32)),
        format!("service_id={service}&resource_id={resource}&from={day}&to={day}"),
        format!("service_id={service}&from=9998-12-01&to=9998-12-31"),
        format!("service_id={service}&from=2000-01-01&to=2000-01-31"),
        // A month of local days that holds a clock change is 31 days, not 31 × 24 hours.
        format!("service_id={service}&from=2027-10-01&to=2027-10-31"),
    ];
    for query in &accepted {
        let (status, _, body) = business.availability(query).await;
        assert_eq!(status, StatusCode::OK, "{query}: {body}");
        assert_eq!(body["service_id"], json!(service));
        assert_eq!(body["time_zone"], LONDON);
    }
    let (_, _, one_day) = business.availability(&accepted[0]).await;
    assert_eq!(one_day["slots"].as_array().unwrap().len(), 16, "{one_day}");
    assert_eq!(one_day["from"], business.at(day, "00:00"));
    assert_eq!(one_day["to"], business.at(day + Span::days(1), "00:00"));
    for far in &accepted[4..6] {
        let (_, _, body) = business.availability(far).await;
        assert_eq!(body["slots"], json!([]), "{far}");
    }
}

// ---------------------------------------------------------------------------------------
// Any resource
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn any_resource_gives_concurrent_requests_different_resources_until_none_is_free() {
    let system = TestSystem::start().await;
    let business = Business::open(&system, "anyone", LONDON).await;
    let shared = business.service(json!({"duration_minutes": 60})).await;
    let solo = business.service(json!({"duration_minutes": 60})).await;
    // Created first, so its id sorts first; "Alpha" sorts first by name.
    let beta = business
        .resource("Beta", &[shared], &[("09:00", "17:00")])
        .await;
    let alpha = business
        .resource("Alpha", &[shared, solo], &[("09:00", "17:00")])
        .await;
    let day = business.day(3);

    // Two at once, two resources free: both confirmed, on different resources.
    let start = business.at(day, "10:00");
    let decided = join_all((0..2).map(|n| business.book(shared, None, &start, n))).await;
    let resources: BTreeSet<String> = decided
        .iter()
        .map(|d| {
            assert_eq!(d["status"], "confirmed", "{d}");
            d["booking"]["resource_id"].as_str().unwrap().to_owned()
        })
        .collect();
    let both: BTreeSet<String> = [alpha, beta].iter().map(Uuid::to_string).collect();
    assert_eq!(resources, both);
    let slots = business.slots(shared, None, day, day).await;
    assert!(
        !slots
            .iter()
            .any(|s| instant(s["start"].as_str().unwrap()) == instant(&start))
    );

    // Alone, a request takes the first free resource by name, not by id.
    let booking = business
        .book_confirmed(shared, None, &business.at(day, "12:00"), 2)
        .await;
    assert_eq!(booking["resource_id"], json!(alpha));
    let booking = business
        .book_confirmed(shared, None, &business.at(day, "12:00"), 3)
        .await;
    assert_eq!(booking["resource_id"], json!(beta));

    // Two at once, one resource offering the service: one confirmed, one slot_taken.
    let start = business.at(day, "14:00");
    let decided = join_all((4..6).map(|n| business.book(solo, None, &start, n))).await;
    let confirmed: Vec<&Value> = decided
        .iter()
        .filter(|d| d["status"] == "confirmed")
        .collect();
    assert_eq!(confirmed.len(), 1, "{decided:?}");
    assert_eq!(confirmed[0]["booking"]["resource_id"], json!(alpha));
    let rejected: Vec<&str> = decided
        .iter()
        .filter(|d| d["status"] != "confirmed")
        .map(reason)
        .collect();
    assert_eq!(rejected, ["slot_taken"]);
    let live: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM bookings WHERE tenant_id = $1 AND starts_at = $2
         AND status <> 'cancelled'",
    )
    .bind(business.tenant_id)
    .bind(instant(&start))
    .fetch_one(&system.pool)
    .await
    .unwrap();
    assert_eq!(live, 1);
}

// ---------------------------------------------------------------------------------------
// Group sessions
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_session_of_three_seats_confirms_three_of_six_concurrent_requests() {
    let system = TestSystem::start().await;
    let business = Business::open(&system, "yoga", LONDON).await;
    let class = business
        .service(json!({"duration_minutes": 60, "capacity": 3}))
        .await;
    let studio = business
        .resource("Studio", &[class], &[("09:00", "17:00")])
        .await;
    let day = business.day(4);
    let seats_left = |slots: &[Value], start: &str| {
        slots
            .iter()
            .find(|s| instant(s["start"].as_str().unwrap()) == instant(start))
            .map(|s| s["seats_left"].as_i64().unwrap())
    };

    // Six at once for three seats.
    let start = business.at(day, "10:00");
    let slots = business.slots(class, None, day, day).await;
    assert_eq!(seats_left(&slots, &start), Some(3));
    let decided = join_all((0..6).map(|n| business.book(class, None, &start, n))).await;
    let confirmed = decided
        .iter()
        .filter(|d| d["status"] == "confirmed")
        .count();
    let full = decided
        .iter()
        .filter(|d| d["status"] == "rejected" && d["reason"] == "capacity_full")
        .count();
    assert_eq!((confirmed, full), (3, 3), "{decided:?}");
    let seats: Vec<i32> = sqlx::query_scalar(
        "SELECT seat FROM bookings WHERE tenant_id = $1 AND resource_id = $2
         AND starts_at = $3 AND status <> 'cancelled' ORDER BY seat",
    )
    .bind(business.tenant_id)
    .bind(studio)
    .bind(instant(&start))
    .fetch_all(&system.pool)
    .await
    .unwrap();
    assert_eq!(seats, [1, 2, 3]);
    let slots = business.slots(class, None, day, day).await;
    assert_eq!(
        seats_left(&slots, &start),
        None,
        "a full session is not offered"
    );

    // A seat given back is offered again.
    let first = decided.iter().find(|d| d["status"] == "confirmed").unwrap();
    let cancelled = business.cancel(&id_of(&first["booking"])).await;
    assert_eq!(cancelled["status"], "confirmed", "{cancelled}");
    let slots = business.slots(class, None, day, day).await;
    assert_eq!(seats_left(&slots, &start), Some(1));

    // One at a time, the seats count down.
    let start = business.at(day, "14:00");
    for n in 0..3 {
        let slots = business.slots(class, None, day, day).await;
        assert_eq!(seats_left(&slots, &start), Some(3 - n));
        business
            .book_confirmed(class, None, &start, 10 + n as usize)
            .await;
    }
    let slots = business.slots(class, None, day, day).await;
    assert_eq!(seats_left(&slots, &start), None);
    let decided = business.book(class, None, &start, 20).await;
    assert_eq!(reason(&decided), "capacity_full");
}

// ---------------------------------------------------------------------------------------
// Reschedule and cancel
// ---------------------------------------------------------------------------------------

/// The booking's start, sequence and status as stored.
async fn stored(system: &TestSystem, tenant_id: Uuid, id: &str) -> (DateTime<Utc>, i32, String) {
    sqlx::query_as(
        "SELECT starts_at, sequence, status FROM bookings WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant_id)
    .bind(id.parse::<Uuid>().unwrap())
    .fetch_one(&system.pool)
    .await
    .unwrap()
}

/// Pairs of live bookings of one resource whose occupied times overlap, other than seats
/// of one group session.
async fn overlapping_pairs(system: &TestSystem, tenant_id: Uuid) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM bookings a JOIN bookings b
           ON a.tenant_id = b.tenant_id AND a.resource_id = b.resource_id AND a.id < b.id
          AND a.slot_key <> b.slot_key AND a.occupied && b.occupied
         WHERE a.tenant_id = $1 AND a.status <> 'cancelled' AND b.status <> 'cancelled'",
    )
    .bind(tenant_id)
    .fetch_one(&system.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reschedule_moves_in_place_refuses_taken_slots_and_races_a_new_booking_fairly() {
    let system = TestSystem::start().await;
    let business = Business::open(&system, "moves", LONDON).await;
    let service = business.service(json!({"duration_minutes": 60})).await;
    let resource = business
        .resource("Chair", &[service], &[("09:00", "17:00")])
        .await;
    let day = business.day(5);
    let booking = business
        .book_confirmed(service, Some(resource), &business.at(day, "10:00"), 0)
        .await;
    let id = id_of(&booking);

    // Moved: the same booking, at the new time; the old slot is free again.
    let target = business.at(day, "11:00");
    let moved = business.reschedule(&id, &target).await;
    assert_eq!(moved["status"], "confirmed", "{moved}");
    assert_eq!(moved["booking"]["id"], json!(id));
    assert_eq!(
        instant(moved["booking"]["start"].as_str().unwrap()),
        instant(&target)
    );
    assert_eq!(
        stored(&system, business.tenant_id, &id).await,
        (instant(&target), 1, "confirmed".to_owned())
    );
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM bookings WHERE tenant_id = $1")
        .bind(business.tenant_id)
        .fetch_one(&system.pool)
        .await
        .unwrap();
    assert_eq!(count, 1, "a reschedule makes no second booking");
    let offered = local_times(&business.slots(service, None, day, day).await, day);
    assert!(offered.contains(&"10:00".to_owned()), "{offered:?}");
    assert!(!offered.contains(&"11:00".to_owned()), "{offered:?}");

    // To where it already is: confirmed, and nothing changes (no new version, no message).
    let outbox_before: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE tenant_id = $1")
        .bind(business.tenant_id)
        .fetch_one(&system.pool)
        .await
        .unwrap();
    let again = business.reschedule(&id, &target).await;
    assert_eq!(again["status"], "confirmed", "{again}");
    assert_eq!(
        stored(&system, business.tenant_id, &id).await,
        (instant(&target), 1, "confirmed".to_owned())
    );
    let outbox_after: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE tenant_id = $1")
        .bind(business.tenant_id)
        .fetch_one(&system.pool)
        .await
        .unwrap();
    assert_eq!(
        outbox_after, outbox_before,
        "a reschedule to the same time announces nothing"
    );

    // To a slot someone else holds: refused, and the booking stays where it was.
    business
        .book_confirmed(service, Some(resource), &business.at(day, "13:00"), 1)
        .await;
    let refused = business.reschedule(&id, &business.at(day, "13:00")).await;
    assert_eq!(reason(&refused), "slot_taken");
    assert_eq!(
        stored(&system, business.tenant_id, &id).await,
        (instant(&target), 1, "confirmed".to_owned())
    );

    // A reschedule and a new booking for the same slot, at once: exactly one gets it, and
    // the booking holds exactly one slot either way.
    for (round, time) in ["15:00", "16:00", "09:00"].into_iter().enumerate() {
        let (was, sequence, _) = stored(&system, business.tenant_id, &id).await;
        let target = business.at(day, time);
        let (moved, newcomer) = tokio::join!(
            business.reschedule(&id, &target),
            business.book(service, Some(resource), &target, 10 + round),
        );
        let winners = [&moved, &newcomer]
            .iter()
            .filter(|d| d["status"] == "confirmed")
            .count();
        assert_eq!(winners, 1, "{moved} {newcomer}");
        let (now, now_sequence, _) = stored(&system, business.tenant_id, &id).await;
        if moved["status"] == "confirmed" {
            assert_eq!(reason(&newcomer), "slot_taken");
            assert_eq!((now, now_sequence), (instant(&target), sequence + 1));
        } else {
            assert_eq!(reason(&moved), "slot_taken");
            assert_eq!((now, now_sequence), (was, sequence));
        }
        assert_eq!(overlapping_pairs(&system, business.tenant_id).await, 0);
    }

    // Cancelled, a booking can be neither moved nor cancelled again.
    let (was, sequence, _) = stored(&system, business.tenant_id, &id).await;
    let cancelled = business.cancel(&id).await;
    assert_eq!(cancelled["status"], "confirmed", "{cancelled}");
    let refused = business.reschedule(&id, &business.at(day, "12:00")).await;
    assert_eq!(reason(&refused), "not_reschedulable");
    let refused = business.cancel(&id).await;
    assert_eq!(reason(&refused), "not_cancellable");
    assert_eq!(
        stored(&system, business.tenant_id, &id).await,
        (was, sequence + 1, "cancelled".to_owned())
    );
}

// ---------------------------------------------------------------------------------------
// Messages: manage links and calendar attachments
// ---------------------------------------------------------------------------------------

/// A message the worker wrote, read back with mail-parser.
#[derive(Debug)]
struct Mail {
    to: String,
    subject: String,
    text: String,
    html: String,
    /// The `booking.ics` attachment: its Content-Type `method` and its text.
    calendar: Option<(String, String)>,
}

fn read_mail(raw: &str) -> Mail {
    let message = MessageParser::default()
        .parse(raw.as_bytes())
        .expect("a MIME message");
    let calendar = message
        .parts
        .iter()
        .find(|part| {
            part.content_type()
                .is_some_and(|t| t.ctype() == "text" && t.subtype() == Some("calendar"))
        })
        .map(|part| {
            assert_eq!(part.attachment_name(), Some("booking.ics"));
            let method = part
                .content_type()
                .and_then(|t| t.attribute("method"))
                .unwrap_or_default()
                .to_owned();
            (method, String::from_utf8(part.contents().to_vec()).unwrap())
        });
    Mail {
        to: message
            .to()
            .and_then(|to| to.first())
            .and_then(|to| to.address())
            .unwrap()
            .to_owned(),
        subject: message.subject().unwrap_or_default().to_owned(),
        text: message.body_text(0).unwrap_or_default().into_owned(),
        html: message.body_html(0).unwrap_or_default().into_owned(),
        calendar,
    }
}

async fn mails(system: &TestSystem, count: usize) -> Vec<Mail> {
    let mails: Vec<Mail> = system
        .wait_for_emails(count, MAILED_WITHIN)
        .await
        .iter()
        .map(|raw| read_mail(raw))
        .collect();
    assert_eq!(mails.len(), count, "{mails:#?}");
    mails
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn manage_link_reaches_only_the_customer_and_shows_reschedules_and_cancels_the_booking() {
    let system = TestSystem::start().await;
    let business = Business::open(&system, "manage", LONDON).await;
    let stranger = Business::open(&system, "manage-other", LONDON).await;
    let service = business.service(json!({"duration_minutes": 60})).await;
    let resource = business
        .resource("Chair", &[service], &[("09:00", "17:00")])
        .await;
    let day = business.day(6);
    let start = business.at(day, "10:00");
    let booking = business
        .book_confirmed(service, Some(resource), &start, 1)
        .await;
    let id: Uuid = id_of(&booking).parse().unwrap();
    let token = common::manage::token(&system.config.manage_link_secret, business.tenant_id, id);
    let link = format!("/t/manage/v1/manage/{token}");
    let tenant_address = "bookings@manage.example";

    // The customer's confirmation carries the link, the business's copy does not, and the
    // database keeps only the token's hash.
    let confirmation = mails(&system, 2).await;
    let customer = confirmation
        .iter()
        .find(|m| m.to == "customer1@example.com")
        .unwrap();
    assert!(customer.subject.contains("is confirmed"), "{customer:?}");
    assert!(customer.text.contains(&link), "{}", customer.text);
    assert!(customer.html.contains(&link), "{}", customer.html);
    let business_copy = confirmation
        .iter()
        .find(|m| m.to == tenant_address)
        .unwrap();
    for body in [&business_copy.text, &business_copy.html] {
        assert!(
            !body.contains("/v1/manage/") && !body.contains(&token),
            "{body}"
        );
    }
    let hash: Vec<u8> = sqlx::query_scalar("SELECT manage_token_hash FROM bookings WHERE id = $1")
        .bind(id)
        .fetch_one(&system.pool)
        .await
        .unwrap();
    assert_eq!(hash, common::manage::token_hash(&token));

    // The link shows the booking.
    let (status, _, shown) = business
        .public(Method::GET, &format!("/v1/manage/{token}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(shown["id"], json!(id));
    assert_eq!(shown["status"], "confirmed");
    assert_eq!(instant(shown["start"].as_str().unwrap()), instant(&start));
    assert_eq!(shown["resource_id"], json!(resource));

    // Any other token, well-formed or not, and this token under another tenant, are 404.
    let forged = common::manage::token("not the secret", business.tenant_id, id);
    let wrong = [
        (&business, forged),
        (&business, "mt_xyz".to_owned()),
        (&business, "not-a-token".to_owned()),
        (&business, format!("{token}0")),
        (&stranger, token.clone()),
    ];
    for (tenant, candidate) in wrong {
        for (method, path) in [
            (Method::GET, format!("/v1/manage/{candidate}")),
            (Method::POST, format!("/v1/manage/{candidate}/cancel")),
        ] {
            let (status, content_type, problem) =
                tenant.public(method, &path, Some(&json!({}))).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {problem}");
            assert_eq!(content_type, "application/problem+json");
            assert_eq!(problem["status"], 404);
        }
    }

    // Rescheduled through the link, by the queue: the same booking at the new time, and
    // the customer's message about it carries the link again.
    let moved_to = business.at(day, "14:00");
    let path = format!("/v1/manage/{token}/reschedule");
    let moved = business
        .change(&path, &json!({ "start": moved_to }), false)
        .await;
    assert_eq!(moved["status"], "confirmed", "{moved}");
    assert_eq!(moved["booking"]["id"], json!(id));
    let (_, _, shown) = business
        .public(Method::GET, &format!("/v1/manage/{token}"), None)
        .await;
    assert_eq!(
        instant(shown["start"].as_str().unwrap()),
        instant(&moved_to)
    );
    let after_move = mails(&system, 4).await;
    let moved_mail = after_move
        .iter()
        .find(|m| m.to == "customer1@example.com" && m.subject.contains("has been moved"))
        .unwrap();
    assert!(moved_mail.text.contains(&link), "{}", moved_mail.text);

    // Cancelled through the link: the booking shows as cancelled, and the cancellation
    // carries no link.
    let cancelled = business
        .change(&format!("/v1/manage/{token}/cancel"), &json!({}), false)
        .await;
    assert_eq!(cancelled["status"], "confirmed", "{cancelled}");
    let (_, _, shown) = business
        .public(Method::GET, &format!("/v1/manage/{token}"), None)
        .await;
    assert_eq!(shown["status"], "cancelled");
    let after_cancel = mails(&system, 6).await;
    let cancel_mail = after_cancel
        .iter()
        .find(|m| m.to == "customer1@example.com" && m.subject.contains("has been cancelled"))
        .unwrap();
    assert!(
        !cancel_mail.text.contains("/v1/manage/"),
        "{}",
        cancel_mail.text
    );
    assert!(
        !cancel_mail.html.contains("/v1/manage/"),
        "{}",
        cancel_mail.html
    );
}

/// The value of a property of an iCalendar component.
fn property<'a>(properties: &'a [ical::property::Property], name: &str) -> &'a str {
    properties
        .iter()
        .find(|p| p.name == name)
        .and_then(|p| p.value.as_deref())
        .unwrap_or_else(|| panic!("no {name}"))
}

/// An iCalendar UTC date-time, `20300131T090000Z`.
fn ics_instant(value: &str) -> DateTime<Utc> {
    NaiveDateTime::parse_from_str(value, "%Y%m%dT%H%M%SZ")
        .unwrap_or_else(|_| panic!("not a UTC date-time: {value}"))
        .and_utc()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calendar_attachments_keep_one_uid_raise_the_sequence_and_match_the_booking() {
    let system = TestSystem::start().await;
    let business = Business::open(&system, "calendar", "America/New_York").await;
    let service = business.service(json!({"duration_minutes": 45})).await;
    let resource = business
        .resource("Room", &[service], &[("09:00", "17:00")])
        .await;
    let day = business.day(7);

    // Confirm, move, cancel; the api's view of the booking after each.
    let booking = business
        .book_confirmed(service, Some(resource), &business.at(day, "09:45"), 1)
        .await;
    let id = id_of(&booking);
    mails(&system, 2).await;
    let moved = business.reschedule(&id, &business.at(day, "15:00")).await;
    assert_eq!(moved["status"], "confirmed", "{moved}");
    mails(&system, 4).await;
    let cancelled = business.cancel(&id).await;
    assert_eq!(cancelled["status"], "confirmed", "{cancelled}");
    assert_eq!(cancelled["booking"]["status"], "cancelled");
    // The status answers show the booking's times in New York's offset, as written locally.
    assert_eq!(booking["start"], json!(business.at(day, "09:45")));
    assert_eq!(moved["booking"]["start"], json!(business.at(day, "15:00")));
    assert_eq!(
        cancelled["booking"]["start"],
        json!(business.at(day, "15:00"))
    );
    let views = [&booking, &moved["booking"], &cancelled["booking"]];

    // One message per change and recipient, in the outbox and in the folder.
    let sent = mails(&system, 6).await;
    let outbox: Vec<(String, i32, String, i64)> = sqlx::query_as(
        "SELECT event, sequence, recipient_role, count(*) FROM outbox WHERE booking_id = $1
         GROUP BY 1, 2, 3 ORDER BY 2, 3",
    )
    .bind(id.parse::<Uuid>().unwrap())
    .fetch_all(&system.pool)
    .await
    .unwrap();
    let one_each: Vec<(String, i32, String, i64)> = [
        ("booking_confirmed", 0),
        ("booking_rescheduled", 1),
        ("booking_cancelled", 2),
    ]
    .into_iter()
    .flat_map(|(event, sequence)| {
        ["customer", "tenant"].map(|role| (event.to_owned(), sequence, role.to_owned(), 1))
    })
    .collect();
    assert_eq!(outbox, one_each);

    let uid = format!(
        "{}@bookings.invalid",
        Uuid::parse_str(&id).unwrap().simple()
    );
    let mut recipients: HashMap<i64, Vec<String>> = HashMap::new();
    for mail in &sent {
        let (content_method, ics) = mail.calendar.as_ref().expect("a booking.ics attachment");
        let calendar = ical::IcalParser::new(std::io::BufReader::new(ics.as_bytes()))
            .next()
            .expect("one calendar")
            .expect("valid iCalendar");
        assert_eq!(calendar.events.len(), 1, "{ics}");
        let event = &calendar.events[0].properties;
        let sequence: i64 = property(event, "SEQUENCE").parse().unwrap();
        let method = property(&calendar.properties, "METHOD");
        assert_eq!(property(event, "UID"), uid, "one UID for every message");
        assert_eq!(
            content_method, method,
            "Content-Type's method is the calendar's"
        );
        let (want_method, want_status) = match sequence {
            0 | 1 => ("REQUEST", "CONFIRMED"),
            2 => ("CANCEL", "CANCELLED"),
            other => panic!("unexpected SEQUENCE {other}"),
        };
        assert_eq!(
            (method, property(event, "STATUS")),
            (want_method, want_status)
        );
        let view = views[sequence as usize];
        assert_eq!(
            ics_instant(property(event, "DTSTART")),
            instant(view["start"].as_str().unwrap()),
            "SEQUENCE {sequence}"
        );
        assert_eq!(
            ics_instant(property(event, "DTEND")),
            instant(view["end"].as_str().unwrap()),
            "SEQUENCE {sequence}"
        );
        recipients
            .entry(sequence)
            .or_default()
            .push(mail.to.clone());
    }
    for sequence in 0..3 {
        let mut to = recipients.remove(&sequence).unwrap_or_default();
        to.sort();
        assert_eq!(
            to,
            ["bookings@calendar.example", "customer1@example.com"],
            "SEQUENCE {sequence}"
        );
    }
    assert!(recipients.is_empty(), "{recipients:?}");
}

// ---------------------------------------------------------------------------------------
// How a booking went
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn booking_status_is_409_before_the_start_404_for_unknown_422_for_bad_values() {
    let system = TestSystem::start().await;
    let business = Business::open(&system, "outcomes", LONDON).await;
    let service = business.service(json!({"duration_minutes": 60})).await;
    let resource = business
        .resource("Chair", &[service], &[("09:00", "17:00")])
        .await;
    let booking = business
        .book_confirmed(
            service,
            Some(resource),
            &business.at(business.day(2), "10:00"),
            1,
        )
        .await;
    let id = id_of(&booking);
    let mark = |target: String, status: Value| {
        let business = &business;
        async move {
            let path = format!("/v1/admin/bookings/{target}/status");
            business
                .send(
                    Method::POST,
                    &path,
                    Some(&json!({ "status": status })),
                    true,
                )
                .await
        }
    };

    // Not started yet.
    for status in ["completed", "no_show"] {
        let (code, content_type, problem) = mark(id.clone(), json!(status)).await;
        assert_eq!(code, StatusCode::CONFLICT, "{problem}");
        assert_eq!(content_type, "application/problem+json");
    }
    // No such booking.
    for target in [Uuid::now_v7().to_string(), "not-an-id".to_owned()] {
        let (code, content_type, problem) = mark(target, json!("completed")).await;
        assert_eq!(code, StatusCode::NOT_FOUND, "{problem}");
        assert_eq!(content_type, "application/problem+json");
    }
    // Not a status it can be given.
    for status in [
        json!("done"),
        json!("confirmed"),
        json!("cancelled"),
        json!(""),
    ] {
        let (code, _, problem) = mark(id.clone(), status.clone()).await;
        assert_eq!(
            code,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{status}: {problem}"
        );
        assert_eq!(problem["errors"][0]["field"], "status", "{problem}");
    }
    let (_, _, status) = stored(&system, business.tenant_id, &id).await;
    assert_eq!(status, "confirmed");

    // Once started (moved into the past here), it can be marked once.
    sqlx::query(
        "UPDATE bookings SET starts_at = now() - interval '2 hours',
             ends_at = now() - interval '1 hour',
             occupied = tstzrange(now() - interval '2 hours', now() - interval '1 hour', '[)')
         WHERE id = $1",
    )
    .bind(id.parse::<Uuid>().unwrap())
    .execute(&system.pool)
    .await
    .unwrap();
    let (code, _, marked) = mark(id.clone(), json!("completed")).await;
    assert_eq!(code, StatusCode::OK, "{marked}");
    assert_eq!(marked["status"], "completed");
    let (code, _, problem) = mark(id.clone(), json!("no_show")).await;
    assert_eq!(code, StatusCode::CONFLICT, "{problem}");
    let (_, _, status) = stored(&system, business.tenant_id, &id).await;
    assert_eq!(status, "completed");
}
