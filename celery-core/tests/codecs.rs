//! Serializers and compression schemes: round trips over every value kind, byte strings Python
//! wrote, refusals, compression bombs, names, custom codecs through the Calling API, and — when a
//! Python with kombu is at hand (`CELERY_PYTHON`, or the workspace's `.venv` that
//! `tests/python/ensure_venv.sh` creates) — kombu reading what Rust writes and the other way
//! round.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use base64::Engine as _;
use celery_core::compression::{Compression, CompressionRegistry, DecompressError};
use celery_core::serializer::{kombu, Json, Pickle, Serializer, SerializerRegistry};
use celery_core::signature::RawSignature;
use celery_core::types::{Bytes, Date, DateTime, Decimal, NaiveDateTime, Time, Uuid};
use celery_core::Celery;
use serde_json::{json, Value};
use services::skip;

#[path = "../../tests/common/services.rs"]
mod services;

const SERIALIZERS: [&str; 4] = ["json", "msgpack", "yaml", "pickle"];
const COMPRESSIONS: [&str; 5] = ["zlib", "bzip2", "lzma", "brotli", "zstd"];

/// One value of every kind the runtime carries, kombu's special values included.
fn values() -> Vec<Value> {
    vec![
        json!(null),
        json!(true),
        json!(false),
        json!(0),
        json!(-1),
        json!(i64::MAX),
        json!(i64::MIN),
        json!(u64::MAX),
        json!(1.5),
        json!(-0.0),
        json!(1e100),
        json!(1e-7),
        json!(1e16),
        json!(""),
        json!("h\u{e9}llo \u{2603} \u{1f600}"),
        json!("quote \" backslash \\ newline \n tab \t nul \u{0} del \u{7f}"),
        json!("x".repeat(300)),
        // Strings that YAML 1.1 would otherwise read as something else.
        json!("yes"),
        json!("12"),
        json!("1.5"),
        json!("2026-01-02"),
        json!("~"),
        json!("null"),
        json!("<<"),
        json!([]),
        json!({}),
        json!([1, [2, [3, []]]]),
        json!({"k": {"n": [1, 2]}, "": 0, "h\u{e9}": "\u{2603}"}),
        json!({"__type__": "bytes", "__value__": ""}),
        json!({"__type__": "bytes", "__value__": "\u{0}\u{1}binary"}),
        json!({"__type__": "base64", "__value__": "/wCA".repeat(100)}),
        json!({"__type__": "datetime", "__value__": "2026-01-02T03:04:05.678901+00:00"}),
        json!({"__type__": "datetime", "__value__": "2026-01-02T03:04:05+05:30"}),
        json!({"__type__": "datetime", "__value__": "2026-01-02T03:04:05"}),
        json!({"__type__": "date", "__value__": "2026-01-02"}),
        json!({"__type__": "time", "__value__": "03:04:05"}),
        json!({"__type__": "decimal", "__value__": "1.50"}),
        json!({"__type__": "uuid", "__value__": {"hex": "12345678123456781234567812345678"}}),
        json!([[2, 2], {"x": 1}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]),
    ]
}

#[test]
fn every_serializer_round_trips_every_value_kind() {
    let registry = SerializerRegistry::default();
    for name in SERIALIZERS {
        let serializer = registry.get(name).unwrap();
        for value in values() {
            let bytes = serializer
                .encode(&value)
                .unwrap_or_else(|e| panic!("{name} cannot encode {value}: {e}"));
            let back = serializer
                .decode(&bytes)
                .unwrap_or_else(|e| panic!("{name} cannot decode its own {value}: {e}"));
            assert_eq!(back, value, "{name}");
        }
        // All of them at once, as one body.
        let all = Value::Array(values());
        assert_eq!(
            serializer
                .decode(&serializer.encode(&all).unwrap())
                .unwrap(),
            all,
            "{name}"
        );
    }
}

#[test]
fn serializer_names_and_content_types() {
    let registry = SerializerRegistry::default();
    for (name, content_type, encoding) in [
        ("json", "application/json", "utf-8"),
        ("msgpack", "application/x-msgpack", "binary"),
        ("yaml", "application/x-yaml", "utf-8"),
        ("pickle", "application/x-python-serialize", "binary"),
    ] {
        for key in [name, content_type] {
            let serializer = registry.get(key).unwrap();
            assert_eq!(serializer.name(), name);
            assert_eq!(serializer.content_type(), content_type);
            assert_eq!(serializer.content_encoding(), encoding);
        }
    }
}

/// The body of `tests/fixtures/python/task_special_types.json`: what Python's kombu json wrote.
fn special_types_fixture() -> Vec<u8> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/python/task_special_types.json"
    );
    let fixture: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    fixture["body_text"].as_str().unwrap().as_bytes().to_vec()
}

