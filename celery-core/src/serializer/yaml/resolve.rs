//! YAML 1.1 scalars as PyYAML's resolver and `SafeConstructor` read them: ints (binary, octal,
//! hex, sexagesimal, underscores), floats and timestamps.

use serde_json::{Number, Value};

use crate::serializer::kombu;

/// A small cursor for the YAML 1.1 scalar grammars.
struct Scan<'a> {
    rest: &'a [u8],
}

impl<'a> Scan<'a> {
    fn new(text: &'a str) -> Self {
        Scan {
            rest: text.as_bytes(),
        }
    }
    fn eat(&mut self, byte: u8) -> bool {
        if self.rest.first() == Some(&byte) {
            self.rest = &self.rest[1..];
            true
        } else {
            false
        }
    }
    fn eat_str(&mut self, text: &str) -> bool {
        if self.rest.starts_with(text.as_bytes()) {
            self.rest = &self.rest[text.len()..];
            true
        } else {
            false
        }
    }
    fn sign(&mut self) {
        let _ = self.eat(b'-') || self.eat(b'+');
    }
    /// Bytes matching `ok`, at most `max`; how many.
    fn span(&mut self, max: usize, ok: impl Fn(u8) -> bool) -> &'a [u8] {
        let n = self.rest.iter().take(max).take_while(|&&b| ok(b)).count();
        let (span, rest) = self.rest.split_at(n);
        self.rest = rest;
        span
    }
    fn digits(&mut self, min: usize, max: usize) -> Option<&'a [u8]> {
        let span = self.span(max, |b| b.is_ascii_digit());
        (span.len() >= min).then_some(span)
    }
    fn done(&self) -> bool {
        self.rest.is_empty()
    }
}

fn is_digit_(b: u8) -> bool {
    b.is_ascii_digit() || b == b'_'
}

/// `[-+]?[0-9][0-9_]*` then `(:[0-5]?[0-9])+`: the sexagesimal head.
fn sexagesimal_parts(scan: &mut Scan) -> bool {
    let mut any = false;
    while scan.eat(b':') {
        let part = scan.span(2, |b| b.is_ascii_digit());
        let ok = match part {
            [d] => d.is_ascii_digit(),
            [a, _] => (b'0'..=b'5').contains(a),
            _ => false,
        };
        if !ok {
            return false;
        }
        any = true;
    }
    any
}

fn is_yaml11_float(text: &str) -> bool {
    let mut scan = Scan::new(text);
    if matches!(text, ".nan" | ".NaN" | ".NAN") {
        return true;
    }
    scan.sign();
    if scan.eat_str(".inf") || scan.eat_str(".Inf") || scan.eat_str(".INF") {
        return scan.done();
    }
    let unsigned_dot = !text.starts_with(['-', '+']) && text.starts_with('.');
    if unsigned_dot {
        // `\.[0-9][0-9_]*([eE][-+][0-9]+)?`
        scan.eat(b'.');
        if !scan.rest.first().is_some_and(u8::is_ascii_digit) {
            return false;
        }
        scan.span(usize::MAX, is_digit_);
        return exponent(&mut scan) && scan.done();
    }
    if !scan.rest.first().is_some_and(u8::is_ascii_digit) {
        return false;
    }
    scan.span(usize::MAX, is_digit_);
    if scan.rest.first() == Some(&b':') {
        // `[0-9][0-9_]*(:[0-5]?[0-9])+\.[0-9_]*`
        if !sexagesimal_parts(&mut scan) || !scan.eat(b'.') {
            return false;
        }
        scan.span(usize::MAX, is_digit_);
        return scan.done();
    }
    // `[0-9][0-9_]*\.[0-9_]*([eE][-+][0-9]+)?`
    if !scan.eat(b'.') {
        return false;
    }
    scan.span(usize::MAX, is_digit_);
    exponent(&mut scan) && scan.done()
}

/// An optional `[eE][-+][0-9]+`; false when it is there but malformed.
fn exponent(scan: &mut Scan) -> bool {
    if !(scan.eat(b'e') || scan.eat(b'E')) {
        return true;
    }
    (scan.eat(b'-') || scan.eat(b'+')) && scan.digits(1, usize::MAX).is_some()
}

