//! Datetimes in messages: written as Python's `isoformat()` writes them, read in the forms
//! Celery 5.7 reads an `eta`, an `expires` or `celery call --eta` in (`maybe_iso8601`, which is
//! dateutil's `isoparse`), so that what a Python worker would run, this one runs too.

use chrono::{
    DateTime, Days, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, SecondsFormat, Timelike,
    Weekday,
};

/// Formats a datetime the way Python's `isoformat()` does: microseconds only when non-zero.
pub fn format_datetime(datetime: DateTime<FixedOffset>) -> String {
    let format = if datetime.timestamp_subsec_micros() == 0 {
        SecondsFormat::Secs
    } else {
        SecondsFormat::Micros
    };
    datetime.to_rfc3339_opts(format, false)
}

/// Parses an ISO-8601 datetime as Celery does; a naive one (no offset) is UTC, as Celery treats
/// it. The forms, dateutil's:
/// - a date: `YYYY`, `YYYY-MM`, `YYYY-MM-DD` or `YYYYMMDD`, a week `YYYY-Www[-D]` or
///   `YYYYWww[D]`, a day of the year `YYYY-DDD` or `YYYYDDD`;
/// - after a full day, any one ASCII character and a time: `hh`, `hh:mm` or `hhmm`, `hh:mm:ss`
///   or `hhmmss`, then a fraction after `.` or `,` (read to the microsecond, as Python holds
///   it); `24:00` is the next midnight;
/// - then an offset: `Z`, `±hh`, `±hhmm` or `±hh:mm`.
///
/// Years run from 1 to 9999, and time to the microsecond, as Python's. What dateutil lets
/// through only by accident is refused here: what Python's `int()` forgives inside a field
/// (spaces, signs, underscores, a one-digit last field), a week 53 in a year of 52, a
/// six-character offset without a colon, an offset without a time, a digit as the separator,
/// and an ordinal `YYYYDDD` followed by a space (which dateutil reads as another date).
pub fn parse_datetime(text: &str) -> Option<DateTime<FixedOffset>> {
    // dateutil refuses any other character; chrono's RFC 3339 reader takes a Unicode minus.
    if !text.is_ascii() {
        return None;
    }
    // What Python writes, and most clients: read without the general parser.
    let at = match DateTime::parse_from_rfc3339(text) {
        // chrono reads a leap second (`:60`) as 1,000,000,000 ns and more; Python refuses it.
        Ok(at) if at.nanosecond() >= 1_000_000_000 => return None,
        Ok(at) => at.with_nanosecond(at.nanosecond() / 1_000 * 1_000)?,
        Err(_) => Cursor::new(text).datetime()?,
    };
    Some(at).filter(crate::calling::python_can_hold)
}

