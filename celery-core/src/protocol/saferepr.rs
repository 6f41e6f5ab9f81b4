//! `argsrepr` and `kwargsrepr` as Celery writes them: `celery.utils.saferepr.saferepr(args,
//! 1024, maxlevels=3)` (`AMQP.as_task_v2`), not Python's `repr()`.
//!
//! saferepr differs from `repr()` in ways a log reader or Flower sees: strings are always
//! single-quoted with only `'` escaped (a newline or a backslash is written as it is), a
//! container nested `maxlevels` deep is written `[...]`/`{...}`, and past `maxlen` characters a
//! string or number is cut at its last space with `...`, the container goes on with `, ...`
//! and only its closing brackets follow. It streams tokens, counting down `maxlen` as it writes
//! them; this module does the same, so that a long list or string costs no more than the
//! 1,024 characters written.
//!
//! kombu's special values stand for the Python objects a Python client would have passed, and
//! are written as saferepr writes those: `datetime.datetime(2026, 1, 2, 3, 4, 5,
//! tzinfo=datetime.timezone.utc)`, `Decimal('1.50')`, `UUID('…')`, `b'…'`. One this module does
//! not read (a value kombu could not decode either, or a date or time in another form than
//! `isoformat()` writes) is written as the dict it is.

use serde_json::{Map, Value};

use crate::serializer::kombu;

/// Celery's `AMQP.argsrepr_maxsize` and `kwargsrepr_maxsize`.
const MAXLEN: usize = 1024;
/// The default of Celery's `task_repr_maxlevels`.
const MAXLEVELS: usize = 3;

/// Celery's `argsrepr`: the args as the tuple a Python client passes.
pub fn args_repr(args: &[Value]) -> String {
    let close = if args.len() == 1 { ",)" } else { ")" };
    let mut out = String::with_capacity(16);
    out.push('(');
    match plain_items(args.iter(), 1, &mut out) {
        Some(()) => {
            out.push_str(close);
            out
        }
        None => render(Frame::seq("(", args, close)),
    }
}

/// Celery's `kwargsrepr`.
pub fn kwargs_repr(kwargs: &Map<String, Value>) -> String {
    let mut out = String::with_capacity(16);
    match plain_map(kwargs, 1, &mut out) {
        Some(()) => out,
        None => render(Frame::map(kwargs)),
    }
}

// The common case written straight, as every message carries both reprs: arguments without
// special values whose repr stays under `MAXLEN` characters. Nothing is cut then (no token can
// reach the characters left), so the stream below would write the same; the first special
// value, or the output growing to `MAXLEN` bytes (never fewer characters than bytes), hands
// the value to it instead.

fn plain_items<'a>(
    items: impl Iterator<Item = &'a Value>,
    level: usize,
    out: &mut String,
) -> Option<()> {
    for (index, item) in items.enumerate() {
        if index > 0 {
            out.push_str(", ");
        }
        plain_value(item, level, out)?;
    }
    Some(())
}

fn plain_map(map: &Map<String, Value>, level: usize, out: &mut String) -> Option<()> {
    out.push('{');
    for (index, (key, value)) in map.iter().enumerate() {
        if index > 0 {
            out.push_str(", ");
        }
        plain_quoted(key, out);
        out.push_str(": ");
        plain_value(value, level, out)?;
    }
    out.push('}');
    (out.len() < MAXLEN).then_some(())
}

fn plain_value(value: &Value, level: usize, out: &mut String) -> Option<()> {
    if super::python_scalar_repr(value, out) {
        return (out.len() < MAXLEN).then_some(());
    }
    match value {
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
        Value::String(text) => plain_quoted(text, out),
        Value::Array(_) if level >= MAXLEVELS => out.push_str("[...]"),
        Value::Object(_) if kombu::special(value).is_some() => return None,
        Value::Object(_) if level >= MAXLEVELS => out.push_str("{...}"),
        Value::Array(items) => {
            out.push('[');
            plain_items(items.iter(), level + 1, out)?;
            out.push(']');
        }
        Value::Object(map) => plain_map(map, level + 1, out)?,
    }
    (out.len() < MAXLEN).then_some(())
}

fn plain_quoted(text: &str, out: &mut String) {
    out.push('\'');
    for (index, piece) in text.split('\'').enumerate() {
        if index > 0 {
            out.push_str("\\'");
        }
        out.push_str(piece);
    }
    out.push('\'');
}

