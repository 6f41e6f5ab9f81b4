//! Task argument and result types for the Python values JSON has no type for.
//!
//! Each type writes kombu's special value (`{"__type__": "datetime", "__value__": …}`, see
//! [`serializer::kombu`](crate::serializer::kombu)), so that a Python task receives a real
//! `datetime`, `date`, `time`, `uuid.UUID`, `Decimal` or `bytes` through json (kombu's msgpack
//! and yaml readers have no hook for those dicts: through them only bytes, and with yaml dates
//! and datetimes, arrive as objects; the rest arrive as the dicts), and reads both that form and
//! the plain one (an ISO-8601 string, a UUID string, a decimal string or number; for bytes a
//! string, msgpack/pickle bytes or a list of byte values):
//!
//! ```
//! use celery_core::types::{Bytes, DateTime, Uuid};
//!
//! let stamp: DateTime = "2026-01-02T03:04:05.678901+00:00".parse().unwrap();
//! let value = serde_json::to_value(&stamp).unwrap();
//! assert_eq!(
//!     value,
//!     serde_json::json!({"__type__": "datetime", "__value__": "2026-01-02T03:04:05.678901+00:00"})
//! );
//! assert_eq!(serde_json::from_value::<DateTime>(value).unwrap(), stamp);
//! let id: Uuid = serde_json::from_value(serde_json::json!(
//!     {"__type__": "uuid", "__value__": {"hex": "12345678123456781234567812345678"}}
//! )).unwrap();
//! assert_eq!(id.to_string(), "12345678-1234-5678-1234-567812345678");
//! let bytes: Bytes = serde_json::from_value(serde_json::json!(
//!     {"__type__": "base64", "__value__": "/wCA"}
//! )).unwrap();
//! assert_eq!(&bytes[..], &[0xff, 0x00, 0x80]);
//! ```
//!
//! Plain `chrono` and `uuid` types work as task arguments too — the worker falls back to
//! [`unwrap_plain`](crate::serializer::kombu::unwrap_plain) when they meet a kombu value — but
//! they are sent as plain strings, which a Python task receives as `str`.

use std::fmt;
use std::ops::Deref;
use std::str::FromStr;

use chrono::{Datelike, FixedOffset, NaiveDate, NaiveTime, Offset, TimeZone, Timelike, Utc};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::serializer::kombu;

/// Python's `datetime` with a UTC offset (an aware datetime), to microseconds.
///
/// A naive Python datetime (no offset) reads as UTC, as Celery reads a naive `eta`; use
/// [`NaiveDateTime`] to keep it naive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DateTime(pub chrono::DateTime<FixedOffset>);

/// Python's naive `datetime` (no offset), to microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NaiveDateTime(pub chrono::NaiveDateTime);

/// Python's `date`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Date(pub NaiveDate);

/// Python's naive `time`, to microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Time(pub NaiveTime);

/// Python's `uuid.UUID`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uuid(pub uuid::Uuid);

/// Python's `decimal.Decimal`, kept as its exact decimal text (`"1.50"` stays `"1.50"`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Decimal(String);

/// Python's `bytes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bytes(pub Vec<u8>);

/// A value that is not valid text for one of these types.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind}: {text:?}")]
pub struct InvalidValue {
    kind: &'static str,
    text: String,
}

