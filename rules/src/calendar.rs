//! Calendars (opening hours) and durations.

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, Timelike, Utc};
use chrono_tz::Tz;

use crate::config::Weekday;

/// A compiled calendar: open days, hours and holidays in a time zone.
#[derive(Debug, Clone)]
pub struct CalendarRt {
    /// Indexed by `chrono::Weekday::num_days_from_monday()`.
    pub days: [bool; 7],
    /// Minutes after midnight.
    pub open: u32,
    /// Minutes after midnight; 1440 for midnight at the end of the day.
    pub close: u32,
    pub holidays: BTreeSet<NaiveDate>,
    pub tz: Tz,
}

impl CalendarRt {
    /// Whether `at` falls inside opening hours.
    pub fn is_open(&self, at: DateTime<Utc>) -> bool {
        let local = at.with_timezone(&self.tz);
        if !self.days[local.weekday().num_days_from_monday() as usize] {
            return false;
        }
        if self.holidays.contains(&local.date_naive()) {
            return false;
        }
        let m = local.hour() * 60 + local.minute();
        m >= self.open && m < self.close
    }

    /// When the opening hours containing or following `at` end, and when they begin; `None`
    /// when the calendar never opens (within a year and a half).
    fn window_from(&self, at: DateTime<Utc>) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        use chrono::{Duration as D, TimeZone};
        let local = at.with_timezone(&self.tz);
        let mut day = local.date_naive();
        for _ in 0..550 {
            let open_day = self.days[day.weekday().num_days_from_monday() as usize]
                && !self.holidays.contains(&day);
            if open_day && self.close > self.open {
                let start = day.and_hms_opt(0, 0, 0)? + D::minutes(self.open as i64);
                let end = day.and_hms_opt(0, 0, 0)? + D::minutes(self.close as i64);
                // A local time that does not exist (a DST gap) moves to the next that does.
                let s = self
                    .tz
                    .from_local_datetime(&start)
                    .earliest()?
                    .with_timezone(&Utc);
                let e = self
                    .tz
                    .from_local_datetime(&end)
                    .latest()?
                    .with_timezone(&Utc);
                if e > at {
                    return Some((s.max(at), e));
                }
            }
            day = day.succ_opt()?;
        }
        None
    }

    /// `at` plus `d` of opening hours: time while closed does not count. `15m` from 21:55 on
    /// a day that closes at 22:00 runs out 10 minutes after the next opening.
    pub fn add_open_time(&self, at: DateTime<Utc>, d: std::time::Duration) -> DateTime<Utc> {
        let mut left = chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
        let mut t = at;
        while left > chrono::Duration::zero() {
            let Some((start, end)) = self.window_from(t) else {
                // A calendar that never opens: the time runs as on a clock.
                return t + left;
            };
            let here = end - start;
            if left <= here {
                return start + left;
            }
            left -= here;
            t = end;
        }
        t
    }

    /// When the calendar next opens after `at` (when it is closed at `at`), in its own time
    /// zone; `None` when it is open or never opens.
    pub fn next_opening(&self, at: DateTime<Utc>) -> Option<DateTime<Tz>> {
        if self.is_open(at) {
            return None;
        }
        self.window_from(at)
            .map(|(start, _)| start.with_timezone(&self.tz))
    }

    /// Opening time between `from` and `to` (zero when `to` is not after `from`).
    pub fn open_time_between(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> std::time::Duration {
        let mut total = chrono::Duration::zero();
        let mut t = from;
        while t < to {
            let Some((start, end)) = self.window_from(t) else {
                break;
            };
            if start >= to {
                break;
            }
            total += end.min(to) - start;
            t = end;
        }
        total.to_std().unwrap_or_default()
    }
}

pub fn weekday_index(d: Weekday) -> usize {
    match d {
        Weekday::Mon => 0,
        Weekday::Tue => 1,
        Weekday::Wed => 2,
        Weekday::Thu => 3,
        Weekday::Fri => 4,
        Weekday::Sat => 5,
        Weekday::Sun => 6,
    }
}

/// `HH:MM` → minutes after midnight; `24:00` is allowed (end of day).
pub fn parse_clock(s: &str) -> Result<u32, String> {
    if s == "24:00" {
        return Ok(24 * 60);
    }
    NaiveTime::parse_from_str(s, "%H:%M")
        .map(|t| t.hour() * 60 + t.minute())
        .map_err(|_| format!("`{s}` is not a time of day"))
}

