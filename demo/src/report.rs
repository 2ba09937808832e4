//! What the run showed: counts for the summary, and the checks of the service's promises.
//!
//! A *violation* is a promise visibly broken (a 5xx, a replay naming another request, two
//! winners for one named slot, overlapping bookings, a decision the rules forbid, a refusal
//! that is not a problem document) and makes the demo exit non-zero. A *warning* is worth
//! a look but not proof of a bug (requests still open at the deadline, fewer emails than
//! expected while the notifier may still be sending).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::Utc;
use uuid::Uuid;

use crate::api::{Answer, BookingView, Polled, RequestView, ServerError, Tenancy};
use crate::plan::{Expect, Group, Invalid, Slot};
use crate::traffic::Outcome;

/// Warnings beyond this many are counted, not printed.
const MAX_WARNINGS_SHOWN: usize = 12;

/// A contested group as planned, for the report.
#[derive(Debug, Clone)]
pub struct GroupInfo {
    pub label: String,
    pub resource_id: Option<Uuid>,
    pub resources: usize,
}

impl From<&Group> for GroupInfo {
    fn from(group: &Group) -> Self {
        Self {
            label: group.label.clone(),
            resource_id: group.resource_id,
            resources: group.resources,
        }
    }
}

/// How the two ways of naming a tenant compared.
#[derive(Debug, Clone, Default)]
pub struct Addressing {
    pub tenants: usize,
    /// Tenants whose services read the same by `/t/{slug}` and by `X-Tenant`.
    pub agreed: usize,
    /// The status when the path and the header name different tenants (400 expected).
    pub conflict_status: u16,
}

#[derive(Debug, Default)]
struct GroupTally {
    size: usize,
    accepted: usize,
    winners: usize,
    reasons: BTreeMap<String, usize>,
}

#[derive(Debug, Default)]
pub struct Report {
    planned: usize,
    sent: usize,
    retries: u32,
    accepted: usize,
    refused: BTreeMap<u16, usize>,
    still_rate_limited: usize,
    refused_by_kind: BTreeMap<Invalid, BTreeMap<u16, usize>>,
    replays: (usize, usize),
    conflicting_key: (usize, usize),
    via_header: usize,
    pub confirmed: usize,
    rejected: BTreeMap<String, usize>,
    failed: usize,
    /// Status URLs of requests not final at the deadline, with their last status.
    still_open: Vec<String>,
    groups: Vec<(GroupInfo, GroupTally)>,
    /// Accept-to-decision by the server's timestamps (`decided_at − accepted_at`), per request.
    decision_times: Vec<(Duration, Uuid)>,
    /// Decided requests whose timestamps could not give a decision time, and why.
    untimed: Vec<String>,
    /// From the 202 to the first poll that saw the final status, as the client saw it.
    waits: Vec<Duration>,
    bookings: Vec<(Uuid, BookingView)>,
    addressing: Addressing,
    server_errors: Vec<ServerError>,
    pub emails: Option<usize>,
    violations: Vec<String>,
    warnings: Vec<String>,
    /// Services the demo left alone, each with the reason (see `plan::unmodelled`).
    skipped: Vec<String>,
}

impl Report {
    /// Names the services the demo did not plan with, for the summary.
    pub fn note_skipped(&mut self, skipped: Vec<String>) {
        self.skipped = skipped;
    }

    pub fn build(
        outcomes: &[Outcome],
        groups: &[GroupInfo],
        server_errors: Vec<ServerError>,
        addressing: Addressing,
    ) -> Self {
        let mut report = Self {
            groups: groups
                .iter()
                .map(|g| (g.clone(), GroupTally::default()))
                .collect(),
            ..Self::default()
        };
        for outcome in outcomes {
            report.count_submission(outcome);
            report.count_replay(outcome);
            report.count_decision(outcome);
        }
        report.check_decision_times();
        report.check_groups();
        report.check_overlaps();
        report.check_addressing(addressing);
        report.check_server_errors(server_errors);
        report
    }

    /// No promise visibly broken.
    pub fn held(&self) -> bool {
        self.violations.is_empty()
    }