#[test]
fn python_special_values_decode_to_rust_types_and_encode_back_byte_for_byte() {
    let body = special_types_fixture();
    let value = Json.decode(&body).unwrap();
    assert_eq!(Json.encode(&value).unwrap(), body);
    let args = value[0].as_array().unwrap().clone();

    let aware: DateTime = serde_json::from_value(args[0].clone()).unwrap();
    let naive: NaiveDateTime = serde_json::from_value(args[1].clone()).unwrap();
    let date: Date = serde_json::from_value(args[2].clone()).unwrap();
    let time: Time = serde_json::from_value(args[3].clone()).unwrap();
    let amount: Decimal = serde_json::from_value(args[4].clone()).unwrap();
    let id: Uuid = serde_json::from_value(args[5].clone()).unwrap();
    let bytes: Bytes = serde_json::from_value(args[6].clone()).unwrap();
    assert_eq!(aware.to_string(), "2026-01-02T03:04:05.678901+00:00");
    assert_eq!(naive.to_string(), "2026-01-02T03:04:05");
    assert_eq!(date.to_string(), "2026-01-02");
    assert_eq!(time.to_string(), "03:04:05");
    assert_eq!(amount.as_str(), "1.50");
    assert_eq!(id.to_string(), "12345678-1234-5678-1234-567812345678");
    assert_eq!(&bytes[..], b"\x00\x01binary");

    // What a Rust client sends for the same arguments is what Python sent.
    let ours = json!([
        aware,
        naive,
        date,
        time,
        amount,
        id,
        bytes,
        1.5,
        1099511627776_u64,
        true,
        null
    ]);
    assert_eq!(ours, Value::Array(args.clone()));

    // Plain chrono and uuid types read them through the fallback the worker uses.
    let plain: chrono::DateTime<chrono::Utc> = kombu::from_value(args[0].clone()).unwrap();
    assert_eq!(plain.to_rfc3339(), "2026-01-02T03:04:05.678901+00:00");
    let plain: chrono::NaiveDateTime = kombu::from_value(args[1].clone()).unwrap();
    assert_eq!(plain.to_string(), "2026-01-02 03:04:05");
    let plain: chrono::NaiveDate = kombu::from_value(args[2].clone()).unwrap();
    assert_eq!(plain.to_string(), "2026-01-02");
    let plain: chrono::NaiveTime = kombu::from_value(args[3].clone()).unwrap();
    assert_eq!(plain.to_string(), "03:04:05");
    let plain: String = kombu::from_value(args[4].clone()).unwrap();
    assert_eq!(plain, "1.50");
    let plain: uuid::Uuid = kombu::from_value(args[5].clone()).unwrap();
    assert_eq!(
        plain.simple().to_string(),
        "12345678123456781234567812345678"
    );
    let plain: Vec<u8> = kombu::from_value(args[6].clone()).unwrap();
    assert_eq!(plain, b"\x00\x01binary");
    // A value that knows the kombu form keeps it.
    let kept: Value = kombu::from_value(args[0].clone()).unwrap();
    assert_eq!(kept, args[0]);
    let (when, id): (chrono::DateTime<chrono::FixedOffset>, uuid::Uuid) =
        kombu::from_value(json!([args[0], args[5]])).unwrap();
    assert_eq!(when.timestamp(), 1767323045);
    assert_eq!(id.to_string(), "12345678-1234-5678-1234-567812345678");
}

#[test]
fn every_serializer_yields_the_same_value_for_the_special_types() {
    let registry = SerializerRegistry::default();
    let value = Json.decode(&special_types_fixture()).unwrap();
    for name in SERIALIZERS {
        let serializer = registry.get(name).unwrap();
        let back = serializer
            .decode(&serializer.encode(&value).unwrap())
            .unwrap();
        assert_eq!(back, value, "{name}");
    }
}