fn invalid(kind: &'static str, text: &str) -> InvalidValue {
    InvalidValue {
        kind,
        text: text.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// Python's isoformat, and back

fn python_date(date: NaiveDate) -> Result<String, String> {
    if !(1..=9999).contains(&date.year()) {
        return Err(format!(
            "year {} is out of Python's range 1..=9999",
            date.year()
        ));
    }
    Ok(format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        date.month(),
        date.day()
    ))
}

/// `HH:MM:SS[.ffffff]`: Python keeps microseconds and leaves them out when they are 0.
fn python_time(time: NaiveTime) -> String {
    let micro = (time.nanosecond() / 1_000).min(999_999);
    let mut text = format!(
        "{:02}:{:02}:{:02}",
        time.hour(),
        time.minute(),
        time.second()
    );
    if micro != 0 {
        text.push_str(&format!(".{micro:06}"));
    }
    text
}

fn python_offset(offset: FixedOffset) -> String {
    let seconds = offset.local_minus_utc();
    let sign = if seconds < 0 { '-' } else { '+' };
    let seconds = seconds.unsigned_abs();
    let mut text = format!("{sign}{:02}:{:02}", seconds / 3600, seconds / 60 % 60);
    if seconds % 60 != 0 {
        text.push_str(&format!(":{:02}", seconds % 60));
    }
    text
}

fn python_naive_datetime(value: chrono::NaiveDateTime) -> Result<String, String> {
    Ok(format!(
        "{}T{}",
        python_date(value.date())?,
        python_time(value.time())
    ))
}

fn parse_naive_datetime(text: &str) -> Option<chrono::NaiveDateTime> {
    [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ]
    .iter()
    .find_map(|format| chrono::NaiveDateTime::parse_from_str(text, format).ok())
}

/// RFC 3339, or Python's isoformat with an offset in seconds (`+05:30:15`).
fn parse_aware_datetime(text: &str) -> Option<chrono::DateTime<FixedOffset>> {
    if let Ok(value) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(value);
    }
    let at = text
        .rfind(['+', '-'])
        .filter(|&at| at > "YYYY-MM-DD".len())?;
    let (naive, offset) = text.split_at(at);
    let sign = if offset.starts_with('-') { -1 } else { 1 };
    let mut seconds = 0;
    for (part, unit) in offset[1..].split(':').zip([3600, 60, 1]) {
        if part.len() != 2 {
            return None;
        }
        seconds += part.parse::<i32>().ok()? * unit;
    }
    let offset = FixedOffset::east_opt(sign * seconds)?;
    offset
        .from_local_datetime(&parse_naive_datetime(naive)?)
        .single()
}

fn parse_time(text: &str) -> Option<NaiveTime> {
    ["%H:%M:%S%.f", "%H:%M"]
        .iter()
        .find_map(|format| NaiveTime::parse_from_str(text, format).ok())
}

// ---------------------------------------------------------------------------------------------
// serde plumbing

fn serialize_special<S: Serializer>(
    serializer: S,
    kind: &str,
    value: &impl Serialize,
) -> Result<S::Ok, S::Error> {
    let mut map = serializer.serialize_map(Some(2))?;
    map.serialize_entry(kombu::TYPE_KEY, kind)?;
    map.serialize_entry(kombu::VALUE_KEY, value)?;
    map.end()
}

/// The `__value__` of a kombu value of type `kind`, or the value itself when it is plain.
fn special_or_plain<'de, D: Deserializer<'de>>(
    deserializer: D,
    kind: &str,
) -> Result<Value, D::Error> {
    let value = Value::deserialize(deserializer)?;
    match kombu::special(&value) {
        Some((found, inner)) if found == kind => Ok(inner.clone()),
        Some((found, _)) => Err(de::Error::custom(format!(
            "expected a {kind}, found a kombu {found} value"
        ))),
        None => Ok(value),
    }
}

fn expect_str<E: de::Error>(value: &Value, kind: &str) -> Result<String, E> {
    match value {
        Value::String(text) => Ok(text.clone()),
        other => Err(E::custom(format!(
            "expected a {kind} as a string or a kombu {kind} value, found {other}"
        ))),
    }
}

macro_rules! text_type {
    ($ty:ident, $kind:literal, $inner:ty, to_text: $to_text:expr, from_text: $from_text:expr) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let text: Result<String, String> = $to_text(self.0);
                serialize_special(serializer, $kind, &text.map_err(serde::ser::Error::custom)?)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let inner = special_or_plain(deserializer, $kind)?;
                let text = expect_str(&inner, $kind)?;
                text.parse().map_err(de::Error::custom)
            }
        }

        impl FromStr for $ty {
            type Err = InvalidValue;
            fn from_str(text: &str) -> Result<Self, InvalidValue> {
                let parsed: Option<$inner> = $from_text(text);
                parsed.map($ty).ok_or_else(|| invalid($kind, text))
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let text: Result<String, String> = $to_text(self.0);
                match text {
                    Ok(text) => f.write_str(&text),
                    Err(_) => write!(f, "{:?}", self.0),
                }
            }
        }

        impl Deref for $ty {
            type Target = $inner;
            fn deref(&self) -> &$inner {
                &self.0
            }
        }

        impl From<$inner> for $ty {
            fn from(value: $inner) -> Self {
                $ty(value)
            }
        }

        impl From<$ty> for $inner {
            fn from(value: $ty) -> Self {
                value.0
            }
        }
    };
}

