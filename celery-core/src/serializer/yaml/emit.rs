//! Writing: one line of flow YAML, ASCII only, that PyYAML's `safe_load` reads back.

use base64::Engine as _;
use serde_json::Value;

use super::resolve::parse_timestamp;
use crate::serializer::{kombu, python_float_repr};

pub(super) fn write_value(value: &Value, out: &mut String) -> Result<(), String> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(v), _, _) => out.push_str(&v.to_string()),
            (_, Some(v), _) => out.push_str(&v.to_string()),
            (_, _, Some(v)) => out.push_str(&yaml_float(v)),
            _ => unreachable!("a JSON number is an integer or a float"),
        },
        Value::String(text) => write_quoted(text, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(item, out)?;
            }
            out.push(']');
        }
        Value::Object(map) => {
            if let Some(bytes) = kombu::bytes_of(value) {
                out.push_str("!!binary \"");
                out.push_str(&base64::engine::general_purpose::STANDARD.encode(bytes?));
                out.push('"');
                return Ok(());
            }
            if let Some(text) = timestamp_text(value) {
                out.push_str("!!timestamp ");
                write_quoted(text, out);
                return Ok(());
            }
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_quoted(key, out);
                out.push_str(": ");
                write_value(item, out)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

/// The text of a kombu `datetime` or `date` value that PyYAML's `!!timestamp` reads as the same
/// Python value.
fn timestamp_text(value: &Value) -> Option<&str> {
    let (kind, inner) = kombu::special(value)?;
    let text = inner.as_str()?;
    let stamp = parse_timestamp(text)?;
    match (kind, stamp.time) {
        ("date", None) | ("datetime", Some(_)) => Some(text),
        _ => None,
    }
}

/// A float as PyYAML's representer writes it: `repr`, lowercase, with a `.0` before a bare
/// exponent (YAML 1.1 floats need a dot).
fn yaml_float(value: f64) -> String {
    let text = python_float_repr(value).to_ascii_lowercase();
    if !text.contains('.') && text.contains('e') {
        text.replacen('e', ".0e", 1)
    } else {
        text
    }
}

/// A double-quoted scalar, ASCII only.
fn write_quoted(text: &str, out: &mut String) {
    out.push('"');
    for ch in text.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            ' '..='~' => out.push(ch),
            c if u32::from(c) <= 0xff => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c if u32::from(c) <= 0xffff => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push_str(&format!("\\U{:08x}", u32::from(c))),
        }
    }
    out.push('"');
}