/// `pickle.dumps(OBJECT, protocol=p)` for p in 2..=5 (Python 3.11), OBJECT being:
/// ```python
/// shared = [7]
/// [None, True, False, 0, 1, -1, 255, 256, 65535, 65536, -2**31, 2**31, 2**63-1, 2**64-1, -2**63,
///  1.5, -0.0, 1e100, "", "h\u00e9llo \u2603 \U0001f600", "x"*300, b"", b"\x00\x01binary", b"y"*300,
///  b"\xff\x00\x80", [], [1, [2]], (), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4),
///  {}, {"a": 1, 2: "b", None: True, 1.5: 0, False: 1}, bytearray(b"ab"), shared, shared]
/// ```
const PYTHON_PICKLES: [(u8, &[u8]); 4] = [
    (
        2,
        b"\x80\x02]q\x00(N\x88\x89K\x00K\x01J\xff\xff\xff\xffK\xffM\x00\x01M\xff\xffJ\x00\x00\x01\
        \x00J\x00\x00\x00\x80\x8a\x05\x00\x00\x00\x80\x00\x8a\x08\xff\xff\xff\xff\xff\xff\xff\
        \x7f\x8a\x09\xff\xff\xff\xff\xff\xff\xff\xff\x00\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x80\
        G?\xf8\x00\x00\x00\x00\x00\x00G\x80\x00\x00\x00\x00\x00\x00\x00GT\xb2I\xad%\x94\xc3}X\
        \x00\x00\x00\x00q\x01X\x0f\x00\x00\x00h\xc3\xa9llo\x20\xe2\x98\x83\x20\xf0\x9f\x98\x80q\
        \x02X,\x01\x00\x00xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\
        xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\
        xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\
        xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxq\x03c__builtin__\x0abytes\x0aq\
        \x04)Rq\x05c_codecs\x0aencode\x0aq\x06X\x08\x00\x00\x00\x00\x01binaryq\x07X\x06\x00\x00\
        \x00latin1q\x08\x86q\x09Rq\x0ah\x06X,\x01\x00\x00yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\
        yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\
        yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\
        yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyq\
        \x0bh\x08\x86q\x0cRq\x0dh\x06X\x05\x00\x00\x00\xc3\xbf\x00\xc2\x80q\x0eh\x08\x86q\x0fRq\
        \x10]q\x11]q\x12(K\x01]q\x13K\x02ae)K\x01\x85q\x14K\x01K\x02\x86q\x15K\x01K\x02K\x03\x87\
        q\x16(K\x01K\x02K\x03K\x04tq\x17}q\x18}q\x19(X\x01\x00\x00\x00aq\x1aK\x01K\x02X\x01\x00\
        \x00\x00bq\x1bN\x88G?\xf8\x00\x00\x00\x00\x00\x00K\x00\x89K\x01uc__builtin__\x0abytearra\
        y\x0aq\x1ch\x06X\x02\x00\x00\x00abq\x1dh\x08\x86q\x1eRq\x1f\x85q\x20Rq!]q\"K\x07ah\"e.",
    ),
    (
        3,
        b"\x80\x03]q\x00(N\x88\x89K\x00K\x01J\xff\xff\xff\xffK\xffM\x00\x01M\xff\xffJ\x00\x00\x01\
        \x00J\x00\x00\x00\x80\x8a\x05\x00\x00\x00\x80\x00\x8a\x08\xff\xff\xff\xff\xff\xff\xff\
        \x7f\x8a\x09\xff\xff\xff\xff\xff\xff\xff\xff\x00\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x80\
        G?\xf8\x00\x00\x00\x00\x00\x00G\x80\x00\x00\x00\x00\x00\x00\x00GT\xb2I\xad%\x94\xc3}X\
        \x00\x00\x00\x00q\x01X\x0f\x00\x00\x00h\xc3\xa9llo\x20\xe2\x98\x83\x20\xf0\x9f\x98\x80q\
        \x02X,\x01\x00\x00xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\
        xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\
        xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\
        xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxq\x03C\x00q\x04C\x08\x00\x01binary\
        q\x05B,\x01\x00\x00yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\
        yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\
        yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\
        yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyq\x06C\x03\xff\x00\x80q\x07]q\x08\
        ]q\x09(K\x01]q\x0aK\x02ae)K\x01\x85q\x0bK\x01K\x02\x86q\x0cK\x01K\x02K\x03\x87q\x0d(K\
        \x01K\x02K\x03K\x04tq\x0e}q\x0f}q\x10(X\x01\x00\x00\x00aq\x11K\x01K\x02X\x01\x00\x00\x00\
        bq\x12N\x88G?\xf8\x00\x00\x00\x00\x00\x00K\x00\x89K\x01ucbuiltins\x0abytearray\x0aq\x13C\
        \x02abq\x14\x85q\x15Rq\x16]q\x17K\x07ah\x17e.",
    ),
    (
        4,
        b"\x80\x04\x95g\x03\x00\x00\x00\x00\x00\x00]\x94(N\x88\x89K\x00K\x01J\xff\xff\xff\xffK\xff\
        M\x00\x01M\xff\xffJ\x00\x00\x01\x00J\x00\x00\x00\x80\x8a\x05\x00\x00\x00\x80\x00\x8a\x08\
        \xff\xff\xff\xff\xff\xff\xff\x7f\x8a\x09\xff\xff\xff\xff\xff\xff\xff\xff\x00\x8a\x08\x00\
        \x00\x00\x00\x00\x00\x00\x80G?\xf8\x00\x00\x00\x00\x00\x00G\x80\x00\x00\x00\x00\x00\x00\
        \x00GT\xb2I\xad%\x94\xc3}\x8c\x00\x94\x8c\x0fh\xc3\xa9llo\x20\xe2\x98\x83\x20\xf0\x9f\
        \x98\x80\x94X,\x01\x00\x00xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\
        xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\
        xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\
        xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\x94C\x00\x94C\x08\x00\x01\
        binary\x94B,\x01\x00\x00yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\
        yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\
        yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\
        yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\x94C\x03\xff\x00\x80\x94]\
        \x94]\x94(K\x01]\x94K\x02ae)K\x01\x85\x94K\x01K\x02\x86\x94K\x01K\x02K\x03\x87\x94(K\x01\
        K\x02K\x03K\x04t\x94}\x94}\x94(\x8c\x01a\x94K\x01K\x02\x8c\x01b\x94N\x88G?\xf8\x00\x00\
        \x00\x00\x00\x00K\x00\x89K\x01u\x8c\x08builtins\x94\x8c\x09bytearray\x94\x93\x94C\x02ab\
        \x94\x85\x94R\x94]\x94K\x07ah\x19e.",
    ),
    (
        5,
        b"\x80\x05\x95Q\x03\x00\x00\x00\x00\x00\x00]\x94(N\x88\x89K\x00K\x01J\xff\xff\xff\xffK\xff\
        M\x00\x01M\xff\xffJ\x00\x00\x01\x00J\x00\x00\x00\x80\x8a\x05\x00\x00\x00\x80\x00\x8a\x08\
        \xff\xff\xff\xff\xff\xff\xff\x7f\x8a\x09\xff\xff\xff\xff\xff\xff\xff\xff\x00\x8a\x08\x00\
        \x00\x00\x00\x00\x00\x00\x80G?\xf8\x00\x00\x00\x00\x00\x00G\x80\x00\x00\x00\x00\x00\x00\
        \x00GT\xb2I\xad%\x94\xc3}\x8c\x00\x94\x8c\x0fh\xc3\xa9llo\x20\xe2\x98\x83\x20\xf0\x9f\
        \x98\x80\x94X,\x01\x00\x00xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\
        xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\
        xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\
        xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\x94C\x00\x94C\x08\x00\x01\
        binary\x94B,\x01\x00\x00yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\
        yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\
        yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\
        yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\x94C\x03\xff\x00\x80\x94]\
        \x94]\x94(K\x01]\x94K\x02ae)K\x01\x85\x94K\x01K\x02\x86\x94K\x01K\x02K\x03\x87\x94(K\x01\
        K\x02K\x03K\x04t\x94}\x94}\x94(\x8c\x01a\x94K\x01K\x02\x8c\x01b\x94N\x88G?\xf8\x00\x00\
        \x00\x00\x00\x00K\x00\x89K\x01u\x96\x02\x00\x00\x00\x00\x00\x00\x00ab\x94]\x94K\x07ah\
        \x14e.",
    ),
];