/// A position in the text being parsed.
struct Cursor<'a> {
    text: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str) -> Self {
        Cursor {
            text: text.as_bytes(),
            at: 0,
        }
    }

    fn datetime(mut self) -> Option<DateTime<FixedOffset>> {
        let (date, full_day) = self.date()?;
        let mut local = date.and_time(NaiveTime::MIN);
        let mut offset = None;
        if !self.at_end() {
            if !full_day {
                return None;
            }
            // The separator, `T` in the standard: dateutil takes any character.
            self.at += 1;
            local = self.time(date)?;
            offset = self.offset()?;
        }
        if !self.at_end() {
            return None;
        }
        let offset = offset.unwrap_or(FixedOffset::east_opt(0)?);
        local.and_local_timezone(offset).single()
    }

    /// The date, and whether it names a whole day (a time may follow only then).
    fn date(&mut self) -> Option<(NaiveDate, bool)> {
        let year = self.number(4)? as i32;
        // Python's year 1 is the first; a year 0 must not become year 1 through `24:00`.
        if year == 0 {
            return None;
        }
        if self.at_end() {
            return Some((NaiveDate::from_ymd_opt(year, 1, 1)?, false));
        }
        let dashed = self.eat(b'-');
        if self.eat(b'W') {
            let week = self.number(2)?;
            let dash_before_day = dashed && self.peek() == Some(b'-');
            if dash_before_day || (!dashed && self.peek_digit()) {
                self.at += usize::from(dash_before_day);
                let day = Weekday::try_from(u8::try_from(self.number(1)?.checked_sub(1)?).ok()?);
                return Some((NaiveDate::from_isoywd_opt(year, week, day.ok()?)?, true));
            }
            return Some((NaiveDate::from_isoywd_opt(year, week, Weekday::Mon)?, false));
        }
        match (dashed, self.digits_ahead()) {
            (_, 3) => {
                let day = self.number(3)?;
                // dateutil reads `YYYYDDD ` as `YYYYMMD` and a day with a space.
                if !dashed && self.peek().is_some_and(|byte| byte.is_ascii_whitespace()) {
                    return None;
                }
                Some((NaiveDate::from_yo_opt(year, day)?, true))
            }
            (true, 2) => {
                let month = self.number(2)?;
                if !self.eat(b'-') {
                    return Some((NaiveDate::from_ymd_opt(year, month, 1)?, false));
                }
                let day = self.number(2)?;
                Some((NaiveDate::from_ymd_opt(year, month, day)?, true))
            }
            (false, 4) => {
                let month = self.number(2)?;
                let day = self.number(2)?;
                Some((NaiveDate::from_ymd_opt(year, month, day)?, true))
            }
            _ => None,
        }
    }

    /// `hh[:mm[:ss[.ffffff]]]` or `hh[mm[ss[.ffffff]]]`, on `date`.
    fn time(&mut self, date: NaiveDate) -> Option<NaiveDateTime> {
        let hour = self.number(2)?;
        let (mut minute, mut second, mut micros) = (0, 0, 0);
        let colons = self.peek() == Some(b':');
        if colons || self.peek_digit() {
            self.at += usize::from(colons);
            minute = self.number(2)?;
            if (colons && self.eat(b':')) || (!colons && self.peek_digit()) {
                second = self.number(2)?;
                if self.eat(b'.') || self.eat(b',') {
                    micros = self.fraction()?;
                }
            }
        }
        if hour == 24 && (minute, second, micros) == (0, 0, 0) {
            return Some(
                date.checked_add_days(Days::new(1))?
                    .and_time(NaiveTime::MIN),
            );
        }
        Some(date.and_time(NaiveTime::from_hms_micro_opt(hour, minute, second, micros)?))
    }

    /// Digits after the decimal mark, in microseconds; those past the sixth are dropped.
    fn fraction(&mut self) -> Option<u32> {
        let count = self.digits_ahead();
        if count == 0 {
            return None;
        }
        let kept = count.min(6);
        let micros = self.number(kept)? * 10u32.pow((6 - kept) as u32);
        self.at += count - kept;
        Some(micros)
    }

    /// `Z`, `±hh`, `±hhmm` or `±hh:mm`; `None` inside when there is none (a naive datetime).
    fn offset(&mut self) -> Option<Option<FixedOffset>> {
        if self.at_end() {
            return Some(None);
        }
        if self.eat(b'Z') || self.eat(b'z') {
            return Some(Some(FixedOffset::east_opt(0)?));
        }
        let sign = if self.eat(b'+') {
            1
        } else if self.eat(b'-') {
            -1
        } else {
            return None;
        };
        let hours = self.number(2)?;
        let minutes = if self.at_end() {
            0
        } else {
            self.eat(b':');
            self.number(2)?
        };
        if hours >= 24 || minutes >= 60 {
            return None;
        }
        Some(Some(FixedOffset::east_opt(
            sign * (hours * 3600 + minutes * 60) as i32,
        )?))
    }

    /// Exactly `count` digits, as a number.
    fn number(&mut self, count: usize) -> Option<u32> {
        let digits = self.text.get(self.at..self.at + count)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.at += count;
        Some(
            digits
                .iter()
                .fold(0, |number, digit| number * 10 + u32::from(digit - b'0')),
        )
    }

    /// How many digits follow, up to the next non-digit.
    fn digits_ahead(&self) -> usize {
        self.text[self.at..]
            .iter()
            .take_while(|byte| byte.is_ascii_digit())
            .count()
    }

    fn eat(&mut self, byte: u8) -> bool {
        let found = self.peek() == Some(byte);
        self.at += usize::from(found);
        found
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn peek_digit(&self) -> bool {
        self.peek().is_some_and(|byte| byte.is_ascii_digit())
    }

    fn at_end(&self) -> bool {
        self.at >= self.text.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each text, and what dateutil 2.9's `isoparse` (Celery 5.7's `maybe_iso8601`) made of
    /// it, as `isoformat()` with the offset; `None` where it refused the text.
    const AS_DATEUTIL_READS: &[(&str, Option<&str>)] = &[
        (
            "2026-12-03T10:30:05.003182+00:00",
            Some("2026-12-03T10:30:05.003182+00:00"),
        ),
        ("2026-12-03", Some("2026-12-03T00:00:00+00:00")),
        ("20261203", Some("2026-12-03T00:00:00+00:00")),
        ("2026-12", Some("2026-12-01T00:00:00+00:00")),
        ("2026", Some("2026-01-01T00:00:00+00:00")),
        ("2026-12-03T10:30", Some("2026-12-03T10:30:00+00:00")),
        ("2026-12-03 10:30:05", Some("2026-12-03T10:30:05+00:00")),
        ("2026-12-03T10", Some("2026-12-03T10:00:00+00:00")),
        ("2026-12-03T1030", Some("2026-12-03T10:30:00+00:00")),
        (
            "2026-12-03T103005.5",
            Some("2026-12-03T10:30:05.500000+00:00"),
        ),
        ("2026-12-03T10:30:05Z", Some("2026-12-03T10:30:05+00:00")),
        ("2026-12-03T10:30:05z", Some("2026-12-03T10:30:05+00:00")),
        (
            "2026-12-03T10:30:05+0100",
            Some("2026-12-03T10:30:05+01:00"),
        ),
        ("2026-12-03T10:30+01", Some("2026-12-03T10:30:00+01:00")),
        (
            "2026-12-03T10:30:05+01:30",
            Some("2026-12-03T10:30:05+01:30"),
        ),
        (
            "2026-12-03T10:30:05.123-01:30",
            Some("2026-12-03T10:30:05.123000-01:30"),
        ),
        (
            "2026-12-03T10:30:05-00:00",
            Some("2026-12-03T10:30:05+00:00"),
        ),
        ("2026-12-03x10:30", Some("2026-12-03T10:30:00+00:00")),
        ("2026-12-03t10:30", Some("2026-12-03T10:30:00+00:00")),
        (
            "2026-12-03T10:30:05.1234567",
            Some("2026-12-03T10:30:05.123456+00:00"),
        ),
        (
            "2026-12-03T10:30:05,5",
            Some("2026-12-03T10:30:05.500000+00:00"),
        ),
        (
            "2026-12-03T10:30:05.123456789+01:00",
            Some("2026-12-03T10:30:05.123456+01:00"),
        ),
        ("2026-W49-3", Some("2026-12-02T00:00:00+00:00")),
        ("2026-W49", Some("2026-11-30T00:00:00+00:00")),
        ("2026W493", Some("2026-12-02T00:00:00+00:00")),
        ("2026W49", Some("2026-11-30T00:00:00+00:00")),
        ("2026-W49-3T10", Some("2026-12-02T10:00:00+00:00")),
        ("2026-337", Some("2026-12-03T00:00:00+00:00")),
        ("2026337", Some("2026-12-03T00:00:00+00:00")),
        ("2026-337T10:30", Some("2026-12-03T10:30:00+00:00")),
        ("2026-12-03T24:00", Some("2026-12-04T00:00:00+00:00")),
        ("2026-12-03T24", Some("2026-12-04T00:00:00+00:00")),
        ("2026-12-31T24:00", Some("2027-01-01T00:00:00+00:00")),
        ("2026-12-03T", None),
        ("2026-12-03T24:00:01", None),
        ("2026-12T10", None),
        ("2026T10", None),
        ("2026-W49T10", None),
        ("2026-12-03T10:3005", None),
        ("2026-12-03T1030:05", None),
        ("2026-12-03T10:30:05.", None),
        ("2026-12-03T10.5", None),
        ("2026-12-03T10:30Z+01", None),
        ("2026-12-03T10:30:05+01:30:00", None),
        ("2026-12-03T10:30:05+1", None),
        ("2026-12-03T10:30:05+24:00", None),
        ("2026-1203", None),
        ("202612-03", None),
        ("2026-12-3", None),
        ("0000-01-01", None),
        ("2026-12-03T10:60", None),
        ("2026-12-03T10:30:60", None),
        ("2026-02-30", None),
        ("2026-366", None),
        ("2026-12-03Tfoo", None),
        ("2026-12-03\u{e9}10:30", None),
        ("2026-12-03T10:30:05 ", None),
        ("", None),
        // What chrono's RFC 3339 reader takes and dateutil does not.
        ("2026-12-03T10:30:60Z", None),
        ("2026-12-03T10:30:05\u{2212}01:00", None),
        // Year 0 does not become year 1 by the next midnight.
        ("0000-12-31T24:00", None),
        ("0000-366T24", None),
        // dateutil reads this one as 2026-12-01T03:00; refused rather than read otherwise.
        ("2026121 1030", None),
        ("2026337 10:30", None),
        ("2026-337 10:30", Some("2026-12-03T10:30:00+00:00")),
    ];

    #[test]
    fn reads_what_celerys_isoparse_reads() {
        for (text, expected) in AS_DATEUTIL_READS {
            // dateutil's isoformat() leaves out a zero fraction; compared with nine digits, a
            // fraction not cut to the microsecond shows.
            let read = parse_datetime(text).map(|at| at.format("%Y-%m-%dT%H:%M:%S%.9f%:z"));
            let expected = expected.map(|iso| {
                let at = DateTime::parse_from_rfc3339(iso).unwrap();
                at.format("%Y-%m-%dT%H:%M:%S%.9f%:z").to_string()
            });
            assert_eq!(read.map(|at| at.to_string()), expected, "{text:?}");
        }
    }

    #[test]
    fn naive_datetimes_are_utc_and_formatting_matches_python() {
        let naive = parse_datetime("2026-01-02T03:04:05.000006").unwrap();
        assert_eq!(format_datetime(naive), "2026-01-02T03:04:05.000006+00:00");
        let whole = parse_datetime("2026-01-02T03:04:05+02:00").unwrap();
        assert_eq!(format_datetime(whole), "2026-01-02T03:04:05+02:00");
        // What Python's datetime holds, and only that: what is read is written back readable.
        let last = parse_datetime("9999-12-31T23:59:59").unwrap();
        assert_eq!(parse_datetime(&format_datetime(last)), Some(last));
        for beyond in [
            "+10000-01-01T00:00:00",
            "-0001-01-01T00:00:00",
            "0000-01-01T00:00:00",
        ] {
            assert_eq!(parse_datetime(beyond), None, "{beyond}");
        }
    }
}
