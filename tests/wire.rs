//! The wire format against messages captured from Python Celery 5.7 (`tests/fixtures/python`,
//! made by `tests/python/capture_fixtures.py`): what Rust sends is what Python sends, and what
//! Python sends decodes here.

mod common;

use celery::prelude::*;
use celery::protocol::{HeaderSet, HeaderValue, Headers, Message, Properties, TaskHeaders};
use celery::result::ResultMeta;
use celery::signature::RawSignature;
use celery::{signature, Queue};
use serde_json::{json, Map, Value};

#[task(name = "tasks.add")]
async fn add(x: i64, y: i64) -> i64 {
    x + y
}

#[task(name = "tasks.mul")]
async fn mul(x: i64, y: i64) -> i64 {
    x * y
}

#[task(name = "tasks.echo")]
async fn echo(text: String, k: String) -> String {
    format!("{text}{k}")
}

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/python/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
        .unwrap()
}

fn fixture_headers(fixture: &Value) -> Headers {
    let headers = &fixture["headers"];
    fixture["header_order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| {
            let key = key.as_str().unwrap();
            (key.to_owned().into(), HeaderValue::from(&headers[key]))
        })
        .collect()
}

/// The message a fixture describes, as a broker would hand it to a worker.
fn fixture_message(fixture: &Value) -> Message {
    let props = &fixture["properties"];
    let text = |key: &str| props[key].as_str().map(str::to_owned);
    Message {
        headers: fixture_headers(fixture),
        properties: Properties {
            correlation_id: text("correlation_id"),
            reply_to: text("reply_to"),
            content_type: text("content_type").unwrap(),
            content_encoding: text("content_encoding").unwrap(),
            delivery_mode: props["delivery_mode"].as_u64().unwrap() as u8,
            priority: props["priority"].as_u64().map(|p| p as u8),
            expiration: text("expiration"),
        },
        body: base64_decode(fixture["body_base64"].as_str().unwrap()),
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

/// Encodes a signature as this crate sends it with every header, Python's shape (the fixtures'
/// tasks are known to the Python client, as these are here: the app's task settings apply).
/// Checks on the way that the default, lean message is that one less exactly the headers whose
/// value Celery's worker assumes when they are missing.
fn encode(app: &Celery, mut raw: RawSignature, task_id: &str) -> Message {
    raw.options.task_id = Some(task_id.to_owned());
    let outgoing = |app: &Celery, raw: RawSignature| {
        app.producer()
            .outgoing(raw, &celery::TaskOptions::DEFAULT)
            .unwrap()
            .message
    };
    let full = outgoing(app, raw.clone());
    let lean = outgoing(&common::app("wire-lean"), raw);
    assert_is_the_lean_form(&lean, &full);
    full
}

/// Whether a header can go with no change to what a Celery 5.7 task's request reads: its
/// `Context` class's defaults (null, and zero retries and nesting) are what `Request.__init__`
/// leaves in place of a missing header. Not so for an empty `timelimit` or `stamps`, which a
/// request reads as `[None, None]` and `{}`, against `None` when missing; nor for an explicit
/// `ignore_result` of false, which overrides the task's own setting where a missing one does not.
fn worker_assumes(name: &str, value: &HeaderValue) -> bool {
    match name {
        "retries" | "replaced_task_nesting" => *value == HeaderValue::Int(0),
        _ => value.is_null(),
    }
}

fn assert_is_the_lean_form(lean: &Message, full: &Message) {
    let varying = ["origin", "eta", "expires"];
    let kept: Vec<_> = full
        .headers
        .iter()
        .filter(|(name, value)| !worker_assumes(name, value))
        .collect();
    let names = |headers: Vec<&(celery::protocol::HeaderName, HeaderValue)>| {
        headers
            .into_iter()
            .map(|(k, _)| k.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(lean.headers.iter().collect()),
        names(kept.clone()),
        "the lean message's headers"
    );
    for ((name, mine), (_, theirs)) in lean.headers.iter().zip(kept) {
        if !varying.contains(&name.as_ref()) {
            assert_eq!(mine, theirs, "lean header {name}");
        }
    }
    assert_eq!(lean.body, full.body);
    // The apps differ in their reply queue, and a message's expiration is counted from the
    // moment it was made.
    let comparable = |message: &Message| Properties {
        reply_to: None,
        expiration: message
            .properties
            .expiration
            .as_ref()
            .map(|_| String::new()),
        ..message.properties.clone()
    };
    assert_eq!(comparable(lean), comparable(full));
}

fn raw<R, K>(signature: Signature<R, K>) -> RawSignature {
    signature.into_wire().unwrap()
}

/// Compares two header tables, leaving out what differs by host and time.
fn assert_same_headers(ours: &Message, theirs: &Value) {
    let varying = ["origin", "eta", "expires"];
    let keys = |headers: &Headers| headers.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    let expected = fixture_headers(theirs);
    assert_eq!(
        keys(&ours.headers),
        keys(&expected),
        "header names and order"
    );
    for ((key, mine), (_, python)) in ours.headers.iter().zip(&expected) {
        if !varying.contains(&key.as_ref()) {
            assert_eq!(mine, python, "header {key}");
        } else {
            assert_eq!(mine.is_null(), python.is_null(), "header {key} presence");
        }
    }
}

fn assert_same_body(ours: &Message, theirs: &Value) {
    let body = String::from_utf8(ours.body.clone()).unwrap();
    assert_eq!(body, theirs["body_text"].as_str().unwrap());
}

fn assert_same_properties(ours: &Message, theirs: &Value) {
    let props = &theirs["properties"];
    assert_eq!(
        ours.properties.content_type,
        props["content_type"].as_str().unwrap()
    );
    assert_eq!(
        ours.properties.content_encoding,
        props["content_encoding"].as_str().unwrap()
    );
    assert_eq!(
        u64::from(ours.properties.delivery_mode),
        props["delivery_mode"].as_u64().unwrap()
    );
    assert_eq!(
        ours.properties.correlation_id.as_deref(),
        props["correlation_id"].as_str()
    );
    assert_eq!(
        ours.properties.priority.map(u64::from),
        props["priority"].as_u64()
    );
    assert_eq!(
        ours.properties.expiration.as_deref(),
        props["expiration"].as_str()
    );
}

/// An app sending every header, as Python does, so that its messages compare whole.
fn app() -> Celery {
    let url = common::memory_url("wire");
    Celery::builder("wire")
        .broker_url(&url)
        .result_backend(&url)
        .configure(|c| c.task_message_headers = HeaderSet::Full)
        .build()
        .unwrap()
}

#[test]
fn a_plain_call_is_byte_for_byte_what_python_sends() {
    let theirs = fixture("task_add_2_2");
    let ours = encode(
        &app(),
        raw(add::s(2, 2)),
        "a1b2c3d4-0000-4000-8000-000000000001",
    );
    assert_same_headers(&ours, &theirs);
    assert_same_body(&ours, &theirs);
    assert_same_properties(&ours, &theirs);
    assert_eq!(
        ours.header("origin").unwrap().as_str().unwrap(),
        app().origin()
    );
}

#[test]
fn keyword_arguments_match() {
    let theirs = fixture("task_add_kwargs");
    let mut kwargs = Map::new();
    kwargs.insert("x".into(), json!(2));
    kwargs.insert("y".into(), json!(3));
    let ours = encode(
        &app(),
        raw(signature("tasks.add", vec![], kwargs)),
        theirs["headers"]["id"].as_str().unwrap(),
    );
    assert_same_headers(&ours, &theirs);
    assert_same_body(&ours, &theirs);
}

#[test]
fn link_and_link_error_embed_signatures_as_python_does() {
    let theirs = fixture("task_link_link_error");
    let options = CallOptions::new()
        .link(add::partial(16))
        .link_error(signature("tasks.on_error", vec![], Map::new()));
    let ours = encode(
        &app(),
        raw(add::s(2, 2).with_options(options)),
        theirs["headers"]["id"].as_str().unwrap(),
    );
    assert_same_headers(&ours, &theirs);
    assert_same_body(&ours, &theirs);
}

#[test]
fn non_ascii_is_escaped_in_the_body_and_raw_in_reprs() {
    let theirs = fixture("task_non_ascii");
    let signature = echo::s("héllo ☃".into(), String::new());
    let mut wire = raw(signature);
    wire.args.truncate(1);
    wire.kwargs.insert("k".into(), json!("ü"));
    let ours = encode(&app(), wire, theirs["headers"]["id"].as_str().unwrap());
    assert_same_headers(&ours, &theirs);
    assert_same_body(&ours, &theirs);
}

#[test]
fn shadow_and_time_limits_match() {
    let theirs = fixture("task_shadow_timelimit");
    let options = CallOptions::new()
        .shadow("add-shadow-name")
        .time_limit(10)
        .soft_time_limit(5);
    let ours = encode(
        &app(),
        raw(add::s(2, 2).with_options(options)),
        theirs["headers"]["id"].as_str().unwrap(),
    );
    assert_same_headers(&ours, &theirs);
    assert_eq!(
        ours.header("timelimit"),
        Some(&HeaderValue::List(vec![
            HeaderValue::Int(10),
            HeaderValue::Int(5)
        ]))
    );
}

#[test]
fn countdown_and_expires_set_eta_expires_and_expiration() {
    let theirs = fixture("task_countdown_expires");
    let options = CallOptions::new().countdown(3).expires(60);
    let ours = encode(
        &app(),
        raw(add::s(2, 2).with_options(options)),
        theirs["headers"]["id"].as_str().unwrap(),
    );
    assert_same_headers(&ours, &theirs);
    assert_same_properties(&ours, &theirs);
    let headers = TaskHeaders::from_table(&ours.headers).unwrap();
    let gap = headers.expires.unwrap() - headers.eta.unwrap();
    assert_eq!(gap.num_seconds(), 57);
}

#[test]
fn priority_is_a_property_only_when_given() {
    let theirs = fixture("task_priority_5");
    let ours = encode(
        &app(),
        raw(add::s(2, 2).with_options(CallOptions::new().priority(5))),
        theirs["headers"]["id"].as_str().unwrap(),
    );
    assert_same_properties(&ours, &theirs);
}

#[test]
fn compressed_bodies_name_their_scheme_like_python() {
    let theirs = fixture("task_gzip");
    let ours = encode(
        &app(),
        raw(add::s(2, 2).with_options(CallOptions::new().compression("gzip"))),
        theirs["headers"]["id"].as_str().unwrap(),
    );
    assert_same_headers(&ours, &theirs);
    assert_eq!(
        &ours.body[..2],
        &base64_decode(theirs["body_base64"].as_str().unwrap())[..2]
    );
    let decoded = celery::worker::decode(&app(), &ours).unwrap();
    assert_eq!(decoded.body.args, vec![json!(2), json!(2)]);
}

#[test]
fn group_members_carry_group_and_index() {
    let theirs = fixture("task_group_1");
    let mut wire = raw(add::s(3, 4));
    wire.options.group_id = theirs["headers"]["group"].as_str().map(str::to_owned);
    wire.options.group_index = Some(1);
    let ours = encode(&app(), wire, theirs["headers"]["id"].as_str().unwrap());
    assert_same_headers(&ours, &theirs);
    assert_same_body(&ours, &theirs);
}

#[test]
fn every_python_task_message_decodes_here() {
    let app = app();
    let cases = [
        ("task_add_2_2", json!([2, 2]), json!({})),
        ("task_add_kwargs", json!([]), json!({"x": 2, "y": 3})),
        ("task_countdown_expires", json!([2, 2]), json!({})),
        ("task_link_link_error", json!([2, 2]), json!({})),
        ("task_chain_first", json!([2, 2]), json!({})),
        ("task_group_0", json!([1, 2]), json!({})),
        ("task_priority_5", json!([2, 2]), json!({})),
        ("task_non_ascii", json!(["héllo ☃"]), json!({"k": "ü"})),
        ("task_shadow_timelimit", json!([2, 2]), json!({})),
        ("task_gzip", json!([2, 2]), json!({})),
        ("task_ignore_result", json!([2, 2]), json!({})),
    ];
    for (name, args, kwargs) in cases {
        let fixture = fixture(name);
        let decoded = celery::worker::decode(&app, &fixture_message(&fixture))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(json!(decoded.body.args), args, "{name}");
        assert_eq!(json!(decoded.body.kwargs), kwargs, "{name}");
        assert_eq!(
            decoded.headers.id,
            fixture["headers"]["id"].as_str().unwrap(),
            "{name}"
        );
    }
    let chain =
        celery::worker::decode(&app, &fixture_message(&fixture("task_chain_first"))).unwrap();
    let steps: Vec<_> = chain
        .body
        .embed
        .chain
        .unwrap()
        .iter()
        .map(|s| (s.task.clone(), s.args.clone()))
        .collect();
    assert_eq!(
        steps,
        vec![
            ("tasks.mul".to_owned(), vec![json!(3)]),
            ("tasks.add".to_owned(), vec![json!(16)])
        ]
    );
    let limits =
        celery::worker::decode(&app, &fixture_message(&fixture("task_shadow_timelimit"))).unwrap();
    assert_eq!(limits.headers.timelimit, (Some(10.0), Some(5.0)));
    assert_eq!(limits.headers.shadow.as_deref(), Some("add-shadow-name"));
    let link =
        celery::worker::decode(&app, &fixture_message(&fixture("task_link_link_error"))).unwrap();
    assert_eq!(link.body.embed.callbacks.unwrap()[0].args, vec![json!(16)]);
    assert_eq!(link.body.embed.errbacks.unwrap()[0].task, "tasks.on_error");
    let retried =
        celery::worker::decode(&app, &fixture_message(&fixture("task_retry_republished"))).unwrap();
    assert_eq!(retried.headers.retries, 1);
    assert_eq!(
        retried.headers.parent_id.as_deref(),
        Some(retried.headers.id.as_str())
    );
}

#[tokio::test]
async fn a_python_message_runs_on_a_rust_worker() {
    let app = app();
    app.register(add::Task).register(mul::Task);
    let worker = app.worker().queues(["python"]).start().await.unwrap();
    let message = fixture_message(&fixture("task_chain_first"));
    let id = message.header("id").unwrap().as_str().unwrap().to_owned();
    app.broker().declare(&Queue::new("python")).await.unwrap();
    app.broker().publish("", "python", &message).await.unwrap();
    assert_eq!(
        app.result::<i64>(id)
            .get()
            .timeout(common::WAIT)
            .await
            .unwrap(),
        4
    );
    worker.shutdown().await;
}

#[test]
fn python_result_messages_decode_here() {
    let body = |name: &str| -> ResultMeta {
        serde_json::from_value(fixture(name)["body_json"].clone()).unwrap()
    };
    let success = body("result_success_add");
    assert_eq!((success.status, success.result), (State::Success, json!(4)));
    let failure = body("result_failure_valueerror");
    assert_eq!(
        failure.exception_info().unwrap(),
        ExceptionInfo::builtin("ValueError", "boom")
    );
    assert!(failure.traceback.unwrap().contains("ValueError"));
    let progress = body("result_progress");
    assert_eq!(
        (progress.status.to_string(), progress.result),
        ("PROGRESS".to_owned(), json!({"progress": 50}))
    );
    assert_eq!(body("result_retry").status, State::Retry);
}

#[test]
fn our_result_records_have_pythons_keys_in_order() {
    let theirs = fixture("result_success_add");
    let mut ours = ResultMeta::new(
        theirs["body_json"]["task_id"].as_str().unwrap().to_owned(),
        State::Success,
        json!(4),
    );
    ours.date_done = theirs["body_json"]["date_done"].as_str().map(str::to_owned);
    let text = String::from_utf8(celery::serializer::Json::to_vec(&ours).unwrap()).unwrap();
    assert_eq!(text, theirs["body_text"].as_str().unwrap());
}