/// `pickle.dumps(os.system, protocol=p)` for p in 2..=5: a global, `posix.system`.
const PYTHON_OS_SYSTEM: [&[u8]; 4] = [
    b"\x80\x02cposix\x0asystem\x0aq\x00.",
    b"\x80\x03cposix\x0asystem\x0aq\x00.",
    b"\x80\x04\x95\x14\x00\x00\x00\x00\x00\x00\x00\x8c\x05posix\x94\x8c\x06system\x94\x93\x94.",
    b"\x80\x05\x95\x14\x00\x00\x00\x00\x00\x00\x00\x8c\x05posix\x94\x8c\x06system\x94\x93\x94.",
];

/// Other values the codec must refuse, with what it names: `datetime.date(2026, 1, 2)`,
/// `{1}` at protocols 2 and 4, `fractions.Fraction(1, 2)`.
const PYTHON_REFUSED: [(&[u8], &str); 4] = [
    (
        b"\x80\x04\x95\x20\x00\x00\x00\x00\x00\x00\x00\x8c\x08datetime\x94\x8c\x04date\x94\x93\x94\
        C\x04\x07\xea\x01\x02\x94\x85\x94R\x94.",
        "`datetime.date`",
    ),
    (
        b"\x80\x02c__builtin__\x0aset\x0aq\x00]q\x01K\x01a\x85q\x02Rq\x03.",
        "`__builtin__.set`",
    ),
    (
        b"\x80\x04\x95\x07\x00\x00\x00\x00\x00\x00\x00\x8f\x94(K\x01\x90.",
        "EMPTY_SET",
    ),
    (
        b"\x80\x04\x95\"\x00\x00\x00\x00\x00\x00\x00\x8c\x09fractions\x94\x8c\x08Fraction\x94\x93\
        \x94K\x01K\x02\x86\x94R\x94.",
        "`fractions.Fraction`",
    ),
];

