//! Property tests of the worker's message decoder: whatever arrives — arbitrary bytes under any
//! content type and compression header, arbitrary header tables, arbitrary JSON bodies — it
//! returns `Ok` or `Err`, never panics, and never allocates past `message_max_body_size`.
//!
//! Bounded: 256 cases per property (`PROPTEST_CASES=20000` for a longer run), bodies of at most a
//! few KiB; no failure files are written.

use std::sync::OnceLock;

use celery_core::protocol::{
    Body, HeaderName, HeaderValue, Headers, Message, Properties, TaskHeaders,
};
use celery_core::worker::decode;
use celery_core::Celery;
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{Map, Value};

/// Small enough that compressed bodies cross it.
const LIMIT: usize = 4096;

const SERIALIZERS: &[&str] = &["json", "msgpack", "yaml", "pickle"];
const COMPRESSIONS: &[&str] = &["zlib", "bzip2", "lzma", "brotli", "zstd"];

/// An app that accepts every built-in content type, so that every decoder is reached.
fn app() -> &'static Celery {
    static APP: OnceLock<Celery> = OnceLock::new();
    APP.get_or_init(|| {
        Celery::builder("props")
            .accept_content(SERIALIZERS.iter().copied())
            .configure(|config| config.message_max_body_size = LIMIT)
            .build()
            .unwrap()
    })
}

fn config() -> Config {
    Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(256),
        failure_persistence: None,
        ..Config::default()
    }
}

const KNOWN_HEADERS: &[&str] = &[
    "lang",
    "task",
    "id",
    "shadow",
    "eta",
    "expires",
    "group",
    "group_index",
    "retries",
    "timelimit",
    "root_id",
    "parent_id",
    "argsrepr",
    "kwargsrepr",
    "origin",
    "ignore_result",
    "replaced_task_nesting",
    "compression",
    "stamped_headers",
    "stamps",
];

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9_.:+-]{0,16}",
        ".{0,12}",
        Just("2024-02-29T23:59:59.999999+14:00".to_owned()),
        Just("9999-12-31T23:59:59".to_owned()),
        Just("0000-00-00T00:00:00Z".to_owned()),
        Just("-1".to_owned()),
    ]
}

fn number() -> impl Strategy<Value = HeaderValue> {
    prop_oneof![
        any::<i64>().prop_map(HeaderValue::Int),
        prop::sample::select(vec![
            0,
            -1,
            i64::MIN,
            i64::MAX,
            i64::from(u32::MAX) + 1,
            i64::from(i32::MIN)
        ])
        .prop_map(HeaderValue::Int),
        any::<f64>().prop_map(HeaderValue::Float),
        prop::sample::select(vec![
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -0.0,
            1e300,
            0.5,
            4294967296.0
        ])
        .prop_map(HeaderValue::Float),
    ]
}

fn header_value() -> impl Strategy<Value = HeaderValue> {
    let leaf = prop_oneof![
        Just(HeaderValue::Null),
        any::<bool>().prop_map(HeaderValue::Bool),
        number(),
        text().prop_map(HeaderValue::Str),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(HeaderValue::List),
            prop::collection::vec((key(), inner), 0..4).prop_map(HeaderValue::Table),
        ]
    })
}

fn key() -> impl Strategy<Value = HeaderName> {
    prop_oneof![
        3 => prop::sample::select(KNOWN_HEADERS).prop_map(HeaderName::Borrowed),
        1 => "[a-z_-]{0,10}".prop_map(HeaderName::Owned),
        1 => ".{0,6}".prop_map(HeaderName::Owned),
    ]
}

fn valid_headers() -> Headers {
    TaskHeaders::new("props.task", "4b2a1c5e-0000-4000-8000-000000000001").to_table()
}