    fn count_submission(&mut self, outcome: &Outcome) {
        self.planned += 1;
        self.sent += 1;
        if outcome.planned.submission.tenancy == Tenancy::Header {
            self.via_header += 1;
        }
        let group = outcome.group.and_then(|g| self.groups.get_mut(g));
        if let Some((_, tally)) = group {
            tally.size += 1;
        }
        let submitted = match &outcome.submitted {
            Ok(submitted) => submitted,
            Err(err) => {
                self.violations
                    .push(format!("a booking request could not be sent: {err}"));
                return;
            }
        };
        self.retries += submitted.retries;
        match (&submitted.answer, &outcome.planned.expect) {
            (Answer::Accepted { accepted, .. }, Expect::Refused(kind)) => {
                self.accepted += 1;
                self.violations.push(format!(
                    "an invalid body ({}) was accepted as {}",
                    kind.label(),
                    accepted.request_id
                ));
            }
            (
                Answer::Accepted {
                    accepted, location, ..
                },
                _,
            ) => {
                self.accepted += 1;
                if let Some((_, tally)) = outcome.group.and_then(|g| self.groups.get_mut(g)) {
                    tally.accepted += 1;
                }
                if location.as_deref() != Some(accepted.status_url.as_str()) {
                    self.warnings.push(format!(
                        "202 for {}: Location {location:?} differs from status_url {}",
                        accepted.request_id, accepted.status_url
                    ));
                }
            }
            (
                Answer::Refused {
                    status,
                    problem_json,
                    body,
                },
                expect,
            ) => {
                *self.refused.entry(*status).or_default() += 1;
                if let Expect::Refused(kind) = expect {
                    *self
                        .refused_by_kind
                        .entry(*kind)
                        .or_default()
                        .entry(*status)
                        .or_default() += 1;
                }
                self.check_refusal(*status, *problem_json, body, expect);
            }
        }
    }

    fn check_refusal(&mut self, status: u16, problem_json: bool, body: &str, expect: &Expect) {
        if status >= 500 {
            self.violations.push(format!(
                "a booking request was still refused {status} after retries: {body}"
            ));
        } else if !problem_json {
            self.violations.push(format!(
                "a {status} refusal is not an application/problem+json document: {body}"
            ));
        } else if status == 429 {
            self.still_rate_limited += 1;
        } else if !matches!(expect, Expect::Refused(_)) {
            self.violations.push(format!(
                "a well-formed booking request was refused {status}: {body}"
            ));
        }
    }

    fn count_replay(&mut self, outcome: &Outcome) {
        let Some(replay) = &outcome.replay else {
            return;
        };
        self.sent += replay.sent;
        let tally = if replay.conflicting_body {
            &mut self.conflicting_key
        } else {
            &mut self.replays
        };
        tally.1 += 1;
        if replay.ok {
            tally.0 += 1;
        } else if replay.inconclusive {
            self.warnings.push(format!(
                "idempotency not shown (rate limited or unavailable): {}",
                replay.detail
            ));
        } else {
            self.violations
                .push(format!("idempotency broke: {}", replay.detail));
        }
    }

    fn count_decision(&mut self, outcome: &Outcome) {
        let (Some(accepted), Some(polled)) = (outcome.accepted(), &outcome.polled) else {
            return;
        };
        let id = accepted.request_id;
        let (view, waited) = match polled {
            Ok(Polled::Final { view, waited }) => (view, *waited),
            Ok(Polled::StillOpen { last_status }) => {
                self.still_open
                    .push(format!("{} ({last_status})", accepted.status_url));
                return;
            }
            Err(err) => {
                self.violations
                    .push(format!("the status of {id} could not be read: {err}"));
                return;
            }
        };
        self.waits.push(waited);
        self.time_decision(id, view);
        if view.request_id != id {
            self.violations.push(format!(
                "the status of {id} names request {}",
                view.request_id
            ));
        }
        let reason = view.reason.clone().unwrap_or_else(|| "-".to_owned());
        if let Some((_, tally)) = outcome.group.and_then(|g| self.groups.get_mut(g)) {
            match view.status.as_str() {
                "confirmed" => tally.winners += 1,
                _ => *tally.reasons.entry(reason.clone()).or_default() += 1,
            }
        }
        let expect = &outcome.planned.expect;
        match view.status.as_str() {
            "confirmed" => {
                self.confirmed += 1;
                if let Expect::Rejected(expected) = expect {
                    self.violations
                        .push(format!("{id} was confirmed but should be {expected}"));
                }
                self.check_booking(id, view.booking.as_ref(), outcome.planned.slot.as_ref());
            }
            "rejected" => {
                *self.rejected.entry(reason.clone()).or_default() += 1;
                let allowed = match expect {
                    Expect::Bookable => "slot_taken",
                    Expect::Rejected(expected) => expected,
                    Expect::Refused(_) => "",
                };
                if reason != allowed {
                    self.violations.push(format!(
                        "{id} was rejected {reason} ({}), expected {allowed}",
                        view.detail.as_deref().unwrap_or("no detail")
                    ));
                }
            }
            _ => {
                self.failed += 1;
                self.warnings.push(format!(
                    "{id} failed: {} {}",
                    reason,
                    view.detail.as_deref().unwrap_or_default()
                ));
            }
        }
    }

