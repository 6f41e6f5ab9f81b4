//! kombu's json: `application/json`, `utf-8`.

use serde::Serialize;
use serde_json::Value;

use super::Serializer;
use crate::protocol::Body;

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
    /// kombu's json maps no types on reading, so a body's parts can be read as they are; this
    /// skips building (and hashing) a map for the embed on every message.
    fn decode_body(&self, bytes: &[u8]) -> Option<Body> {
        serde_json::from_slice(bytes).ok()
    }
    fn encode_body(&self, body: &Body) -> Option<Result<Vec<u8>, String>> {
        Some(Json::to_vec(body).map_err(|e| e.to_string()))
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

    /// Python's `repr` of a float (`1e+16`, `1e-05`), where serde_json writes `1e16`, `1e-5`.
    /// (NaN and infinities never get here: they are refused before encoding.)
    fn write_f64<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        value: f64,
    ) -> std::io::Result<()> {
        writer.write_all(super::python_float_repr(value).as_bytes())
    }

    fn write_f32<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        value: f32,
    ) -> std::io::Result<()> {
        self.write_f64(writer, f64::from(value))
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_matches_python_json_dumps() {
        let value = json!([[2, 2], {"a": "héllo ☃ 😀", "b": "\u{0}\u{1f}"}, {"callbacks": null}]);
        let text = String::from_utf8(Json.encode(&value).unwrap()).unwrap();
        assert_eq!(
            text,
            r#"[[2, 2], {"a": "h\u00e9llo \u2603 \ud83d\ude00", "b": "\u0000\u001f"}, {"callbacks": null}]"#
        );
        assert_eq!(Json.decode(text.as_bytes()).unwrap(), value);
    }

    #[test]
    fn floats_are_written_as_python_writes_them() {
        // Python's `json.dumps([1e16, 1e-5, 0.1, 1.0, 123456789.0, 1.5e300, -2.5e-7, 1e22])`.
        let value = json!([1e16, 1e-5, 0.1, 1.0, 123456789.0, 1.5e300, -2.5e-7, 1e22]);
        let text = String::from_utf8(Json.encode(&value).unwrap()).unwrap();
        assert_eq!(
            text,
            "[1e+16, 1e-05, 0.1, 1.0, 123456789.0, 1.5e+300, -2.5e-07, 1e+22]"
        );
        assert_eq!(Json.decode(text.as_bytes()).unwrap(), value);
    }

    #[test]
    fn a_body_written_directly_is_the_body_written_through_a_value() {
        for text in [
            r#"[[2, 2.5, "h\u00e9llo \ud83d\ude00", [1e+22, null]], {"z": 1, "a": {"y": true, "b": []}}, null]"#,
            r#"[[], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]"#,
            r#"[[], {}, {"callbacks": [{"task": "t", "args": [1], "kwargs": {"k": "v"}, "options": {"queue": "q", "link_error": [{"task": "e", "args": [], "kwargs": {}, "options": {}, "subtask_type": null, "immutable": true}], "custom": [1, 2]}, "subtask_type": null, "immutable": false}], "chain": [{"task": "c", "args": [], "kwargs": {}, "options": {"task_id": "x"}, "subtask_type": null, "immutable": false}]}]"#,
        ] {
            let body = Json.decode_body(text.as_bytes()).expect(text);
            let through_value = Json.encode(&serde_json::to_value(&body).unwrap()).unwrap();
            let direct = Json.encode_body(&body).unwrap().unwrap();
            assert_eq!(
                String::from_utf8(direct).unwrap(),
                String::from_utf8(through_value).unwrap(),
                "{text}"
            );
        }
    }

    #[test]
    fn floats_read_back_bit_for_bit() {
        // Python writes the shortest text that reads back as the same float; serde_json's
        // default parser can be one unit off in the last place (this value is one of those).
        let value = 1.459121607437238e-232_f64;
        let text = Json.encode(&json!(value)).unwrap();
        assert_eq!(text, b"1.459121607437238e-232");
        assert_eq!(Json.decode(&text).unwrap().as_f64(), Some(value));
        let body = Json.decode_body(b"[[1.459121607437238e-232], {}]").unwrap();
        assert_eq!(body.args[0].as_f64(), Some(value));
    }
}
