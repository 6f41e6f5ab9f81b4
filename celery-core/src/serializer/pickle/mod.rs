//! Python's pickle, for plain data only: see [`Pickle`].

mod read;
mod write;

use serde_json::Value;

use super::Serializer;

/// The protocol the codec writes: kombu's `pickle_protocol` default (`PICKLE_PROTOCOL`
/// environment variable, 4).
pub const PICKLE_PROTOCOL: u8 = 4;

/// The highest protocol the codec reads.
const HIGHEST_PROTOCOL: u8 = 5;

/// pickle (`application/x-python-serialize`, `binary`), for plain data only.
///
/// A pickle is a program for a small stack machine, and Python's unpickler imports and calls
/// whatever the program names: reading an untrusted pickle runs arbitrary code. This codec is
/// not that machine. It reads the opcodes that build plain values — None, bool, int, float, str,
/// bytes (and bytearray, read as bytes), list, tuple (read as a list) and dict, with the memo
/// that shares them — in every protocol from 0 to 5, and refuses every other opcode with an
/// error naming it: no global is imported, nothing is called or built from a class.
///
/// The only names it accepts are the three Python's own pickler writes for bytes at protocols
/// 2 and 3 — `_codecs.encode(text, "latin1")`, `bytes()` and `bytearray(data)` — and it
/// evaluates them itself, as data.
///
/// It writes protocol [`PICKLE_PROTOCOL`] (kombu's default `pickle_protocol`), unframed and
/// without memo entries, both of which the protocol makes optional.
pub struct Pickle;

impl Serializer for Pickle {
    fn name(&self) -> &str {
        "pickle"
    }
    fn content_type(&self) -> &str {
        "application/x-python-serialize"
    }
    fn content_encoding(&self) -> &str {
        "binary"
    }
    fn encode(&self, value: &Value) -> Result<Vec<u8>, String> {
        write::dumps(value)
    }
    fn decode(&self, bytes: &[u8]) -> Result<Value, String> {
        read::loads(bytes)
    }
}

/// Opcodes, named as in Python's `pickle` module.
mod op {
    pub const MARK: u8 = b'(';
    pub const STOP: u8 = b'.';
    pub const POP: u8 = b'0';
    pub const POP_MARK: u8 = b'1';
    pub const DUP: u8 = b'2';
    pub const FLOAT: u8 = b'F';
    pub const INT: u8 = b'I';
    pub const BININT: u8 = b'J';
    pub const BININT1: u8 = b'K';
    pub const LONG: u8 = b'L';
    pub const BININT2: u8 = b'M';
    pub const NONE: u8 = b'N';
    pub const PERSID: u8 = b'P';
    pub const BINPERSID: u8 = b'Q';
    pub const REDUCE: u8 = b'R';
    pub const STRING: u8 = b'S';
    pub const BINSTRING: u8 = b'T';
    pub const SHORT_BINSTRING: u8 = b'U';
    pub const UNICODE: u8 = b'V';
    pub const BINUNICODE: u8 = b'X';
    pub const APPEND: u8 = b'a';
    pub const BUILD: u8 = b'b';
    pub const GLOBAL: u8 = b'c';
    pub const DICT: u8 = b'd';
    pub const EMPTY_DICT: u8 = b'}';
    pub const APPENDS: u8 = b'e';
    pub const GET: u8 = b'g';
    pub const BINGET: u8 = b'h';
    pub const INST: u8 = b'i';
    pub const LONG_BINGET: u8 = b'j';
    pub const LIST: u8 = b'l';
    pub const EMPTY_LIST: u8 = b']';
    pub const OBJ: u8 = b'o';
    pub const PUT: u8 = b'p';
    pub const BINPUT: u8 = b'q';
    pub const LONG_BINPUT: u8 = b'r';
    pub const SETITEM: u8 = b's';
    pub const TUPLE: u8 = b't';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const SETITEMS: u8 = b'u';
    pub const BINFLOAT: u8 = b'G';
    // Protocol 2
    pub const PROTO: u8 = 0x80;
    pub const NEWOBJ: u8 = 0x81;
    pub const EXT1: u8 = 0x82;
    pub const EXT2: u8 = 0x83;
    pub const EXT4: u8 = 0x84;
    pub const TUPLE1: u8 = 0x85;
    pub const TUPLE2: u8 = 0x86;
    pub const TUPLE3: u8 = 0x87;
    pub const NEWTRUE: u8 = 0x88;
    pub const NEWFALSE: u8 = 0x89;
    pub const LONG1: u8 = 0x8a;
    pub const LONG4: u8 = 0x8b;
    // Protocol 3
    pub const BINBYTES: u8 = b'B';
    pub const SHORT_BINBYTES: u8 = b'C';
    // Protocol 4
    pub const SHORT_BINUNICODE: u8 = 0x8c;
    pub const BINUNICODE8: u8 = 0x8d;
    pub const BINBYTES8: u8 = 0x8e;
    pub const EMPTY_SET: u8 = 0x8f;
    pub const ADDITEMS: u8 = 0x90;
    pub const FROZENSET: u8 = 0x91;
    pub const NEWOBJ_EX: u8 = 0x92;
    pub const STACK_GLOBAL: u8 = 0x93;
    pub const MEMOIZE: u8 = 0x94;
    pub const FRAME: u8 = 0x95;
    // Protocol 5
    pub const BYTEARRAY8: u8 = 0x96;
    pub const NEXT_BUFFER: u8 = 0x97;
    pub const READONLY_BUFFER: u8 = 0x98;
}