    /// The server's accept-to-decision for one decided request: `decided_at − accepted_at`.
    fn time_decision(&mut self, id: Uuid, view: &RequestView) {
        let (accepted_at, decided_at) = match (view.accepted_at, view.decided_at) {
            (Some(accepted_at), Some(decided_at)) => (accepted_at, decided_at),
            (accepted_at, decided_at) => {
                let missing: Vec<&str> = [
                    accepted_at.is_none().then_some("accepted_at"),
                    decided_at.is_none().then_some("decided_at"),
                ]
                .into_iter()
                .flatten()
                .collect();
                self.untimed.push(format!(
                    "{id} ({}) has no {}",
                    view.status,
                    missing.join(" or ")
                ));
                return;
            }
        };
        match (decided_at - accepted_at).to_std() {
            Ok(took) => self.decision_times.push((took, id)),
            Err(_) => self.untimed.push(format!(
                "{id} was decided at {decided_at}, before it was accepted at {accepted_at}"
            )),
        }
    }

    fn check_decision_times(&mut self) {
        if let Some(first) = self.untimed.first() {
            self.warnings.push(format!(
                "{} decided requests are left out of the server's accept-to-decision, e.g. {first}",
                self.untimed.len()
            ));
        }
    }

    /// A confirmed request's booking is the slot that was asked for.
    fn check_booking(&mut self, id: Uuid, booking: Option<&BookingView>, slot: Option<&Slot>) {
        let (Some(booking), Some(slot)) = (booking, slot) else {
            self.violations
                .push(format!("{id} is confirmed without a booking"));
            return;
        };
        let start = slot.start.with_timezone(&Utc);
        let end = start + chrono::Duration::minutes(slot.duration_minutes);
        let resource_ok = slot.resource_id.is_none_or(|r| r == booking.resource_id);
        if booking.start.with_timezone(&Utc) != start
            || booking.end.with_timezone(&Utc) != end
            || booking.service_id != slot.service_id
            || !resource_ok
            || booking.status != "confirmed"
        {
            self.violations.push(format!(
                "{id}: booking {} ({}) {}–{} on {} is not the slot asked for ({start}, \
                 resource {:?})",
                booking.id,
                booking.status,
                booking.start,
                booking.end,
                booking.resource_id,
                slot.resource_id
            ));
        }
        self.bookings.push((id, booking.clone()));
    }

    fn check_groups(&mut self) {
        for (info, tally) in &self.groups {
            let decided = tally.winners + tally.reasons.values().sum::<usize>();
            match info.resource_id {
                Some(_) if tally.winners > 1 => self.violations.push(format!(
                    "contested slot {} has {} winners for one named resource",
                    info.label, tally.winners
                )),
                Some(_) if tally.winners == 0 && decided == tally.accepted => {
                    self.warnings.push(format!(
                        "contested slot {} had no winner ({:?}); booked before this run?",
                        info.label, tally.reasons
                    ));
                }
                None if tally.winners > info.resources => self.violations.push(format!(
                    "contested slot {} has {} winners for {} resources",
                    info.label, tally.winners, info.resources
                )),
                _ => {}
            }
        }
    }