text_type!(DateTime, "datetime", chrono::DateTime<FixedOffset>,
    to_text: |value: chrono::DateTime<FixedOffset>| -> Result<String, String> {
        Ok(python_naive_datetime(value.naive_local())? + &python_offset(value.offset().fix()))
    },
    from_text: |text: &str| parse_aware_datetime(text)
        .or_else(|| parse_naive_datetime(text).map(|naive| Utc.from_utc_datetime(&naive).fixed_offset()))
);

text_type!(NaiveDateTime, "datetime", chrono::NaiveDateTime,
    to_text: python_naive_datetime,
    from_text: parse_naive_datetime
);

text_type!(Date, "date", NaiveDate,
    to_text: python_date,
    from_text: |text: &str| NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()
);

text_type!(Time, "time", NaiveTime,
    to_text: |time| -> Result<String, String> { Ok(python_time(time)) },
    from_text: parse_time
);

impl From<chrono::DateTime<Utc>> for DateTime {
    fn from(value: chrono::DateTime<Utc>) -> Self {
        DateTime(value.fixed_offset())
    }
}

impl DateTime {
    /// The current time, in UTC.
    pub fn now() -> Self {
        Utc::now().into()
    }
}

// ---------------------------------------------------------------------------------------------
// Uuid

impl Serialize for Uuid {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut hex = std::collections::BTreeMap::new();
        hex.insert("hex", self.0.simple().to_string());
        serialize_special(serializer, "uuid", &hex)
    }
}

impl<'de> Deserialize<'de> for Uuid {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let inner = special_or_plain(deserializer, "uuid")?;
        kombu::uuid_of(&inner).map(Uuid).ok_or_else(|| {
            de::Error::custom(format!(
                "expected a UUID string or a kombu uuid value, found {inner}"
            ))
        })
    }
}

impl FromStr for Uuid {
    type Err = InvalidValue;
    fn from_str(text: &str) -> Result<Self, InvalidValue> {
        uuid::Uuid::parse_str(text)
            .map(Uuid)
            .map_err(|_| invalid("uuid", text))
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Deref for Uuid {
    type Target = uuid::Uuid;
    fn deref(&self) -> &uuid::Uuid {
        &self.0
    }
}

impl From<uuid::Uuid> for Uuid {
    fn from(value: uuid::Uuid) -> Self {
        Uuid(value)
    }
}

impl From<Uuid> for uuid::Uuid {
    fn from(value: Uuid) -> Self {
        value.0
    }
}

// ---------------------------------------------------------------------------------------------
// Decimal

impl Decimal {
    /// The decimal text, as Python's `str(Decimal)` wrote it or as it was given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The nearest `f64`, losing the exactness a `Decimal` is for; `None` for `NaN`/`sNaN`.
    pub fn to_f64(&self) -> Option<f64> {
        let lower = self.0.to_ascii_lowercase();
        let unsigned = lower.trim_start_matches(['+', '-']);
        if unsigned.starts_with("inf") {
            let infinity = f64::INFINITY;
            return Some(if lower.starts_with('-') {
                -infinity
            } else {
                infinity
            });
        }
        lower.parse().ok().filter(|f: &f64| !f.is_nan())
    }
}

/// Python's `Decimal` string syntax: sign, digits with an optional point, an optional exponent,
/// or `Infinity`/`Inf`/`NaN`/`sNaN`.
fn is_python_decimal(text: &str) -> bool {
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    let lower = unsigned.to_ascii_lowercase();
    if matches!(lower.as_str(), "inf" | "infinity") {
        return true;
    }
    if let Some(payload) = lower
        .strip_prefix("snan")
        .or_else(|| lower.strip_prefix("nan"))
    {
        return payload.bytes().all(|b| b.is_ascii_digit());
    }
    let (mantissa, exponent) = match lower.split_once('e') {
        Some((m, e)) => (m, Some(e)),
        None => (lower.as_str(), None),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit() || b == b'_');
    let mantissa_ok = digits(whole) && digits(fraction) && (whole.len() + fraction.len() > 0);
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit())
    });
    mantissa_ok && exponent_ok && !unsigned.starts_with('_')
}