fn python_pickles_value() -> Value {
    json!([
        null, true, false, 0, 1, -1, 255, 256, 65535, 65536, -2147483648_i64, 2147483648_i64,
        i64::MAX, u64::MAX, i64::MIN, 1.5, -0.0, 1e100, "", "h\u{e9}llo \u{2603} \u{1f600}",
        "x".repeat(300),
        {"__type__": "bytes", "__value__": ""},
        {"__type__": "bytes", "__value__": "\u{0}\u{1}binary"},
        {"__type__": "bytes", "__value__": "y".repeat(300)},
        {"__type__": "base64", "__value__": "/wCA"},
        [], [1, [2]], [], [1], [1, 2], [1, 2, 3], [1, 2, 3, 4],
        {}, {"a": 1, "2": "b", "null": true, "1.5": 0, "false": 1},
        {"__type__": "bytes", "__value__": "ab"},
        [7], [7]
    ])
}

#[test]
fn pickle_reads_what_python_writes_at_protocols_2_to_5() {
    let expected = python_pickles_value();
    for (protocol, bytes) in PYTHON_PICKLES {
        assert_eq!(bytes[..2], [0x80, protocol]);
        let value = Pickle
            .decode(bytes)
            .unwrap_or_else(|e| panic!("protocol {protocol}: {e}"));
        assert_eq!(value, expected, "protocol {protocol}");
        let keys: Vec<_> = value[33].as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            ["a", "2", "null", "1.5", "false"],
            "protocol {protocol}"
        );
    }
}

#[test]
fn pickle_refuses_globals_and_names_them() {
    for (bytes, (opcode, at)) in PYTHON_OS_SYSTEM.iter().zip([
        ("GLOBAL", 2),
        ("GLOBAL", 2),
        ("STACK_GLOBAL", 28),
        ("STACK_GLOBAL", 28),
    ]) {
        assert_eq!(
            Pickle.decode(bytes).unwrap_err(),
            format!(
                "pickle: refusing to load the global `posix.system` (opcode {opcode}): the \
                 pickle codec reads plain data only (None, bool, int, float, str, bytes, list, \
                 tuple, dict) and never imports or calls anything (at byte {at})"
            )
        );
    }
    for (bytes, named) in PYTHON_REFUSED {
        let err = Pickle.decode(bytes).unwrap_err();
        assert!(err.contains("refusing"), "{err}");
        assert!(err.contains(named), "{named}: {err}");
    }
}

#[test]
fn pickle_writes_protocol_4() {
    assert_eq!(celery_core::serializer::PICKLE_PROTOCOL, 4);
    let bytes = Pickle.encode(&json!([1])).unwrap();
    assert_eq!(bytes, b"\x80\x04]K\x01a.");
}

fn compressions() -> CompressionRegistry {
    CompressionRegistry::default()
}

#[test]
fn compression_names_aliases_and_mime_types() {
    let registry = compressions();
    for (names, canonical, mime) in [
        (&["zlib", "gzip"][..], "zlib", "application/x-gzip"),
        (&["bzip2", "bzip", "bz2"], "bzip2", "application/x-bz2"),
        (&["lzma", "xz"], "lzma", "application/x-lzma"),
        (&["brotli"], "brotli", "application/x-brotli"),
        (&["zstd", "zstandard"], "zstd", "application/zstd"),
    ] {
        for name in names.iter().chain([&mime]) {
            let scheme = registry.get(name).unwrap();
            assert_eq!(scheme.name(), canonical);
            assert_eq!(scheme.content_type(), mime);
        }
    }
}

#[test]
fn every_compression_round_trips_and_refuses_bombs() {
    let registry = compressions();
    let body = Json.encode(&Value::Array(values())).unwrap();
    let zeros = vec![0u8; 8 << 20];
    for name in COMPRESSIONS {
        let scheme = registry.get(name).unwrap();
        let packed = scheme.compress(&body).unwrap();
        assert_eq!(
            scheme.decompress(&packed, body.len()).unwrap(),
            body,
            "{name}"
        );
        assert!(
            matches!(
                scheme.decompress(&packed, body.len() - 1),
                Err(DecompressError::TooLarge)
            ),
            "{name}: one byte over the limit"
        );
        let bomb = scheme.compress(&zeros).unwrap();
        assert!(bomb.len() < zeros.len() / 100, "{name}");
        assert!(
            matches!(
                scheme.decompress(&bomb, 64 << 10),
                Err(DecompressError::TooLarge)
            ),
            "{name}: bomb"
        );
    }
}

