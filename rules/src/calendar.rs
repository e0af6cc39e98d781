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
}