/// Arbitrary tables, and valid task headers with entries replaced, added or removed.
fn headers() -> impl Strategy<Value = Headers> {
    prop_oneof![
        prop::collection::vec((key(), header_value()), 0..12),
        (
            Just(valid_headers()),
            prop::collection::vec((key(), header_value()), 0..4),
            prop::collection::vec(any::<prop::sample::Index>(), 0..3),
        )
            .prop_map(|(mut table, changes, removals)| {
                for index in removals {
                    if !table.is_empty() {
                        table.remove(index.index(table.len()));
                    }
                }
                for (name, value) in changes {
                    match table.iter_mut().find(|(k, _)| *k == name) {
                        Some(entry) => entry.1 = value,
                        None => table.push((name, value)),
                    }
                }
                table
            }),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((json_key(), inner), 0..5)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

/// Keys that a body's embed and signatures use, and others.
fn json_key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "callbacks",
            "errbacks",
            "chain",
            "chord",
            "task",
            "args",
            "kwargs",
            "options",
            "subtask_type",
            "immutable",
            "chord_size",
            "__type__",
            "__value__",
        ])
        .prop_map(str::to_owned),
        "[a-z_]{0,8}",
    ]
}

/// `[args, kwargs, embed]` with arbitrary parts, and arbitrary values.
fn body_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        json_value(),
        (
            prop::collection::vec(json_value(), 0..4),
            prop::collection::vec((json_key(), json_value()), 0..3),
            json_value(),
        )
            .prop_map(|(args, kwargs, embed)| {
                let kwargs: Map<String, Value> = kwargs.into_iter().collect();
                Value::Array(vec![Value::Array(args), Value::Object(kwargs), embed])
            }),
        (
            prop::collection::vec(json_value(), 0..3),
            prop::collection::vec((json_key(), json_value()), 1..4),
        )
            .prop_map(|(args, embed)| {
                let embed: Map<String, Value> = embed.into_iter().collect();
                serde_json::json!([args, {}, embed])
            }),
    ]
}

/// A byte change: truncate, flip a bit, or insert a byte.
#[derive(Debug, Clone)]
enum Mutation {
    None,
    Truncate(prop::sample::Index),
    Flip(prop::sample::Index, u8),
    Insert(prop::sample::Index, u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        2 => Just(Mutation::None),
        1 => any::<prop::sample::Index>().prop_map(Mutation::Truncate),
        1 => (any::<prop::sample::Index>(), 1..=255u8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        1 => (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutation: &Mutation) -> Vec<u8> {
    match mutation {
        Mutation::None => {}
        Mutation::Truncate(at) => bytes.truncate(at.index(bytes.len() + 1)),
        Mutation::Flip(at, bits) if !bytes.is_empty() => {
            let at = at.index(bytes.len());
            bytes[at] ^= bits;
        }
        Mutation::Flip(..) => {}
        Mutation::Insert(at, byte) => bytes.insert(at.index(bytes.len() + 1), *byte),
    }
    bytes
}

/// How a body is made: raw bytes, or a value encoded by a serializer, maybe compressed, maybe
/// damaged after.
#[derive(Debug, Clone)]
enum BodyRecipe {
    Bytes(Vec<u8>),
    Encoded {
        value: Value,
        serializer: &'static str,
        compression: Option<&'static str>,
        mutation: Mutation,
    },
}

fn body_recipe() -> impl Strategy<Value = BodyRecipe> {
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..512).prop_map(BodyRecipe::Bytes),
        3 => (
            body_value(),
            prop::sample::select(SERIALIZERS),
            prop::option::of(prop::sample::select(COMPRESSIONS)),
            mutation(),
        )
            .prop_map(|(value, serializer, compression, mutation)| {
                BodyRecipe::Encoded {
                    value,
                    serializer,
                    compression,
                    mutation,
                }
            }),
    ]
}

/// The body, and the content type and compression header it was made with.
fn cook(recipe: &BodyRecipe) -> (Vec<u8>, Option<String>, Option<String>) {
    match recipe {
        BodyRecipe::Bytes(bytes) => (bytes.clone(), None, None),
        BodyRecipe::Encoded {
            value,
            serializer,
            compression,
            mutation,
        } => {
            let serializer = app().serializers().get(serializer).unwrap();
            let Ok(mut bytes) = serializer.encode(value) else {
                return (Vec::new(), Some(serializer.content_type().to_owned()), None);
            };
            let mut header = None;
            if let Some(name) = compression {
                let scheme = app().compressions().get(name).unwrap();
                bytes = scheme.compress(&bytes).unwrap();
                header = Some(scheme.content_type().to_owned());
            }
            (
                mutate(bytes, mutation),
                Some(serializer.content_type().to_owned()),
                header,
            )
        }
    }
}

fn content_type() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        6 => Just(None),
        2 => prop::sample::select(vec![
            "application/json",
            "application/x-msgpack",
            "application/x-yaml",
            "application/x-python-serialize",
            "application/data",
            "text/plain",
            "",
        ])
        .prop_map(|t| Some(t.to_owned())),
        1 => ".{0,16}".prop_map(Some),
    ]
}

