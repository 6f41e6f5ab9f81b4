//! kombu's special JSON values: `{"__type__": T, "__value__": V}`.
//!
//! kombu's json writes Python values that JSON has no type for as a two-key object, and its
//! reader turns them back into the Python type. The runtime keeps them as they are in its
//! [`Value`] tree, whatever serializer carried them (see the [module docs](super)):
//!
//! | Python | `__type__` | `__value__` |
//! |---|---|---|
//! | `datetime` | `datetime` | `"2026-01-02T03:04:05.678901+00:00"` (`isoformat()`; naive: no offset) |
//! | `date` | `date` | `"2026-01-02"` |
//! | `time` | `time` | `"03:04:05"` |
//! | `Decimal` | `decimal` | `"1.50"` |
//! | `UUID` | `uuid` | `{"hex": "12345678123456781234567812345678"}` |
//! | `bytes` (valid UTF-8) | `bytes` | the bytes decoded as UTF-8 |
//! | `bytes` (other) | `base64` | standard base64 |
//!
//! The wrapper types of [`crate::types`] write and read these forms; [`unwrap_plain`] turns
//! them into plain values for types that only know strings (`chrono`, `uuid::Uuid`), and
//! [`from_value`] decodes a typed value with that as a fallback.

use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// The key naming the Python type.
pub const TYPE_KEY: &str = "__type__";
/// The key holding the encoded value.
pub const VALUE_KEY: &str = "__value__";

/// A kombu special value's type and encoded value, when `value` is one: an object with exactly
/// the keys `__type__` (a string) and `__value__`, as kombu's `object_hook` requires.
pub fn special(value: &Value) -> Option<(&str, &Value)> {
    let Value::Object(map) = value else {
        return None;
    };
    if map.len() != 2 {
        return None;
    }
    let kind = map.get(TYPE_KEY)?.as_str()?;
    Some((kind, map.get(VALUE_KEY)?))
}

/// Builds a special value.
pub fn wrap(kind: &str, value: Value) -> Value {
    let mut map = Map::with_capacity(2);
    map.insert(TYPE_KEY.to_owned(), Value::String(kind.to_owned()));
    map.insert(VALUE_KEY.to_owned(), value);
    Value::Object(map)
}

/// Python `bytes` as kombu's json writes them: type `bytes` with the text when the bytes are
/// UTF-8, type `base64` otherwise.
pub fn bytes_value(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(text) => wrap("bytes", Value::String(text.to_owned())),
        Err(_) => wrap(
            "base64",
            Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
        ),
    }
}

/// The bytes of a `bytes` or `base64` special value; `None` when `value` is not one.
pub fn bytes_of(value: &Value) -> Option<Result<Vec<u8>, String>> {
    let (kind, inner) = special(value)?;
    let text = inner.as_str();
    match kind {
        "bytes" => Some(
            text.map(|t| t.as_bytes().to_vec())
                .ok_or_else(|| "a kombu `bytes` value must be a string".to_owned()),
        ),
        "base64" => Some(
            text.ok_or_else(|| "a kombu `base64` value must be a string".to_owned())
                .and_then(|t| {
                    base64::engine::general_purpose::STANDARD
                        .decode(t)
                        .map_err(|e| format!("invalid kombu `base64` value: {e}"))
                }),
        ),
        _ => None,
    }
}

/// Whether `value` holds a special value anywhere.
pub fn contains_special(value: &Value) -> bool {
    match value {
        Value::Array(items) => items.iter().any(contains_special),
        Value::Object(map) => special(value).is_some() || map.values().any(contains_special),
        _ => false,
    }
}

/// Replaces every special value by the plain form that serde types without kombu knowledge read:
///
/// - `datetime`, `date`, `time`, `decimal`: the ISO-8601 / decimal string, which `chrono`'s
///   `DateTime<FixedOffset>`/`DateTime<Utc>` (aware values), `NaiveDateTime` (naive values),
///   `NaiveDate`, `NaiveTime` and `String` deserialize from;
/// - `uuid`: the hyphenated string `uuid::Uuid` deserializes from;
/// - `bytes`, `base64`: an array of byte values, which `Vec<u8>` deserializes from.
///
/// Special values of other types, or malformed ones, are left as they are.
pub fn unwrap_plain(value: Value) -> Value {
    match value {
        Value::Array(items) => Value::Array(items.into_iter().map(unwrap_plain).collect()),
        Value::Object(map) => {
            let value = Value::Object(map);
            if let Some(plain) = plain_form(&value) {
                return plain;
            }
            let Value::Object(map) = value else {
                unreachable!("matched as an object above")
            };
            Value::Object(map.into_iter().map(|(k, v)| (k, unwrap_plain(v))).collect())
        }
        scalar => scalar,
    }
}