/// One token of saferepr's stream.
enum Token<'a> {
    /// Opens a container: one level deeper.
    Open(&'static str),
    /// Closes one; always written, even past `maxlen`.
    Close(&'static str),
    /// `", "` or `": "`.
    Separator(&'static str),
    /// A container at `maxlevels`, written whole as one literal (`[...]`, `{...}`).
    Elided(&'static str),
    /// A string, or a dict key.
    Quoted(&'a str),
    Bytes(Vec<u8>),
    /// Anything saferepr writes with `str()` or `repr()`: numbers, `None`, bools, special values.
    Text(String),
}

/// A container being written.
struct Frame<'a> {
    items: Items<'a>,
    close: &'static str,
    /// Whether an item was written: the next one needs a separator first.
    started: bool,
    /// What is due next within the current item.
    pending: Pending<'a>,
}

enum Items<'a> {
    Seq(std::slice::Iter<'a, Value>),
    Map(serde_json::map::Iter<'a>),
}

enum Pending<'a> {
    Nothing,
    /// A list item, after its separator.
    Item(&'a Value),
    /// A dict entry, after its separator.
    Key(&'a str, &'a Value),
    /// A dict value, after its key.
    Colon(&'a Value),
}

impl<'a> Frame<'a> {
    fn seq(open: &'static str, items: &'a [Value], close: &'static str) -> (Token<'a>, Self) {
        let frame = Frame {
            items: Items::Seq(items.iter()),
            close,
            started: false,
            pending: Pending::Nothing,
        };
        (Token::Open(open), frame)
    }

    fn map(map: &'a Map<String, Value>) -> (Token<'a>, Self) {
        let frame = Frame {
            items: Items::Map(map.iter()),
            close: "}",
            started: false,
            pending: Pending::Nothing,
        };
        (Token::Open("{"), frame)
    }
}

/// saferepr's `reprstream`: the tokens of a value, containers opened as they are reached.
struct Stream<'a> {
    /// The containers open, innermost last; their number is saferepr's `level`.
    open: Vec<Frame<'a>>,
    first: Option<Token<'a>>,
}

impl<'a> Stream<'a> {
    fn next(&mut self) -> Option<Token<'a>> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        let level = self.open.len();
        let frame = self.open.last_mut()?;
        let value = match std::mem::replace(&mut frame.pending, Pending::Nothing) {
            Pending::Item(value) => value,
            Pending::Key(key, value) => {
                frame.pending = Pending::Colon(value);
                return Some(Token::Quoted(key));
            }
            Pending::Colon(value) => {
                frame.pending = Pending::Item(value);
                return Some(Token::Separator(": "));
            }
            Pending::Nothing => {
                let (key, value) = match &mut frame.items {
                    Items::Seq(items) => match items.next() {
                        Some(item) => (None, item),
                        None => return self.close(),
                    },
                    Items::Map(entries) => match entries.next() {
                        Some((key, value)) => (Some(key.as_str()), value),
                        None => return self.close(),
                    },
                };
                let separate = std::mem::replace(&mut frame.started, true);
                frame.pending = match key {
                    Some(key) if separate => Pending::Key(key, value),
                    Some(_) => Pending::Colon(value),
                    None if separate => Pending::Item(value),
                    None => Pending::Nothing,
                };
                match key {
                    _ if separate => return Some(Token::Separator(", ")),
                    Some(key) => return Some(Token::Quoted(key)),
                    None => value,
                }
            }
        };
        Some(self.value(value, level))
    }

    fn close(&mut self) -> Option<Token<'a>> {
        self.open.pop().map(|frame| Token::Close(frame.close))
    }

    /// The token of a value met at `level`: a container is opened, unless it is `maxlevels`
    /// deep.
    fn value(&mut self, value: &'a Value, level: usize) -> Token<'a> {
        if let Some(token) = special(value) {
            return token;
        }
        let (open, frame) = match value {
            Value::Null => return Token::Text("None".to_owned()),
            Value::Bool(true) => return Token::Text("True".to_owned()),
            Value::Bool(false) => return Token::Text("False".to_owned()),
            Value::Number(n) => {
                return Token::Text(match n.as_f64().filter(|_| n.is_f64()) {
                    Some(float) => crate::serializer::python_float_repr(float),
                    None => n.to_string(),
                })
            }
            Value::String(text) => return Token::Quoted(text),
            Value::Array(_) if level >= MAXLEVELS => return Token::Elided("[...]"),
            Value::Object(_) if level >= MAXLEVELS => return Token::Elided("{...}"),
            Value::Array(items) => Frame::seq("[", items, "]"),
            Value::Object(map) => Frame::map(map),
        };
        self.open.push(frame);
        open
    }
}

/// saferepr's `_saferepr`: the tokens written while `maxlen` lasts, each counted down from it.
fn render((open, frame): (Token<'_>, Frame<'_>)) -> String {
    let mut stream = Stream {
        open: vec![frame],
        first: Some(open),
    };
    let mut out = String::new();
    // saferepr's `maxlen`, which the last token written may take below zero.
    let mut left = MAXLEN as isize;
    while let Some(token) = stream.next() {
        if left <= 0 {
            // Past the limit a container that ends is closed as usual; anything else is left
            // out as `, ...` and the containers still open are closed.
            if let Token::Close(close) = token {
                out.push_str(close);
                continue;
            }
            out.push_str(", ...");
            // One opened right at the limit is neither shown nor closed.
            if let Token::Open(_) = token {
                stream.open.pop();
            }
            for frame in stream.open.iter().rev() {
                out.push_str(frame.close);
            }
            return out;
        }
        let before = out.len();
        let max = left as usize;
        match token {
            Token::Open(text)
            | Token::Close(text)
            | Token::Separator(text)
            | Token::Elided(text) => out.push_str(text),
            Token::Quoted(text) => {
                out.push('\'');
                for ch in truncate(text, max).chars() {
                    if ch == '\'' {
                        out.push('\\');
                    }
                    out.push(ch);
                }
                out.push('\'');
            }
            Token::Bytes(bytes) => {
                // Cut by their length, not at a space; shown as text when UTF-8, else in hex.
                let (shown, cut) = match bytes.len() > max {
                    true => (&bytes[..max], "..."),
                    false => (&bytes[..], ""),
                };
                out.push_str("b'");
                match std::str::from_utf8(shown) {
                    Ok(text) => out.push_str(text),
                    Err(_) => shown
                        .iter()
                        .for_each(|byte| out.push_str(&format!("{byte:02x}"))),
                }
                out.push_str(cut);
                out.push('\'');
            }
            Token::Text(text) => out.push_str(&truncate(&text, max)),
        }
        left -= out[before..].chars().count() as isize;
    }
    out
}

/// Celery's `truncate(text, maxlen)`: a text of `maxlen` characters or more is cut to its first
/// `maxlen`, then back to its last space, and `...` follows (one of exactly `maxlen` characters
/// too, as Celery compares with `>=`).
fn truncate(text: &str, maxlen: usize) -> std::borrow::Cow<'_, str> {
    if maxlen == 0 || text.char_indices().nth(maxlen - 1).is_none() {
        return text.into();
    }
    let end = text
        .char_indices()
        .nth(maxlen)
        .map_or(text.len(), |(end, _)| end);
    let head = &text[..end];
    let kept = head.rsplit_once(' ').map_or(head, |(kept, _)| kept);
    format!("{kept}...").into()
}

/// A kombu special value as saferepr writes the Python object kombu decodes it to.
fn special(value: &Value) -> Option<Token<'static>> {
    let (kind, inner) = kombu::special(value)?;
    if matches!(kind, "bytes" | "base64") {
        return kombu::bytes_of(value)?.ok().map(Token::Bytes);
    }
    let text = match (kind, inner) {
        ("uuid", Value::Object(_)) => format!("UUID('{}')", kombu::uuid_of(inner)?.hyphenated()),
        ("decimal", Value::String(text)) => format!("Decimal('{}')", decimal_str(text)?),
        ("datetime", Value::String(text)) => {
            let (date, time) = text.split_once('T').or_else(|| text.split_once(' '))?;
            let (y, m, d) = iso_date(date)?;
            let (clock, zone) = iso_time(time)?;
            format!(
                "datetime.datetime({y}, {m}, {d}, {}{})",
                clock_fields(clock),
                zone_field(zone)
            )
        }
        ("date", Value::String(text)) => {
            let (y, m, d) = iso_date(text)?;
            format!("datetime.date({y}, {m}, {d})")
        }
        ("time", Value::String(text)) => {
            let (clock, zone) = iso_time(text)?;
            format!("datetime.time({}{})", clock_fields(clock), zone_field(zone))
        }
        _ => return None,
    };
    Some(Token::Text(text))
}

/// Year, month and day of `YYYY-MM-DD`, a date Python has.
fn iso_date(text: &str) -> Option<(u32, u32, u32)> {
    let mut parts = text.split('-');
    let year = digits(parts.next()?, 4)?;
    let month = digits(parts.next()?, 2)?;
    let day = digits(parts.next()?, 2)?;
    if parts.next().is_some() || year == 0 {
        return None;
    }
    chrono::NaiveDate::from_ymd_opt(year as i32, month, day)?;
    Some((year, month, day))
}

/// Hours, minutes, seconds and microseconds, and the offset in microseconds (`None`: naive),
/// of `isoformat()`'s time: `HH:MM[:SS[.ffffff]]` and `Z` or `±HH:MM[:SS[.ffffff]]`.
fn iso_time(text: &str) -> Option<([u32; 4], Option<i64>)> {
    let split = text.find(['+', '-', 'Z']).unwrap_or(text.len());
    let (clock, zone) = text.split_at(split);
    let clock = clock_of(clock)?;
    if clock[0] > 23 || clock[1] > 59 || clock[2] > 59 {
        return None;
    }
    let zone = match zone {
        "" => None,
        "Z" => Some(0),
        _ => {
            let sign = if zone.starts_with('-') { -1 } else { 1 };
            let [h, m, s, us] = clock_of(&zone[1..])?;
            let micros = ((i64::from(h) * 60 + i64::from(m)) * 60 + i64::from(s)) * 1_000_000
                + i64::from(us);
            // Python's offsets are under a day.
            if micros >= 86_400_000_000 {
                return None;
            }
            Some(sign * micros)
        }
    };
    Some((clock, zone))
}

/// `HH:MM[:SS[.f…]]` (up to six digits of fraction, as `isoformat()` writes at most).
fn clock_of(text: &str) -> Option<[u32; 4]> {
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (text, None),
    };
    let mut parts = whole.split(':');
    let hour = digits(parts.next()?, 2)?;
    let minute = digits(parts.next()?, 2)?;
    let second = parts.next().map(|s| digits(s, 2)).unwrap_or(Some(0))?;
    if parts.next().is_some() || (fraction.is_some() && whole.len() != 8) {
        return None;
    }
    let micros = match fraction {
        None => 0,
        Some(f) if (1..=6).contains(&f.len()) => {
            digits(f, f.len())? * 10u32.pow(6 - f.len() as u32)
        }
        Some(_) => return None,
    };
    Some([hour, minute, second, micros])
}

