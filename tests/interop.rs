//! Live interop with Python Celery 5.7 over RabbitMQ, both directions: a Python worker runs what
//! this crate sends, and a Rust worker runs what Python sends, with results both ways through
//! the rpc:// backend.
//!
//! Needs RabbitMQ on 127.0.0.1:5672 and a virtualenv with celery 5.7 (made by
//! `tests/python/ensure_venv.sh`); without them the tests say they were skipped.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use celery::prelude::*;
use celery::protocol::HeaderSet;
use celery::Queue;
use common::RABBITMQ_URL;
use serde_json::{json, Map, Value};
use tokio::process::{Child, Command};

const WAIT: Duration = Duration::from_secs(30);

/// Where the Rust tasks `record` and `on_error` append their lines.
static RECORDS: OnceLock<PathBuf> = OnceLock::new();
static RECORDS_LOCK: Mutex<()> = Mutex::new(());

fn record_line(line: String) {
    let _guard = RECORDS_LOCK.lock().unwrap();
    let path = RECORDS.get().expect("records path set by the test");
    let mut text = std::fs::read_to_string(path).unwrap_or_default();
    text.push_str(&line);
    text.push('\n');
    std::fs::write(path, text).unwrap();
}

#[task(name = "tasks.add")]
async fn add(x: i64, y: i64) -> i64 {
    x + y
}

#[task(name = "tasks.mul")]
async fn mul(x: i64, y: i64) -> i64 {
    x * y
}

#[task(name = "tasks.fail")]
async fn fail(message: String) -> Result<(), TaskError> {
    Err(TaskError::new("ValueError", message))
}

#[task(name = "tasks.progress", bind)]
async fn progress(ctx: TaskContext, steps: Vec<u32>) -> Result<String, TaskError> {
    // A state sent before the client's get() subscribes is not replayed (only the latest is
    // kept, as in Python Celery): give a loaded machine time to subscribe first (as long as the
    // Python task gives it).
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for step in steps {
        ctx.update_state("PROGRESS", json!({ "progress": step }))
            .await
            .map_err(TaskError::msg)?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok("done".to_owned())
}

#[task(name = "tasks.record")]
async fn record(value: i64, tag: String) -> i64 {
    record_line(format!("{tag}:{value}"));
    value
}

/// Declared `ignore_result`: a caller that asks for the result still gets it (Celery 5.7).
/// A header of the message besides Celery's own, as a Python task reads `self.request.<name>`.
#[task(name = "tasks.request_header", bind)]
async fn request_header(ctx: TaskContext, name: String) -> Value {
    ctx.request()
        .headers
        .get(&name)
        .cloned()
        .unwrap_or(Value::Null)
}

#[task(name = "tasks.quiet", ignore_result)]
async fn quiet(value: i64) -> i64 {
    value
}

#[task(name = "tasks.on_error", errback)]
async fn on_error(request: Request, exc: ExceptionInfo, _traceback: Option<String>) {
    record_line(format!("errback:{}:{}", request.id, exc.exc_type));
}

fn python_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python")
}

/// The queues of one test: a default one, a named one and a priority one.
struct Queues {
    main: String,
}

impl Queues {
    fn new(prefix: &str) -> Self {
        Queues {
            main: common::unique_name(prefix),
        }
    }
    fn named(&self) -> String {
        format!("{}.named", self.main)
    }
    fn priority(&self) -> String {
        format!("{}.prio", self.main)
    }
    fn all(&self) -> Vec<String> {
        vec![self.main.clone(), self.named(), self.priority()]
    }
}

struct PythonSide {
    python: PathBuf,
    queues: Vec<String>,
    dir: PathBuf,
    env: Vec<(String, String)>,
}

