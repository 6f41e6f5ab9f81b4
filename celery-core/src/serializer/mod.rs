//! Serializers: how a body becomes bytes (Celery's `task_serializer`, `result_serializer`,
//! `accept_content`).
//!
//! | name | `content_type` | `content_encoding` |
//! |---|---|---|
//! | `json` | `application/json` | `utf-8` |
//! | `msgpack` | `application/x-msgpack` | `binary` |
//! | `yaml` | `application/x-yaml` | `utf-8` |
//! | `pickle` | `application/x-python-serialize` | `binary` (plain data only, see [`Pickle`]) |
//!
//! # One value model
//!
//! Every serializer turns a [`serde_json::Value`] tree into bytes and back, so args, kwargs and
//! results look the same to the runtime whichever serializer carried them. Python values that
//! JSON has no type for are held the way kombu's json writes them, as
//! `{"__type__": T, "__value__": V}` ([`kombu`]), and each serializer maps them to its native
//! type where it has one:
//!
//! | value | json | msgpack | yaml | pickle |
//! |---|---|---|---|---|
//! | bytes (`bytes`/`base64`) | as is | bin | `!!binary` | bytes |
//! | `datetime`, `date` | as is | as is (a map) | `!!timestamp` | as is (a dict) |
//! | `time`, `decimal`, `uuid` | as is | as is (a map) | as is (a mapping) | as is (a dict) |
//!
//! Decoding maps the native types back, so the same Python bytes or datetime reach a task as the
//! same [`Value`] whatever the serializer. msgpack and pickle carry no datetime, Decimal or UUID
//! for kombu either (Python's msgpack cannot write them, and the pickle codec refuses the classes
//! they need); a Python peer that wants them as real Python objects uses json or, for datetimes
//! and dates, yaml. Non-string map keys become strings as Python's `json.dumps` writes them.
//!
//! [`crate::types`] has task argument types that write and read these forms.

mod finite;
mod json;
pub mod kombu;
mod msgpack;
mod pickle;
mod yaml;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde_json::Value;

use crate::error::Error;
use crate::protocol::Body;

/// How deep a body may nest: serde_json's own limit, which every built-in reader keeps, so that
/// a hostile body is refused instead of overflowing the stack of the worker thread reading it
/// (rmp-serde's own limit, 1,024, does in a debug build, and the pickle reader did at 512).
pub(crate) const MAX_NESTING: usize = 128;

pub use finite::to_value;
pub use json::Json;
pub use msgpack::Msgpack;
pub use pickle::{Pickle, PICKLE_PROTOCOL};
pub use yaml::Yaml;

/// The name of a user's serializer type, so that `#[task(serializer = MyCodec)]` can use it:
/// the macro reads the name at compile time, and the app must have it registered at run time.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a serializer type",
    label = "not a serializer",
    note = "name a built-in serializer as a string (\"json\", \"msgpack\", \"yaml\", \"pickle\"), or implement `celery::serializer::NamedSerializer` for your `Serializer` type"
)]
pub trait NamedSerializer: Serializer {
    /// The name it is registered under; the same as [`Serializer::name`].
    const NAME: &'static str;
}

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
    /// Reads a task body `[args, kwargs, embed]` straight into its parts, a shortcut the worker
    /// takes for every message. `None` when this serializer has none, or when the bytes are not
    /// a well-formed body: the worker then reads them through [`decode`](Self::decode) and
    /// [`Body::from_value`], which say what is wrong. An override must give what that pair gives.
    fn decode_body(&self, bytes: &[u8]) -> Option<Body> {
        let _ = bytes;
        None
    }
    /// Writes a task body straight from its parts, a shortcut the producer takes for every
    /// message (a [`Value`] of the body would copy every argument first). `None` when this
    /// serializer has none: the producer then writes the body's [`Value`] with
    /// [`encode`](Self::encode). An override must give the bytes that pair gives.
    fn encode_body(&self, body: &Body) -> Option<Result<Vec<u8>, String>> {
        let _ = body;
        None
    }
}

/// The serializers an app knows, by name and by content type.
#[derive(Clone)]
pub struct SerializerRegistry {
    known: Arc<RwLock<Known>>,
}

#[derive(Default)]
struct Known {
    by_name: HashMap<String, Arc<dyn Serializer>>,
    /// The serializer registered last for each content type: a message names its content type,
    /// and kombu decodes it with the decoder registered last for that type.
    by_content_type: HashMap<String, Arc<dyn Serializer>>,
}

/// The built-in serializers: json, msgpack, yaml and pickle.
impl Default for SerializerRegistry {
    fn default() -> Self {
        let registry = SerializerRegistry {
            known: Arc::default(),
        };
        registry.register(Json);
        registry.register(Msgpack);
        registry.register(Yaml);
        registry.register(Pickle);
        registry
    }
}

