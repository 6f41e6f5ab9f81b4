//! Writing: protocol 4 opcodes, as Python's pickler chooses them, without frames or memo.

use serde_json::Value;

use super::{op, PICKLE_PROTOCOL};
use crate::serializer::kombu;

/// Encodes a value tree; kombu bytes values become bytes.
pub(super) fn dumps(value: &Value) -> Result<Vec<u8>, String> {
    let mut out = vec![op::PROTO, PICKLE_PROTOCOL];
    write_value(value, &mut out)?;
    out.push(op::STOP);
    Ok(out)
}

/// How many items Python's pickler puts in one APPENDS or SETITEMS.
const BATCH: usize = 1000;

fn write_value(value: &Value, out: &mut Vec<u8>) -> Result<(), String> {
    match value {
        Value::Null => out.push(op::NONE),
        Value::Bool(true) => out.push(op::NEWTRUE),
        Value::Bool(false) => out.push(op::NEWFALSE),
        Value::Number(n) => {
            if let Some(v) = n.as_i64() {
                write_int(i128::from(v), out);
            } else if let Some(v) = n.as_u64() {
                write_int(i128::from(v), out);
            } else {
                let v = n.as_f64().expect("a JSON number is an integer or a float");
                out.push(op::BINFLOAT);
                out.extend_from_slice(&v.to_be_bytes());
            }
        }
        Value::String(text) => write_sized(
            text.as_bytes(),
            [op::SHORT_BINUNICODE, op::BINUNICODE, op::BINUNICODE8],
            out,
        ),
        Value::Array(items) => {
            out.push(op::EMPTY_LIST);
            for batch in items.chunks(BATCH) {
                if let [item] = batch {
                    write_value(item, out)?;
                    out.push(op::APPEND);
                } else {
                    out.push(op::MARK);
                    for item in batch {
                        write_value(item, out)?;
                    }
                    out.push(op::APPENDS);
                }
            }
        }
        Value::Object(map) => {
            if let Some(bytes) = kombu::bytes_of(value) {
                write_sized(
                    &bytes?,
                    [op::SHORT_BINBYTES, op::BINBYTES, op::BINBYTES8],
                    out,
                );
                return Ok(());
            }
            out.push(op::EMPTY_DICT);
            let entries: Vec<_> = map.iter().collect();
            for batch in entries.chunks(BATCH) {
                if let [(key, item)] = batch {
                    write_value(&Value::String((*key).clone()), out)?;
                    write_value(item, out)?;
                    out.push(op::SETITEM);
                } else {
                    out.push(op::MARK);
                    for (key, item) in batch {
                        write_value(&Value::String((*key).clone()), out)?;
                        write_value(item, out)?;
                    }
                    out.push(op::SETITEMS);
                }
            }
        }
    }
    Ok(())
}

/// An integer in the smallest form Python's pickler uses for it.
fn write_int(v: i128, out: &mut Vec<u8>) {
    if let Ok(v) = u8::try_from(v) {
        out.extend_from_slice(&[op::BININT1, v]);
    } else if let Ok(v) = u16::try_from(v) {
        out.push(op::BININT2);
        out.extend_from_slice(&v.to_le_bytes());
    } else if let Ok(v) = i32::try_from(v) {
        out.push(op::BININT);
        out.extend_from_slice(&v.to_le_bytes());
    } else {
        let bytes = v.to_le_bytes();
        // The shortest two's complement: drop high bytes that only repeat the sign.
        let mut n = bytes.len();
        while n > 1 {
            let (last, below) = (bytes[n - 1], bytes[n - 2]);
            let redundant = (last == 0 && below & 0x80 == 0) || (last == 0xff && below & 0x80 != 0);
            if !redundant {
                break;
            }
            n -= 1;
        }
        out.extend_from_slice(&[op::LONG1, n as u8]);
        out.extend_from_slice(&bytes[..n]);
    }
}

/// A str or bytes with the opcode for its size: 1-byte, 4-byte or 8-byte length.
fn write_sized(bytes: &[u8], [short, long, huge]: [u8; 3], out: &mut Vec<u8>) {
    if let Ok(n) = u8::try_from(bytes.len()) {
        out.extend_from_slice(&[short, n]);
    } else if let Ok(n) = u32::try_from(bytes.len()) {
        out.push(long);
        out.extend_from_slice(&n.to_le_bytes());
    } else {
        out.push(huge);
        out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    }
    out.extend_from_slice(bytes);
}