/// A toy serializer: JSON with a prefix, under its own content type.
struct Tagged;

impl Serializer for Tagged {
    fn name(&self) -> &str {
        "tagged"
    }
    fn content_type(&self) -> &str {
        "application/x-tagged"
    }
    fn content_encoding(&self) -> &str {
        "utf-8"
    }
    fn encode(&self, value: &Value) -> Result<Vec<u8>, String> {
        let mut out = b"TAGGED:".to_vec();
        out.extend(Json.encode(value)?);
        Ok(out)
    }
    fn decode(&self, bytes: &[u8]) -> Result<Value, String> {
        let json = bytes.strip_prefix(b"TAGGED:").ok_or("no TAGGED: prefix")?;
        Json.decode(json)
    }
}

/// A toy compression: the body reversed.
struct Reversed;

impl Compression for Reversed {
    fn name(&self) -> &str {
        "reversed"
    }
    fn aliases(&self) -> &[&str] {
        &["rev"]
    }
    fn content_type(&self) -> &str {
        "application/x-reversed"
    }
    fn compress(&self, body: &[u8]) -> Result<Vec<u8>, String> {
        Ok(body.iter().rev().copied().collect())
    }
    fn decompress(&self, body: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
        if body.len() > limit {
            return Err(DecompressError::TooLarge);
        }
        Ok(body.iter().rev().copied().collect())
    }
}

fn signature(options: Value) -> RawSignature {
    serde_json::from_value(json!({
        "task": "tasks.echo", "args": [1, {"__type__": "bytes", "__value__": "b"}],
        "kwargs": {"k": "v"}, "options": options,
    }))
    .unwrap()
}

#[test]
fn custom_codecs_are_usable_by_name_in_options() {
    let app = Celery::builder("codecs")
        .accept_content(["tagged", "application/json"])
        .build()
        .unwrap();
    app.serializers().register(Tagged);
    app.compressions().register(Reversed);
    for compression in ["reversed", "rev", "application/x-reversed"] {
        let outgoing = app
            .producer()
            .encode(signature(
                json!({"serializer": "tagged", "compression": compression}),
            ))
            .unwrap();
        let message = &outgoing.message;
        assert_eq!(message.properties.content_type, "application/x-tagged");
        assert_eq!(message.properties.content_encoding, "utf-8");
        assert_eq!(
            message.header("compression").and_then(|v| v.as_str()),
            Some("application/x-reversed")
        );
        assert!(message.body.ends_with(b":DEGGAT"));
        let decoded = celery_core::worker::decode(&app, message).unwrap();
        assert_eq!(
            decoded.body.args,
            [json!(1), json!({"__type__": "bytes", "__value__": "b"})]
        );
        assert_eq!(decoded.body.kwargs["k"], "v");
    }
}

#[test]
fn built_in_codecs_are_usable_by_name_in_options() {
    let app = Celery::builder("codecs")
        .accept_content(SERIALIZERS)
        .build()
        .unwrap();
    for serializer in SERIALIZERS {
        for compression in COMPRESSIONS {
            let outgoing = app
                .producer()
                .encode(signature(
                    json!({"serializer": serializer, "compression": compression}),
                ))
                .unwrap();
            let decoded = celery_core::worker::decode(&app, &outgoing.message)
                .unwrap_or_else(|e| panic!("{serializer} + {compression}: {e}"));
            assert_eq!(
                decoded.body.args[1],
                json!({"__type__": "bytes", "__value__": "b"})
            );
        }
    }
}

#[test]
fn unknown_names_in_options_are_clear_errors() {
    let app = Celery::new("codecs");
    let err = app
        .producer()
        .encode(signature(json!({"serializer": "toml"})))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "unknown serializer \"toml\" (known: json, msgpack, pickle, yaml)"
    );
    let err = app
        .producer()
        .encode(signature(json!({"compression": "snappy"})))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "unknown compression \"snappy\" (known: brotli, bzip2, lzma, zlib, zstd)"
    );
}

