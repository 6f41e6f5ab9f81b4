//! The Calling guide, option by option, end to end on the in-memory broker: every test sends
//! real protocol v2 messages through a broker to a worker and reads results from a backend.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use celery::broker::BrokerErrorKind;
use celery::prelude::*;
use celery::protocol::TaskHeaders;
use celery::{signature, PartialRetryPolicy, RetryPolicy};
use common::{app, FlakyBroker, RecordingBroker, WAIT};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[task(name = "tests.add")]
async fn add(x: i32, y: i32) -> i32 {
    x + y
}

#[task(name = "tests.mul")]
fn mul(x: i32, y: i32) -> i32 {
    x * y
}

#[task(name = "tests.concat")]
async fn concat(text: String, suffix: String) -> String {
    text + &suffix
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Point {
    x: f64,
    y: f64,
}

#[task(name = "tests.norm")]
async fn norm(point: Point, scale: Option<f64>) -> f64 {
    (point.x * point.x + point.y * point.y).sqrt() * scale.unwrap_or(1.0)
}

#[task(name = "tests.divide")]
async fn divide(x: i32, y: i32) -> Result<i32, TaskError> {
    if y == 0 {
        return Err(TaskError::new("ZeroDivisionError", "division by zero"));
    }
    Ok(x / y)
}

#[derive(Debug, thiserror::Error)]
#[error("cannot parse {0:?}")]
struct ParseFailure(String);

#[task(name = "tests.parse")]
async fn parse(text: String) -> Result<i64, ParseFailure> {
    text.parse().map_err(|_| ParseFailure(text))
}

static COUNTED: AtomicU32 = AtomicU32::new(0);

#[task(name = "tests.count")]
async fn count(by: u32) -> u32 {
    COUNTED.fetch_add(by, Ordering::SeqCst) + by
}

#[task(name = "tests.progress", bind)]
async fn progress(ctx: TaskContext, steps: Vec<u32>) -> Result<String, TaskError> {
    for step in steps {
        ctx.update_state("PROGRESS", json!({ "progress": step }))
            .await
            .map_err(TaskError::msg)?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok("done".to_owned())
}

static ERRBACK_CALLS: Mutex<Vec<(String, String, String)>> = Mutex::new(Vec::new());

#[task(name = "tests.on_error", errback)]
async fn on_error(request: Request, exc: ExceptionInfo, _traceback: Option<String>, tag: String) {
    ERRBACK_CALLS
        .lock()
        .unwrap()
        .push((request.id, exc.exc_type, tag));
}

/// The ids an errback called in-process runs under, beside the failed task's id it was given.
static ERRBACK_CONTEXTS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

#[task(name = "tests.on_error_bound", bind, errback)]
async fn on_error_bound(
    ctx: TaskContext,
    request: Request,
    _exc: ExceptionInfo,
    _traceback: Option<String>,
) {
    ERRBACK_CONTEXTS
        .lock()
        .unwrap()
        .push((request.id, ctx.id().to_owned()));
}

/// Chain steps that ran, by tag.
static STEPS_RUN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

#[task(name = "tests.record_step")]
async fn record_step(previous: i32, tag: u32) -> i32 {
    STEPS_RUN.lock().unwrap().push(tag);
    previous
}

static FAILED_IDS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// An old-style errback: a message whose first argument is the failed task's id.
#[task(name = "tests.record_failed_id")]
async fn record_failed_id(task_id: String) {
    FAILED_IDS.lock().unwrap().push(task_id);
}

#[task(
    name = "tests.flaky",
    bind,
    max_retries = 5,
    default_retry_delay = 0.05
)]
async fn flaky(ctx: TaskContext, succeed_on: u32) -> Result<u32, TaskError> {
    if ctx.retries() < succeed_on {
        return Err(ctx
            .retry()
            .exc(TaskError::new("ConnectionError", "try again"))
            .into());
    }
    Ok(ctx.retries())
}

#[task(
    name = "tests.always_retry",
    bind,
    max_retries = 2,
    default_retry_delay = 0.01
)]
async fn always_retry(ctx: TaskContext) -> Result<(), TaskError> {
    Err(ctx.retry().into())
}

#[task(
    name = "tests.attr_routed",
    queue = "attr-queue",
    serializer = "msgpack",
    compression = "zlib",
    priority = 7
)]
async fn attr_routed(x: i32) -> i32 {
    x
}

#[task(name = "tests.quiet", ignore_result)]
async fn quiet(x: i32) -> i32 {
    COUNTED.fetch_add(0, Ordering::SeqCst);
    x
}

#[task(name = "tests.ratio")]
async fn ratio(x: f64, y: f64) -> f64 {
    x / y
}

/// Waits for a task of its own: refused unless `allowed` (Celery's `disable_sync_subtasks`).
#[task(name = "tests.waits_on_a_subtask", bind)]
async fn waits_on_a_subtask(ctx: TaskContext, allowed: bool) -> Result<i32, TaskError> {
    let app = ctx.app().expect("run by a worker").clone();
    let subtask = add::s(1, 1).apply_async_with(&app).await?;
    Ok(subtask
        .get()
        .timeout(WAIT)
        .disable_sync_subtasks(!allowed)
        .await?)
}

/// Sends two subtasks from its body, the second without `add_to_parent`; returns their ids.
#[task(name = "tests.spawns", bind)]
async fn spawns(ctx: TaskContext) -> Result<Vec<String>, TaskError> {
    let app = ctx.app().expect("run by a worker").clone();
    let listed = add::s(1, 1).apply_async_with(&app).await?;
    let unlisted = add::s(2, 2)
        .with_options(CallOptions::new().add_to_parent(false))
        .apply_async_with(&app)
        .await?;
    Ok(vec![listed.id().to_owned(), unlisted.id().to_owned()])
}

/// Sends a group from its body; returns the group's id and its members' ids.
#[task(name = "tests.spawns_group", bind)]
async fn spawns_group(ctx: TaskContext) -> Result<(String, Vec<String>), TaskError> {
    let app = ctx.app().expect("run by a worker").clone();
    let sent = group([add::s(1, 1), add::s(2, 2)])
        .apply_async_with(&app)
        .await?;
    let members = sent.results().iter().map(|r| r.id().to_owned()).collect();
    Ok((sent.id().to_owned(), members))
}

/// Sends a subtask, then fails.
#[task(name = "tests.spawns_then_fails", bind)]
async fn spawns_then_fails(ctx: TaskContext) -> Result<(), TaskError> {
    let app = ctx.app().expect("run by a worker").clone();
    add::s(1, 1).apply_async_with(&app).await?;
    Err(TaskError::new("ValueError", "after sending a subtask"))
}

/// Sends a subtask and stores a PROGRESS state, waits at its gate, then asks to run again in an
/// hour.
#[task(name = "tests.spawns_then_retries", bind)]
async fn spawns_then_retries(ctx: TaskContext) -> Result<(), TaskError> {
    let app = ctx.app().expect("run by a worker").clone();
    add::s(1, 1).apply_async_with(&app).await?;
    ctx.update_state("PROGRESS", json!({"step": 1})).await?;
    Gate::named("spawns_then_retries").pass().await;
    Err(ctx.retry().countdown(3600).into())
}

/// Returns the headers of its message besides Celery's own.
#[task(name = "tests.own_headers", bind)]
async fn own_headers(ctx: TaskContext) -> serde_json::Map<String, Value> {
    ctx.request().headers.clone()
}

/// Another task under `tests.add`'s name: refused once `tests.add` is registered.
#[task(name = "tests.add")]
async fn impostor(x: i32, y: i32) -> i32 {
    x - y
}

#[task(name = "tests.sleepy", time_limit = 0.2)]
async fn sleepy(seconds: f64) -> f64 {
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    seconds
}

#[task(name = "tests.panics")]
async fn panics(message: String) -> i32 {
    panic!("{message}")
}

fn register_all(app: &Celery) {
    app.register(add::Task)
        .register(mul::Task)
        .register(concat::Task)
        .register(norm::Task)
        .register(divide::Task)
        .register(parse::Task)
        .register(count::Task)
        .register(progress::Task)
        .register(on_error::Task)
        .register(on_error_bound::Task)
        .register(record_step::Task)
        .register(record_failed_id::Task)
        .register(flaky::Task)
        .register(always_retry::Task)
        .register(attr_routed::Task)
        .register(quiet::Task)
        .register(sleepy::Task)
        .register(waits_on_a_subtask::Task)
        .register(spawns::Task)
        .register(spawns_then_fails::Task)
        .register(spawns_group::Task)
        .register(spawns_then_retries::Task)
        .register(own_headers::Task)
        .register(ratio::Task)
        .register(panics::Task);
}

async fn started(test: &str) -> (Celery, Worker) {
    let app = app(test);
    register_all(&app);
    let worker = app.worker().concurrency(4).start().await.unwrap();
    (app, worker)
}

#[tokio::test]
async fn a_task_called_directly_runs_in_process() {
    assert_eq!(add(2, 2).await, 4);
    assert_eq!(mul(3, 4), 12);
    assert_eq!(add::NAME, "tests.add");
}

#[tokio::test]
async fn apply_async_returns_a_typed_result() {
    let (app, worker) = started("typed").await;
    let result = add::s(2, 2).apply_async_with(&app).await.unwrap();
    let four: i32 = result.get().timeout(WAIT).await.unwrap();
    assert_eq!(four, 4);
    assert_eq!(result.state().await.unwrap(), State::Success);
    assert!(result.ready().await.unwrap() && result.successful().await.unwrap());

    let blocking = mul::s(6, 7).apply_async_with(&app).await.unwrap();
    assert_eq!(blocking.get().timeout(WAIT).await.unwrap(), 42);

    let structured = norm::s(Point { x: 3.0, y: 4.0 }, Some(2.0))
        .apply_async_with(&app)
        .await
        .unwrap();
    assert_eq!(structured.get().timeout(WAIT).await.unwrap(), 10.0);
    worker.shutdown().await;
}

#[tokio::test]
async fn keyword_arguments_and_optional_parameters() {
    let (app, worker) = started("kwargs").await;
    let by_name = signature("tests.norm", vec![], Default::default())
        .kwarg("point", Point { x: 6.0, y: 8.0 });
    let result = by_name.apply_async_with(&app).await.unwrap();
    assert_eq!(result.get().timeout(WAIT).await.unwrap(), json!(10.0));

    let mixed = app.send_task(
        "tests.concat",
        vec![json!("a")],
        json!({"suffix": "b"}).as_object().unwrap().clone(),
        CallOptions::new(),
    );
    assert_eq!(
        mixed.await.unwrap().get().timeout(WAIT).await.unwrap(),
        json!("ab")
    );
    worker.shutdown().await;
}