/// Opcodes that would run code or build something other than plain data, with what they do.
pub(super) fn refused(opcode: u8) -> Option<(&'static str, &'static str)> {
    Some(match opcode {
        op::REDUCE => ("REDUCE", "calls an object"),
        op::BUILD => ("BUILD", "sets an object's state"),
        op::INST => ("INST", "instantiates a class"),
        op::OBJ => ("OBJ", "instantiates a class"),
        op::NEWOBJ => ("NEWOBJ", "instantiates a class"),
        op::NEWOBJ_EX => ("NEWOBJ_EX", "instantiates a class"),
        op::PERSID => ("PERSID", "loads a persistent object"),
        op::BINPERSID => ("BINPERSID", "loads a persistent object"),
        op::EXT1 => ("EXT1", "imports an object from the extension registry"),
        op::EXT2 => ("EXT2", "imports an object from the extension registry"),
        op::EXT4 => ("EXT4", "imports an object from the extension registry"),
        op::EMPTY_SET => ("EMPTY_SET", "builds a set, which JSON cannot hold"),
        op::ADDITEMS => ("ADDITEMS", "fills a set, which JSON cannot hold"),
        op::FROZENSET => ("FROZENSET", "builds a frozenset, which JSON cannot hold"),
        op::NEXT_BUFFER => ("NEXT_BUFFER", "reads an out-of-band buffer"),
        op::READONLY_BUFFER => ("READONLY_BUFFER", "reads an out-of-band buffer"),
        _ => return None,
    })
}

