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

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    fn hours(opens: (u32, u32), closes: (u32, u32)) -> Vec<OpeningInterval> {
        every_day(opens, closes)
    }

    /// The slots of a day as local wall-clock text with the offset, as the api shows them.
    fn local_slots(tz: Tz, date: NaiveDate, open: &[OpeningInterval]) -> Vec<String> {
        day_slots(tz, date, open, Duration::minutes(30), Duration::minutes(30))
            .into_iter()
            .map(|slot| slot.with_timezone(&tz).format("%H:%M%:z").to_string())
            .collect()
    }

    #[test]
    fn spring_forward_never_offers_a_time_that_does_not_exist() {
        // London, 28 March 2027: 01:00 GMT becomes 02:00 BST.
        let london = chrono_tz::Europe::London;
        let night = local_slots(london, day(2027, 3, 28), &hours((0, 0), (4, 0)));
        assert_eq!(
            night,
            [
                "00:00+00:00",
                "00:30+00:00",
                "02:00+01:00",
                "02:30+01:00",
                "03:00+01:00",
                "03:30+01:00"
            ]
        );
        // Sydney, 3 October 2027: 02:00 AEST becomes 03:00 AEDT.
        let sydney = chrono_tz::Australia::Sydney;
        let night = local_slots(sydney, day(2027, 10, 3), &hours((1, 0), (4, 0)));
        assert_eq!(
            night,
            ["01:00+10:00", "01:30+10:00", "03:00+11:00", "03:30+11:00"]
        );
    }

    #[test]
    fn fall_back_offers_the_repeated_hour_twice_with_each_offset() {
        // New York, 7 November 2027: 02:00 EDT becomes 01:00 EST.
        let new_york = chrono_tz::America::New_York;
        let night = local_slots(new_york, day(2027, 11, 7), &hours((0, 0), (3, 0)));
        assert_eq!(
            night,
            [
                "00:00-04:00",
                "00:30-04:00",
                "01:00-04:00",
                "01:30-04:00",
                "01:00-05:00",
                "01:30-05:00",
                "02:00-05:00",
                "02:30-05:00"
            ]
        );
        // Sydney, 4 April 2027: 03:00 AEDT becomes 02:00 AEST.
        let sydney = chrono_tz::Australia::Sydney;
        let night = local_slots(sydney, day(2027, 4, 4), &hours((2, 0), (3, 0)));
        assert_eq!(
            night,
            ["02:00+11:00", "02:30+11:00", "02:00+10:00", "02:30+10:00"]
        );
    }

    #[test]
    fn morning_and_afternoon_slots_on_change_days_carry_the_new_offset() {
        // The offset at midnight is the old one; a slot later that day must not use it.
        let cases = [
            (chrono_tz::Europe::London, day(2027, 3, 28), "+01:00"),
            (chrono_tz::Europe::London, day(2027, 10, 31), "+00:00"),
            (chrono_tz::America::New_York, day(2027, 3, 14), "-04:00"),
            (chrono_tz::America::New_York, day(2027, 11, 7), "-05:00"),
            (chrono_tz::Australia::Sydney, day(2027, 10, 3), "+11:00"),
            (chrono_tz::Australia::Sydney, day(2027, 4, 4), "+10:00"),
            (chrono_tz::America::Santiago, day(2027, 9, 5), "-03:00"),
            (chrono_tz::America::Santiago, day(2027, 4, 4), "-04:00"),
        ];
        for (tz, date, offset) in cases {
            for (opens, closes, first) in [((9, 0), (12, 0), "09:00"), ((14, 0), (17, 0), "14:00")]
            {
                let slots = local_slots(tz, date, &hours(opens, closes));
                assert_eq!(slots.len(), 6, "{tz} {date}: {slots:?}");
                assert_eq!(slots[0], format!("{first}{offset}"), "{tz} {date}");
                assert!(
                    slots.iter().all(|s| s.ends_with(offset)),
                    "{tz} {date}: {slots:?}"
                );
            }
        }
    }

    #[test]
    fn opening_at_midnight_that_does_not_exist_opens_when_clocks_resume() {
        // Santiago, 5 September 2027: clocks go from 00:00 straight to 01:00.
        let santiago = chrono_tz::America::Santiago;
        let slots = local_slots(santiago, day(2027, 9, 5), &hours((0, 0), (2, 0)));
        assert_eq!(slots, ["01:00-03:00", "01:30-03:00"]);
    }

    #[test]
    fn every_slot_of_a_change_day_exists_and_the_check_accepts_exactly_those() {
        let length = Duration::minutes(30);
        let interval = Duration::minutes(15);
        let zones = [
            chrono_tz::Europe::London,
            chrono_tz::America::New_York,
            chrono_tz::Australia::Sydney,
            chrono_tz::Australia::Lord_Howe,
            chrono_tz::America::Santiago,
        ];
        let open = hours((0, 0), (23, 45));
        for tz in zones {
            for date in day(2027, 1, 1).iter_days().take(365) {
                let slots = day_slots(tz, date, &open, length, interval);
                for slot in &slots {
                    let local = slot.with_timezone(&tz).naive_local();
                    let resolved = tz.from_local_datetime(&local);
                    assert!(
                        resolved.earliest().is_some(),
                        "{tz} {date}: {local} does not exist"
                    );
                    assert_eq!(
                        check_opening_hours(tz, *slot, length, &open, interval),
                        Ok(())
                    );
                    let off = *slot + Duration::minutes(5);
                    assert_ne!(
                        check_opening_hours(tz, off, length, &open, interval),
                        Ok(())
                    );
                }
            }
        }
    }
}