    /// No two confirmed bookings seen in this run overlap on one resource.
    fn check_overlaps(&mut self) {
        let mut by_resource: HashMap<Uuid, Vec<&(Uuid, BookingView)>> = HashMap::new();
        for entry in &self.bookings {
            by_resource
                .entry(entry.1.resource_id)
                .or_default()
                .push(entry);
        }
        for (resource, mut bookings) in by_resource {
            bookings.sort_by_key(|(_, b)| b.start);
            for pair in bookings.windows(2) {
                let ((first_id, first), (second_id, second)) = (pair[0], pair[1]);
                if second.start < first.end {
                    self.violations.push(format!(
                        "resource {resource}: bookings for {first_id} ({}–{}) and {second_id} \
                         ({}–{}) overlap",
                        first.start, first.end, second.start, second.end
                    ));
                }
            }
        }
    }

    fn check_addressing(&mut self, addressing: Addressing) {
        if addressing.agreed != addressing.tenants {
            self.violations.push(format!(
                "/t/{{slug}} and X-Tenant gave different services for {} of {} tenants",
                addressing.tenants - addressing.agreed,
                addressing.tenants
            ));
        }
        if addressing.conflict_status != 400 {
            self.violations.push(format!(
                "naming two tenants (path and X-Tenant) answered {}, not 400",
                addressing.conflict_status
            ));
        }
        self.addressing = addressing;
    }

    /// 503 with `Retry-After` is the api asking for a retry, which the demo did; any other
    /// server error is a bug.
    fn check_server_errors(&mut self, errors: Vec<ServerError>) {
        for error in &errors {
            if error.status != 503 {
                self.violations.push(format!(
                    "{} answered {} (X-Request-Id {}): {}",
                    error.what, error.status, error.request_id, error.body
                ));
            }
        }
        self.server_errors = errors;
    }

    pub fn check_emails(&mut self, written: usize) {
        let expected = 2 * self.confirmed;
        if written < expected {
            self.warnings.push(format!(
                "{written} emails written for {} confirmed bookings (expected {expected}); \
                 the notifier may still be sending",
                self.confirmed
            ));
        }
        self.emails = Some(written);
    }

    pub fn print(&self, elapsed: Duration, poll_budget: Duration) {
        let line = |label: &str, value: String| println!("  {label:<30}{value}");
        println!();
        println!("== summary ({:.1} s) ==", elapsed.as_secs_f64());
        line(
            "requests sent",
            format!(
                "{} ({} planned + {} idempotency replays; {} via X-Tenant, the rest via /t/{{slug}})",
                self.sent,
                self.planned,
                self.sent - self.planned,
                self.via_header
            ),
        );
        line("retried after 429/503", self.retries.to_string());
        line("accepted (202)", self.accepted.to_string());
        line(
            "refused by the api",
            format!(
                "{} {}",
                self.refused.values().sum::<usize>(),
                by_status(&self.refused)
            ),
        );
        for (kind, statuses) in &self.refused_by_kind {
            line(&format!("  {}", kind.label()), by_status(statuses));
        }
        line(
            "idempotent replays matched",
            format!(
                "{}/{} (same key + same body → same request_id)",
                self.replays.0, self.replays.1
            ),
        );
        line(
            "key reused with another body",
            format!(
                "{}/{} answered 422",
                self.conflicting_key.0, self.conflicting_key.1
            ),
        );
        line("confirmed", self.confirmed.to_string());
        line(
            "rejected",
            format!(
                "{} {}",
                self.rejected.values().sum::<usize>(),
                by_key(&self.rejected)
            ),
        );
        line("failed", self.failed.to_string());
        line(
            "still open",
            format!(
                "{} (not final after {} s of polling each)",
                self.still_open.len(),
                poll_budget.as_secs()
            ),
        );
        self.print_groups();
        let expected = 2 * self.confirmed;
        line(
            "emails written",
            self.emails.map_or_else(
                || "not counted".to_owned(),
                |n| {
                    format!(
                        "{n} new .eml files (expected {expected}: customer + business per booking)"
                    )
                },
            ),
        );
        self.print_waits();
        line(
            "tenant addressing",
            format!(
                "/t/{{slug}} and X-Tenant agree for {}/{} tenants; both naming different \
                 tenants → {}",
                self.addressing.agreed, self.addressing.tenants, self.addressing.conflict_status
            ),
        );
        line(
            "services skipped",
            if self.skipped.is_empty() {
                "none: every service is one the demo models".to_owned()
            } else {
                format!(
                    "{} the demo does not model, no traffic sent to them (listed below)",
                    self.skipped.len()
                )
            },
        );
        for skipped in &self.skipped {
            println!("    - {skipped}");
        }
        line(
            "server errors (5xx)",
            format!(
                "{} ({} of them 503 with Retry-After, retried)",
                self.server_errors.len(),
                self.server_errors
                    .iter()
                    .filter(|e| e.status == 503)
                    .count()
            ),
        );
        self.print_findings();
    }