impl FromStr for Decimal {
    type Err = InvalidValue;
    fn from_str(text: &str) -> Result<Self, InvalidValue> {
        let trimmed = text.trim();
        if is_python_decimal(trimmed) {
            Ok(Decimal(trimmed.to_owned()))
        } else {
            Err(invalid("decimal", text))
        }
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! decimal_from_int {
    ($($int:ty),*) => {$(
        impl From<$int> for Decimal {
            fn from(value: $int) -> Self {
                Decimal(value.to_string())
            }
        }
    )*};
}

decimal_from_int!(i8, i16, i32, i64, i128, u8, u16, u32, u64, u128, isize, usize);

impl Serialize for Decimal {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_special(serializer, "decimal", &self.0)
    }
}

impl<'de> Deserialize<'de> for Decimal {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let inner = special_or_plain(deserializer, "decimal")?;
        let text = match &inner {
            Value::Number(n) => n.to_string(),
            other => expect_str(other, "decimal")?,
        };
        text.parse().map_err(de::Error::custom)
    }
}

// ---------------------------------------------------------------------------------------------
// Bytes

impl Bytes {
    pub fn into_inner(self) -> Vec<u8> {
        self.0
    }
}

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(value: Vec<u8>) -> Self {
        Bytes(value)
    }
}

impl From<&[u8]> for Bytes {
    fn from(value: &[u8]) -> Self {
        Bytes(value.to_vec())
    }
}