#[tokio::test]
async fn link_callbacks_receive_the_parent_result_in_order() {
    let (app, worker) = started("link").await;
    let options = CallOptions::new()
        .link(add::partial(16).with_options(CallOptions::new().task_id("link-cb-1")))
        .link(mul::partial(10).with_options(CallOptions::new().task_id("link-cb-2")))
        .link(add::si(1, 1).with_options(CallOptions::new().task_id("link-cb-3")));
    let parent = add::s(2, 2)
        .with_options(options)
        .apply_async_with(&app)
        .await
        .unwrap();
    assert_eq!(parent.get().timeout(WAIT).await.unwrap(), 4);
    assert_eq!(
        app.result::<i32>("link-cb-1")
            .get()
            .timeout(WAIT)
            .await
            .unwrap(),
        20
    );
    assert_eq!(
        app.result::<i32>("link-cb-2")
            .get()
            .timeout(WAIT)
            .await
            .unwrap(),
        40
    );
    assert_eq!(
        app.result::<i32>("link-cb-3")
            .get()
            .timeout(WAIT)
            .await
            .unwrap(),
        2
    );
    let child = app
        .result::<i32>("link-cb-1")
        .info()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(child.parent_id.as_deref(), Some(parent.id()));
    // As Celery's trace sends several callbacks: as one group.
    let mut group_ids = Vec::new();
    for id in ["link-cb-1", "link-cb-2", "link-cb-3"] {
        let meta = app.result::<i32>(id).info().await.unwrap().unwrap();
        group_ids.push(meta.group_id.expect("sent as a group"));
    }
    group_ids.dedup();
    assert_eq!(group_ids.len(), 1, "one group: {group_ids:?}");
    let children: Vec<String> = parent
        .children()
        .await
        .unwrap()
        .iter()
        .map(|c| c.id().to_owned())
        .collect();
    assert_eq!(children, ["link-cb-1", "link-cb-2", "link-cb-3"]);
    // Stored as Celery stores a group among a task's children: one `GroupResult` entry.
    let stored = parent.info().await.unwrap().unwrap().children;
    let member = |id: &str| json!([[id, null], null]);
    assert_eq!(
        stored,
        [json!([
            [group_ids[0], null],
            [
                member("link-cb-1"),
                member("link-cb-2"),
                member("link-cb-3")
            ]
        ])]
    );
    worker.shutdown().await;
}