impl PythonSide {
    fn new(python: PathBuf, queues: &Queues, dir: PathBuf) -> Self {
        let env = vec![
            ("CELERY_BROKER_URL".to_owned(), RABBITMQ_URL.to_owned()),
            ("INTEROP_QUEUE".to_owned(), queues.main.clone()),
            ("INTEROP_PRIORITY_QUEUE".to_owned(), queues.priority()),
            ("INTEROP_DIR".to_owned(), dir.display().to_string()),
            ("PYTHONDONTWRITEBYTECODE".to_owned(), "1".to_owned()),
            // Celery refuses to run as root when it accepts pickle; CI runs as root.
            ("C_FORCE_ROOT".to_owned(), "1".to_owned()),
        ];
        PythonSide {
            python,
            queues: queues.all(),
            dir,
            env,
        }
    }

    /// A Celery worker (solo pool) on the given queues; killed when dropped.
    fn worker(&self, queues: &[String], extra: &[&str]) -> Child {
        let mut command = Command::new(&self.python);
        command
            .args([
                "-m",
                "celery",
                "-A",
                "interop_tasks",
                "worker",
                "-P",
                "solo",
                "-c",
                "1",
                "-l",
                "critical",
            ])
            .args([
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ])
            .args(["-Q", &queues.join(",")])
            // Each worker needs a node name of its own: its control queue is exclusive to it.
            .args(["-n", &format!("{}@%h", common::unique_name("interop"))])
            .args(extra)
            .current_dir(python_dir())
            .envs(self.env.iter().cloned())
            .stdout(Stdio::null())
            .kill_on_drop(true);
        command.spawn().expect("start the Python Celery worker")
    }