impl From<Bytes> for Vec<u8> {
    fn from(value: Bytes) -> Self {
        value.0
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(text) => serialize_special(serializer, "bytes", &text),
            Err(_) => {
                use base64::Engine as _;
                let text = base64::engine::general_purpose::STANDARD.encode(&self.0);
                serialize_special(serializer, "base64", &text)
            }
        }
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(BytesVisitor)
    }
}

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Bytes;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("bytes: a kombu bytes or base64 value, a string or a list of byte values")
    }
    fn visit_str<E>(self, v: &str) -> Result<Bytes, E> {
        Ok(Bytes(v.as_bytes().to_vec()))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Bytes, E> {
        Ok(Bytes(v.to_vec()))
    }
    fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Bytes, E> {
        Ok(Bytes(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(byte) = seq.next_element::<u8>()? {
            out.push(byte);
        }
        Ok(Bytes(out))
    }
    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Bytes, A::Error> {
        let value = Value::deserialize(de::value::MapAccessDeserializer::new(map))?;
        match kombu::bytes_of(&value) {
            Some(bytes) => bytes.map(Bytes).map_err(de::Error::custom),
            None => Err(de::Error::custom(format!(
                "expected bytes, found the mapping {value}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn round_trip<T>(value: &T, wire: Value)
    where
        T: Serialize + for<'de> Deserialize<'de> + PartialEq + fmt::Debug,
    {
        assert_eq!(serde_json::to_value(value).unwrap(), wire);
        assert_eq!(&serde_json::from_value::<T>(wire).unwrap(), value);
    }

    #[test]
    fn each_type_writes_and_reads_the_kombu_form() {
        let aware: DateTime = "2026-01-02T03:04:05.678901+00:00".parse().unwrap();
        round_trip(
            &aware,
            json!({"__type__": "datetime", "__value__": "2026-01-02T03:04:05.678901+00:00"}),
        );
        let india: DateTime = "2026-01-02T03:04:05+05:30".parse().unwrap();
        round_trip(
            &india,
            json!({"__type__": "datetime", "__value__": "2026-01-02T03:04:05+05:30"}),
        );
        let naive: NaiveDateTime = "2026-01-02T03:04:05".parse().unwrap();
        round_trip(
            &naive,
            json!({"__type__": "datetime", "__value__": "2026-01-02T03:04:05"}),
        );
        round_trip(
            &"2026-01-02".parse::<Date>().unwrap(),
            json!({"__type__": "date", "__value__": "2026-01-02"}),
        );
        round_trip(
            &"03:04:05.000100".parse::<Time>().unwrap(),
            json!({"__type__": "time", "__value__": "03:04:05.000100"}),
        );
        round_trip(
            &"12345678-1234-5678-1234-567812345678"
                .parse::<Uuid>()
                .unwrap(),
            json!({"__type__": "uuid", "__value__": {"hex": "12345678123456781234567812345678"}}),
        );
        round_trip(
            &"1.50".parse::<Decimal>().unwrap(),
            json!({"__type__": "decimal", "__value__": "1.50"}),
        );
        round_trip(
            &Bytes(b"\x00\x01binary".to_vec()),
            json!({"__type__": "bytes", "__value__": "\u{0}\u{1}binary"}),
        );
        round_trip(
            &Bytes(vec![0xff, 0x00, 0x80]),
            json!({"__type__": "base64", "__value__": "/wCA"}),
        );
    }

    #[test]
    fn plain_forms_are_read_too() {
        let stamp: DateTime = serde_json::from_value(json!("2026-01-02T03:04:05Z")).unwrap();
        assert_eq!(stamp.to_string(), "2026-01-02T03:04:05+00:00");
        // A naive value is UTC, as Celery reads a naive eta.
        let stamp: DateTime = serde_json::from_value(
            json!({"__type__": "datetime", "__value__": "2026-01-02T03:04:05"}),
        )
        .unwrap();
        assert_eq!(stamp.to_string(), "2026-01-02T03:04:05+00:00");
        let id: Uuid = serde_json::from_value(json!("12345678123456781234567812345678")).unwrap();
        assert_eq!(id.to_string(), "12345678-1234-5678-1234-567812345678");
        let amount: Decimal = serde_json::from_value(json!(2.5)).unwrap();
        assert_eq!(amount.as_str(), "2.5");
        assert_eq!(amount.to_f64(), Some(2.5));
        let bytes: Bytes = serde_json::from_value(json!([1, 2, 255])).unwrap();
        assert_eq!(bytes.into_inner(), [1, 2, 255]);
        let bytes: Bytes = serde_json::from_value(json!("hé")).unwrap();
        assert_eq!(&bytes[..], "hé".as_bytes());
    }

    #[test]
    fn python_isoformat_details() {
        let nanos = DateTime(
            chrono::DateTime::parse_from_rfc3339("2026-01-02T03:04:05.123456789-00:30").unwrap(),
        );
        assert_eq!(nanos.to_string(), "2026-01-02T03:04:05.123456-00:30");
        let odd_offset = DateTime(
            FixedOffset::east_opt(3600 + 61)
                .unwrap()
                .with_ymd_and_hms(2026, 1, 2, 3, 4, 5)
                .unwrap(),
        );
        assert_eq!(odd_offset.to_string(), "2026-01-02T03:04:05+01:01:01");
        assert_eq!(
            "2026-01-02T03:04:05+01:01:01".parse::<DateTime>().unwrap(),
            odd_offset
        );
        let far = Date(NaiveDate::from_ymd_opt(10_000, 1, 1).unwrap());
        assert!(serde_json::to_value(far)
            .unwrap_err()
            .to_string()
            .contains("out of Python's range"));
    }

    #[test]
    fn wrong_kinds_and_bad_text_are_clear_errors() {
        let err = serde_json::from_value::<Date>(
            json!({"__type__": "datetime", "__value__": "2026-01-02T03:04:05"}),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("expected a date, found a kombu datetime value"),
            "{err}"
        );
        let err = serde_json::from_value::<NaiveDateTime>(json!("2026-01-02T03:04:05+00:00"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid datetime"), "{err}");
        for bad in ["", "1.2.3", "e5", "1e", "--1", "_1", "abc"] {
            assert!(bad.parse::<Decimal>().is_err(), "{bad:?}");
        }
        for good in [
            "1", "-1.50", ".5", "5.", "1e-7", "+1E+7", "Infinity", "-inf", "NaN", "sNaN12",
            "1_000.5",
        ] {
            assert!(good.parse::<Decimal>().is_ok(), "{good:?}");
        }
        let err = serde_json::from_value::<Bytes>(json!({"a": 1}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected bytes"), "{err}");
    }
}