/// A Python with kombu: `CELERY_PYTHON`, else the virtualenv `tests/python/ensure_venv.sh`
/// creates (as the root crate's tests find it); or a skip (a failure under
/// `CELERY_TEST_REQUIRE_SERVICES=1`).
fn python(test: &str) -> Option<PathBuf> {
    let candidate = match std::env::var_os("CELERY_PYTHON") {
        Some(python) => PathBuf::from(python),
        None => {
            let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
            match services::ensure_venv(std::path::Path::new(repo)) {
                Ok(python) => python,
                Err(reason) => {
                    skip(test, &format!("no Python virtualenv: {reason}"));
                    return None;
                }
            }
        }
    };
    let has_kombu = Command::new(&candidate)
        .args(["-c", "import kombu"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if has_kombu {
        return Some(candidate);
    }
    skip(
        test,
        &format!(
            "no Python with kombu at {} (set CELERY_PYTHON)",
            candidate.display()
        ),
    );
    None
}

fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unbase64(text: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(text.as_str().expect("a base64 string"))
        .expect("valid base64")
}

/// Decodes what Rust sent with kombu, and encodes Python values with kombu; see the test.
const KOMBU_SCRIPT: &str = r#"
import base64, datetime, decimal, json, sys, uuid

from kombu import compression, serialization
from kombu.utils import json as kjson

request = json.load(sys.stdin)
unavailable = []
for module in ("msgpack", "yaml", "brotli", "backports.zstd"):
    try:
        __import__(module)
    except ImportError:
        unavailable.append(module)


def b64(data):
    return base64.b64encode(data).decode()


def unb64(text):
    return base64.b64decode(text)


# Rust -> Python: kombu decodes what Rust wrote.
from_rust = []
for case in request["serialized"]:
    try:
        obj = serialization.loads(
            unb64(case["body"]), case["content_type"], case["content_encoding"],
            accept=[case["content_type"]],
        )
        from_rust.append({"json": kjson.dumps(obj), "repr": repr(obj)})
    except Exception as exc:
        from_rust.append({"error": f"{type(exc).__name__}: {exc}"})
decompressed = []
for case in request["compressed"]:
    try:
        data = compression.decompress(unb64(case["body"]), case["content_type"])
        decompressed.append({"body": b64(data)})
    except Exception as exc:
        decompressed.append({"error": f"{type(exc).__name__}: {exc}"})

# Python -> Rust: what kombu writes, with the value as kombu's json writes it.
common = [
    None, True, False, 0, -1, 2**63 - 1, 2**64 - 1, -2**63, 1.5, -0.0, 1e100, 1e-7,
    "", "h\u00e9llo \u2603 \U0001f600", "x" * 300, "yes", "12", "2026-01-02", "~",
    [], {}, [1, [2, [3]]], {"k": {"n": [1, 2]}},
    b"", b"\x00\x01binary", b"\xff\x00\x80" * 100,
    {2: "int key", None: "none key", False: "bool key", 2.5: "float key"},
    [[2, 2], {"x": 1}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}],
]
aware = datetime.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=datetime.timezone.utc)
india = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone(datetime.timedelta(hours=5, minutes=30)))
naive = datetime.datetime(2026, 1, 2, 3, 4, 5)
when = [aware, india, naive, datetime.date(2026, 1, 2)]
values = {
    "json": common + when + [datetime.time(3, 4, 5), decimal.Decimal("1.50"),
                             uuid.UUID("12345678-1234-5678-1234-567812345678")],
    "msgpack": common + [(1, 2)],
    "yaml": common + when,
    "pickle": common + [(1, 2), (), bytearray(b"ab")],
}
serialized = []
for name, objs in values.items():
    if name == "msgpack" and "msgpack" in unavailable or name == "yaml" and "yaml" in unavailable:
        continue
    for obj in objs:
        content_type, content_encoding, body = serialization.dumps(obj, serializer=name)
        if isinstance(body, str):
            body = body.encode(content_encoding)
        serialized.append({
            "serializer": name, "content_type": content_type, "repr": repr(obj),
            "body": b64(body), "json": kjson.dumps(bytes(obj) if isinstance(obj, bytearray) else obj),
        })
payload = b'[[2, 2], {"k": "\\u00e9"}, {"callbacks": null}]' * 50 + bytes(range(256))
compressed = []
for name in ("zlib", "bzip2", "lzma", "brotli", "zstd"):
    try:
        body, content_type = compression.compress(payload, name)
    except KeyError:
        continue
    compressed.append({"name": name, "content_type": content_type, "body": b64(body)})

json.dump({
    "unavailable": unavailable,
    "from_rust": from_rust, "decompressed": decompressed,
    "serialized": serialized, "compressed": compressed, "payload": b64(payload),
}, sys.stdout)
"#;

/// What Python's repr of a decoded special value starts with, when it must be a real Python
/// object rather than a dict.
fn python_type_prefix(serializer: &str, kind: &str) -> Option<&'static str> {
    Some(match (serializer, kind) {
        (_, "bytes" | "base64") => "b'",
        ("json" | "yaml", "datetime") => "datetime.datetime(",
        ("json" | "yaml", "date") => "datetime.date(",
        ("json", "time") => "datetime.time(",
        ("json", "decimal") => "Decimal(",
        ("json", "uuid") => "UUID(",
        _ => return None,
    })
}