pub(super) const PLAIN_DATA: &str =
    "the pickle codec reads plain data only (None, bool, int, float, str, \
                          bytes, list, tuple, dict) and never imports or calls anything";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn loads(bytes: &[u8]) -> Result<Value, String> {
        Pickle.decode(bytes)
    }

    #[test]
    fn writes_what_python_pickle_writes_for_small_values() {
        // pickle.dumps(x, protocol=4) without its FRAME and MEMOIZE opcodes.
        let cases: [(Value, &[u8]); 6] = [
            (json!(null), b"\x80\x04N."),
            (
                json!([1, 300, -1]),
                b"\x80\x04](K\x01M,\x01J\xff\xff\xff\xffe.",
            ),
            (
                json!([2_i64.pow(40)]),
                b"\x80\x04]\x8a\x06\x00\x00\x00\x00\x00\x01a.",
            ),
            (
                json!([-(2_i64.pow(40))]),
                b"\x80\x04]\x8a\x06\x00\x00\x00\x00\x00\xffa.",
            ),
            (
                json!({"a": 1.5}),
                b"\x80\x04}\x8c\x01aG?\xf8\x00\x00\x00\x00\x00\x00s.",
            ),
            (
                json!({"__type__": "bytes", "__value__": "ab"}),
                b"\x80\x04C\x02ab.",
            ),
        ];
        for (value, bytes) in cases {
            assert_eq!(Pickle.encode(&value).unwrap(), bytes, "{value}");
            assert_eq!(loads(bytes).unwrap(), value);
        }
    }

    #[test]
    fn round_trips_long_and_batched_values() {
        let long_text = "é".repeat(200);
        let items: Vec<Value> = (0..2500).map(Value::from).collect();
        let value = json!({
            "text": long_text,
            "items": items,
            "ints": [i64::MIN, u64::MAX, 255, 256, 65535, 65536, -129, 2147483648_i64],
            "bytes": {"__type__": "base64", "__value__": "/wCA"},
        });
        assert_eq!(loads(&Pickle.encode(&value).unwrap()).unwrap(), value);
    }

    #[test]
    fn protocol_0_text_opcodes_are_read() {
        // pickle.dumps([1, "a", 2.5, None, True, (1,), {"k": 2**62}, b"\xff"], protocol=0)
        let bytes = b"(lp0\nI1\naVa\np1\naF2.5\naNaI01\na(I1\ntp2\na(dp3\nVk\np4\n\
                      L4611686018427387904L\nsac_codecs\nencode\np5\n(V\xff\np6\nVlatin1\np7\n\
                      tp8\nRp9\na.";
        assert_eq!(
            loads(bytes).unwrap(),
            json!([1, "a", 2.5, null, true, [1], {"k": 4611686018427387904_u64},
                   {"__type__": "base64", "__value__": "/w=="}])
        );
    }

    #[test]
    fn memo_shares_containers_filled_later() {
        // x = []; pickle.dumps([x, x], protocol=2) with x filled after it was memoized.
        let bytes = b"\x80\x02]q\x00(]q\x01h\x01e.";
        assert_eq!(loads(bytes).unwrap(), json!([[], []]));
        let bytes = b"\x80\x02]q\x00(]q\x01K\x07ah\x01e.";
        assert_eq!(loads(bytes).unwrap(), json!([[7], [7]]));
    }

    /// Shared references cost the bytes they repeat: a 256 KiB string referenced 256 Ki times
    /// (one DUP byte each) was 64 GiB of copies; bytes made by REDUCE from a memoized callable
    /// and argument (5 bytes a copy) were copied while parsing.
    #[test]
    fn shared_references_cannot_expand_past_the_input() {
        let size = 1usize << 18;
        let length = u32::try_from(size).unwrap().to_le_bytes();
        let mut dups = b"\x80\x04(X".to_vec();
        dups.extend_from_slice(&length);
        dups.extend(std::iter::repeat_n(b'x', size));
        dups.extend(std::iter::repeat_n(b'2', size));
        dups.extend_from_slice(b"l.");
        let err = Pickle.decode(&dups).unwrap_err();
        assert!(err.contains("expand it beyond"), "{err}");

        let mut reduces = b"\x80\x02c__builtin__\nbytearray\nq\x000B".to_vec();
        reduces.extend_from_slice(&length);
        reduces.extend(std::iter::repeat_n(0xff, size));
        reduces.extend_from_slice(b"\x85q\x010");
        for _ in 0..40_000 {
            reduces.extend_from_slice(b"h\x00h\x01R0");
        }
        reduces.extend_from_slice(b"N.");
        let err = Pickle.decode(&reduces).unwrap_err();
        assert!(err.contains("expand it beyond"), "{err}");
    }

    #[test]
    fn refuses_code_sets_and_malformed_input() {
        let refusals: [(&[u8], &str); 6] = [
            (
                b"\x80\x02cos\nsystem\nq\x00.",
                "refusing to load the global `os.system` (opcode GLOBAL)",
            ),
            (
                b"\x80\x04\x8c\x02nt\x8c\x06system\x93.",
                "refusing to load the global `nt.system` (opcode STACK_GLOBAL)",
            ),
            (b"\x80\x04\x8f\x94(K\x01\x90.", "refusing opcode EMPTY_SET"),
            (b"\x80\x02N)R.", "refusing opcode REDUCE (calls an object)"),
            (b"\x80\x02}N\x81.", "refusing opcode NEWOBJ"),
            (b"\x80\x05\x97.", "refusing opcode NEXT_BUFFER"),
        ];
        for (bytes, expected) in refusals {
            let err = loads(bytes).unwrap_err();
            assert!(err.contains(expected), "{err}");
            assert!(err.contains("never imports or calls anything"), "{err}");
        }
        for (bytes, expected) in [
            (&b"\x80\x06N."[..], "unsupported pickle protocol 6"),
            (b"\x80\x04X\xff\xff\xff\xffabc.", "truncated"),
            (b"\x80\x04}K\x01a.", "cannot append to a dict"),
            (b"\x80\x04]\x94h\x00a.", "a container holds itself"),
            (b"\x80\x04\x8a\x11\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01.", "does not fit in 64 bits"),
            (b"\x80\x04}K\x01K\x02\x86K\x03s.", "a dict key of type tuple"),
            (b"\x80\x04G\x7f\xf8\x00\x00\x00\x00\x00\x00.", "no JSON form"),
            (b"\x80\x04e.", "no MARK"),
            (b"\x80\x04\xff.", "invalid pickle opcode 0xff"),
        ] {
            let err = loads(bytes).unwrap_err();
            assert!(err.contains(expected), "{expected}: {err}");
        }
    }

    #[test]
    fn shared_references_cannot_expand_without_bound() {
        // Each level is a list holding the previous one twice: 2^40 values from 300 bytes.
        let mut memo = b"\x80\x04K\x00\x94".to_vec();
        for level in 0..40u8 {
            // MARK, BINGET level, BINGET level, LIST, MEMOIZE (as level + 1)
            memo.extend_from_slice(&[b'(', b'h', level, b'h', level, b'l', 0x94]);
        }
        memo.push(b'.');
        let err = loads(&memo).unwrap_err();
        assert!(err.contains("shared references"), "{err}");
    }
}
