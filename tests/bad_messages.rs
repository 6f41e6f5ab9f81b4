//! Messages a worker cannot run: each is rejected with a clear error, a FAILURE is stored when the
//! message has an id, and the worker goes on serving the good messages sent after it.

mod common;

use celery::prelude::*;
use celery::protocol::{HeaderValue, Message, Properties, TaskHeaders};
use celery::Queue;
use common::WAIT;

#[task(name = "bad.add")]
async fn add(x: i32, y: i32) -> i32 {
    x + y
}

fn message(id: &str, task: &str, content_type: &str, body: &[u8]) -> Message {
    Message {
        headers: TaskHeaders::new(task, id).to_table(),
        properties: Properties {
            correlation_id: Some(id.to_owned()),
            reply_to: None,
            content_type: content_type.to_owned(),
            content_encoding: "utf-8".to_owned(),
            delivery_mode: 2,
            priority: None,
            expiration: None,
        },
        body: body.to_vec(),
    }
}

#[tokio::test]
async fn each_bad_message_fails_clearly_and_the_worker_goes_on() {
    let app = Celery::builder("bad")
        .broker_url(common::memory_url("bad"))
        .result_backend(common::memory_url("bad-results"))
        .configure(|config| config.message_max_body_size = 1024)
        .build()
        .unwrap();
    let _ = app.register(add::Task);
    let worker = app.worker().concurrency(1).start().await.unwrap();
    app.broker().declare(&Queue::new("celery")).await.unwrap();

    let mut compressed = message(
        "bad-zlib",
        "bad.add",
        "application/json",
        b"not zlib at all",
    );
    compressed.headers.push((
        "compression".into(),
        HeaderValue::Str("application/x-gzip".into()),
    ));
    let mut unknown_scheme = message(
        "bad-scheme",
        "bad.add",
        "application/json",
        b"[[1, 2], {}, null]",
    );
    unknown_scheme.headers.push((
        "compression".into(),
        HeaderValue::Str("application/x-snappy".into()),
    ));
    let mut no_task = message(
        "bad-headers",
        "bad.add",
        "application/json",
        b"[[1, 2], {}, null]",
    );
    no_task.headers.retain(|(key, _)| key != "task");
    let cases = [
        (
            message("bad-json", "bad.add", "application/json", b"{not json"),
            "DecodeError",
            "not valid json",
        ),
        (
            message(
                "bad-shape",
                "bad.add",
                "application/json",
                br#"{"args": [1, 2]}"#,
            ),
            "DecodeError",
            "expected a list",
        ),
        (
            message(
                "bad-types",
                "bad.add",
                "application/json",
                br#"[["one", 2], {}, null]"#,
            ),
            "TypeError",
            "argument 'x'",
        ),
        (
            message(
                "bad-arity",
                "bad.add",
                "application/json",
                br#"[[1, 2, 3], {}, null]"#,
            ),
            "TypeError",
            "takes 2 positional",
        ),
        (
            message(
                "bad-name",
                "bad.nobody",
                "application/json",
                br#"[[], {}, null]"#,
            ),
            "NotRegistered",
            "bad.nobody",
        ),
        (
            message(
                "bad-content",
                "bad.add",
                "application/x-python-serialize",
                b"\x80\x04.",
            ),
            "ContentDisallowed",
            "x-python-serialize",
        ),
        (
            message("bad-size", "bad.add", "application/json", &[b' '; 2048]),
            "DecodeError",
            "too large",
        ),
        (compressed, "DecodeError", "corrupt zlib body"),
        (unknown_scheme, "DecodeError", "unknown compression"),
        (no_task, "DecodeError", "missing header \"task\""),
        // A callback without its task name, and a callback's own link that is not a signature
        // (dropped, it would never have run): the message fails, and so does each chain step
        // after it, which the caller of a chain waits on.
        (
            message(
                "bad-callback",
                "bad.add",
                "application/json",
                br#"[[1, 2], {}, {"callbacks": [{"args": []}],
                    "chain": [{"task": "bad.add", "args": [1],
                               "options": {"task_id": "bad-callback-step"}}]}]"#,
            ),
            "DecodeError",
            "task",
        ),
        (
            message(
                "bad-nested-link",
                "bad.add",
                "application/json",
                br#"[[1, 2], {}, {"callbacks": [{"task": "bad.add", "options": {"link": "bad.add"}}],
                    "chain": [{"task": "bad.add", "args": [1],
                               "options": {"task_id": "bad-nested-link-step"}}]}]"#,
            ),
            "DecodeError",
            "is not a signature",
        ),
    ];
    for (message, _, _) in &cases {
        app.broker().publish("", "celery", message).await.unwrap();
    }
    let good = add::s(2, 3).apply_async_with(&app).await.unwrap();
    assert_eq!(
        good.get().timeout(WAIT).await.unwrap(),
        5,
        "the worker still serves good messages"
    );
    for (message, exc_type, text) in &cases {
        let id = message.properties.correlation_id.clone().unwrap();
        let error = app
            .result::<i32>(id.clone())
            .get()
            .timeout(WAIT)
            .await
            .unwrap_err();
        let exception = error.exception().unwrap_or_else(|| panic!("{id}: {error}"));
        assert_eq!(exception.exc_type, *exc_type, "{id}: {exception}");
        assert!(exception.message().contains(text), "{id}: {exception}");
    }
    for step in ["bad-callback-step", "bad-nested-link-step"] {
        let error = app
            .result::<i32>(step.to_owned())
            .get()
            .timeout(WAIT)
            .await
            .unwrap_err();
        let exception = error
            .exception()
            .unwrap_or_else(|| panic!("{step}: {error}"));
        assert_eq!(exception.exc_type, "DecodeError", "{step}: {exception}");
    }
    worker.shutdown().await;
    assert_eq!(
        app.broker().purge("celery").await.unwrap(),
        0,
        "no message was left or requeued"
    );
}