impl SerializerRegistry {
    /// Adds (or replaces) a serializer; it is then usable by name in options and settings.
    pub fn register(&self, serializer: impl Serializer) {
        let serializer: Arc<dyn Serializer> = Arc::new(serializer);
        let mut known = self.known.write().expect("serializer registry poisoned");
        known
            .by_content_type
            .insert(serializer.content_type().to_owned(), serializer.clone());
        known
            .by_name
            .insert(serializer.name().to_owned(), serializer);
    }

    /// Whether `accept` (serializer names or content types, as `accept_content` lists them)
    /// lets in what `decoder` (found by the message's content type) reads: kombu turns each
    /// name into its content type, so another serializer's name for the same type counts too.
    pub fn accepts(&self, accept: &[String], decoder: &dyn Serializer) -> bool {
        let content_type = decoder.content_type();
        accept.iter().any(|allowed| {
            allowed == decoder.name()
                || allowed == content_type
                || self
                    .get(allowed)
                    .is_ok_and(|named| named.content_type() == content_type)
        })
    }

    /// Looks a serializer up by its short name or its content type (the one registered last
    /// for that type).
    pub fn get(&self, name: &str) -> Result<Arc<dyn Serializer>, Error> {
        let known = self.known.read().expect("serializer registry poisoned");
        known
            .by_name
            .get(name)
            .or_else(|| known.by_content_type.get(name))
            .cloned()
            .ok_or_else(|| {
                let mut known: Vec<_> = known.by_name.keys().cloned().collect();
                known.sort();
                Error::UnknownCodec {
                    kind: "serializer",
                    name: name.to_owned(),
                    known: known.join(", "),
                }
            })
    }
}

/// A float as Python's `repr` writes it (`1.0`, `1e+16`, `1.5e-05`).
pub(crate) fn python_float_repr(value: f64) -> String {
    if value.is_nan() {
        return "nan".to_owned();
    }
    if value.is_infinite() {
        return if value > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    let magnitude = value.abs();
    if magnitude == 0.0 || (1e-4..1e16).contains(&magnitude) {
        let text = value.to_string();
        if text.contains('.') {
            text
        } else {
            text + ".0"
        }
    } else {
        let text = format!("{value:e}");
        let (mantissa, exponent) = text.split_once('e').expect("`{:e}` writes an exponent");
        let exponent: i32 = exponent.parse().expect("`{:e}` writes an integer exponent");
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exponent.abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_finds_by_name_or_content_type_and_names_the_known_ones() {
        let registry = SerializerRegistry::default();
        for (name, content_type) in [
            ("json", "application/json"),
            ("msgpack", "application/x-msgpack"),
            ("yaml", "application/x-yaml"),
            ("pickle", "application/x-python-serialize"),
        ] {
            assert_eq!(registry.get(name).unwrap().content_type(), content_type);
            assert_eq!(registry.get(content_type).unwrap().name(), name);
        }
        let err = registry.get("toml").err().unwrap().to_string();
        assert!(
            err.contains("unknown serializer \"toml\" (known: json, msgpack, pickle, yaml)"),
            "{err}"
        );
    }

    #[test]
    fn a_content_type_finds_the_serializer_registered_last_for_it() {
        struct FastJson;
        impl Serializer for FastJson {
            fn name(&self) -> &str {
                "fast-json"
            }
            fn content_type(&self) -> &str {
                "application/json"
            }
            fn content_encoding(&self) -> &str {
                "utf-8"
            }
            fn encode(&self, value: &Value) -> Result<Vec<u8>, String> {
                Json.encode(value)
            }
            fn decode(&self, bytes: &[u8]) -> Result<Value, String> {
                Json.decode(bytes)
            }
        }
        let registry = SerializerRegistry::default();
        registry.register(FastJson);
        // Every time, not by the luck of a hash map's order.
        for _ in 0..20 {
            assert_eq!(
                registry.get("application/json").unwrap().name(),
                "fast-json"
            );
        }
        assert_eq!(registry.get("json").unwrap().name(), "json");
        // `accept_content` by name still lets the content type in, whichever decodes it.
        let decoder = registry.get("application/json").unwrap();
        assert!(registry.accepts(&["json".to_owned()], decoder.as_ref()));
        assert!(registry.accepts(&["application/json".to_owned()], decoder.as_ref()));
        assert!(!registry.accepts(&["json".to_owned()], &Yaml));
    }

    #[test]
    fn floats_are_written_like_python_repr() {
        for (value, text) in [
            (1.0, "1.0"),
            (-0.0, "-0.0"),
            (1.5, "1.5"),
            (0.1, "0.1"),
            (1e-4, "0.0001"),
            (1.5e-5, "1.5e-05"),
            (1e16, "1e+16"),
            (9999999999999998.0, "9999999999999998.0"),
            (-2.5e300, "-2.5e+300"),
            (f64::INFINITY, "inf"),
        ] {
            assert_eq!(python_float_repr(value), text);
        }
    }
}