    /// Runs one scenario of `interop_client.py` and returns what it printed.
    async fn client(&self, args: &[&str]) -> Value {
        let mut command = Command::new(&self.python);
        command
            .arg("interop_client.py")
            .args(args)
            .current_dir(python_dir())
            .envs(self.env.iter().cloned())
            .kill_on_drop(true);
        let output = tokio::time::timeout(Duration::from_secs(60), command.output())
            .await
            .unwrap_or_else(|_| panic!("python client {args:?} timed out"))
            .expect("run the python client");
        assert!(
            output.status.success(),
            "python client {args:?} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        serde_json::from_str(stdout.lines().last().unwrap_or(""))
            .unwrap_or_else(|e| panic!("python client {args:?} printed {stdout:?}: {e}"))
    }

    fn records(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("records"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Stops these Python workers, then deletes the test's queues. (A worker still running
    /// would declare them again, and they would be left behind on the broker.)
    async fn cleanup(&self, workers: impl IntoIterator<Item = Child>) {
        for mut worker in workers {
            let _ = worker.kill().await;
        }
        let mut command = Command::new(&self.python);
        command
            .arg("cleanup.py")
            .args(&self.queues)
            .current_dir(python_dir())
            .envs(self.env.iter().cloned());
        let _ = tokio::time::timeout(Duration::from_secs(30), command.status()).await;
    }
}

/// Polls `lines()` until one satisfies `wanted`.
async fn wait_for_line(
    lines: impl Fn() -> Vec<String>,
    wanted: impl Fn(&str) -> bool,
    what: &str,
) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(line) = lines().into_iter().find(|line| wanted(line)) {
            return line;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not seen in {:?}",
            lines()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(common::unique_name(name));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn rust_app(queues: &Queues) -> Celery {
    rust_app_sending(queues, HeaderSet::Lean)
}

fn rust_app_sending(queues: &Queues, headers: HeaderSet) -> Celery {
    Celery::builder("interop")
        .broker_url(RABBITMQ_URL)
        .result_backend("rpc://")
        .task_default_queue(&queues.main)
        .queue(Queue::new(queues.priority()).max_priority(10))
        .configure(|c| c.task_message_headers = headers)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_worker_runs_what_rust_sends() {
    const TEST: &str = "a_python_worker_runs_what_rust_sends";
    if !common::rabbitmq(TEST) {
        return;
    }
    let Some(python) = common::python_celery(TEST) else {
        return;
    };
    let queues = Queues::new("interop-py-worker");
    let side = PythonSide::new(python, &queues, temp_dir("interop-py"));
    let app = rust_app(&queues);
    let worker = side.worker(&[queues.main.clone(), queues.named()], &[]);

    // plain call (the first one also waits for the worker to be up)
    let result = add::s(2, 2).apply_async_with(&app).await.unwrap();
    assert_eq!(
        result.get().timeout(Duration::from_secs(60)).await.unwrap(),
        4,
        "plain call"
    );

    let kwargs = json!({"x": 2, "y": 3}).as_object().unwrap().clone();
    let by_name = app
        .send_task("tasks.add", vec![], kwargs, CallOptions::new())
        .await
        .unwrap();
    assert_eq!(
        by_name.get().timeout(WAIT).await.unwrap(),
        json!(5),
        "kwargs"
    );

    let with_header = app
        .send_task(
            "tasks.request_header",
            vec![json!("periodic_task_name")],
            Default::default(),
            CallOptions::new().header("periodic_task_name", "nightly"),
        )
        .await
        .unwrap();
    assert_eq!(
        with_header.get().timeout(WAIT).await.unwrap(),
        json!("nightly"),
        "a call's own header"
    );

    // The lean message (the default) reads on a Celery task as the full one does, headers
    // left out and all.
    let full_app = rust_app_sending(&queues, HeaderSet::Full);
    let mut requests = Vec::new();
    for app in [&app, &full_app] {
        let fields = app
            .send_task(
                "tasks.request_fields",
                vec![],
                Map::new(),
                CallOptions::new(),
            )
            .await
            .unwrap();
        requests.push(fields.get().timeout(WAIT).await.unwrap());
    }
    assert_eq!(requests[0]["root_id"], "own id", "{}", requests[0]);
    assert_eq!(requests[0]["timelimit"], json!([null, null]));
    assert_eq!(
        requests[0], requests[1],
        "a lean message's request against a full one's"
    );

    let linked = add::s(2, 2)
        .link(record::partial("link".to_owned()))
        .apply_async_with(&app)
        .await
        .unwrap();
    assert_eq!(linked.get().timeout(WAIT).await.unwrap(), 4);
    wait_for_line(|| side.records(), |l| l == "link:4", "link callback").await;

    let failing = fail::s("boom".to_owned())
        .link_error(on_error::s())
        .apply_async_with(&app)
        .await
        .unwrap();
    let error = failing.get().timeout(WAIT).await.unwrap_err();
    let errback_line = format!("errback:{}:ValueError", failing.id());
    wait_for_line(
        || side.records(),
        |l| l == errback_line,
        "link_error errback",
    )
    .await;
    let exception = error.exception().expect("a failure carries its exception");
    assert_eq!(
        (exception.exc_type.as_str(), exception.exc_message.clone()),
        ("ValueError", json!(["boom"])),
        "failure"
    );
    assert_eq!(exception.exc_module.as_deref(), Some("builtins"));
    assert!(
        matches!(error, Error::TaskFailed { traceback: Some(ref tb), .. } if tb.contains("ValueError")),
        "traceback"
    );

    let started = Instant::now();
    let later = add::s(1, 1)
        .with_options(CallOptions::new().countdown(1))
        .apply_async_with(&app)
        .await
        .unwrap();
    assert_eq!(later.get().timeout(WAIT).await.unwrap(), 2, "countdown");
    assert!(started.elapsed() >= Duration::from_secs(1));

    let at = chrono::Utc::now() + chrono::Duration::seconds(1);
    let eta = add::s(1, 2)
        .with_options(CallOptions::new().eta(at))
        .apply_async_with(&app)
        .await
        .unwrap();
    assert_eq!(eta.get().timeout(WAIT).await.unwrap(), 3, "eta");
    assert!(chrono::Utc::now() >= at);

    let options = CallOptions::new().countdown(1.5).expires(0.5);
    let expired = record::s(1, "expired".to_owned())
        .with_options(options)
        .apply_async_with(&app)
        .await
        .unwrap();
    match expired.get().timeout(WAIT).await {
        Err(Error::TaskRevoked { exception, .. }) => {
            assert_eq!(exception.exc_type, "TaskRevokedError")
        }
        other => panic!("expires: expected REVOKED, got {other:?}"),
    }
    assert!(
        !side.records().iter().any(|l| l.starts_with("expired:")),
        "an expired task ran"
    );

    let job = progress::s(vec![50, 90])
        .apply_async_with(&app)
        .await
        .unwrap();
    let mut seen = Vec::new();
    let done = job
        .get()
        .timeout(WAIT)
        .on_message(|meta| {
            seen.push((
                meta.status.to_string(),
                meta.result.get("progress").cloned(),
            ))
        })
        .await;
    assert_eq!(done.unwrap(), "done");
    assert_eq!(
        seen,
        vec![
            ("PROGRESS".into(), Some(json!(50))),
            ("PROGRESS".into(), Some(json!(90))),
            ("SUCCESS".into(), None)
        ],
        "on_message"
    );

    let numbers = group([2, 4, 8, 16].map(|i| add::s(i, i)))
        .apply_async_with(&app)
        .await
        .unwrap();
    assert_eq!(
        numbers.get().timeout(WAIT).await.unwrap(),
        vec![4, 8, 16, 32],
        "group"
    );

    let chained = chain![add::s(2, 2), add::partial(16), mul::partial(3)]
        .apply_async_with(&app)
        .await
        .unwrap();
    assert_eq!(chained.get().timeout(WAIT).await.unwrap(), 60, "chain");

    let named = add::s(20, 22)
        .with_options(CallOptions::new().queue(queues.named()))
        .apply_async_with(&app)
        .await
        .unwrap();
    assert_eq!(named.get().timeout(WAIT).await.unwrap(), 42, "named queue");

    let ignored =
        record::s(7, "ignored".to_owned()).with_options(CallOptions::new().ignore_result(true));
    let ignored = ignored.apply_async_with(&app).await.unwrap();
    wait_for_line(
        || side.records(),
        |l| l == "ignored:7",
        "ignore_result task ran",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        ignored.state().await.unwrap(),
        State::Pending,
        "ignore_result stores nothing"
    );

    // Priority: queued first, then a worker with a prefetch of one takes the highest first.
    for priority in [1u8, 9, 5] {
        let options = CallOptions::new()
            .queue(queues.priority())
            .priority(priority)
            .ignore_result(true);
        record::s(i64::from(priority), "prio".to_owned())
            .with_options(options)
            .apply_async_with(&app)
            .await
            .unwrap();
    }
    let priority_worker = side.worker(&[queues.priority()], &["--prefetch-multiplier", "1"]);
    let prio = || {
        side.records()
            .into_iter()
            .filter(|l| l.starts_with("prio:"))
            .collect::<Vec<_>>()
    };
    wait_for_line(prio, |l| l == "prio:1", "priority tasks").await;
    assert_eq!(prio(), ["prio:9", "prio:5", "prio:1"], "priority order");

    side.cleanup([worker, priority_worker]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_worker_runs_what_python_sends() {
    const TEST: &str = "a_rust_worker_runs_what_python_sends";
    if !common::rabbitmq(TEST) {
        return;
    }
    let Some(python) = common::python_celery(TEST) else {
        return;
    };
    let queues = Queues::new("interop-rs-worker");
    let dir = temp_dir("interop-rs");
    RECORDS
        .set(dir.join("records"))
        .expect("only this test sets the records path");
    let side = PythonSide::new(python, &queues, dir);
    let app = rust_app(&queues);
    app.register(add::Task)
        .register(mul::Task)
        .register(fail::Task)
        .register(progress::Task);
    app.register(record::Task)
        .register(on_error::Task)
        .register(quiet::Task)
        .register(request_header::Task);
    let worker = app
        .worker()
        .queues([queues.main.clone(), queues.named()])
        .concurrency(4)
        .start()
        .await
        .unwrap();

    assert_eq!(
        side.client(&["plain"]).await["result"],
        json!(4),
        "plain call"
    );
    assert_eq!(side.client(&["kwargs"]).await["result"], json!(5), "kwargs");

    let linked = side.client(&["link"]).await;
    assert_eq!(linked["result"], json!(4));
    wait_for_line(|| side.records(), |l| l == "link:4", "link callback").await;

    let failed = side.client(&["link_error"]).await;
    let errback_line = format!("errback:{}:ValueError", failed["id"].as_str().unwrap());
    wait_for_line(
        || side.records(),
        |l| l == errback_line,
        "link_error errback, called in-process",
    )
    .await;

    let countdown = side.client(&["countdown"]).await;
    assert_eq!(countdown["result"], json!(2));
    assert!(
        countdown["elapsed"].as_f64().unwrap() >= 1.0,
        "countdown: {countdown}"
    );

    let eta = side.client(&["eta"]).await;
    assert_eq!(
        (eta["result"].clone(), eta["late_enough"].clone()),
        (json!(3), json!(true)),
        "eta"
    );

    let expired = side.client(&["expires"]).await;
    assert_eq!(
        expired,
        json!({"state": "REVOKED", "exc_type": "TaskRevokedError"}),
        "expires"
    );
    assert!(
        !side.records().iter().any(|l| l.starts_with("expired:")),
        "an expired task ran"
    );

    let progress = side.client(&["progress"]).await;
    assert_eq!(progress["result"], json!("done"));
    assert_eq!(
        progress["seen"],
        json!([["PROGRESS", 50], ["PROGRESS", 90], ["SUCCESS", null]]),
        "on_message"
    );

    let failure = side.client(&["failure"]).await;
    assert_eq!(
        failure,
        json!({"state": "FAILURE", "exc_type": "ValueError", "exc_args": ["boom"]}),
        "failure"
    );

    assert_eq!(
        side.client(&["group"]).await["result"],
        json!([4, 8, 16, 32]),
        "group"
    );
    assert_eq!(side.client(&["chain"]).await["result"], json!(60), "chain");
    // The failure of a step reaches the chain's result (the last step's), as from Python.
    assert_eq!(
        side.client(&["chain_failure"]).await,
        json!({"exc_type": "ValueError", "exc_args": ["boom"]}),
        "a failed chain step"
    );
    // A group as a callback, and as the last step of a chain: each member gets the result.
    for (scenario, value, expected) in [
        ("link_group", 4, json!(4)),
        ("chain_to_group", 6, json!([6, 6])),
    ] {
        let seen = side.client(&[scenario]).await;
        assert_eq!(seen["result"], expected, "{scenario}");
        if scenario == "link_group" {
            assert_eq!(seen["children"], json!(["GroupResult"]), "{scenario}");
        }
        for member in ["a", "b"] {
            let line = format!("{scenario}-{member}:{value}");
            wait_for_line(|| side.records(), |l| l == line, "a member of a group").await;
        }
    }
    assert_eq!(
        side.client(&["named_queue"]).await["result"],
        json!(42),
        "named queue"
    );
    assert_eq!(
        side.client(&["headers"]).await["result"],
        json!("nightly"),
        "a Python call's own header"
    );

    let ignored = side.client(&["ignore_result"]).await;
    wait_for_line(
        || side.records(),
        |l| l == "ignored:7",
        "ignore_result task ran",
    )
    .await;
    assert_eq!(
        ignored["state"],
        json!("PENDING"),
        "ignore_result stores nothing (read by the caller, whose reply queue a result would reach)"
    );
    // A caller's explicit `ignore_result=False` wins over the Rust task's own `ignore_result`,
    // as in Celery 5.7, so Python's get() returns; without it (Python's `send_task` then
    // writes null), the task's setting decides.
    let quiet = side.client(&["asked_of_a_quiet_task"]).await;
    assert_eq!(
        quiet["result"],
        json!(5),
        "the caller's explicit ignore_result=False wins"
    );
    assert_eq!(
        quiet["unasked_state"],
        json!("PENDING"),
        "no choice in the message: the task's ignore_result"
    );

    side.client(&["priority"]).await;
    let priority_worker = app
        .worker()
        .queues([queues.priority()])
        .concurrency(1)
        .prefetch_multiplier(1)
        .start()
        .await
        .unwrap();
    let prio = || {
        side.records()
            .into_iter()
            .filter(|l| l.starts_with("prio:"))
            .collect::<Vec<_>>()
    };
    wait_for_line(prio, |l| l == "prio:1", "priority tasks").await;
    assert_eq!(prio(), ["prio:9", "prio:5", "prio:1"], "priority order");

    priority_worker.shutdown().await;
    worker.shutdown().await;
    side.cleanup([]).await;
}

#[task(name = "tasks.echo")]
async fn echo(value: Value) -> Value {
    value
}

const SERIALIZERS: [&str; 4] = ["json", "msgpack", "yaml", "pickle"];
const COMPRESSIONS: [&str; 6] = ["none", "gzip", "bzip2", "lzma", "brotli", "zstd"];

fn codec_sample() -> Value {
    json!({"text": "héllo ☃", "int": 42, "big": 1_099_511_627_776_i64, "float": 1.5, "list": [1, "a", null, true, false], "map": {"k": [2.25]}})
}

/// Every serializer × compression, both directions: Python sends to a Rust worker, Rust sends to
/// a Python worker; results come back in json, the result serializer both sides use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_serializer_and_compression_works_both_ways() {
    const TEST: &str = "every_serializer_and_compression_works_both_ways";
    if !common::rabbitmq(TEST) {
        return;
    }
    let Some(python) = common::python_celery(TEST) else {
        return;
    };
    let sample = codec_sample();

    // Python client -> Rust worker.
    let to_rust = Queues::new("interop-codec-rs");
    let side = PythonSide::new(python.clone(), &to_rust, temp_dir("interop-codec-rs"));
    let app = Celery::builder("codec-worker")
        .broker_url(RABBITMQ_URL)
        .result_backend("rpc://")
        .task_default_queue(&to_rust.main)
        .accept_content(SERIALIZERS)
        .build()
        .unwrap();
    app.register(echo::Task);
    let worker = app
        .worker()
        .queues([to_rust.main.clone()])
        .concurrency(4)
        .start()
        .await
        .unwrap();
    let outcomes = side.client(&["codec_matrix", &sample.to_string()]).await;
    for serializer in SERIALIZERS {
        for compression in COMPRESSIONS {
            let key = format!("{serializer}/{compression}");
            assert_eq!(outcomes[&key], sample, "Python -> Rust worker with {key}");
        }
    }
    worker.shutdown().await;
    side.cleanup([]).await;

    // Rust client -> Python worker.
    let to_python = Queues::new("interop-codec-py");
    let side = PythonSide::new(python, &to_python, temp_dir("interop-codec-py"));
    let python_worker = side.worker(std::slice::from_ref(&to_python.main), &[]);
    let client = Celery::builder("codec-client")
        .broker_url(RABBITMQ_URL)
        .result_backend("rpc://")
        .task_default_queue(&to_python.main)
        .accept_content(SERIALIZERS)
        .build()
        .unwrap();
    let warm_up = echo::s(json!(0)).apply_async_with(&client).await.unwrap();
    assert_eq!(
        warm_up
            .get()
            .timeout(Duration::from_secs(60))
            .await
            .unwrap(),
        json!(0)
    );
    for serializer in SERIALIZERS {
        for compression in COMPRESSIONS {
            let mut options = CallOptions::new().serializer(serializer);
            if compression != "none" {
                options = options.compression(compression);
            }
            let result = echo::s(sample.clone())
                .with_options(options)
                .apply_async_with(&client)
                .await
                .unwrap();
            let echoed = result.get().timeout(WAIT).await;
            assert_eq!(
                echoed.unwrap_or_else(|e| panic!(
                    "Rust -> Python worker with {serializer}/{compression}: {e}"
                )),
                sample
            );
        }
    }
    side.cleanup([python_worker]).await;
}
