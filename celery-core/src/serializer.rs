//! Serializers: how a body becomes bytes (Celery's `task_serializer`, `result_serializer`,
//! `accept_content`).
//!
//! Every serializer turns a [`serde_json::Value`] tree into bytes and back, so args, kwargs and
//! results look the same to the runtime whichever serializer carried them.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::Serialize;
use serde_json::Value;

use crate::error::Error;

/// A serializer that can be registered by name and chosen per task or per call.
pub trait Serializer: Send + Sync + 'static {
    /// The short name used in settings and options (`"json"`).
    fn name(&self) -> &str;
    /// The MIME type written in `content_type`.
    fn content_type(&self) -> &str;
    /// The `content_encoding` written beside it (`"utf-8"` or `"binary"`).
    fn content_encoding(&self) -> &str;
    fn encode(&self, value: &Value) -> Result<Vec<u8>, String>;
    fn decode(&self, bytes: &[u8]) -> Result<Value, String>;
}

/// kombu's json: Python's `json.dumps` separators (`", "`, `": "`) and ASCII-only output, so
/// that the bytes match what a Python client writes.
pub struct Json;

impl Json {
    /// Encodes any serde value directly, without building a [`Value`] tree first.
    pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
        let mut out = Vec::with_capacity(128);
        let mut serializer = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
        value.serialize(&mut serializer)?;
        Ok(out)
    }
}

impl Serializer for Json {
    fn name(&self) -> &str {
        "json"
    }
    fn content_type(&self) -> &str {
        "application/json"
    }
    fn content_encoding(&self) -> &str {
        "utf-8"
    }
    fn encode(&self, value: &Value) -> Result<Vec<u8>, String> {
        Json::to_vec(value).map_err(|e| e.to_string())
    }
    fn decode(&self, bytes: &[u8]) -> Result<Value, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }
}

/// msgpack as kombu writes it (`use_bin_type`: str as str, bytes as bin).
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
        rmp_serde::to_vec(value).map_err(|e| e.to_string())
    }
    fn decode(&self, bytes: &[u8]) -> Result<Value, String> {
        rmp_serde::from_slice(bytes).map_err(|e| e.to_string())
    }
}

/// A `serde_json` formatter producing Python's default `json.dumps` layout.
struct PythonFormatter;

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        writer.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        if fragment.is_ascii() {
            return writer.write_all(fragment.as_bytes());
        }
        let mut units = [0u16; 2];
        for ch in fragment.chars() {
            if ch.is_ascii() {
                writer.write_all(&[ch as u8])?;
            } else {
                for unit in ch.encode_utf16(&mut units) {
                    write!(writer, "\\u{unit:04x}")?;
                }
            }
        }
        Ok(())
    }
}

/// The serializers an app knows, by name and by content type.
#[derive(Clone)]
pub struct SerializerRegistry {
    by_name: Arc<RwLock<HashMap<String, Arc<dyn Serializer>>>>,
}

impl Default for SerializerRegistry {
    fn default() -> Self {
        let registry = SerializerRegistry {
            by_name: Arc::default(),
        };
        registry.register(Json);
        registry.register(Msgpack);
        registry
    }
}

impl SerializerRegistry {
    /// Adds (or replaces) a serializer; it is then usable by name in options and settings.
    pub fn register(&self, serializer: impl Serializer) {
        let serializer: Arc<dyn Serializer> = Arc::new(serializer);
        self.by_name
            .write()
            .expect("serializer registry poisoned")
            .insert(serializer.name().to_owned(), serializer);
    }

    /// Looks a serializer up by its short name or its content type.
    pub fn get(&self, name: &str) -> Result<Arc<dyn Serializer>, Error> {
        let by_name = self.by_name.read().expect("serializer registry poisoned");
        by_name
            .get(name)
            .or_else(|| by_name.values().find(|s| s.content_type() == name))
            .cloned()
            .ok_or_else(|| {
                let mut known: Vec<_> = by_name.keys().cloned().collect();
                known.sort();
                Error::UnknownCodec {
                    kind: "serializer",
                    name: name.to_owned(),
                    known: known.join(", "),
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_matches_python_json_dumps() {
        let value = json!([[2, 2], {"a": "héllo ☃ 😀"}, {"callbacks": null}]);
        let text = String::from_utf8(Json.encode(&value).unwrap()).unwrap();
        assert_eq!(
            text,
            r#"[[2, 2], {"a": "h\u00e9llo \u2603 \ud83d\ude00"}, {"callbacks": null}]"#
        );
        assert_eq!(Json.decode(text.as_bytes()).unwrap(), value);
    }

    #[test]
    fn registry_finds_by_name_or_content_type_and_names_the_known_ones() {
        let registry = SerializerRegistry::default();
        assert_eq!(
            registry.get("application/x-msgpack").unwrap().name(),
            "msgpack"
        );
        let err = registry.get("toml").err().unwrap().to_string();
        assert!(
            err.contains("unknown serializer \"toml\" (known: json, msgpack)"),
            "{err}"
        );
    }

    #[test]
    fn msgpack_round_trips() {
        let value = json!({"x": [1, 2.5, "s", null, true]});
        assert_eq!(
            Msgpack.decode(&Msgpack.encode(&value).unwrap()).unwrap(),
            value
        );
    }
}
