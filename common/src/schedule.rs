//! Opening-hours rules in the tenant's time zone.
//!
//! Opening hours are wall-clock times in the tenant's IANA zone. Each day's opening interval
//! is turned into absolute instants with the zone's real rules: an opening time that does
//! not exist that day (clocks spring forward over it) opens when the clocks resume; a
//! closing time that happens twice (clocks fall back) closes at its later occurrence.
//! Slots are laid out in absolute time from the opening instant.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpeningInterval {
    /// ISO weekday, 1 = Monday.
    pub weekday: u32,
    pub opens: NaiveTime,
    pub closes: NaiveTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoursViolation {
    /// The booking does not lie inside one opening interval of its day.
    Closed,
    /// Inside opening hours, but not on the service's slot grid.
    OffGrid,
}

/// The instant a local wall-clock time names on a date. A time inside a spring-forward gap
/// resolves to the first instant after the gap; an ambiguous one to its earlier or later
/// occurrence as asked.
pub fn local_instant(tz: Tz, date: NaiveDate, time: NaiveTime, later: bool) -> DateTime<Utc> {
    let mut local = NaiveDateTime::new(date, time);
    // Gaps are at most a few hours in every zone; step forward until the clock exists.
    for _ in 0..=(24 * 60) {
        let resolved = tz.from_local_datetime(&local);
        let instant = if later {
            resolved.latest()
        } else {
            resolved.earliest()
        };
        if let Some(instant) = instant {
            return instant.with_timezone(&Utc);
        }
        local += Duration::minutes(1);
    }
    unreachable!("no time zone skips a whole day of wall-clock time")
}

/// The absolute bounds of each opening interval on a local date.
pub fn opening_spans(
    tz: Tz,
    date: NaiveDate,
    hours: &[OpeningInterval],
) -> impl Iterator<Item = (DateTime<Utc>, DateTime<Utc>)> + '_ {
    let weekday = date.weekday().number_from_monday();
    hours
        .iter()
        .filter(move |interval| interval.weekday == weekday)
        .map(move |interval| {
            (
                local_instant(tz, date, interval.opens, false),
                local_instant(tz, date, interval.closes, true),
            )
        })
        .filter(|(opens, closes)| opens < closes)
}

/// Every slot start a service of `length` has on a local date: in each opening interval, from
/// the opening instant in steps of `interval`, as long as the slot ends by the closing
/// instant. Steps are in absolute time, so a local time that does not exist is never
/// produced, and a local hour that happens twice yields its slots twice, one per offset.
pub fn day_slots(
    tz: Tz,
    date: NaiveDate,
    hours: &[OpeningInterval],
    length: Duration,
    interval: Duration,
) -> Vec<DateTime<Utc>> {
    let mut slots = Vec::new();
    for (opens, closes) in opening_spans(tz, date, hours) {
        let mut start = opens;
        while start + length <= closes {
            slots.push(start);
            start += interval;
        }
    }
    slots.sort();
    slots.dedup();
    slots
}

/// Whether `[start, start + length)` is a bookable slot: one of [`day_slots`] of the local
/// day on which it starts. When it is not, says whether it lies inside opening hours but off
/// the service's slot grid, or outside them.
pub fn check_opening_hours(
    tz: Tz,
    start: DateTime<Utc>,
    length: Duration,
    hours: &[OpeningInterval],
    interval: Duration,
) -> Result<(), HoursViolation> {
    let local_date = start.with_timezone(&tz).date_naive();
    if day_slots(tz, local_date, hours, length, interval).contains(&start) {
        return Ok(());
    }
    let inside = opening_spans(tz, local_date, hours)
        .any(|(opens, closes)| opens <= start && start + length <= closes);
    Err(if inside {
        HoursViolation::OffGrid
    } else {
        HoursViolation::Closed
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_day(opens: (u32, u32), closes: (u32, u32)) -> Vec<OpeningInterval> {
        (1..=7)
            .map(|weekday| OpeningInterval {
                weekday,
                opens: NaiveTime::from_hms_opt(opens.0, opens.1, 0).unwrap(),
                closes: NaiveTime::from_hms_opt(closes.0, closes.1, 0).unwrap(),
            })
            .collect()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn slot_inside_hours_and_on_grid_is_accepted() {
        let hours = every_day((9, 0), (17, 0));
        let tz = chrono_tz::Europe::London;
        let start = utc("2026-07-01T09:30:00+01:00");
        assert_eq!(
            check_opening_hours(
                tz,
                start,
                Duration::minutes(30),
                &hours,
                Duration::minutes(30)
            ),
            Ok(())
        );
    }

    #[test]
    fn slot_before_opening_or_past_closing_is_closed() {
        let hours = every_day((9, 0), (17, 0));
        let tz = chrono_tz::America::New_York;
        let early = utc("2026-07-01T08:30:00-04:00");
        let late = utc("2026-07-01T16:30:00-04:00");
        let closed = Err(HoursViolation::Closed);
        assert_eq!(
            check_opening_hours(
                tz,
                early,
                Duration::minutes(30),
                &hours,
                Duration::minutes(30)
            ),
            closed
        );
        assert_eq!(
            check_opening_hours(
                tz,
                late,
                Duration::minutes(60),
                &hours,
                Duration::minutes(30)
            ),
            closed
        );
    }

    #[test]
    fn slot_off_the_grid_is_refused() {
        let hours = every_day((9, 0), (17, 0));
        let tz = chrono_tz::Australia::Sydney;
        let start = utc("2026-07-01T10:10:00+10:00");
        assert_eq!(
            check_opening_hours(
                tz,
                start,
                Duration::minutes(30),
                &hours,
                Duration::minutes(30)
            ),
            Err(HoursViolation::OffGrid)
        );
    }

    #[test]
    fn opening_inside_a_spring_forward_gap_opens_when_clocks_resume() {
        // London, 29 March 2026: 01:00 local jumps to 02:00.
        let tz = chrono_tz::Europe::London;
        let date = NaiveDate::from_ymd_opt(2026, 3, 29).unwrap();
        let opens = local_instant(tz, date, NaiveTime::from_hms_opt(1, 30, 0).unwrap(), false);
        assert_eq!(opens, utc("2026-03-29T01:00:00Z"));
    }

    #[test]
    fn closing_in_a_repeated_hour_uses_the_later_occurrence() {
        // New York, 1 November 2026: 01:00 to 02:00 local happens twice.
        let tz = chrono_tz::America::New_York;
        let date = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
        let time = NaiveTime::from_hms_opt(1, 30, 0).unwrap();
        assert_eq!(
            local_instant(tz, date, time, false),
            utc("2026-11-01T01:30:00-04:00")
        );
        assert_eq!(
            local_instant(tz, date, time, true),
            utc("2026-11-01T01:30:00-05:00")
        );
    }
}