fn is_yaml11_int(text: &str) -> bool {
    let mut scan = Scan::new(text);
    scan.sign();
    let body = scan.rest;
    if scan.eat_str("0b") {
        return !scan
            .span(usize::MAX, |b| matches!(b, b'0' | b'1' | b'_'))
            .is_empty()
            && scan.done();
    }
    if scan.eat_str("0x") {
        return !scan
            .span(usize::MAX, |b| b.is_ascii_hexdigit() || b == b'_')
            .is_empty()
            && scan.done();
    }
    if body == b"0" {
        return true;
    }
    if scan.eat(b'0') {
        return !scan
            .span(usize::MAX, |b| (b'0'..=b'7').contains(&b) || b == b'_')
            .is_empty()
            && scan.done();
    }
    if !scan.rest.first().is_some_and(|b| (b'1'..=b'9').contains(b)) {
        return false;
    }
    scan.span(usize::MAX, is_digit_);
    if scan.done() {
        return true;
    }
    sexagesimal_parts(&mut scan) && scan.done()
}

/// `!!int` as PyYAML constructs it; `None` when `text` is not one.
pub(super) fn int_value(text: &str) -> Option<Result<Value, String>> {
    if !is_yaml11_int(text) {
        return None;
    }
    let clean: String = text.chars().filter(|&c| c != '_').collect();
    let (negative, digits) = match clean.as_bytes().first() {
        Some(b'-') => (true, &clean[1..]),
        Some(b'+') => (false, &clean[1..]),
        _ => (false, clean.as_str()),
    };
    let magnitude = if digits == "0" {
        Some(0)
    } else if let Some(bits) = digits.strip_prefix("0b") {
        i128::from_str_radix(bits, 2).ok()
    } else if let Some(hex) = digits.strip_prefix("0x") {
        i128::from_str_radix(hex, 16).ok()
    } else if let Some(octal) = digits.strip_prefix('0') {
        i128::from_str_radix(octal, 8).ok()
    } else if digits.contains(':') {
        digits.split(':').try_fold(0i128, |total, part| {
            total
                .checked_mul(60)?
                .checked_add(part.parse::<i128>().ok()?)
        })
    } else {
        digits.parse::<i128>().ok()
    };
    let too_large = || format!("yaml: the integer {text} does not fit in 64 bits");
    let Some(magnitude) = magnitude else {
        return Some(Err(too_large()));
    };
    let value = if negative { -magnitude } else { magnitude };
    let number = i64::try_from(value)
        .map(Number::from)
        .or_else(|_| u64::try_from(value).map(Number::from));
    Some(number.map(Value::Number).map_err(|_| too_large()))
}

/// `!!float` as PyYAML constructs it; `None` when `text` is not one.
pub(super) fn float_value(text: &str) -> Option<Result<Value, String>> {
    if !is_yaml11_float(text) {
        return None;
    }
    let clean = text.replace('_', "").to_ascii_lowercase();
    let (negative, body) = match clean.as_bytes().first() {
        Some(b'-') => (true, &clean[1..]),
        Some(b'+') => (false, &clean[1..]),
        _ => (false, clean.as_str()),
    };
    let magnitude = if body == ".inf" || body == ".nan" {
        return Some(Err(format!("yaml: the float {text} has no JSON form")));
    } else if body.contains(':') {
        body.split(':').try_fold(0.0, |total: f64, part| {
            Some(total * 60.0 + part.parse::<f64>().ok()?)
        })?
    } else {
        let (mantissa, exp) = match body.split_once('e') {
            Some((m, e)) => (m, format!("e{e}")),
            None => (body, String::new()),
        };
        let mantissa = match (mantissa.starts_with('.'), mantissa.ends_with('.')) {
            (true, _) => format!("0{mantissa}"),
            (_, true) => format!("{mantissa}0"),
            _ => mantissa.to_owned(),
        };
        format!("{mantissa}{exp}").parse::<f64>().ok()?
    };
    let value = if negative { -magnitude } else { magnitude };
    Some(
        Number::from_f64(value)
            .map(Value::Number)
            .ok_or_else(|| format!("yaml: the float {text} has no JSON form")),
    )
}