fn compression_header() -> impl Strategy<Value = Option<Option<String>>> {
    prop_oneof![
        8 => Just(None),
        1 => Just(Some(None)),
        2 => prop::sample::select(vec![
            "application/x-gzip",
            "gzip",
            "zlib",
            "application/x-bz2",
            "bzip2",
            "application/x-lzma",
            "xz",
            "application/x-brotli",
            "application/zstd",
            "zstandard",
        ])
        .prop_map(|t| Some(Some(t.to_owned()))),
        1 => ".{0,12}".prop_map(|t| Some(Some(t))),
    ]
}

fn message(headers: Headers, content_type: String, body: Vec<u8>) -> Message {
    Message {
        headers,
        properties: Properties {
            correlation_id: Some("4b2a1c5e-0000-4000-8000-000000000001".to_owned()),
            reply_to: None,
            content_type,
            content_encoding: "utf-8".to_owned(),
            delivery_mode: 2,
            priority: None,
            expiration: None,
        },
        body,
    }
}

/// A task body `[[…], {}, null]` whose args are one list nested `depth` levels deep, in each
/// serializer's syntax.
fn nested_bodies(depth: usize) -> Vec<(&'static str, Vec<u8>)> {
    let (open, close) = ("[".repeat(depth), "]".repeat(depth));
    let json = format!("[{open}{close}, {{}}, null]").into_bytes();
    // fixarray(3) [ fixarray(1) × depth, fixarray(0) ], fixmap(0), nil
    let msgpack = [vec![0x93], vec![0x91; depth - 1], vec![0x90, 0x80, 0xc0]].concat();
    let pickle = [
        b"\x80\x02".as_slice(),
        &b"]".repeat(depth),
        &b"a".repeat(depth - 1),
        b"}N\x87.",
    ]
    .concat();
    vec![
        ("application/json", json.clone()),
        ("application/x-msgpack", msgpack),
        // YAML's flow syntax is JSON's.
        ("application/x-yaml", json),
        ("application/x-python-serialize", pickle),
    ]
}

