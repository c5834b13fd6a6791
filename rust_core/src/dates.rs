//! Calendar dates in the merchant's local time, without a date library: days since the
//! Unix epoch, converted with Howard Hinnant's civil-calendar algorithms (proleptic
//! Gregorian), so month ends and leap years come out right.

use crate::error::{fail, Kind, Result};

/// China Standard Time, the default local time: +08:00.
pub const UTC_OFFSET_MINUTES_DEFAULT: i32 = 480;
const MILLIS_PER_DAY: i64 = 86_400_000;
/// The years a date may fall in.
pub const YEAR_MIN: i32 = 1900;
pub const YEAR_MAX: i32 = 9999;

/// A local calendar date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date {
    pub year: i32,
    pub month: u32, // 1-12
    pub day: u32,   // 1-31
}

pub fn is_leap_year(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

pub fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => panic!("month {month} out of range"),
    }
}

impl Date {
    pub fn new(year: i32, month: u32, day: u32) -> Result<Date> {
        let shown = format!("{year:04}-{month:02}-{day:02}");
        if !(YEAR_MIN..=YEAR_MAX).contains(&year) {
            return fail(Kind::DateInvalid, format!("{shown} is outside the years {YEAR_MIN}-{YEAR_MAX}"));
        }
        if !((1..=12).contains(&month) && day >= 1 && day <= days_in_month(year, month)) {
            return fail(Kind::DateInvalid, format!("{shown} is not a date"));
        }
        Ok(Date { year, month, day })
    }

    /// Parses `YYYY-MM-DD`.
    pub fn parse(text: &str) -> Result<Date> {
        let bytes = text.as_bytes();
        let shaped = bytes.len() == 10
            && bytes[4] == b'-'
            && bytes[7] == b'-'
            && bytes.iter().enumerate().all(|(i, b)| i == 4 || i == 7 || b.is_ascii_digit());
        if !shaped {
            return fail(Kind::DateInvalid, format!("date {:?} is not YYYY-MM-DD", crate::validate::truncate(text)));
        }
        let number = |range: std::ops::Range<usize>| text[range].parse::<u32>().expect("digits");
        Date::new(number(0..4) as i32, number(5..7), number(8..10))
    }

    pub fn days_since_epoch(self) -> i64 {
        let year = i64::from(self.year) - i64::from(self.month <= 2);
        let era = year.div_euclid(400);
        let year_of_era = year - era * 400;
        let month = i64::from(self.month);
        let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + i64::from(self.day) - 1;
        let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
        era * 146_097 + day_of_era - 719_468
    }

    pub fn from_days_since_epoch(days: i64) -> Date {
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let day_of_era = z - era * 146_097;
        let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        let month_index = (5 * day_of_year + 2) / 153;
        let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
        let month = if month_index < 10 { month_index + 3 } else { month_index - 9 } as u32;
        let year = (year_of_era + era * 400 + i64::from(month <= 2)) as i32;
        Date { year, month, day }
    }

    /// The local date at `at_ms` for a merchant `utc_offset_minutes` east of UTC.
    pub fn at(at_ms: i64, utc_offset_minutes: i32) -> Date {
        let local_ms = at_ms + i64::from(utc_offset_minutes) * 60_000;
        Date::from_days_since_epoch(local_ms.div_euclid(MILLIS_PER_DAY))
    }

    pub fn add_days(self, days: i64) -> Date {
        Date::from_days_since_epoch(self.days_since_epoch() + days)
    }

    /// The same day `months` later, clamped to the month's end: Jan 31 + 1 month is
    /// Feb 28 (Feb 29 in a leap year); Feb 29 + 12 months is Feb 28.
    pub fn add_months(self, months: i32) -> Date {
        let index = i64::from(self.year) * 12 + i64::from(self.month) - 1 + i64::from(months);
        let year = index.div_euclid(12) as i32;
        let month = (index.rem_euclid(12) + 1) as u32;
        Date { year, month, day: self.day.min(days_in_month(year, month)) }
    }

    /// The last valid day of a card valid `months` from this (activation) day, by the
    /// civil-law rule (PRC Civil Code art. 203, and the common-law month): the day before
    /// the same date `months` later; when that month has no such date, its last day. A
    /// month card from Jan 15 runs through Feb 14; from Jan 28 through Feb 27; from Jan 29,
    /// 30 or 31 through Feb 28 (from Jan 30 or 31 through Feb 29 in a leap year). A year
    /// card from Feb 29 runs through Feb 28, one from Feb 28 through Feb 27.
    pub fn valid_through(self, months: i32) -> Date {
        let same_day = self.add_months(months);
        if same_day.day < self.day {
            return same_day; // clamped: the month has no such date, so its last day
        }
        same_day.add_days(-1)
    }