#[test]
fn kombu_reads_what_rust_writes_and_rust_reads_what_kombu_writes() {
    const TEST: &str = "kombu_reads_what_rust_writes_and_rust_reads_what_kombu_writes";
    let Some(python) = python(TEST) else {
        return;
    };
    let serializers = SerializerRegistry::default();
    let schemes = compressions();

    let mut sent = Vec::new();
    let mut serialized = Vec::new();
    for name in SERIALIZERS {
        let serializer = serializers.get(name).unwrap();
        for value in values() {
            serialized.push(json!({
                "content_type": serializer.content_type(),
                "content_encoding": serializer.content_encoding(),
                "body": base64(&serializer.encode(&value).unwrap()),
            }));
            sent.push((name, value));
        }
    }
    let payload = Json.encode(&Value::Array(values())).unwrap();
    let compressed: Vec<Value> = COMPRESSIONS
        .iter()
        .map(|name| {
            let scheme = schemes.get(name).unwrap();
            json!({
                "content_type": scheme.content_type(),
                "body": base64(&scheme.compress(&payload).unwrap()),
            })
        })
        .collect();
    let request = json!({"serialized": serialized, "compressed": compressed});

    let mut child = Command::new(&python)
        .args(["-c", KOMBU_SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let reply: Value = serde_json::from_slice(&output.stdout).unwrap();

    let mut missing = Vec::new();
    for module in reply["unavailable"].as_array().unwrap() {
        missing.push(match module.as_str().unwrap() {
            "yaml" => "yaml",
            "msgpack" => "msgpack",
            "brotli" => "brotli",
            _ => "zstd",
        });
    }
    if !missing.is_empty() {
        skip(
            TEST,
            &format!(
                "{python:?} lacks the Python packages for {missing:?} (tests/python/requirements.txt)"
            ),
        );
    }

    let mut failures = Vec::new();
    assert_eq!(reply["from_rust"].as_array().unwrap().len(), sent.len());
    assert_eq!(
        reply["decompressed"].as_array().unwrap().len(),
        COMPRESSIONS.len()
    );
    for ((name, value), result) in sent.iter().zip(reply["from_rust"].as_array().unwrap()) {
        if missing.contains(name) {
            continue;
        }
        let Some(text) = result["json"].as_str() else {
            failures.push(format!(
                "kombu cannot read the {name} of {value}: {}",
                result["error"]
            ));
            continue;
        };
        let back: Value = serde_json::from_str(text).unwrap();
        if back != *value {
            failures.push(format!("kombu read the {name} of {value} as {text}"));
        }
        let prefix = kombu::special(value).and_then(|(kind, _)| python_type_prefix(name, kind));
        let repr = result["repr"].as_str().unwrap();
        if prefix.is_some_and(|prefix| !repr.starts_with(prefix)) {
            failures.push(format!(
                "kombu read the {name} of {value} as {repr}, not a {}…",
                prefix.unwrap()
            ));
        }
    }
    for (name, result) in COMPRESSIONS
        .iter()
        .zip(reply["decompressed"].as_array().unwrap())
    {
        if missing.contains(name) {
            continue;
        }
        match result.get("body") {
            Some(body) if unbase64(body) == payload => {}
            Some(_) => failures.push(format!("kombu decompressed {name} to other bytes")),
            None => failures.push(format!(
                "kombu cannot decompress {name}: {}",
                result["error"]
            )),
        }
    }

    let mut read = 0;
    for case in reply["serialized"].as_array().unwrap() {
        let content_type = case["content_type"].as_str().unwrap();
        let expected: Value = serde_json::from_str(case["json"].as_str().unwrap()).unwrap();
        let what = format!("the {} of Python's {}", case["serializer"], case["repr"]);
        match serializers
            .get(content_type)
            .unwrap()
            .decode(&unbase64(&case["body"]))
        {
            Ok(value) if value == expected => read += 1,
            Ok(value) => failures.push(format!("{what} read as {value}, not {expected}")),
            Err(error) => failures.push(format!("{what} cannot be read: {error}")),
        }
    }
    assert!(read >= 100, "only {read} Python values were checked");
    let python_payload = unbase64(&reply["payload"]);
    for case in reply["compressed"].as_array().unwrap() {
        let scheme = schemes.get(case["content_type"].as_str().unwrap()).unwrap();
        match scheme.decompress(&unbase64(&case["body"]), 1 << 20) {
            Ok(body) if body == python_payload => {}
            Ok(_) => failures.push(format!(
                "Python's {} decompressed to other bytes",
                case["name"]
            )),
            Err(error) => failures.push(format!(
                "Python's {} cannot be decompressed: {error}",
                case["name"]
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