/// `serde_json::from_value`, falling back to the [`unwrap_plain`] form when the value holds kombu
/// special values and `T` cannot read them as they are — so that a task parameter typed
/// `chrono::DateTime<Utc>`, `chrono::NaiveDate` or `uuid::Uuid` accepts what a Python client
/// sends. Types that know the kombu form ([`crate::types`], `serde_json::Value`) get it unchanged.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, serde_json::Error> {
    match T::deserialize(&value) {
        Ok(decoded) => Ok(decoded),
        Err(error) if !contains_special(&value) => Err(error),
        Err(_) => serde_json::from_value(unwrap_plain(value)),
    }
}

fn plain_form(value: &Value) -> Option<Value> {
    if let Some(bytes) = bytes_of(value) {
        return bytes
            .ok()
            .map(|bytes| Value::Array(bytes.into_iter().map(Value::from).collect()));
    }
    let (kind, inner) = special(value)?;
    match kind {
        "datetime" | "date" | "time" | "decimal" => inner.as_str().map(Value::from),
        "uuid" => uuid_of(inner).map(|id| Value::String(id.hyphenated().to_string())),
        _ => None,
    }
}

/// The UUID of a `uuid` special value's `__value__` (`{"hex": "…"}`, kombu's form), also taking a
/// plain UUID string.
pub fn uuid_of(inner: &Value) -> Option<uuid::Uuid> {
    let text = match inner {
        Value::Object(map) if map.len() == 1 => map.get("hex")?.as_str()?,
        Value::String(text) => text,
        _ => return None,
    };
    uuid::Uuid::parse_str(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn special_needs_exactly_the_two_keys() {
        let dt = json!({"__type__": "date", "__value__": "2026-01-02"});
        assert_eq!(special(&dt), Some(("date", &json!("2026-01-02"))));
        assert_eq!(
            special(&json!({"__type__": "date", "__value__": "x", "more": 1})),
            None
        );
        assert_eq!(special(&json!({"__type__": 3, "__value__": "x"})), None);
        assert_eq!(special(&json!("2026-01-02")), None);
    }

    #[test]
    fn bytes_are_text_when_utf8_and_base64_otherwise() {
        assert_eq!(
            bytes_value(b"\x00\x01binary"),
            json!({"__type__": "bytes", "__value__": "\u{0}\u{1}binary"})
        );
        let raw = [0xff, 0x00, 0x80];
        let value = bytes_value(&raw);
        assert_eq!(value, json!({"__type__": "base64", "__value__": "/wCA"}));
        assert_eq!(bytes_of(&value).unwrap().unwrap(), raw);
        assert!(bytes_of(&json!({"__type__": "base64", "__value__": "!!"}))
            .unwrap()
            .is_err());
        assert!(bytes_of(&json!({"__type__": "date", "__value__": "x"})).is_none());
    }

    #[test]
    fn unwrap_plain_gives_what_plain_serde_types_read() {
        let value = json!([
            {"__type__": "datetime", "__value__": "2026-01-02T03:04:05.678901+00:00"},
            {"__type__": "uuid", "__value__": {"hex": "12345678123456781234567812345678"}},
            {"k": {"__type__": "bytes", "__value__": "ab"}},
            {"__type__": "decimal", "__value__": "1.50"},
            {"__type__": "custom", "__value__": 1},
            7
        ]);
        assert!(contains_special(&value));
        assert_eq!(
            unwrap_plain(value),
            json!([
                "2026-01-02T03:04:05.678901+00:00",
                "12345678-1234-5678-1234-567812345678",
                {"k": [97, 98]},
                "1.50",
                {"__type__": "custom", "__value__": 1},
                7
            ])
        );
        assert!(!contains_special(&json!([1, {"a": "b"}])));
    }
}