fn digits(text: &str, len: usize) -> Option<u32> {
    (text.len() == len && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

/// `datetime`'s and `time`'s repr: hours and minutes always, then seconds and microseconds
/// unless they are zero (microseconds first).
fn clock_fields([h, m, s, us]: [u32; 4]) -> String {
    match (s, us) {
        (_, us) if us != 0 => format!("{h}, {m}, {s}, {us}"),
        (0, _) => format!("{h}, {m}"),
        (s, _) => format!("{h}, {m}, {s}"),
    }
}

/// `, tzinfo=…` as Python writes a `timezone` (`fromisoformat` gives `timezone.utc` for a zero
/// offset), empty for a naive time.
fn zone_field(offset: Option<i64>) -> String {
    let Some(micros) = offset else {
        return String::new();
    };
    if micros == 0 {
        return ", tzinfo=datetime.timezone.utc".to_owned();
    }
    // timedelta's normal form: days (negative for a negative offset), then seconds and
    // microseconds of that day.
    let days = micros.div_euclid(86_400_000_000);
    let rest = micros.rem_euclid(86_400_000_000);
    let fields: Vec<String> = [
        ("days", days),
        ("seconds", rest / 1_000_000),
        ("microseconds", rest % 1_000_000),
    ]
    .into_iter()
    .filter(|(_, n)| *n != 0)
    .map(|(name, n)| format!("{name}={n}"))
    .collect();
    format!(
        ", tzinfo=datetime.timezone(datetime.timedelta({}))",
        fields.join(", ")
    )
}

/// `str(Decimal(text))`: Python's to-scientific-string of the number `text` writes, or `None`
/// when `Decimal` would refuse it.
fn decimal_str(text: &str) -> Option<String> {
    let text = text.trim();
    let (sign, body) = match text.as_bytes().first()? {
        b'-' => ("-", &text[1..]),
        b'+' => ("", &text[1..]),
        _ => ("", text),
    };
    let lower = body.to_ascii_lowercase();
    match lower.as_str() {
        "inf" | "infinity" => return Some(format!("{sign}Infinity")),
        "nan" => return Some(format!("{sign}NaN")),
        "snan" => return Some(format!("{sign}sNaN")),
        _ => {}
    }
    let (mantissa, exponent) = match lower.split_once('e') {
        Some((mantissa, exponent)) => (mantissa, exponent.parse::<i64>().ok()?),
        None => (lower.as_str(), 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() && fraction.is_empty() || !all(whole) || !all(fraction) {
        return None;
    }
    let digits = format!("{whole}{fraction}");
    let digits = match digits.trim_start_matches('0') {
        "" => "0",
        trimmed => trimmed,
    };
    let exponent = exponent - fraction.len() as i64;
    let left_digits = exponent + digits.len() as i64;
    let body = if exponent <= 0 && left_digits > -6 {
        // Plain notation.
        if exponent == 0 {
            digits.to_owned()
        } else if left_digits > 0 {
            let (int, frac) = digits.split_at(left_digits as usize);
            format!("{int}.{frac}")
        } else {
            format!("0.{}{digits}", "0".repeat((-left_digits) as usize))
        }
    } else {
        // Scientific notation, one digit before the point.
        let (first, rest) = digits.split_at(1);
        let point = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let adjusted = left_digits - 1;
        format!("{first}{point}E{adjusted:+}")
    };
    Some(format!("{sign}{body}"))
}

#[cfg(test)]
#[path = "saferepr_cases.rs"]
mod cases;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_what_celerys_saferepr_writes() {
        let mut wrong = Vec::new();
        for (i, (kind, json, expected)) in cases::CASES.iter().enumerate() {
            let written = match *kind {
                "args" => args_repr(&serde_json::from_str::<Vec<Value>>(json).unwrap()),
                _ => kwargs_repr(&serde_json::from_str(json).unwrap()),
            };
            if written != *expected {
                wrong.push(format!(
                    "case {i}:\n  saferepr {expected}\n  here     {written}"
                ));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    /// The short way and the stream agree wherever the short way writes at all; it writes the
    /// common arguments (else it would be there for nothing), and Celery's cases that fit it.
    #[test]
    fn the_short_way_writes_what_the_stream_writes() {
        let common = [
            ("args", "[]"),
            ("args", "[2, 3]"),
            (
                "args",
                r#"["it's", 1.5, null, true, {"a": [1, [2, [3]]]}, -7]"#,
            ),
            ("kwargs", "{}"),
            (
                "kwargs",
                r#"{"user": "ann", "ids": [1, 2], "ratio": 0.25, "deep": {"a": {"b": {}}}}"#,
            ),
        ];
        let celerys = cases::CASES.iter().map(|(kind, json, _)| (*kind, *json));
        let mut written_short = 0;
        for (kind, json) in common.into_iter().chain(celerys) {
            let mut short = String::new();
            let (plain, streamed) = match kind {
                "args" => {
                    let args = serde_json::from_str::<Vec<Value>>(json).unwrap();
                    let close = if args.len() == 1 { ",)" } else { ")" };
                    short.push('(');
                    let plain = plain_items(args.iter(), 1, &mut short).map(|()| {
                        short.push_str(close);
                    });
                    (plain, render(Frame::seq("(", &args, close)))
                }
                _ => {
                    let kwargs = serde_json::from_str(json).unwrap();
                    (
                        plain_map(&kwargs, 1, &mut short),
                        render(Frame::map(&kwargs)),
                    )
                }
            };
            if plain.is_some() {
                written_short += 1;
                assert_eq!(short, streamed, "{json}");
            }
        }
        assert!(written_short > common.len(), "{written_short}");
    }

    /// Where saferepr and `repr()` part ways, in short (the cases above have them at length).
    #[test]
    fn strings_are_single_quoted_and_written_raw() {
        use serde_json::json;
        assert_eq!(
            args_repr(&[json!("it's"), json!("a\\b\nc"), json!([[["deep"]]])]),
            "('it\\'s', 'a\\b\nc', [[[...]]])"
        );
        assert_eq!(args_repr(&[json!(1)]), "(1,)");
        assert_eq!(truncate("one two three", 9), "one two...");
        assert_eq!(
            truncate("exactly", 7),
            "exactly...",
            "Celery compares with >="
        );
        assert_eq!(truncate("short", 9), "short");
    }
}
