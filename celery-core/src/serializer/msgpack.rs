//! msgpack as kombu writes it: `packb(use_bin_type=True)`, `unpackb(raw=False)`.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Error as _, Serialize};
use serde_json::{Map, Value};

use super::{kombu, python_float_repr, Serializer};

/// msgpack (`application/x-msgpack`, `binary`): str as str, bytes as bin.
///
/// A bin reads as kombu's bytes value and a kombu bytes value is written as bin; map keys that
/// are not strings become strings as `json.dumps` makes them (`1` → `"1"`, `None` → `"null"`);
/// extension types (msgpack's timestamp included) are refused.
pub struct Msgpack;

impl Serializer for Msgpack {
    fn name(&self) -> &str {
        "msgpack"
    }
    fn content_type(&self) -> &str {
        "application/x-msgpack"
    }
    fn content_encoding(&self) -> &str {
        "binary"
    }
    fn encode(&self, value: &Value) -> Result<Vec<u8>, String> {
        rmp_serde::to_vec(&NativeBytes(value)).map_err(|e| e.to_string())
    }
    fn decode(&self, bytes: &[u8]) -> Result<Value, String> {
        let mut rest = bytes;
        let mut deserializer = rmp_serde::Deserializer::new(&mut rest);
        deserializer.set_max_depth(super::MAX_NESTING);
        let KombuValue(value) =
            KombuValue::deserialize(&mut deserializer).map_err(|e| e.to_string())?;
        if !rest.is_empty() {
            return Err(format!(
                "{} bytes of extra data after the msgpack value",
                rest.len()
            ));
        }
        Ok(value)
    }
}

/// A value tree whose kombu bytes values serialize as native bytes.
struct NativeBytes<'a>(&'a Value);

impl Serialize for NativeBytes<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Array(items) => serializer.collect_seq(items.iter().map(NativeBytes)),
            Value::Object(map) => match kombu::bytes_of(self.0) {
                Some(Ok(bytes)) => serializer.serialize_bytes(&bytes),
                Some(Err(reason)) => Err(S::Error::custom(reason)),
                None => serializer.collect_map(map.iter().map(|(k, v)| (k, NativeBytes(v)))),
            },
            scalar => scalar.serialize(serializer),
        }
    }
}

/// A value tree read from a self-describing format, bytes becoming kombu bytes values.
struct KombuValue(Value);

/// Reserves no more than this many entries up front, whatever length the input claims.
const MAX_PREALLOCATED: usize = 4096;

impl<'de> Deserialize<'de> for KombuValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(KombuValueVisitor)
            .map(KombuValue)
    }
}

struct KombuValueVisitor;

impl<'de> Visitor<'de> for KombuValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("nil, a bool, a number, a string, bin, an array or a map")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom(format!("the float {v} has no JSON form")))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Value, E> {
        Ok(kombu::bytes_value(v))
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, _: D) -> Result<Value, D::Error> {
        Err(de::Error::custom(
            "msgpack extension types (the timestamp type included) are not supported",
        ))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX_PREALLOCATED));
        while let Some(KombuValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::with_capacity(access.size_hint().unwrap_or(0).min(MAX_PREALLOCATED));
        while let Some((JsonKey(key), KombuValue(value))) = access.next_entry()? {
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}

/// A map key as `json.dumps` writes it.
struct JsonKey(String);

impl<'de> Deserialize<'de> for JsonKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonKeyVisitor).map(JsonKey)
    }
}

struct JsonKeyVisitor;

impl<'de> Visitor<'de> for JsonKeyVisitor {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map key that JSON can hold: a string, a number, a bool or nil")
    }
    fn visit_unit<E>(self) -> Result<String, E> {
        Ok("null".to_owned())
    }
    fn visit_bool<E>(self, v: bool) -> Result<String, E> {
        Ok(if v { "true" } else { "false" }.to_owned())
    }
    fn visit_i64<E>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_u64<E>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_f64<E>(self, v: f64) -> Result<String, E> {
        Ok(python_float_repr(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }
    fn visit_string<E>(self, v: String) -> Result<String, E> {
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_and_writes_kombu_bytes_as_bin() {
        let value = json!({"x": [1, -2, 2.5, "s", null, true, u64::MAX],
                           "b": {"__type__": "bytes", "__value__": "ab"}});
        let packed = Msgpack.encode(&value).unwrap();
        // The bytes value is `bin 8` of length 2.
        assert!(packed.windows(4).any(|w| w == [0xc4, 2, b'a', b'b']));
        assert_eq!(Msgpack.decode(&packed).unwrap(), value);
    }

    #[test]
    fn reads_what_python_msgpack_writes() {
        // msgpack.packb({1: b"\xff", None: [True, 1.5], "k": "\u00e9"}, use_bin_type=True)
        let packed =
            b"\x83\x01\xc4\x01\xff\xc0\x92\xc3\xcb?\xf8\x00\x00\x00\x00\x00\x00\xa1k\xa2\xc3\xa9";
        assert_eq!(
            Msgpack.decode(packed).unwrap(),
            json!({"1": {"__type__": "base64", "__value__": "/w=="},
                   "null": [true, 1.5], "k": "é"})
        );
    }

    #[test]
    fn refuses_extensions_trailing_data_and_lying_lengths() {
        // msgpack.packb(msgpack.Timestamp(1)): ext type -1.
        let timestamp = b"\xd6\xff\x00\x00\x00\x01";
        let err = Msgpack.decode(timestamp).unwrap_err();
        assert!(err.contains("extension types"), "{err}");
        assert!(Msgpack
            .decode(b"\x01\x02")
            .unwrap_err()
            .contains("extra data"));
        // An array claiming 4 billion items, then nothing.
        assert!(Msgpack.decode(b"\xdd\xff\xff\xff\xff").is_err());
        assert!(Msgpack.decode(b"\xc6\xff\xff\xff\xff").is_err());
    }
}