    fn print_groups(&self) {
        println!(
            "  {:<30}{} groups of 5–10 requests for one slot, sent at once",
            "contested groups",
            self.groups.len()
        );
        for (info, tally) in &self.groups {
            let rule = match info.resource_id {
                Some(_) => "exactly 1 expected".to_owned(),
                None => format!("up to {} expected, one per resource", info.resources),
            };
            println!(
                "    {} — {} sent, {} winner(s) ({rule}); others {}",
                info.label,
                tally.size,
                tally.winners,
                by_key(&tally.reasons)
            );
        }
    }

    /// Accept-to-decision twice: by the server's timestamps, then as the client saw it.
    fn print_waits(&self) {
        let seconds = |d: Option<&Duration>| {
            d.map_or_else(|| "-".to_owned(), |d| format!("{:.3} s", d.as_secs_f64()))
        };
        let mut decisions = self.decision_times.clone();
        decisions.sort();
        let times: Vec<Duration> = decisions.iter().map(|(took, _)| *took).collect();
        let slowest = decisions.last().map_or_else(
            || "-".to_owned(),
            |(took, id)| format!("{} (request {id})", seconds(Some(took))),
        );
        println!(
            "  {:<30}p50 {}, p95 {}, p99 {}, slowest {slowest} over {} decided requests",
            "accept-to-decision",
            seconds(percentile(&times, 50)),
            seconds(percentile(&times, 95)),
            seconds(percentile(&times, 99)),
            times.len()
        );
        println!(
            "  {:<30}(decided_at − accepted_at from the status answers, both stamped by the \
             database; no polling in it)",
            ""
        );

        let mut waits = self.waits.clone();
        waits.sort();
        println!(
            "  {:<30}p50 {}, p95 {}, p99 {}, slowest {} over {} decided requests",
            "  seen by the client",
            seconds(percentile(&waits, 50)),
            seconds(percentile(&waits, 95)),
            seconds(percentile(&waits, 99)),
            seconds(waits.last()),
            waits.len()
        );
        println!(
            "  {:<30}(seen by the client, includes polling every Retry-After: from the 202 to \
             the first poll that saw a final status; one poll right after the 202, then one \
             every Retry-After = 1 s)",
            ""
        );
    }

    fn print_findings(&self) {
        if self.still_rate_limited > 0 {
            println!(
                "  warning: {} booking requests were still rate limited (429) after every retry",
                self.still_rate_limited
            );
        }
        if let Some(first) = self.still_open.first() {
            println!(
                "  warning: {} accepted requests had no final status by the deadline, e.g. {first}",
                self.still_open.len()
            );
        }
        for warning in self.warnings.iter().take(MAX_WARNINGS_SHOWN) {
            println!("  warning: {warning}");
        }
        if self.warnings.len() > MAX_WARNINGS_SHOWN {
            println!(
                "  … and {} more warnings",
                self.warnings.len() - MAX_WARNINGS_SHOWN
            );
        }
        if self.violations.is_empty() {
            println!("  {:<30}all held", "invariants");
        } else {
            println!("  {:<30}{} BROKEN:", "invariants", self.violations.len());
            for violation in &self.violations {
                println!("    - {violation}");
            }
        }
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[Duration], p: usize) -> Option<&Duration> {
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted.get(rank - 1)
}

fn by_status(counts: &BTreeMap<u16, usize>) -> String {
    let parts: Vec<String> = counts.iter().map(|(s, n)| format!("{s}: {n}")).collect();
    format!("({})", parts.join(", "))
}

fn by_key(counts: &BTreeMap<String, usize>) -> String {
    if counts.is_empty() {
        return "(none)".to_owned();
    }
    let parts: Vec<String> = counts.iter().map(|(k, n)| format!("{k}: {n}")).collect();
    format!("({})", parts.join(", "))
}