pub fn parse_date(s: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| format!("`{s}` is not a date"))
}

pub fn parse_tz(s: &str) -> Result<Tz, String> {
    s.parse::<Tz>()
        .map_err(|_| format!("`{s}` is not an IANA time zone"))
}

/// A duration: a whole number followed by `s`, `m`, `h` or `d` (`90s`, `15m`, `2h`, `1d`);
/// several may follow each other (`1h30m`).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let err = || format!("`{s}` is not a duration");
    let t = s.trim();
    if t.is_empty() {
        return Err(err());
    }
    let mut total: u64 = 0;
    let mut num = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return Err(err()),
        };
        if num.is_empty() {
            return Err(err());
        }
        let n: u64 = num.parse().map_err(|_| err())?;
        total = total
            .checked_add(n.checked_mul(unit).ok_or_else(err)?)
            .ok_or_else(err)?;
        num.clear();
    }
    if !num.is_empty() || total == 0 {
        return Err(err());
    }
    Ok(std::time::Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap().as_secs(), 90);
        assert_eq!(parse_duration("15m").unwrap().as_secs(), 900);
        assert_eq!(parse_duration("2h").unwrap().as_secs(), 7200);
        assert_eq!(parse_duration("1d").unwrap().as_secs(), 86400);
        assert_eq!(parse_duration("1h30m").unwrap().as_secs(), 5400);
        for bad in ["", "h", "15", "15x", "0m", "-5m", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn opening_hours_in_the_store_time_zone() {
        let cal = CalendarRt {
            days: [true, true, true, true, true, true, false],
            open: 10 * 60,
            close: 22 * 60,
            holidays: [parse_date("2026-12-25").unwrap()].into(),
            tz: parse_tz("Asia/Karachi").unwrap(),
        };
        // 2026-11-23 is a Monday; 05:00 UTC is 10:00 in Karachi.
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        assert!(cal.is_open(at("2026-11-23T05:00:00Z")));
        assert!(!cal.is_open(at("2026-11-23T04:59:00Z")));
        assert!(!cal.is_open(at("2026-11-23T17:00:00Z"))); // 22:00 local
        assert!(!cal.is_open(at("2026-11-22T08:00:00Z"))); // Sunday
        assert!(!cal.is_open(at("2026-12-25T08:00:00Z"))); // holiday
    }

    #[test]
    fn business_time_skips_closed_hours() {
        let cal = CalendarRt {
            days: [true, true, true, true, true, true, false],
            open: 10 * 60,
            close: 22 * 60,
            holidays: [parse_date("2026-11-24").unwrap()].into(),
            tz: parse_tz("Asia/Karachi").unwrap(),
        };
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let m = |n: u64| std::time::Duration::from_secs(n * 60);
        // 15 minutes from 21:55 on Monday: 5 before closing, 10 after the next opening —
        // Tuesday is a holiday, so Wednesday 10:10.
        assert_eq!(
            cal.add_open_time(at("2026-11-23T21:55:00+05:00"), m(15)),
            at("2026-11-25T10:10:00+05:00")
        );
        // Inside opening hours it is plain time; from before opening it starts at opening.
        assert_eq!(
            cal.add_open_time(at("2026-11-23T12:00:00+05:00"), m(30)),
            at("2026-11-23T12:30:00+05:00")
        );
        assert_eq!(
            cal.add_open_time(at("2026-11-23T08:00:00+05:00"), m(30)),
            at("2026-11-23T10:30:00+05:00")
        );
        // Saturday evening → Monday (Sunday closed).
        assert_eq!(
            cal.add_open_time(at("2026-11-28T21:00:00+05:00"), m(120)),
            at("2026-11-30T11:00:00+05:00")
        );
        assert_eq!(
            cal.open_time_between(
                at("2026-11-23T21:55:00+05:00"),
                at("2026-11-25T10:10:00+05:00")
            ),
            m(15)
        );
        assert_eq!(
            cal.open_time_between(
                at("2026-11-23T23:00:00+05:00"),
                at("2026-11-23T23:30:00+05:00")
            ),
            m(0)
        );
    }
}