/// The parts of a YAML 1.1 timestamp.
pub(super) struct Timestamp {
    pub(super) date: (i32, u32, u32),
    /// Hour, minute, second, microsecond.
    pub(super) time: Option<(u32, u32, u32, u32)>,
    /// Offset in minutes; `None` for a naive value.
    pub(super) offset: Option<i32>,
}

pub(super) fn parse_timestamp(text: &str) -> Option<Timestamp> {
    fn number<T: std::str::FromStr>(digits: &[u8]) -> Option<T> {
        std::str::from_utf8(digits).ok()?.parse().ok()
    }
    let mut scan = Scan::new(text);
    let year = number(scan.digits(4, 4)?)?;
    if !scan.eat(b'-') {
        return None;
    }
    let month_digits = scan.digits(1, 2)?;
    if !scan.eat(b'-') {
        return None;
    }
    let day_digits = scan.digits(1, 2)?;
    let date = (year, number(month_digits)?, number(day_digits)?);
    if scan.done() {
        // A date alone needs two-digit month and day.
        return (month_digits.len() == 2 && day_digits.len() == 2).then_some(Timestamp {
            date,
            time: None,
            offset: None,
        });
    }
    if !(scan.eat(b'T') || scan.eat(b't'))
        && scan
            .span(usize::MAX, |b| b == b' ' || b == b'\t')
            .is_empty()
    {
        return None;
    }
    let hour = number(scan.digits(1, 2)?)?;
    let minute = (scan.eat(b':').then_some(())?, number(scan.digits(2, 2)?)?).1;
    let second = (scan.eat(b':').then_some(())?, number(scan.digits(2, 2)?)?).1;
    let mut micro = 0;
    if scan.eat(b'.') {
        let fraction = scan.digits(0, usize::MAX)?;
        let mut six = [b'0'; 6];
        for (slot, digit) in six.iter_mut().zip(fraction) {
            *slot = *digit;
        }
        micro = number(&six)?;
    }
    scan.span(usize::MAX, |b| b == b' ' || b == b'\t');
    let offset = if scan.done() {
        None
    } else if scan.eat(b'Z') {
        Some(0)
    } else {
        let negative = scan.eat(b'-');
        if !negative && !scan.eat(b'+') {
            return None;
        }
        let hours: i32 = number(scan.digits(1, 2)?)?;
        let minutes: i32 = if scan.eat(b':') {
            number(scan.digits(2, 2)?)?
        } else {
            0
        };
        let total = hours * 60 + minutes;
        Some(if negative { -total } else { total })
    };
    if !scan.done() {
        return None;
    }
    Some(Timestamp {
        date,
        time: Some((hour, minute, second, micro)),
        offset,
    })
}

/// `!!timestamp` as PyYAML constructs it, as kombu's json writes the result: a `date` or a
/// `datetime` value in Python's `isoformat()`. `None` when `text` is not one.
pub(super) fn timestamp_value(text: &str) -> Option<Result<Value, String>> {
    let stamp = parse_timestamp(text)?;
    let invalid = || format!("yaml: {text} is not a valid date or time");
    let (year, month, day) = stamp.date;
    if chrono::NaiveDate::from_ymd_opt(year, month, day).is_none() || year < 1 {
        return Some(Err(invalid()));
    }
    let date = format!("{year:04}-{month:02}-{day:02}");
    let Some((hour, minute, second, micro)) = stamp.time else {
        return Some(Ok(kombu::wrap("date", Value::String(date))));
    };
    if chrono::NaiveTime::from_hms_micro_opt(hour, minute, second, micro).is_none() {
        return Some(Err(invalid()));
    }
    let mut iso = format!("{date}T{hour:02}:{minute:02}:{second:02}");
    if micro != 0 {
        iso.push_str(&format!(".{micro:06}"));
    }
    if let Some(offset) = stamp.offset {
        if offset.abs() >= 24 * 60 {
            return Some(Err(invalid()));
        }
        let sign = if offset < 0 { '-' } else { '+' };
        iso.push_str(&format!(
            "{sign}{:02}:{:02}",
            offset.abs() / 60,
            offset.abs() % 60
        ));
    }
    Some(Ok(kombu::wrap("datetime", Value::String(iso))))
}