#[tokio::test]
async fn errbacks_run_in_process_or_as_messages_with_the_failed_id() {
    let (app, worker) = started("errback").await;
    let options = CallOptions::new()
        .link_error(on_error::s("first".to_owned()))
        .link_error(record_failed_id::partial())
        // Immutable: sent with its own arguments only, as Celery's group of errbacks does.
        .link_error(record_failed_id::si("immutable errback".to_owned()));
    let failing = divide::s(1, 0)
        .with_options(options)
        .apply_async_with(&app)
        .await
        .unwrap();
    let error = failing.get().timeout(WAIT).await.unwrap_err();
    let exception = error.exception().unwrap();
    assert_eq!(exception.exc_type, "ZeroDivisionError");
    assert_eq!(exception.exc_module.as_deref(), Some("builtins"));
    let deadline = Instant::now() + WAIT;
    while !FAILED_IDS
        .lock()
        .unwrap()
        .contains(&failing.id().to_owned())
    {
        assert!(Instant::now() < deadline, "the message errback never ran");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    while !FAILED_IDS
        .lock()
        .unwrap()
        .contains(&"immutable errback".to_owned())
    {
        assert!(Instant::now() < deadline, "the immutable errback never ran");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let calls = ERRBACK_CALLS.lock().unwrap().clone();
    assert!(
        calls.contains(&(
            failing.id().to_owned(),
            "ZeroDivisionError".to_owned(),
            "first".to_owned()
        )),
        "{calls:?}"
    );
    worker.shutdown().await;
}

#[tokio::test]
async fn failures_propagate_or_come_back_as_data() {
    let (app, worker) = started("failure").await;
    let result = parse::s("x1".to_owned())
        .apply_async_with(&app)
        .await
        .unwrap();
    match result.get().timeout(WAIT).await {
        Err(Error::TaskFailed {
            exception, task_id, ..
        }) => {
            assert_eq!(task_id, result.id());
            assert_eq!(exception.exc_type, "ParseFailure");
            assert_eq!(exception.exc_message, json!(["cannot parse \"x1\""]));
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    let outcome = result.get().no_propagate().await.unwrap();
    assert!(
        matches!(outcome, TaskOutcome::Failure { ref exception, .. } if exception.exc_type == "ParseFailure")
    );
    assert_eq!(result.state().await.unwrap(), State::Failure);
    let ok = parse::s("12".to_owned())
        .apply_async_with(&app)
        .await
        .unwrap();
    assert_eq!(
        ok.get().no_propagate().await.unwrap(),
        TaskOutcome::Success(12)
    );
    worker.shutdown().await;
}

#[tokio::test]
async fn countdown_and_eta_hold_a_task_without_blocking_others() {
    let app = app("countdown");
    register_all(&app);
    // One slot and a prefetch of one: the held message must not stop the next one.
    let worker = app
        .worker()
        .concurrency(1)
        .prefetch_multiplier(1)
        .start()
        .await
        .unwrap();
    let sent = Instant::now();
    let hour = add::s(0, 0)
        .with_options(CallOptions::new().countdown(3600))
        .apply_async_with(&app)
        .await
        .unwrap();
    let later = add::s(1, 1)
        .with_options(CallOptions::new().countdown(1.0))
        .apply_async_with(&app)
        .await
        .unwrap();
    let at = chrono::Utc::now() + chrono::Duration::milliseconds(1200);
    let eta = add::s(2, 2).with_options(
        CallOptions::new().eta(at.with_timezone(&chrono::FixedOffset::east_opt(3600).unwrap())),
    );
    let eta = eta.apply_async_with(&app).await.unwrap();
    let now = add::s(3, 3).apply_async_with(&app).await.unwrap();
    assert_eq!(
        now.get().timeout(WAIT).await.unwrap(),
        6,
        "a task held for an hour must not block the queue"
    );
    assert_eq!(hour.state().await.unwrap(), celery::State::Pending);
    // Each held task runs, not before its time.
    assert_eq!(later.get().timeout(WAIT).await.unwrap(), 2);
    assert!(sent.elapsed() >= Duration::from_secs(1));
    assert_eq!(eta.get().timeout(WAIT).await.unwrap(), 4);
    assert!(chrono::Utc::now() >= at);
    assert_eq!(hour.state().await.unwrap(), celery::State::Pending);

    // The last ETA a message can name is held like any other; a countdown past any date is an
    // error of the call (Python's OverflowError), not a panic.
    let last = chrono::DateTime::parse_from_rfc3339("9999-12-31T23:59:59Z").unwrap();
    let held = add::s(4, 4)
        .with_options(CallOptions::new().eta(last))
        .apply_async_with(&app)
        .await
        .unwrap();
    let beyond = chrono::NaiveDate::from_ymd_opt(10_000, 1, 1).unwrap();
    let beyond = beyond.and_hms_opt(0, 0, 0).unwrap().and_utc();
    // 1e12 s is past Python's year 9999, short of chrono's 262,143.
    let past_any_date = [
        ("eta", CallOptions::new().eta(beyond)),
        ("countdown", CallOptions::new().countdown(f64::INFINITY)),
        ("countdown", CallOptions::new().countdown(1e20)),
        ("countdown", CallOptions::new().countdown(1e12)),
    ];
    for (option, options) in past_any_date {
        let refused = add::s(5, 5)
            .with_options(options)
            .apply_async_with(&app)
            .await;
        assert!(
            matches!(&refused, Err(Error::Encode { what, .. }) if what == option),
            "{refused:?}"
        );
    }
    let after = add::s(6, 6).apply_async_with(&app).await.unwrap();
    assert_eq!(after.get().timeout(WAIT).await.unwrap(), 12);
    assert_eq!(held.state().await.unwrap(), celery::State::Pending);
    worker.shutdown().await;
}

#[tokio::test]
async fn an_expired_task_is_revoked_and_never_runs() {
    let (app, worker) = started("expires").await;
    let before = COUNTED.load(Ordering::SeqCst);
    let options = CallOptions::new().countdown(0.5).expires(0.1);
    let expired = count::s(1000)
        .with_options(options)
        .apply_async_with(&app)
        .await
        .unwrap();
    match expired.get().timeout(WAIT).await {
        Err(Error::TaskRevoked { exception, .. }) => {
            assert_eq!(exception.exc_type, "TaskRevokedError");
            assert_eq!(exception.message(), "expired");
        }
        other => panic!("expected REVOKED, got {other:?}"),
    }
    assert_eq!(expired.state().await.unwrap(), State::Revoked);
    let past = chrono::Utc::now() - chrono::Duration::seconds(5);
    let at_date = count::s(1000)
        .with_options(CallOptions::new().expires(past))
        .apply_async_with(&app)
        .await
        .unwrap();
    assert!(matches!(
        at_date.get().timeout(WAIT).await,
        Err(Error::TaskRevoked { .. })
    ));
    // Expired when it arrives, it is revoked at once, not held until its ETA an hour away.
    let held_for_nothing = count::s(1000)
        .with_options(CallOptions::new().countdown(3600).expires(past))
        .apply_async_with(&app)
        .await
        .unwrap();
    assert!(matches!(
        held_for_nothing.get().timeout(WAIT).await,
        Err(Error::TaskRevoked { .. })
    ));
    assert!(
        COUNTED.load(Ordering::SeqCst) < before + 1000,
        "an expired task ran"
    );
    worker.shutdown().await;
}

#[tokio::test]
async fn on_message_sees_every_state_change() {
    let (app, worker) = started("progress").await;
    let result = progress::s(vec![50, 90])
        .apply_async_with(&app)
        .await
        .unwrap();
    let mut seen = Vec::new();
    let value = result
        .get()
        .timeout(WAIT)
        .on_message(|meta| {
            seen.push((
                meta.status.to_string(),
                meta.result.get("progress").cloned(),
            ))
        })
        .await
        .unwrap();
    assert_eq!(value, "done");
    let states: Vec<_> = seen
        .iter()
        .filter(|(s, _)| s != "PENDING")
        .cloned()
        .collect();
    assert_eq!(
        states,
        vec![
            ("PROGRESS".to_owned(), Some(json!(50))),
            ("PROGRESS".to_owned(), Some(json!(90))),
            ("SUCCESS".to_owned(), None)
        ]
    );
    worker.shutdown().await;
}

#[tokio::test]
async fn ignore_result_from_option_attribute_and_setting() {
    let (app, worker) = started("ignore").await;
    let by_option = add::s(1, 2)
        .with_options(CallOptions::new().ignore_result(true))
        .apply_async_with(&app)
        .await
        .unwrap();
    let by_attribute = quiet::s(5).apply_async_with(&app).await.unwrap();
    // A task sent after them on the same queue finishing means they ran.
    add::s(0, 0)
        .apply_async_with(&app)
        .await
        .unwrap()
        .get()
        .timeout(WAIT)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(by_option.state().await.unwrap(), State::Pending);
    assert_eq!(by_attribute.state().await.unwrap(), State::Pending);
    // Nothing will be stored, so `get()` does not wait (Celery's returns None at once): an
    // error for a result type without a "nothing" value, that value otherwise.
    assert!(by_option.ignored() && by_attribute.ignored());
    let waited = Instant::now();
    assert!(matches!(
        by_option.get().await,
        Err(Error::ResultIgnored { task_id }) if task_id == by_option.id()
    ));
    assert_eq!(
        by_option.clone().cast::<Option<i32>>().get().await.unwrap(),
        None
    );
    assert_eq!(
        by_attribute.clone().cast::<Value>().get().await.unwrap(),
        Value::Null
    );
    assert!(waited.elapsed() < WAIT);
    worker.shutdown().await;

    let url = common::memory_url("ignore-setting");
    let quiet_app = Celery::builder("q")
        .broker_url(&url)
        .result_backend(&url)
        .task_ignore_result(true)
        .build()
        .unwrap();
    register_all(&quiet_app);
    let worker = quiet_app.worker().concurrency(1).start().await.unwrap();
    let ignored = add::s(1, 1).apply_async_with(&quiet_app).await.unwrap();
    let failing = divide::s(1, 0).apply_async_with(&quiet_app).await.unwrap();
    // As in Celery 5.7 (`get_actual_ignore_result`), the message's explicit choice wins over
    // the task's and the app's: a caller that asks for the result gets it.
    let wanted = add::s(2, 2)
        .with_options(CallOptions::new().ignore_result(false))
        .apply_async_with(&quiet_app)
        .await
        .unwrap();
    assert_eq!(wanted.get().timeout(WAIT).await.unwrap(), 4);
    for result in [ignored.id(), failing.id()] {
        assert_eq!(
            quiet_app.result::<Value>(result).state().await.unwrap(),
            State::Pending
        );
    }
    assert_eq!(
        quiet_app.broker().purge("celery").await.unwrap(),
        0,
        "all of them ran"
    );
    worker.shutdown().await;
}

#[tokio::test]
async fn track_started_stores_started_with_the_workers_pid_and_hostname() {
    let url = common::memory_url("track-started");
    let app = Celery::builder("track-started")
        .broker_url(&url)
        .result_backend(&url)
        .task_track_started(true)
        .build()
        .unwrap();
    register_all(&app);
    let worker = app
        .worker()
        .hostname("celery@started-node")
        .start()
        .await
        .unwrap();
    // It runs long enough for `get()` to be waiting by the time STARTED is stored (or to be
    // given it as the latest state when it starts waiting).
    let result = sleepy::s(0.15).apply_async_with(&app).await.unwrap();
    let mut states = Vec::new();
    let value = result
        .get()
        .timeout(WAIT)
        .on_message(|meta| states.push((meta.status.clone(), meta.result.clone())))
        .await
        .unwrap();
    assert_eq!(value, 0.15);
    let started = states
        .iter()
        .find(|(state, _)| *state == State::Started)
        .unwrap_or_else(|| panic!("no STARTED in {states:?}"));
    assert_eq!(
        started.1,
        json!({"pid": std::process::id(), "hostname": "celery@started-node"})
    );
    worker.shutdown().await;
}

#[tokio::test]
async fn a_task_waiting_for_another_is_refused_unless_it_says_so() {
    let (app, worker) = started("sync-subtasks").await;
    let refused = waits_on_a_subtask::s(false)
        .apply_async_with(&app)
        .await
        .unwrap();
    let error = refused.get().timeout(WAIT).await.unwrap_err();
    let exception = error.exception().expect("the task failed");
    assert!(
        exception
            .message()
            .contains("never call get() within a task"),
        "{exception}"
    );
    let allowed = waits_on_a_subtask::s(true)
        .apply_async_with(&app)
        .await
        .unwrap();
    assert_eq!(allowed.get().timeout(WAIT).await.unwrap(), 2);
    worker.shutdown().await;
}

#[tokio::test]
async fn a_name_belongs_to_the_first_task_registered_under_it() {
    let app = app("first-registered");
    app.register(add::Task)
        .register(impostor::Task)
        .register(add::Task);
    let worker = app.worker().start().await.unwrap();
    let sum = add::s(2, 3).apply_async_with(&app).await.unwrap();
    assert_eq!(
        sum.get().timeout(WAIT).await.unwrap(),
        5,
        "add, not the impostor"
    );
    worker.shutdown().await;
}

#[tokio::test]
async fn result_extended_stores_the_request() {
    let url = common::memory_url("extended");
    let app = Celery::builder("x")
        .broker_url(&url)
        .result_backend(&url)
        .result_extended(true)
        .build()
        .unwrap();
    register_all(&app);
    let worker = app
        .worker()
        .hostname("celery@test-node")
        .start()
        .await
        .unwrap();
    let result = add::s(2, 3).apply_async_with(&app).await.unwrap();
    result.get().timeout(WAIT).await.unwrap();
    let meta = result.info().await.unwrap().unwrap();
    assert_eq!(meta.name.as_deref(), Some("tests.add"));
    assert_eq!(meta.args, Some(vec![json!(2), json!(3)]));
    assert_eq!(meta.kwargs, Some(Default::default()));
    assert_eq!(meta.worker.as_deref(), Some("celery@test-node"));
    assert_eq!(meta.retries, Some(0));
    assert_eq!(meta.queue.as_deref(), Some("celery"));
    // A state the task stores itself carries them too, as Celery's `update_state`.
    let mut progress_states = Vec::new();
    progress::s(vec![1])
        .with_options(CallOptions::new().parent("the-parent", "the-root"))
        .apply_async_with(&app)
        .await
        .unwrap()
        .get()
        .timeout(WAIT)
        .on_message(|meta| {
            if meta.status == State::from("PROGRESS") {
                progress_states.push(meta.clone());
            }
        })
        .await
        .unwrap();
    let progress_state = progress_states.first().expect("PROGRESS was seen");
    assert_eq!(progress_state.name.as_deref(), Some("tests.progress"));
    assert_eq!(progress_state.args, Some(vec![json!([1])]));
    assert_eq!(progress_state.parent_id.as_deref(), Some("the-parent"));
    worker.shutdown().await;
}

#[tokio::test]
async fn serializer_and_compression_follow_option_then_attribute_then_setting() {
    let broker = RecordingBroker::new("codecs");
    let url = common::memory_url("codecs");
    let app = Celery::builder("c")
        .broker(broker.clone())
        .result_backend(&url)
        .task_serializer("msgpack")
        .build()
        .unwrap();
    let content = |broker: &RecordingBroker| {
        let (_, _, message) = broker.last();
        let compression = message
            .header("compression")
            .and_then(|v| v.as_str().map(str::to_owned));
        (message.properties.content_type, compression)
    };
    add::s(1, 1).apply_async_with(&app).await.unwrap();
    assert_eq!(
        content(&broker),
        ("application/x-msgpack".to_owned(), None),
        "app setting"
    );
    add::s(1, 1)
        .with_options(CallOptions::new().serializer("json"))
        .apply_async_with(&app)
        .await
        .unwrap();
    assert_eq!(
        content(&broker),
        ("application/json".to_owned(), None),
        "option over setting"
    );
    attr_routed::s(1).apply_async_with(&app).await.unwrap();
    assert_eq!(
        content(&broker),
        (
            "application/x-msgpack".to_owned(),
            Some("application/x-gzip".to_owned())
        ),
        "attribute"
    );
    attr_routed::s(1)
        .with_options(CallOptions::new().serializer("json").compression("gzip"))
        .apply_async_with(&app)
        .await
        .unwrap();
    assert_eq!(
        content(&broker),
        (
            "application/json".to_owned(),
            Some("application/x-gzip".to_owned())
        ),
        "option over attribute"
    );

    let unknown = add::s(1, 1)
        .with_options(CallOptions::new().serializer("toml"))
        .apply_async_with(&app)
        .await;
    assert!(unknown
        .unwrap_err()
        .to_string()
        .contains("unknown serializer \"toml\""));
}

#[tokio::test]
async fn compressed_and_msgpack_messages_run_when_accepted() {
    let url = common::memory_url("accept");
    let app = Celery::builder("a")
        .broker_url(&url)
        .result_backend(&url)
        .accept_content(["json", "msgpack"])
        .build()
        .unwrap();
    register_all(&app);
    let worker = app
        .worker()
        .queues(["attr-queue", "celery"])
        .start()
        .await
        .unwrap();
    let result = attr_routed::s(9).apply_async_with(&app).await.unwrap();
    assert_eq!(result.get().timeout(WAIT).await.unwrap(), 9);
    let zipped = add::s(2, 5)
        .with_options(CallOptions::new().compression("zlib"))
        .apply_async_with(&app)
        .await
        .unwrap();
    assert_eq!(zipped.get().timeout(WAIT).await.unwrap(), 7);
    worker.shutdown().await;
}

#[tokio::test]
async fn queue_exchange_routing_key_and_priority() {
    let broker = RecordingBroker::new("routing");
    let url = common::memory_url("routing");
    let app = Celery::builder("r")
        .broker(broker.clone())
        .result_backend(&url)
        .queue(Queue::new("prio").max_priority(10))
        .build()
        .unwrap();
    register_all(&app);

    add::s(1, 1).apply_async_with(&app).await.unwrap();
    let (exchange, key, message) = broker.last();
    assert_eq!(
        (exchange.as_str(), key.as_str(), message.properties.priority),
        ("", "celery", None)
    );

    attr_routed::s(1).apply_async_with(&app).await.unwrap();
    let (exchange, key, message) = broker.last();
    assert_eq!(
        (exchange.as_str(), key.as_str(), message.properties.priority),
        ("", "attr-queue", Some(7))
    );

    add::s(1, 1)
        .with_options(CallOptions::new().queue("other").routing_key("special"))
        .apply_async_with(&app)
        .await
        .unwrap();
    let empty = add::s(1, 1)
        .with_options(CallOptions::new().queue(""))
        .apply_async_with(&app)
        .await;
    assert!(
        matches!(&empty, Err(Error::Config(reason)) if reason.contains("queue name is empty")),
        "{empty:?}"
    );
    let (exchange, key, _) = broker.last();
    assert_eq!(
        (exchange.as_str(), key.as_str()),
        ("", "other"),
        "a routing key without an exchange: to the queue by name, as Celery does (its own \
         binding would not match the key)"
    );

    add::s(1, 1)
        .with_options(CallOptions::new().exchange("celery").routing_key("celery"))
        .apply_async_with(&app)
        .await
        .unwrap();
    let (exchange, key, _) = broker.last();
    assert_eq!((exchange.as_str(), key.as_str()), ("celery", "celery"));

    // Higher priorities first on a priority queue: queue them before a worker starts.
    let mut sent = Vec::new();
    for priority in [1u8, 9, 5] {
        let options = CallOptions::new()
            .queue("prio")
            .priority(priority)
            .task_id(format!("prio-{priority}"));
        sent.push(
            count::s(0)
                .with_options(options)
                .apply_async_with(&app)
                .await
                .unwrap(),
        );
    }
    assert_eq!(broker.ready_count("prio"), 3);
    let worker = app
        .worker()
        .queues(["prio"])
        .concurrency(1)
        .prefetch_multiplier(1)
        .start()
        .await
        .unwrap();
    let mut done = Vec::new();
    for result in &sent {
        result.get().timeout(WAIT).await.unwrap();
        let meta = result.info().await.unwrap().unwrap();
        done.push((meta.date_done.unwrap(), result.id().to_owned()));
    }
    done.sort();
    let order: Vec<_> = done.into_iter().map(|(_, id)| id).collect();
    assert_eq!(order, ["prio-9", "prio-5", "prio-1"]);
    worker.shutdown().await;
}

/// Celery's `timeout`/`confirm_timeout`: a publish attempt the broker does not finish in time
/// fails as a timeout, which the retry policy retries; without retries the call fails.
#[tokio::test]
async fn a_publish_attempt_past_its_timeout_is_retried_then_fails() {
    let backend = common::memory_url("publish-timeout");
    let stalling = FlakyBroker::stalling("publish-timeout", 2);
    let app = Celery::builder("p")
        .broker(stalling.clone())
        .result_backend(&backend)
        .build()
        .unwrap();
    let quick = || CallOptions::new().timeout(Duration::from_millis(50));
    add::s(1, 1)
        .with_options(quick())
        .apply_async_with(&app)
        .await
        .expect("two timeouts are within the default 3 retries");
    assert_eq!(stalling.attempts.load(Ordering::SeqCst), 3);

    let stalled = FlakyBroker::stalling("publish-timeout-stalled", 100);
    let app = Celery::builder("p")
        .broker(stalled.clone())
        .result_backend(&backend)
        .build()
        .unwrap();
    let error = add::s(1, 1)
        .with_options(quick().retry(false))
        .apply_async_with(&app)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::Operational { reason, .. } if reason.contains("timed out")),
        "{error:?}"
    );
    assert_eq!(stalled.attempts.load(Ordering::SeqCst), 1);
    let refused = add::s(1, 1)
        .with_options(CallOptions::new().timeout(0))
        .apply_async_with(&app)
        .await;
    assert!(matches!(refused, Err(Error::Encode { .. })), "{refused:?}");
}

#[tokio::test]
async fn publish_retries_by_policy_then_raises_operational_error() {
    let backend = common::memory_url("retry-policy");
    let flaky = FlakyBroker::new("retry-policy", BrokerErrorKind::Connection, 2);
    let app = Celery::builder("p")
        .broker(flaky.clone())
        .result_backend(&backend)
        .build()
        .unwrap();
    let started = Instant::now();
    add::s(1, 1)
        .apply_async_with(&app)
        .await
        .expect("two failures are within the default 3 retries");
    assert_eq!(flaky.attempts.load(Ordering::SeqCst), 3);
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "the second retry waits interval_step"
    );

    let down = FlakyBroker::new("retry-policy-down", BrokerErrorKind::Connection, 100);
    let app = Celery::builder("p")
        .broker(down.clone())
        .result_backend(&backend)
        .build()
        .unwrap();
    let policy = RetryPolicy {
        max_retries: Some(2),
        interval_start: 0.0,
        interval_step: 0.01,
        interval_max: 0.05,
        retry_errors: None,
    };
    let error = add::s(1, 1)
        .with_options(CallOptions::new().retry_policy(policy))
        .apply_async_with(&app)
        .await
        .unwrap_err();
    assert_eq!(down.attempts.load(Ordering::SeqCst), 3);
    match &error {
        Error::Operational { broker, reason } => {
            assert!(broker.starts_with("memory://retry-policy-down"), "{broker}");
            assert!(
                reason.contains("connection refused") && reason.contains("after 2 retries"),
                "{reason}"
            );
        }
        other => panic!("expected OperationalError, got {other:?}"),
    }
    assert!(error.to_string().starts_with("OperationalError"));

    let before = down.attempts.load(Ordering::SeqCst);
    add::s(1, 1)
        .with_options(CallOptions::new().retry(false))
        .apply_async_with(&app)
        .await
        .unwrap_err();
    assert_eq!(
        down.attempts.load(Ordering::SeqCst),
        before + 1,
        "retry=false fails at once"
    );

    let refused = FlakyBroker::new("retry-policy-refused", BrokerErrorKind::Refused, 100);
    let app = Celery::builder("p")
        .broker(refused.clone())
        .result_backend(&backend)
        .build()
        .unwrap();
    add::s(1, 1).apply_async_with(&app).await.unwrap_err();
    assert_eq!(
        refused.attempts.load(Ordering::SeqCst),
        1,
        "errors outside retry_errors are not retried"
    );
    let only_refused = RetryPolicy {
        retry_errors: Some(vec![BrokerErrorKind::Refused]),
        interval_step: 0.0,
        ..RetryPolicy::default()
    };
    add::s(1, 1)
        .with_options(CallOptions::new().retry_policy(only_refused))
        .apply_async_with(&app)
        .await
        .unwrap_err();
    assert_eq!(
        refused.attempts.load(Ordering::SeqCst),
        1 + 4,
        "retry_errors chooses what is retried"
    );

    // A call's policy replaces only the keys it gives, the rest are the app's (Celery's
    // `dict(default_policy, **retry_policy)`): a signature from Python asking for one retry
    // retries the refusals the app's policy lists.
    let merging = FlakyBroker::new("retry-policy-merged", BrokerErrorKind::Refused, 100);
    let app = Celery::builder("p")
        .broker(merging.clone())
        .result_backend(&backend)
        .configure(|config| {
            config.task_publish_retry_policy = RetryPolicy {
                retry_errors: Some(vec![BrokerErrorKind::Refused]),
                interval_step: 0.0,
                ..RetryPolicy::default()
            }
        })
        .build()
        .unwrap();
    let from_python: celery::signature::RawSignature = serde_json::from_value(json!({
        "task": "tests.add", "args": [1, 1], "kwargs": {},
        "options": {"retry_policy": {"max_retries": 1}},
        "subtask_type": null, "immutable": false, "chord_size": null
    }))
    .unwrap();
    Signature::<Value, celery::signature::Untyped>::from_raw(from_python)
        .apply_async_with(&app)
        .await
        .unwrap_err();
    assert_eq!(merging.attempts.load(Ordering::SeqCst), 1 + 1);
    add::s(1, 1)
        .with_options(
            CallOptions::new().retry_policy(PartialRetryPolicy::new().max_retries(Some(2))),
        )
        .apply_async_with(&app)
        .await
        .unwrap_err();
    assert_eq!(merging.attempts.load(Ordering::SeqCst), 2 + 3);
}

/// A revoked step sends nothing on: the chain's last result would never get a state. As
/// Celery's `get()` follows the result's parents, the revocation is raised at once.
#[tokio::test]
async fn a_chain_whose_step_is_revoked_raises_it_instead_of_waiting() {
    let (app, worker) = started("chain-revoked").await;
    let past = chrono::Utc::now() - chrono::Duration::seconds(5);
    let expired = add::s(2, 2).with_options(CallOptions::new().expires(past));
    let result = chain![expired, add::partial(16), add::partial(1)]
        .apply_async_with(&app)
        .await
        .unwrap();
    let middle = result.parent().expect("the last step has a parent");
    let first = middle.parent().expect("and so has the middle one");
    assert!(first.parent().is_none());
    match result.get().timeout(WAIT).await {
        Err(Error::TaskRevoked { task_id, .. }) => assert_eq!(task_id, first.id()),
        other => panic!("expected the first step's revocation, got {other:?}"),
    }
    assert_eq!(first.state().await.unwrap(), State::Revoked);
    // Not followed when failures come back as data, as in Celery: the wait is for the task.
    let outcome = result
        .get()
        .timeout(Duration::from_millis(200))
        .no_propagate()
        .await;
    assert!(matches!(outcome, Err(Error::Timeout { .. })), "{outcome:?}");
    worker.shutdown().await;
}

/// As Celery's `join_native`: the first member to fail is raised when it fails, not after the
/// members ahead of it are done.
#[tokio::test]
async fn a_group_raises_the_first_failure_while_others_still_run() {
    let (app, worker) = started("group-fails-fast").await;
    let slow = sleepy::s(1.5).with_options(CallOptions::new().time_limit(30));
    // Infinity cannot be sent as JSON: the member fails with EncodeError.
    let failing = ratio::s(1.0, 0.0);
    let result = group([slow, failing]).apply_async_with(&app).await.unwrap();
    let error = result
        .get()
        .timeout(Duration::from_millis(1200))
        .await
        .unwrap_err();
    match &error {
        Error::TaskFailed { task_id, .. } => assert_eq!(task_id, result.results()[1].id()),
        other => panic!("expected the second member's failure, got {other:?}"),
    }
    assert_eq!(error.exception().unwrap().exc_type, "EncodeError");
    // Counted once finished and only when successful, as Celery's `completed_count`.
    let first = &result.results()[0];
    assert_eq!(first.get().timeout(WAIT).await.unwrap(), 1.5);
    assert_eq!(result.completed_count().await.unwrap(), 1);
    worker.shutdown().await;
}

#[tokio::test]
async fn group_results_come_back_in_order() {
    let (app, worker) = started("group").await;
    let result = group([2, 4, 8, 16].map(|i| add::s(i, i)))
        .apply_async_with(&app)
        .await
        .unwrap();
    assert_eq!(
        result.get().timeout(WAIT).await.unwrap(),
        vec![4, 8, 16, 32]
    );
    assert_eq!(result.results().len(), 4);
    assert_eq!(result.completed_count().await.unwrap(), 4);
    // A timeout too long for a deadline is no deadline (it was a panic in `Instant + Duration`).
    let forever = result.get().timeout(Duration::MAX).await.unwrap();
    assert_eq!(forever, vec![4, 8, 16, 32]);
    // A member that already belongs to a group (a signature from Python, say) keeps its id, as
    // Celery's `freeze` keeps it.
    let mut raw = signature("tests.add", vec![json!(1), json!(1)], Default::default())
        .raw()
        .clone();
    raw.options.group_id = Some("its-own-group".to_owned());
    let mixed = group([
        Signature::<Value, _>::from_raw(raw),
        signature("tests.add", vec![json!(2), json!(2)], Default::default()),
    ])
    .apply_async_with(&app)
    .await
    .unwrap();
    assert_eq!(
        mixed.get().timeout(WAIT).await.unwrap(),
        vec![json!(2), json!(4)]
    );
    let group_of = |result: &AsyncResult<Value>| {
        let result = result.clone();
        async move { result.info().await.unwrap().unwrap().group_id }
    };
    assert_eq!(
        group_of(&mixed.results()[0]).await.as_deref(),
        Some("its-own-group")
    );
    assert_eq!(
        group_of(&mixed.results()[1]).await.as_deref(),
        Some(mixed.id())
    );
    worker.shutdown().await;
}

#[tokio::test]
async fn chains_pass_each_result_on() {
    let (app, worker) = started("chain").await;
    let result = chain![add::s(2, 2), add::partial(16), mul::partial(3)]
        .apply_async_with(&app)
        .await
        .unwrap();
    assert_eq!(result.get().timeout(WAIT).await.unwrap(), 60);
    // An empty id is none, for a chain step too: the result waited on is the id it is sent as.
    let unnamed = chain![
        add::s(1, 1),
        add::partial(1).with_options(CallOptions::new().task_id(""))
    ]
    .apply_async_with(&app)
    .await
    .unwrap();
    assert_eq!(unnamed.id().len(), 36, "{}", unnamed.id());
    assert_eq!(unnamed.get().timeout(WAIT).await.unwrap(), 3);
    let with_immutable = chain![
        add::s(1, 1),
        concat::si("a".into(), "b".into()),
        concat::partial("!".into())
    ];
    assert_eq!(
        with_immutable
            .apply_async_with(&app)
            .await
            .unwrap()
            .get()
            .timeout(WAIT)
            .await
            .unwrap(),
        "ab!"
    );
    // A failed step fails the steps after it too (Celery's `_fail_chain`): the chain's result,
    // the last step's, reports the failure instead of waiting for ever.
    let failing = chain![divide::s(1, 0), add::partial(16), mul::partial(3)]
        .apply_async_with(&app)
        .await
        .unwrap();
    let error = failing.get().timeout(WAIT).await.unwrap_err();
    assert_eq!(error.exception().unwrap().exc_type, "ZeroDivisionError");
    // A task whose next step cannot be sent fails, as in Celery, instead of being stored as a
    // success with a chain that never goes on.
    let unsendable = mul::partial(3).with_options(CallOptions::new().serializer("no-such-codec"));
    let parent = add::s(1, 1)
        .with_options(CallOptions::new().link(unsendable))
        .apply_async_with(&app)
        .await
        .unwrap();
    let error = parent.get().timeout(WAIT).await.unwrap_err();
    let exception = error.exception().unwrap();
    assert_eq!(
        (exception.exc_type.as_str(), exception.exc_module.as_deref()),
        ("EncodeError", Some("kombu.exceptions"))
    );
    worker.shutdown().await;
}

/// As Celery's trace, a callback that cannot be sent stops what comes after it: the next chain
/// step is not sent (it would run under an id already stored as failed), and the chain's result
/// reports the failure.
#[tokio::test]
async fn a_callback_that_cannot_be_sent_stops_the_chain_after_it() {
    let (app, worker) = started("callback-stops-chain").await;
    let unsendable = mul::partial(3).with_options(CallOptions::new().serializer("no-such-codec"));
    let first = add::s(1, 1).with_options(CallOptions::new().link(unsendable));
    let stopped = chain![first, record_step::partial(7)]
        .apply_async_with(&app)
        .await
        .unwrap();
    let error = stopped.get().timeout(WAIT).await.unwrap_err();
    assert_eq!(error.exception().unwrap().exc_type, "EncodeError");
    // The same chain without the bad callback runs its step; sent after the failure, it comes
    // after a step 7 the worker had sent.
    let control = chain![add::s(1, 1), record_step::partial(8)]
        .apply_async_with(&app)
        .await
        .unwrap();
    assert_eq!(control.get().timeout(WAIT).await.unwrap(), 2);
    let ran = STEPS_RUN.lock().unwrap().clone();
    assert!(ran.contains(&8) && !ran.contains(&7), "{ran:?}");
    worker.shutdown().await;
}

/// An errback called in-process runs under a request of its own: its context is not the failed
/// task's (whose FAILURE an `update_state` of the errback would otherwise overwrite).
#[tokio::test]
async fn an_errback_in_process_runs_under_its_own_id() {
    let (app, worker) = started("errback-own-id").await;
    let failing = divide::s(1, 0)
        .with_options(CallOptions::new().link_error(on_error_bound::s()))
        .apply_async_with(&app)
        .await
        .unwrap();
    failing.get().timeout(WAIT).await.unwrap_err();
    let deadline = Instant::now() + WAIT;
    let own_id = loop {
        let seen = ERRBACK_CONTEXTS.lock().unwrap().clone();
        if let Some((_, own)) = seen.iter().find(|(failed, _)| failed == failing.id()) {
            break own.clone();
        }
        assert!(Instant::now() < deadline, "the errback never ran");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_ne!(own_id, failing.id());
    assert!(!own_id.is_empty());
    worker.shutdown().await;
}

#[tokio::test]
async fn send_task_by_name_is_untyped() {
    let (app, worker) = started("send-task").await;
    let result = app
        .send_task(
            "tests.add",
            vec![json!(20), json!(22)],
            Default::default(),
            CallOptions::new(),
        )
        .await
        .unwrap();
    assert_eq!(result.get().timeout(WAIT).await.unwrap(), json!(42));
    let wrong = app
        .send_task(
            "tests.add",
            vec![json!("a"), json!(1)],
            Default::default(),
            CallOptions::new(),
        )
        .await
        .unwrap();
    let error = wrong.get().timeout(WAIT).await.unwrap_err();
    assert_eq!(error.exception().unwrap().exc_type, "TypeError");
    worker.shutdown().await;
}

/// In Celery the TypeError of arguments that do not fit is raised in the task's body: with results
/// ignored nothing is stored, and the errbacks run all the same.
#[tokio::test]
async fn arguments_that_do_not_fit_store_nothing_when_results_are_ignored() {
    let (app, worker) = started("misfit-ignored").await;
    let options = CallOptions::new()
        .ignore_result(true)
        .link_error(on_error::s("misfit-ignored".to_owned()));
    let args = vec![json!("a"), json!(1)];
    let wrong = app.send_task("tests.add", args, Default::default(), options);
    let wrong = wrong.await.unwrap();
    let ran = (
        wrong.id().to_owned(),
        "TypeError".to_owned(),
        "misfit-ignored".to_owned(),
    );
    let deadline = Instant::now() + WAIT;
    while !ERRBACK_CALLS.lock().unwrap().contains(&ran) {
        assert!(Instant::now() < deadline, "the errback never ran");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The errback runs after the FAILURE would have been stored.
    assert_eq!(app.backend().get(wrong.id()).await.unwrap(), None);
    worker.shutdown().await;
}

#[tokio::test]
async fn an_unknown_task_fails_with_not_registered_and_the_worker_goes_on() {
    let (app, worker) = started("unknown").await;
    let unknown = app
        .send_task(
            "tests.nobody",
            vec![],
            Default::default(),
            CallOptions::new(),
        )
        .await
        .unwrap();
    let error = unknown.get().timeout(WAIT).await.unwrap_err();
    let exception = error.exception().unwrap();
    assert_eq!(
        (exception.exc_type.as_str(), exception.message().as_str()),
        ("NotRegistered", "tests.nobody")
    );
    assert_eq!(
        add::s(1, 2)
            .apply_async_with(&app)
            .await
            .unwrap()
            .get()
            .timeout(WAIT)
            .await
            .unwrap(),
        3
    );
    worker.shutdown().await;
}

#[tokio::test]
async fn a_retrying_task_keeps_its_id_and_counts_retries() {
    let (app, worker) = started("task-retry").await;
    let result = flaky::s(2).apply_async_with(&app).await.unwrap();
    let mut states = Vec::new();
    let retries = result
        .get()
        .timeout(WAIT)
        .on_message(|meta| states.push(meta.status.clone()))
        .await
        .unwrap();
    assert_eq!(retries, 2);
    assert!(states.contains(&State::Retry), "{states:?}");

    let exhausted = always_retry::s().apply_async_with(&app).await.unwrap();
    let mut retrying = Vec::new();
    let error = exhausted
        .get()
        .timeout(WAIT)
        .on_message(|meta| {
            if meta.status == State::Retry {
                retrying.push(meta.result.clone());
            }
        })
        .await
        .unwrap_err();
    // A retry given no exception stores null, as Celery's `mark_as_retry(id, None)`.
    assert!(!retrying.is_empty());
    assert!(retrying.iter().all(Value::is_null), "{retrying:?}");
    let exception = error.exception().unwrap();
    assert_eq!(exception.exc_type, "MaxRetriesExceededError");
    assert_eq!(
        exception.message(),
        format!(
            "Can't retry tests.always_retry[{}] args:() kwargs:{{}}",
            exhausted.id()
        )
    );
    worker.shutdown().await;
}

/// A retry is the same call again (Celery's `signature_from_request`): the call's parent, time
/// limits and result choice go with it.
#[tokio::test]
async fn a_retry_keeps_the_calls_parent_time_limits_result_choice_and_headers() {
    let broker = RecordingBroker::new("retry-options");
    let app = Celery::builder("retry-options")
        .broker(broker.clone())
        .result_backend(common::memory_url("retry-options"))
        .task_ignore_result(true)
        .build()
        .unwrap();
    register_all(&app);
    let worker = app.worker().start().await.unwrap();
    let options = CallOptions::new()
        .parent("the-parent", "the-root")
        .time_limit(30)
        .soft_time_limit(20)
        .ignore_result(false)
        .header("trace", "abc")
        // As if it had come through a dead-letter queue: not sent again with the retry.
        .header("x-death", json!([{"queue": "delayed", "count": 1}]));
    let result = flaky::s(1)
        .with_options(options)
        .apply_async_with(&app)
        .await
        .unwrap();
    assert_eq!(result.get().timeout(WAIT).await.unwrap(), 1);
    let retried = broker
        .all()
        .into_iter()
        .map(|(_, _, message)| TaskHeaders::from_table(&message.headers).unwrap())
        .find(|headers| headers.id == result.id() && headers.retries == 1)
        .expect("the retry was sent");
    assert_eq!(retried.parent_id.as_deref(), Some("the-parent"));
    assert_eq!(retried.root_id.as_deref(), Some("the-root"));
    assert_eq!(retried.timelimit, (Some(30.0), Some(20.0)));
    assert_eq!(retried.ignore_result, Some(false));
    let own: Vec<&str> = retried
        .extra
        .iter()
        .map(|(name, _)| name.as_ref())
        .collect();
    assert_eq!(own, ["trace"]);
    worker.shutdown().await;
}

/// As Celery's `send_task` within a worker's task: a task sent from a running task's body has
/// that task as parent and its root as root, and is listed among the children of its result
/// unless sent with `add_to_parent(false)`; with `task_inherit_parent_priority` it takes the
/// running task's priority.
#[tokio::test]
async fn tasks_sent_from_a_task_are_its_children() {
    let broker = RecordingBroker::new("children");
    let app = Celery::builder("children")
        .broker(broker.clone())
        .result_backend(common::memory_url("children"))
        .configure(|config| config.task_inherit_parent_priority = true)
        .build()
        .unwrap();
    register_all(&app);
    let worker = app.worker().start().await.unwrap();
    let parent = spawns::s()
        .with_options(
            CallOptions::new()
                .parent("the-caller", "the-root")
                .priority(7),
        )
        .apply_async_with(&app)
        .await
        .unwrap();
    let ids = parent.get().timeout(WAIT).await.unwrap();
    for id in &ids {
        let child = TaskHeaders::from_table(&sent_with_id(&broker, id).headers).unwrap();
        assert_eq!(child.parent_id.as_deref(), Some(parent.id()), "{id}");
        assert_eq!(child.root_id.as_deref(), Some("the-root"), "{id}");
    }
    let priorities: Vec<_> = ids
        .iter()
        .map(|id| sent_with_id(&broker, id).properties.priority)
        .collect();
    assert_eq!(priorities, [Some(7), Some(7)]);
    let children: Vec<String> = parent
        .children()
        .await
        .unwrap()
        .iter()
        .map(|child| child.id().to_owned())
        .collect();
    assert_eq!(children, ids[..1]);
    // Sent from outside any task: a root of its own, no parent.
    let outside = add::s(3, 3).apply_async_with(&app).await.unwrap();
    let headers = TaskHeaders::from_table(&sent_with_id(&broker, outside.id()).headers).unwrap();
    assert_eq!(headers.parent_id, None);
    assert_eq!(headers.root_id.as_deref(), Some(outside.id()));
    // An empty id is none, as Celery's `task_id or uuid()`.
    let unnamed = add::s(1, 2)
        .with_options(CallOptions::new().task_id(""))
        .apply_async_with(&app)
        .await
        .unwrap();
    assert_eq!(unnamed.id().len(), 36, "{}", unnamed.id());

    // A group sent from the body is one child, as Celery lists a `GroupResult`.
    let sent_group = spawns_group::s().apply_async_with(&app).await.unwrap();
    let (group_id, members) = sent_group.get().timeout(WAIT).await.unwrap();
    let stored = sent_group.info().await.unwrap().unwrap().children;
    let member = |id: &String| json!([[id, null], null]);
    assert_eq!(
        stored,
        [json!([
            [group_id, null],
            members.iter().map(member).collect::<Vec<_>>()
        ])]
    );
    assert_eq!(sent_group.children().await.unwrap().len(), 2);

    // A failure lists what the task sent before it failed.
    let failed = spawns_then_fails::s().apply_async_with(&app).await.unwrap();
    failed.get().timeout(WAIT).await.unwrap_err();
    assert_eq!(failed.children().await.unwrap().len(), 1);

    // The next chain step takes the running task's priority; an errback does not (Celery's
    // `_call_task_errbacks` sends errbacks with parent and root only).
    let prioritized = chain![
        add::s(1, 1).with_options(CallOptions::new().priority(5)),
        record_step::partial(10)
    ]
    .apply_async_with(&app)
    .await
    .unwrap();
    assert_eq!(prioritized.get().timeout(WAIT).await.unwrap(), 2);
    let step = sent_with_id(&broker, prioritized.id());
    assert_eq!(step.properties.priority, Some(5));
    let failing = divide::s(1, 0)
        .with_options(
            CallOptions::new()
                .priority(5)
                .link_error(record_failed_id::partial()),
        )
        .apply_async_with(&app)
        .await
        .unwrap();
    failing.get().timeout(WAIT).await.unwrap_err();
    let errback = wait_for_sent(&broker, |headers| {
        headers.task == "tests.record_failed_id"
            && headers.parent_id.as_deref() == Some(failing.id())
    })
    .await;
    assert_eq!(errback.properties.priority, None);
    worker.shutdown().await;
}

/// The message recorded with this task id.
fn sent_with_id(broker: &RecordingBroker, id: &str) -> celery::protocol::Message {
    broker
        .all()
        .into_iter()
        .map(|(_, _, message)| message)
        .find(|message| TaskHeaders::from_table(&message.headers).unwrap().id == id)
        .unwrap_or_else(|| panic!("no message {id} was sent"))
}

/// Waits for a message matching `wanted` to be sent.
async fn wait_for_sent(
    broker: &RecordingBroker,
    wanted: impl Fn(&TaskHeaders) -> bool,
) -> celery::protocol::Message {
    let deadline = Instant::now() + WAIT;
    loop {
        let found = broker
            .all()
            .into_iter()
            .map(|(_, _, message)| message)
            .find(|message| wanted(&TaskHeaders::from_table(&message.headers).unwrap()));
        if let Some(message) = found {
            return message;
        }
        assert!(Instant::now() < deadline, "the message was never sent");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Errbacks the worker sends as messages go as one group (Celery's `_call_task_errbacks`), and a
/// group among them is unrolled into its members rather than sent as a task named
/// `celery.group`.
#[tokio::test]
async fn errbacks_sent_as_messages_go_as_one_group() {
    let broker = RecordingBroker::new("errback-group");
    let app = Celery::builder("errback-group")
        .broker(broker.clone())
        .result_backend(common::memory_url("errback-group"))
        .build()
        .unwrap();
    register_all(&app);
    let worker = app.worker().start().await.unwrap();
    let group_errback: celery::signature::RawSignature = serde_json::from_value(json!({
        "task": "celery.group", "subtask_type": "group", "args": [], "kwargs": {"tasks": [
            {"task": "tests.record_failed_id", "args": [], "kwargs": {}, "options": {}},
        ]}, "options": {}, "immutable": false,
    }))
    .unwrap();
    let options = CallOptions::new()
        .link_error(record_failed_id::partial())
        .link_error(Signature::<Value, celery::signature::Untyped>::from_raw(
            group_errback,
        ));
    let failing = divide::s(1, 0)
        .with_options(options)
        .apply_async_with(&app)
        .await
        .unwrap();
    failing.get().timeout(WAIT).await.unwrap_err();
    let from_the_failure =
        |headers: &TaskHeaders| headers.parent_id.as_deref() == Some(failing.id());
    let deadline = Instant::now() + WAIT;
    let errbacks = loop {
        let errbacks: Vec<TaskHeaders> = broker
            .all()
            .into_iter()
            .map(|(_, _, message)| TaskHeaders::from_table(&message.headers).unwrap())
            .filter(from_the_failure)
            .collect();
        if errbacks.len() >= 2 {
            break errbacks;
        }
        assert!(
            Instant::now() < deadline,
            "the errbacks were never sent: {errbacks:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let names: Vec<&str> = errbacks.iter().map(|h| h.task.as_str()).collect();
    assert_eq!(names, ["tests.record_failed_id", "tests.record_failed_id"]);
    assert!(errbacks[0].group.is_some());
    assert_eq!(errbacks[0].group, errbacks[1].group);
    assert_eq!(
        errbacks.iter().map(|h| h.group_index).collect::<Vec<_>>(),
        [Some(0), Some(0)],
        "the unrolled group's member has its place in its own list, as Celery's _prepared"
    );
    worker.shutdown().await;
}

/// Celery's `headers` option: headers of the call's own reach the task's request; a name the
/// protocol uses itself is refused rather than changing what the message means.
#[tokio::test]
async fn a_calls_own_headers_reach_the_task() {
    let (app, worker) = started("own-headers").await;
    let options = CallOptions::new()
        .header("periodic_task_name", "nightly")
        .header("attempt", json!({"n": 2, "tags": ["a", "b"]}));
    let headers = own_headers::s()
        .with_options(options)
        .apply_async_with(&app)
        .await
        .unwrap()
        .get()
        .timeout(WAIT)
        .await
        .unwrap();
    assert_eq!(
        Value::Object(headers),
        json!({"periodic_task_name": "nightly", "attempt": {"n": 2, "tags": ["a", "b"]}})
    );
    for reserved in ["retries", "is_eager"] {
        let refused = own_headers::s()
            .with_options(CallOptions::new().header(reserved, 5))
            .apply_async_with(&app)
            .await;
        assert!(
            matches!(&refused, Err(Error::Encode { what, .. }) if what.contains(reserved)),
            "{refused:?}"
        );
    }
    worker.shutdown().await;
}

/// JSON has no NaN or infinity, and serde_json would write them as `null`: refused instead, as
/// an argument (the call fails) and as a result (the task fails), never sent changed.
#[tokio::test]
async fn non_finite_floats_are_refused_not_sent_as_null() {
    let (app, worker) = started("non-finite").await;
    let refused = ratio::s(f64::NAN, 1.0).apply_async_with(&app).await;
    assert!(
        matches!(&refused, Err(Error::Encode { reason, .. }) if reason.contains("NaN")),
        "{refused:?}"
    );
    let infinite = ratio::s(1.0, 0.0).apply_async_with(&app).await.unwrap();
    let error = infinite.get().timeout(WAIT).await.unwrap_err();
    assert_eq!(error.exception().unwrap().exc_type, "EncodeError");
    let finite = ratio::s(1.0, 4.0).apply_async_with(&app).await.unwrap();
    assert_eq!(finite.get().timeout(WAIT).await.unwrap(), 0.25);
    worker.shutdown().await;
}

#[tokio::test]
async fn time_limits_and_panics_fail_the_task_not_the_worker() {
    let (app, worker) = started("limits").await;
    let slow = sleepy::s(5.0).apply_async_with(&app).await.unwrap();
    let error = slow.get().timeout(WAIT).await.unwrap_err();
    // As billiard's `TimeLimitExceeded(timeout)`: the limit is its argument, a number.
    let exceeded = error.exception().unwrap();
    assert_eq!(exceeded.exc_type, "TimeLimitExceeded");
    assert_eq!(exceeded.exc_module.as_deref(), Some("billiard.exceptions"));
    assert_eq!(exceeded.exc_message, json!([0.2]));
    let boom = panics::s("kaboom".into())
        .apply_async_with(&app)
        .await
        .unwrap();
    let error = boom.get().timeout(WAIT).await.unwrap_err();
    assert_eq!(error.exception().unwrap().message(), "kaboom");
    let per_call = sleepy::s(0.05)
        .with_options(CallOptions::new().time_limit(1))
        .apply_async_with(&app)
        .await
        .unwrap();
    assert_eq!(per_call.get().timeout(WAIT).await.unwrap(), 0.05);
    // As in Celery, 0 is no limit of its own (the task's 0.2 s applies), and a limit that has
    // already passed (a message can say anything) fails the task at once.
    let no_limit = CallOptions::new().time_limit(0);
    let zero = sleepy::s(0.05).with_options(no_limit);
    let zero = zero.apply_async_with(&app).await.unwrap();
    assert_eq!(zero.get().timeout(WAIT).await.unwrap(), 0.05);
    let passed = CallOptions::new().time_limit(-1.0);
    let passed = sleepy::s(0.05).with_options(passed);
    let passed = passed.apply_async_with(&app).await.unwrap();
    let error = passed.get().timeout(WAIT).await.unwrap_err();
    let exceeded = error.exception().unwrap();
    assert_eq!(exceeded.exc_type, "TimeLimitExceeded");
    assert_eq!(exceeded.exc_message, json!([-1]));
    worker.shutdown().await;
}

static BLOCK_STARTED: AtomicBool = AtomicBool::new(false);
static BLOCK_RELEASE: Mutex<Option<std::sync::mpsc::Receiver<()>>> = Mutex::new(None);

/// Blocks its thread until the test releases it, or `guard_s` seconds pass; says which.
#[task(name = "tests.block")]
fn block(guard_s: u64) -> bool {
    let release = BLOCK_RELEASE
        .lock()
        .unwrap()
        .take()
        .expect("a release channel");
    BLOCK_STARTED.store(true, Ordering::SeqCst);
    release.recv_timeout(Duration::from_secs(guard_s)).is_ok()
}

/// On a current-thread runtime, a task blocking its thread until the test releases it: another
/// task must still run meanwhile. Were the runtime stalled, the quick task would only run once
/// the blocking one gave up waiting, and that one would say so.
#[tokio::test(flavor = "current_thread")]
async fn blocking_tasks_do_not_stall_the_runtime() {
    let app = app("blocking");
    app.register(block::Task).register(add::Task);
    let (release, released) = std::sync::mpsc::channel();
    *BLOCK_RELEASE.lock().unwrap() = Some(released);
    let worker = app.worker().concurrency(2).start().await.unwrap();
    let slow = block::s(WAIT.as_secs())
        .apply_async_with(&app)
        .await
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while !BLOCK_STARTED.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "the blocking task did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let fast = add::s(1, 1).apply_async_with(&app).await.unwrap();
    assert_eq!(fast.get().timeout(WAIT).await.unwrap(), 2);
    // (Fails only when the task gave up waiting already.)
    let _ = release.send(());
    assert!(
        slow.get().timeout(WAIT).await.unwrap(),
        "the blocking task gave up waiting before the quick one ran: it stalled the runtime"
    );
    worker.shutdown().await;
}

/// As Celery's `update_state` and `mark_as_retry`, which store through
/// `store_result(request=…)`: a state stored while a task runs, and its RETRY, list the tasks it
/// has sent so far as its children (for the RETRY, the retry too).
#[tokio::test]
async fn progress_and_retry_states_list_the_children_sent_so_far() {
    let (app, worker) = started("children-states").await;
    let gate = Gate::named("spawns_then_retries");
    let result = spawns_then_retries::s()
        .apply_async_with(&app)
        .await
        .unwrap();
    let ids = |children: Vec<AsyncResult<Value>>| {
        children
            .iter()
            .map(|child| child.id().to_owned())
            .collect::<Vec<_>>()
    };
    gate.wait_started().await;
    assert_eq!(result.state().await.unwrap(), State::from("PROGRESS"));
    let sent = ids(result.children().await.unwrap());
    assert_eq!(sent.len(), 1, "the PROGRESS state's children");

    gate.open();
    let deadline = tokio::time::Instant::now() + WAIT;
    while result.state().await.unwrap() != State::Retry {
        assert!(tokio::time::Instant::now() < deadline, "no RETRY stored");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The retry itself comes last, as Celery's `Task.retry` sends it from the body.
    let mut expected = sent.clone();
    expected.push(result.id().to_owned());
    assert_eq!(
        ids(result.children().await.unwrap()),
        expected,
        "the RETRY's children"
    );
    worker.shutdown().await;
}

/// Tasks a test holds while it looks at the worker: the task says it started, then waits until
/// the test lets it go.
#[derive(Default)]
struct Gate {
    started: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

impl Gate {
    /// The gate named `name`, shared by a test and its tasks.
    fn named(name: &str) -> std::sync::Arc<Gate> {
        static GATES: Mutex<Vec<(String, std::sync::Arc<Gate>)>> = Mutex::new(Vec::new());
        let mut gates = GATES.lock().unwrap();
        if let Some((_, gate)) = gates.iter().find(|(n, _)| n == name) {
            return gate.clone();
        }
        let gate = std::sync::Arc::new(Gate::default());
        gates.push((name.to_owned(), gate.clone()));
        gate
    }

    async fn pass(&self) {
        self.started.notify_one();
        self.release.notified().await;
    }

    /// Waits until the task is running (generously: this is against hanging only).
    async fn wait_started(&self) {
        tokio::time::timeout(WAIT, self.started.notified())
            .await
            .expect("the gated task started");
    }

    fn open(&self) {
        self.release.notify_one();
    }
}

#[task(name = "tests.gated")]
async fn gated(gate: String) -> String {
    Gate::named(&gate).pass().await;
    gate
}

#[task(name = "tests.gated_late", acks_late)]
async fn gated_late(gate: String) -> String {
    Gate::named(&gate).pass().await;
    gate
}

#[tokio::test]
async fn graceful_shutdown_finishes_running_tasks_and_returns_held_ones() {
    let broker = RecordingBroker::new("shutdown");
    let url = common::memory_url("shutdown");
    let app = Celery::builder("s")
        .broker(broker.clone())
        .result_backend(&url)
        .build()
        .unwrap();
    register_all(&app);
    app.register(gated::Task);
    let worker = app.worker().concurrency(1).start().await.unwrap();
    let gate = Gate::named("shutdown");
    let running = gated::s("shutdown".to_owned())
        .apply_async_with(&app)
        .await
        .unwrap();
    let held = add::s(1, 1)
        .with_options(CallOptions::new().countdown(30))
        .apply_async_with(&app)
        .await
        .unwrap();
    // Both messages are with the worker: one running, one held until its time.
    gate.wait_started().await;
    let deadline = Instant::now() + WAIT;
    while broker.ready_count("celery") > 0 {
        assert!(
            Instant::now() < deadline,
            "the worker did not take the held message"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stopping = tokio::spawn(worker.shutdown());
    tokio::task::yield_now().await;
    assert!(!stopping.is_finished(), "the shutdown waits for the task");
    gate.open();
    tokio::time::timeout(WAIT, stopping)
        .await
        .expect("the worker stops once its task finished")
        .unwrap();
    assert_eq!(
        running.state().await.unwrap(),
        State::Success,
        "the running task finished"
    );
    assert_eq!(held.state().await.unwrap(), State::Pending);
    assert_eq!(
        broker.ready_count("celery"),
        1,
        "the held message went back to its queue"
    );
}

#[tokio::test]
async fn delay_uses_the_current_app() {
    let app = app("current");
    register_all(&app);
    app.set_current();
    let worker = app.worker().start().await.unwrap();
    assert_eq!(
        add::delay(2, 2)
            .await
            .unwrap()
            .get()
            .timeout(WAIT)
            .await
            .unwrap(),
        4
    );
    let options = CallOptions::new()
        .link(add::partial(16).with_options(CallOptions::new().task_id("current-link")));
    assert_eq!(
        add::apply_async((2, 2), options)
            .await
            .unwrap()
            .get()
            .timeout(WAIT)
            .await
            .unwrap(),
        4
    );
    assert_eq!(
        app.result::<i32>("current-link")
            .get()
            .timeout(WAIT)
            .await
            .unwrap(),
        20
    );
    let result = add::s(5, 5).delay().await.unwrap();
    assert_eq!(result.get().timeout(WAIT).await.unwrap(), 10);
    worker.shutdown().await;
}

#[tokio::test]
async fn get_times_out_when_nobody_runs_the_task() {
    let app = app("timeout");
    let result = add::s(1, 1).apply_async_with(&app).await.unwrap();
    let error = result
        .get()
        .timeout(Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Timeout { .. }), "{error:?}");
    assert_eq!(result.state().await.unwrap(), State::Pending);
}

static RUNNING: AtomicU32 = AtomicU32::new(0);
static MOST_AT_ONCE: AtomicU32 = AtomicU32::new(0);

#[task(name = "tests.occupy")]
async fn occupy(ms: u64) -> u32 {
    let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
    MOST_AT_ONCE.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    RUNNING.fetch_sub(1, Ordering::SeqCst);
    now
}

#[tokio::test]
async fn the_worker_runs_at_most_concurrency_tasks_at_once() {
    let app = app("concurrency");
    app.register(occupy::Task);
    let worker = app.worker().concurrency(2).start().await.unwrap();
    let results = group((0..6).map(|_| occupy::s(50)))
        .apply_async_with(&app)
        .await
        .unwrap();
    results.get().timeout(WAIT).await.unwrap();
    assert_eq!(MOST_AT_ONCE.load(Ordering::SeqCst), 2);
    worker.shutdown().await;
}

#[tokio::test]
async fn messages_are_acked_at_start_or_after_the_result_with_acks_late() {
    let broker = std::sync::Arc::new(celery::broker::MemoryBroker::new(common::memory_url(
        "acks",
    )));
    let app = Celery::builder("acks")
        .broker(broker.clone())
        .result_backend(common::memory_url("acks"))
        .build()
        .unwrap();
    app.register(gated::Task).register(gated_late::Task);
    let worker = app.worker().concurrency(2).start().await.unwrap();

    let gate = Gate::named("acks-early");
    let early = gated::s("acks-early".to_owned())
        .apply_async_with(&app)
        .await
        .unwrap();
    gate.wait_started().await;
    assert_eq!(
        early.state().await.unwrap(),
        State::Pending,
        "still running"
    );
    assert_eq!(
        broker.unacked_count(),
        0,
        "acknowledged when the task started"
    );
    gate.open();
    early.get().timeout(WAIT).await.unwrap();

    let gate = Gate::named("acks-late");
    let delayed_ack = gated_late::s("acks-late".to_owned())
        .apply_async_with(&app)
        .await
        .unwrap();
    gate.wait_started().await;
    assert_eq!(
        broker.unacked_count(),
        1,
        "acks_late: not acknowledged while running"
    );
    gate.open();
    delayed_ack.get().timeout(WAIT).await.unwrap();
    // The acknowledgement follows the result.
    let deadline = Instant::now() + WAIT;
    while broker.unacked_count() > 0 {
        assert!(
            Instant::now() < deadline,
            "acks_late: acknowledged after the result"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    worker.shutdown().await;
}

#[tokio::test]
async fn a_countdown_wins_over_an_eta_and_a_zero_countdown_is_none() {
    let broker = RecordingBroker::new("countdown-rules");
    let app = Celery::builder("countdown-rules")
        .broker(broker.clone())
        .result_backend(common::memory_url("countdown-rules"))
        .build()
        .unwrap();
    let eta_header = |broker: &RecordingBroker| {
        let (_, _, message) = broker.last();
        match message.header("eta") {
            Some(celery::protocol::HeaderValue::Str(at)) => {
                Some(chrono::DateTime::parse_from_rfc3339(at).unwrap())
            }
            Some(celery::protocol::HeaderValue::Null) | None => None,
            Some(other) => panic!("eta header {other:?}"),
        }
    };
    // As Celery's `if countdown:`, 0 is no countdown: no eta, so a worker runs it at once
    // instead of through its timer.
    add::s(1, 1)
        .with_options(CallOptions::new().countdown(0))
        .apply_async_with(&app)
        .await
        .unwrap();
    assert_eq!(eta_header(&broker), None);
    // Both given: the countdown is what Celery sends.
    let in_a_day = chrono::Utc::now() + chrono::TimeDelta::days(1);
    let before = chrono::Utc::now();
    add::s(1, 1)
        .with_options(CallOptions::new().eta(in_a_day).countdown(60))
        .apply_async_with(&app)
        .await
        .unwrap();
    let eta = eta_header(&broker).expect("an eta");
    let ahead = eta.signed_duration_since(before).num_seconds();
    assert!((59..=61).contains(&ahead), "{eta} is {ahead} s ahead");
    // A zero countdown leaves a given eta alone.
    add::s(1, 1)
        .with_options(CallOptions::new().eta(in_a_day).countdown(0))
        .apply_async_with(&app)
        .await
        .unwrap();
    let eta = eta_header(&broker).expect("an eta");
    assert_eq!(eta.timestamp_micros(), in_a_day.timestamp_micros());
}

/// A backend that counts how often it is asked to get ready for a result, and cannot be
/// reached the first time.
struct UnreadyOnce {
    inner: std::sync::Arc<dyn celery::backend::ResultBackend>,
    prepared: AtomicU32,
}

impl celery::backend::ResultBackend for UnreadyOnce {
    fn url(&self) -> &str {
        self.inner.url()
    }
    fn store<'a>(
        &'a self,
        meta: &'a celery::ResultMeta,
        reply_to: Option<&'a str>,
    ) -> celery::BoxFuture<'a, Result<(), Error>> {
        self.inner.store(meta, reply_to)
    }
    fn get<'a>(
        &'a self,
        task_id: &'a str,
    ) -> celery::BoxFuture<'a, Result<Option<celery::ResultMeta>, Error>> {
        self.inner.get(task_id)
    }
    fn subscribe<'a>(
        &'a self,
        task_id: &'a str,
    ) -> celery::BoxFuture<'a, Result<celery::backend::ResultReceiver, Error>> {
        self.inner.subscribe(task_id)
    }
    fn forget<'a>(&'a self, task_id: &'a str) -> celery::BoxFuture<'a, Result<(), Error>> {
        self.inner.forget(task_id)
    }
    fn prepare_client(&self) -> celery::BoxFuture<'_, Result<(), Error>> {
        let first = self.prepared.fetch_add(1, Ordering::SeqCst) == 0;
        Box::pin(async move {
            match first {
                true => Err(Error::Backend {
                    backend: "unready://".to_owned(),
                    reason: "cannot be reached".to_owned(),
                    recoverable: true,
                }),
                false => Ok(()),
            }
        })
    }
}

/// As Celery's `send_task`: the backend gets ready for a result (the rpc reply queue) only
/// when one is wanted, and within the publish retry.
#[tokio::test]
async fn the_backend_gets_ready_for_wanted_results_only_and_is_retried() {
    let backend = std::sync::Arc::new(UnreadyOnce {
        inner: celery::backend::MemoryBackend::shared(&common::memory_url("unready")),
        prepared: AtomicU32::new(0),
    });
    let app = Celery::builder("unready")
        .broker_url(common::memory_url("unready"))
        .backend(backend.clone())
        .build()
        .unwrap();
    add::s(1, 1)
        .with_options(CallOptions::new().ignore_result(true))
        .apply_async_with(&app)
        .await
        .unwrap();
    assert_eq!(backend.prepared.load(Ordering::SeqCst), 0);
    add::s(1, 1).apply_async_with(&app).await.unwrap();
    assert_eq!(
        backend.prepared.load(Ordering::SeqCst),
        2,
        "retried after the first failure"
    );
}

/// The app's task settings stand in for a known task's attributes, as Celery binds them to its
/// tasks; a task sent by a name the app does not know gets none of them (Celery's `send_task`
/// without a task type): its worker's own settings decide.
#[tokio::test]
async fn app_task_settings_apply_to_known_tasks_only() {
    let broker = RecordingBroker::new("known-tasks");
    let app = Celery::builder("known-tasks")
        .broker(broker.clone())
        .result_backend(common::memory_url("known-tasks"))
        .task_ignore_result(true)
        .route(celery::TaskRoute::new("*", "celery").priority(9))
        .configure(|config| {
            config.task_time_limit = Some(30.0);
            config.task_default_priority = Some(5);
        })
        .build()
        .unwrap();
    app.register(mul::Task);
    let sent = |broker: &RecordingBroker| {
        let (_, _, message) = broker.last();
        let headers = TaskHeaders::from_table(&message.headers).unwrap();
        (
            headers.timelimit,
            headers.ignore_result,
            message.properties.priority,
        )
    };
    let typed = add::s(1, 1).apply_async_with(&app).await.unwrap();
    assert!(typed.ignored());
    assert_eq!(
        sent(&broker),
        ((Some(30.0), None), Some(true), Some(5)),
        "a #[task]: the settings, and the default priority over the route's (Celery's order)"
    );
    app.send_task(
        "tests.mul",
        vec![json!(2), json!(3)],
        Default::default(),
        CallOptions::new(),
    )
    .await
    .unwrap();
    assert_eq!(
        sent(&broker),
        ((Some(30.0), None), Some(true), Some(5)),
        "registered here, sent by name: known too"
    );
    let unknown = app
        .send_task(
            "python.only",
            vec![],
            Default::default(),
            CallOptions::new(),
        )
        .await
        .unwrap();
    assert!(!unknown.ignored());
    assert_eq!(
        sent(&broker),
        ((None, None), None, Some(9)),
        "unknown here: no settings of this app, the route's priority"
    );
}

#[tokio::test]
async fn task_routes_send_tasks_by_name_unless_the_call_or_the_task_says_otherwise() {
    let broker = RecordingBroker::new("task-routes");
    let app = Celery::builder("routes")
        .broker(broker.clone())
        .result_backend(common::memory_url("task-routes"))
        .route(celery::TaskRoute::new("tests.m*", "math").priority(3))
        .route(celery::TaskRoute::new("tests.attr_routed", "from-routes"))
        .build()
        .unwrap();
    let route = |broker: &RecordingBroker| {
        let (exchange, key, message) = broker.last();
        (exchange, key, message.properties.priority)
    };
    mul::s(1, 1).apply_async_with(&app).await.unwrap();
    assert_eq!(
        route(&broker),
        ("".into(), "math".into(), Some(3)),
        "a glob route"
    );
    mul::s(1, 1)
        .with_options(CallOptions::new().queue("mine"))
        .apply_async_with(&app)
        .await
        .unwrap();
    assert_eq!(route(&broker).1, "mine", "the call's queue wins");
    mul::s(1, 1)
        .with_options(CallOptions::new().routing_key("k").priority(8))
        .apply_async_with(&app)
        .await
        .unwrap();
    assert_eq!(
        route(&broker),
        ("".into(), "math".into(), Some(8)),
        "the route fills in what the call left out, key by key (a routing key alone does not \
         route a direct queue's message elsewhere)"
    );
    attr_routed::s(1).apply_async_with(&app).await.unwrap();
    assert_eq!(route(&broker).1, "attr-queue", "the task's attribute wins");
    add::s(1, 1).apply_async_with(&app).await.unwrap();
    assert_eq!(route(&broker).1, "celery", "no route: the default queue");
}

#[tokio::test]
async fn a_held_producer_sends_many_and_delivery_mode_is_an_option() {
    let broker = RecordingBroker::new("producer");
    let app = Celery::builder("producer")
        .broker(broker.clone())
        .result_backend(common::memory_url("producer"))
        .build()
        .unwrap();
    app.register(add::Task);
    let worker = app.worker().start().await.unwrap();
    let producer = app.producer();
    let mut results = Vec::new();
    for i in 0..5 {
        results.push(producer.apply_async(add::s(i, i)).await.unwrap());
    }
    for (i, result) in results.iter().enumerate() {
        assert_eq!(result.get().timeout(WAIT).await.unwrap(), 2 * i as i32);
    }
    assert_eq!(
        broker.last().2.properties.delivery_mode,
        2,
        "persistent by default"
    );
    producer
        .apply_async(add::s(1, 1).with_options(CallOptions::new().persistent(false)))
        .await
        .unwrap();
    assert_eq!(broker.last().2.properties.delivery_mode, 1);
    worker.shutdown().await;
}

/// A toy serializer: json written backwards.
struct BackwardsJson;

impl celery::serializer::Serializer for BackwardsJson {
    fn name(&self) -> &str {
        "backwards-json"
    }
    fn content_type(&self) -> &str {
        "application/x-backwards-json"
    }
    fn content_encoding(&self) -> &str {
        "utf-8"
    }
    fn encode(&self, value: &Value) -> Result<Vec<u8>, String> {
        let mut bytes = serde_json::to_vec(value).map_err(|e| e.to_string())?;
        bytes.reverse();
        Ok(bytes)
    }
    fn decode(&self, bytes: &[u8]) -> Result<Value, String> {
        let mut bytes = bytes.to_vec();
        bytes.reverse();
        serde_json::from_slice(&bytes).map_err(|e| e.to_string())
    }
}

impl celery::serializer::NamedSerializer for BackwardsJson {
    const NAME: &'static str = "backwards-json";
}

#[task(name = "tests.custom_codec", serializer = BackwardsJson)]
async fn custom_codec(text: String) -> String {
    text.to_uppercase()
}

#[tokio::test]
async fn a_registered_serializer_is_usable_by_type_in_attributes_and_by_name_in_options() {
    let broker = RecordingBroker::new("custom-codec");
    let app = Celery::builder("custom")
        .broker(broker.clone())
        .result_backend(common::memory_url("custom-codec"))
        .accept_content(["json", "backwards-json"])
        .build()
        .unwrap();
    app.serializers().register(BackwardsJson);
    app.register(custom_codec::Task).register(add::Task);
    let worker = app.worker().start().await.unwrap();
    let result = custom_codec::s("abc".into())
        .apply_async_with(&app)
        .await
        .unwrap();
    assert_eq!(result.get().timeout(WAIT).await.unwrap(), "ABC");
    assert_eq!(
        broker.last().2.properties.content_type,
        "application/x-backwards-json"
    );
    let by_name = add::s(1, 2).with_options(CallOptions::new().serializer("backwards-json"));
    assert_eq!(
        by_name
            .apply_async_with(&app)
            .await
            .unwrap()
            .get()
            .timeout(WAIT)
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        broker.last().2.body.first(),
        Some(&b']'),
        "written backwards"
    );
    worker.shutdown().await;
}