/// A body nested far deeper than any task's arguments is refused by every decoder, without
/// overflowing the stack (which would take the worker down, not fail one message): on a thread
/// with half of tokio's default stack of 2 MiB, in a debug build. 100 levels still decode.
#[test]
fn deeply_nested_bodies_are_refused_without_overflowing_the_stack() {
    // The default size limit: these bodies are larger than `app()`'s.
    let app = Celery::builder("nesting")
        .accept_content(SERIALIZERS.iter().copied())
        .build()
        .unwrap();
    for (depth, refused) in [(100, false), (100_000, true)] {
        for (content_type, body) in nested_bodies(depth) {
            let message = message(valid_headers(), content_type.to_owned(), body);
            let app = app.clone();
            let outcome = std::thread::Builder::new()
                .stack_size(1 << 20)
                .spawn(move || decode(&app, &message).map(|decoded| decoded.body.args.len()))
                .unwrap()
                .join()
                .expect("decoding does not panic");
            match outcome {
                Ok(args) => {
                    assert!(!refused, "{content_type}: {depth} levels accepted");
                    assert_eq!(args, 1, "{content_type}: one argument");
                }
                Err(error) => {
                    assert!(refused, "{content_type}: {depth} levels refused: {error}");
                    let error = error.to_string();
                    let about_nesting = ["deep", "depth", "recursion"]
                        .iter()
                        .any(|w| error.contains(w));
                    assert!(about_nesting, "{error}");
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(config())]

    /// Any headers, content type, compression header and body: `Ok` or `Err`, no panic. Most
    /// cases have valid headers, so that the body decoders are reached.
    #[test]
    fn decode_never_panics(
        mut headers in prop_oneof![3 => Just(valid_headers()), 2 => headers()],
        recipe in body_recipe(),
        content_type_override in content_type(),
        compression_override in compression_header(),
    ) {
        let (body, content_type, compression) = cook(&recipe);
        let content_type = content_type_override
            .or(content_type)
            .unwrap_or_else(|| "application/json".to_owned());
        // The compression the body was made with, or another (or none) in its place.
        let compression = match compression_override {
            None => compression,
            Some(other) => other,
        };
        headers.retain(|(key, _)| key != "compression");
        if let Some(name) = compression {
            headers.push(("compression".into(), HeaderValue::Str(name)));
        }
        let message = message(headers, content_type, body);
        let _ = decode(app(), &message);
    }

    /// Valid headers and a serialized, compressed body: decoded exactly while it fits the size
    /// limit, refused as too large past it.
    #[test]
    fn compressed_bodies_decode_until_the_size_limit(
        padding in 0..3 * LIMIT,
        compression in prop::sample::select(COMPRESSIONS),
    ) {
        let json = format!("[[1, 2], {{}}, null]{}", " ".repeat(padding));
        let scheme = app().compressions().get(compression).unwrap();
        let mut headers =
            TaskHeaders::new("props.task", "4b2a1c5e-0000-4000-8000-000000000001").to_table();
        headers.push((
            "compression".into(),
            HeaderValue::Str(scheme.content_type().to_owned()),
        ));
        let body = scheme.compress(json.as_bytes()).unwrap();
        let message = message(headers, "application/json".to_owned(), body);
        match decode(app(), &message) {
            Ok(decoded) => {
                prop_assert!(json.len() <= LIMIT, "{} bytes accepted", json.len());
                prop_assert_eq!(decoded.body.args, vec![Value::from(1), Value::from(2)]);
            }
            Err(error) => {
                prop_assert!(json.len() > LIMIT, "{} bytes refused: {}", json.len(), error);
                prop_assert!(error.to_string().contains("too large"), "{}", error);
            }
        }
    }

    /// Any header table reads or fails cleanly; what reads writes back to a table that reads.
    #[test]
    fn task_headers_from_any_table(table in headers()) {
        if let Ok(headers) = TaskHeaders::from_table(&table) {
            let again = TaskHeaders::from_table(&headers.to_table());
            prop_assert!(again.is_ok(), "{:?} -> {:?}", headers, again);
            let again = again.unwrap();
            prop_assert_eq!(&again.task, &headers.task);
            prop_assert_eq!(&again.id, &headers.id);
            prop_assert_eq!(again.eta, headers.eta);
            prop_assert_eq!(again.retries, headers.retries);
        }
    }

    /// Any JSON value reads as a body or fails cleanly; a body read writes back to one that
    /// reads the same.
    #[test]
    fn body_from_any_json(value in body_value()) {
        if let Ok(body) = Body::from_value(value) {
            let written = serde_json::to_value(&body).unwrap();
            let again = Body::from_value(written.clone());
            prop_assert!(again.is_ok(), "{} -> {:?}", written, again);
            let again = again.unwrap();
            prop_assert_eq!(again.args, body.args);
            prop_assert_eq!(again.kwargs, body.kwargs);
        }
    }

    /// The worker's direct read of a JSON body (no `Value` of the whole) accepts exactly what
    /// the `Value` path accepts, and reads the same body.
    #[test]
    fn direct_json_body_read_agrees_with_the_value_path(value in body_value()) {
        let bytes = serde_json::to_vec(&value).unwrap();
        let direct = serde_json::from_slice::<Body>(&bytes);
        // Compared with what the worker would read otherwise: the bytes parsed to a `Value`
        // (serde_json's float parsing need not give back the generated float bit for bit).
        let parsed: Value = serde_json::from_slice(&bytes).unwrap();
        match Body::from_value(parsed) {
            Ok(body) => prop_assert_eq!(direct.ok(), Some(body)),
            Err(error) => prop_assert!(direct.is_err(), "read directly, refused by the value path: {}", error),
        }
    }
}