    pub fn format(self) -> String {
        format!("{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(text: &str) -> Date {
        Date::parse(text).unwrap()
    }

    #[test]
    fn epoch_round_trip() {
        assert_eq!(date("1970-01-01").days_since_epoch(), 0);
        assert_eq!(date("2000-03-01").days_since_epoch(), 11_017);
        for days in [-800_000, -1, 0, 1, 10_957, 20_000, 2_932_896] {
            assert_eq!(Date::from_days_since_epoch(days).days_since_epoch(), days);
        }
    }

    #[test]
    fn month_ends_clamp() {
        assert_eq!(date("2026-01-31").add_months(1), date("2026-02-28"));
        assert_eq!(date("2028-01-31").add_months(1), date("2028-02-29"));
        assert_eq!(date("2026-03-31").add_months(1), date("2026-04-30"));
        assert_eq!(date("2026-12-15").add_months(1), date("2027-01-15"));
        assert_eq!(date("2028-02-29").add_months(12), date("2029-02-28"));
        assert_eq!(date("2028-02-29").add_months(48), date("2032-02-29"));
        assert_eq!(date("2026-05-31").add_months(-3), date("2026-02-28"));
    }

    #[test]
    fn timed_cards_run_through_the_day_before() {
        assert_eq!(date("2026-01-15").valid_through(1), date("2026-02-14")); // 月卡
        assert_eq!(date("2026-11-30").valid_through(3), date("2027-02-28")); // 季卡: no Feb 30
        assert_eq!(date("2026-03-01").valid_through(36), date("2029-02-28")); // 三年卡
        assert_eq!(date("2027-03-01").valid_through(12), date("2028-02-29"));
        assert_eq!(date("2026-12-31").valid_through(1), date("2027-01-30"));
        assert_eq!(date("2026-12-01").valid_through(1), date("2026-12-31"));
        assert_eq!(date("2026-01-01").valid_through(12), date("2026-12-31"));
    }

    #[test]
    fn month_cards_from_every_end_of_january() {
        for (from, common_year, leap_year) in [
            ("01-27", "02-26", "02-26"),
            ("01-28", "02-27", "02-27"),
            ("01-29", "02-28", "02-28"),
            ("01-30", "02-28", "02-29"),
            ("01-31", "02-28", "02-29"),
        ] {
            assert_eq!(date(&format!("2026-{from}")).valid_through(1), date(&format!("2026-{common_year}")), "{from}");
            assert_eq!(date(&format!("2028-{from}")).valid_through(1), date(&format!("2028-{leap_year}")), "{from}");
        }
    }

    #[test]
    fn month_cards_from_every_month_end() {
        // (from, through) for one month, from each month's last days of a common year.
        for (from, through) in [
            ("2026-02-27", "2026-03-26"),
            ("2026-02-28", "2026-03-27"),
            ("2026-03-30", "2026-04-29"),
            ("2026-03-31", "2026-04-30"),
            ("2026-04-30", "2026-05-29"),
            ("2026-05-31", "2026-06-30"),
            ("2026-06-30", "2026-07-29"),
            ("2026-07-31", "2026-08-30"),
            ("2026-08-31", "2026-09-30"),
            ("2026-09-30", "2026-10-29"),
            ("2026-10-31", "2026-11-30"),
            ("2026-11-30", "2026-12-29"),
            ("2026-12-31", "2027-01-30"),
            ("2028-02-28", "2028-03-27"),
            ("2028-02-29", "2028-03-28"),
        ] {
            assert_eq!(date(from).valid_through(1), date(through), "{from}");
        }
    }

    #[test]
    fn year_cards_across_leap_days() {
        assert_eq!(date("2028-02-29").valid_through(12), date("2029-02-28")); // 年卡
        assert_eq!(date("2028-02-28").valid_through(12), date("2029-02-27"));
        assert_eq!(date("2027-02-28").valid_through(12), date("2028-02-27"));
        assert_eq!(date("2028-02-29").valid_through(48), date("2032-02-28"));
        assert_eq!(date("2028-02-29").valid_through(24), date("2030-02-28"));
        assert_eq!(date("2028-03-01").valid_through(12), date("2029-02-28"));
        assert_eq!(date("2100-02-28").valid_through(12), date("2101-02-27")); // 2100 is no leap year
    }

    #[test]
    fn a_later_start_never_ends_earlier() {
        let mut previous = Date::parse("2026-01-01").unwrap().valid_through(1);
        for offset in 1..(366 * 4) {
            let start = date("2026-01-01").add_days(offset);
            for months in [1, 3, 12] {
                let through = start.valid_through(months);
                assert!(through >= start, "{start:?} + {months}");
                if months == 1 {
                    assert!(through >= previous, "{start:?}");
                    previous = through;
                }
            }
        }
    }

    #[test]
    fn leap_years() {
        assert!(is_leap_year(2000) && is_leap_year(2028) && !is_leap_year(1900) && !is_leap_year(2026));
        assert!(Date::parse("2026-02-29").is_err());
        assert!(Date::parse("2028-02-29").is_ok());
        assert!(Date::parse("2100-02-29").is_err());
    }

    #[test]
    fn local_dates_follow_the_offset() {
        // 2026-11-25 16:30 UTC is 2026-11-26 00:30 in China
        let at_ms = date("2026-11-25").days_since_epoch() * MILLIS_PER_DAY + 16 * 3_600_000 + 30 * 60_000;
        assert_eq!(Date::at(at_ms, 0), date("2026-11-25"));
        assert_eq!(Date::at(at_ms, UTC_OFFSET_MINUTES_DEFAULT), date("2026-11-26"));
    }

    #[test]
    fn malformed_dates() {
        for bad in ["2026-1-01", "2026/01/01", "20260101", "2026-13-01", "2026-00-10", "2026-04-31", "abcd-ef-gh", ""] {
            assert_eq!(Date::parse(bad).unwrap_err().kind, Kind::DateInvalid, "{bad}");
        }
        assert_eq!(Date::parse("0001-01-01").unwrap_err().message, "0001-01-01 is outside the years 1900-9999");
        assert_eq!(Date::parse("1899-12-31").unwrap_err().message, "1899-12-31 is outside the years 1900-9999");
        assert_eq!(Date::parse("2026-02-29").unwrap_err().message, "2026-02-29 is not a date");
        assert!(Date::parse("1900-01-01").is_ok() && Date::parse("9999-12-31").is_ok());
    }
}
