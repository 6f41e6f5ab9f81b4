//! Celery's command line against RabbitMQ: `call --wait` and `result` print what a worker
//! returned, and a `worker` process stops warmly on SIGTERM: the running task finishes and the
//! held message goes back to its queue.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use celery::cli::{execute, run_with, Cli};
use celery::prelude::*;
use clap::Parser;
use common::RABBITMQ_URL;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::Notify;

#[task(name = "cli.add")]
async fn add(x: i64, y: i64) -> i64 {
    x + y
}

/// Says it is running (creates `<dir>/started`), then waits until `<dir>/release` exists (true)
/// or `cap_ms` pass (false).
async fn hold(dir: &str, cap_ms: u64) -> bool {
    let dir = std::path::Path::new(dir);
    std::fs::write(dir.join("started"), b"").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_millis(cap_ms);
    while std::time::Instant::now() < deadline {
        if dir.join("release").exists() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[task(name = "cli.held_late", acks_late)]
async fn held_late(dir: String, cap_ms: u64) -> bool {
    hold(&dir, cap_ms).await
}

#[task(name = "cli.held")]
async fn held(dir: String, cap_ms: u64) -> bool {
    hold(&dir, cap_ms).await
}

fn builder() -> celery::Builder {
    Celery::builder("cli")
        .broker_url(RABBITMQ_URL)
        .result_backend("rpc://")
}

fn register(app: &Celery) {
    app.register(add::Task)
        .register(held::Task)
        .register(held_late::Task);
}

/// Not a test on its own: the worker process that `spawn_worker_process` starts, running this
/// binary again with `--ignored --exact worker_process_entry`, `CELERY_CLI_WORKER_QUEUE=<queue>`
/// and optionally `CELERY_CLI_WORKER_BROKER=<url>`. It stops by itself when its parent goes away
/// (its stdin closes) or after three minutes.
#[tokio::test]
#[ignore = "the worker process that the cli tests start; does nothing on its own"]
async fn worker_process_entry() {
    let Ok(queue) = std::env::var("CELERY_CLI_WORKER_QUEUE") else {
        return;
    };
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(2);
    });
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(180));
        std::process::exit(3);
    });
    let mut args = vec!["cli".to_owned()];
    // A broker other than the tests' RabbitMQ (one that cannot be reached, say).
    if let Ok(url) = std::env::var("CELERY_CLI_WORKER_BROKER") {
        args.extend(["--broker".to_owned(), url]);
    }
    args.extend(["worker", "-Q", &queue, "-c", "2", "-l", "info"].map(str::to_owned));
    let cli = Cli::try_parse_from(args).unwrap();
    let code = run_with(cli, builder(), register).await;
    assert_eq!(
        format!("{code:?}"),
        format!("{:?}", std::process::ExitCode::SUCCESS)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_and_result_print_what_the_worker_returned() {
    if !common::rabbitmq("call_and_result_print_what_the_worker_returned") {
        return;
    }
    let queue = common::unique_name("cli-call");
    let app = builder().task_default_queue(&queue).build().unwrap();
    register(&app);
    let worker = app.worker().queues([queue.clone()]).start().await.unwrap();

    let command = |args: &[&str]| {
        let mut argv = vec!["cli"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).unwrap().command
    };
    let mut out = Vec::new();
    execute(
        &app,
        command(&[
            "call", "cli.add", "--args", "[2, 3]", "--queue", &queue, "--wait",
        ]),
        &mut out,
    )
    .await
    .unwrap();
    let printed = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines.len(), 2, "{printed}");
    assert_eq!(lines[0].len(), 36, "the task id: {printed}");
    assert_eq!(lines[1], "5");

    let mut out = Vec::new();
    execute(
        &app,
        command(&[
            "call",
            "cli.add",
            "--kwargs",
            r#"{"x": 1, "y": 1}"#,
            "--queue",
            &queue,
        ]),
        &mut out,
    )
    .await
    .unwrap();
    let id = String::from_utf8(out).unwrap().trim().to_owned();
    let mut out = Vec::new();
    execute(&app, command(&["result", &id, "--timeout", "20"]), &mut out)
        .await
        .unwrap();
    assert_eq!(String::from_utf8(out).unwrap().trim(), "2");

    worker.shutdown().await;
    let mut out = Vec::new();
    execute(
        &app,
        command(&["call", "cli.add", "--args", "[1, 1]", "--queue", &queue]),
        &mut out,
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    let missing = common::unique_name("cli-no-such-queue");
    let queues = format!("{missing},{queue}");
    execute(&app, command(&["purge", "-Q", &queues, "-f"]), &mut out)
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap().trim(),
        "Purged 1 message from 2 known task queues.",
        "a queue that does not exist holds nothing, as Celery counts it"
    );
    let broker = celery::broker::AmqpBroker::connect(RABBITMQ_URL)
        .await
        .unwrap();
    common::delete_queue_and_exchange(&broker, &queue).await;
}

/// `purge` without `-Q` empties every queue the app knows, and says what it did, as Celery's
/// does (in memory: no server needed).
#[tokio::test]
async fn purge_without_queues_empties_every_known_queue() {
    let app = Celery::builder("cli-purge")
        .broker_url(common::memory_url("cli-purge"))
        .queue(Queue::new("cli-purge-other"))
        .build()
        .unwrap();
    // A task in each queue.
    let send_two = || async {
        add::s(1, 1).apply_async_with(&app).await.unwrap();
        add::s(2, 2)
            .with_options(CallOptions::new().queue("cli-purge-other"))
            .apply_async_with(&app)
            .await
            .unwrap();
    };
    send_two().await;
    let purge = |args: &[&str]| {
        let command = Cli::try_parse_from(["cli", "purge", "-f"].iter().chain(args))
            .unwrap()
            .command;
        let app = app.clone();
        async move {
            let mut out = Vec::new();
            execute(&app, command, &mut out).await.unwrap();
            String::from_utf8(out).unwrap()
        }
    };
    assert_eq!(
        purge(&[]).await,
        "Purged 2 messages from 2 known task queues.\n"
    );
    assert_eq!(purge(&[]).await, "No messages purged from 2 queues.\n");

    // `-X` leaves a queue out; a queue named twice is purged once; nothing left says nothing.
    send_two().await;
    assert_eq!(
        purge(&["-X", "cli-purge-other"]).await,
        "Purged 1 message from 1 known task queue.\n"
    );
    assert_eq!(
        purge(&["-Q", "cli-purge-other,cli-purge-other"]).await,
        "Purged 1 message from 1 known task queue.\n"
    );
    assert_eq!(purge(&["-Q", "celery", "-X", "celery"]).await, "");
}

/// A worker process (this binary's `worker_process_entry`).
struct WorkerProcess {
    child: tokio::process::Child,
    /// Kept open while the test runs: the process stops when it closes. (Taken out of `child`,
    /// whose `wait()` would close it.)
    _stdin: tokio::process::ChildStdin,
    /// Notified once the process has begun its warm shutdown.
    warm: Arc<Notify>,
    /// Notified once a SIGINT has made the next one cold.
    cold_armed: Arc<Notify>,
    /// Notified when it logs that it cannot reach its broker (and tries again).
    waiting_for_broker: Arc<Notify>,
}

/// A worker process serving `queue`, once it runs tasks; and an app sending there.
async fn worker_process(queue: &str) -> (Celery, WorkerProcess) {
    worker_process_with(queue, &[]).await
}

/// The same, with these environment variables.
async fn worker_process_with(queue: &str, env: &[(&str, &str)]) -> (Celery, WorkerProcess) {
    let app = builder().task_default_queue(queue).build().unwrap();
    let process = spawn_worker_process(queue, env);
    let ready = add::s(1, 2).apply_async_with(&app).await.unwrap();
    assert_eq!(
        ready.get().timeout(Duration::from_secs(30)).await.unwrap(),
        3,
        "the worker process is up"
    );
    (app, process)
}

/// Starts a worker process serving `queue`, with these environment variables, and watches its
/// log; it may not be ready yet.
fn spawn_worker_process(queue: &str, env: &[(&str, &str)]) -> WorkerProcess {
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "worker_process_entry",
            "--nocapture",
        ])
        .env("CELERY_CLI_WORKER_QUEUE", queue)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        // libtest's own lines ("running 1 test") would read as this binary's.
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Its log, passed on, watched for the lines the tests wait for.
    let mut process = WorkerProcess {
        _stdin: child.stdin.take().unwrap(),
        warm: Arc::new(Notify::new()),
        cold_armed: Arc::new(Notify::new()),
        waiting_for_broker: Arc::new(Notify::new()),
        child,
    };
    let mut lines = BufReader::new(process.child.stderr.take().unwrap()).lines();
    let watched = [
        ("warm shutdown", process.warm.clone()),
        ("Ctrl+C again", process.cold_armed.clone()),
        (
            "cannot reach the broker",
            process.waiting_for_broker.clone(),
        ),
    ];
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("worker process: {line}");
            for (text, seen) in &watched {
                if line.contains(text) {
                    seen.notify_one();
                }
            }
        }
    });
    process
}

/// A directory for a `held` task's files.
fn hold_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(common::unique_name(test));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Waits until a `held` task with this directory runs.
async fn running(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !dir.join("started").exists() {
        assert!(Instant::now() < deadline, "the task did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn terminate(child: &tokio::process::Child) {
    send_signal(child, "-TERM");
}

fn send_signal(child: &tokio::process::Child, signal: &str) {
    let pid = child.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args([signal, &pid])
        .status()
        .unwrap();
    assert!(status.success());
}

/// SIGINT after SIGTERM leaves the shutdown warm, as in Celery (only a further SIGINT would be
/// cold): the running task finishes, and the worker exits with SIGTERM's status, 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_after_sigterm_stays_warm() {
    if !common::rabbitmq("sigint_after_sigterm_stays_warm") {
        return;
    }
    let queue = common::unique_name("cli-term-int");
    let (app, mut process) = worker_process(&queue).await;
    let (dir, running_task) = run_a_held_task(&app, "cli-term-int").await;
    terminate(&process.child);
    tokio::time::timeout(Duration::from_secs(30), process.warm.notified())
        .await
        .expect("SIGTERM starts a warm shutdown");
    send_signal(&process.child, "-INT");
    tokio::time::timeout(Duration::from_secs(30), process.cold_armed.notified())
        .await
        .expect("the SIGINT is heard, and makes the next one cold");
    assert!(
        process.child.try_wait().unwrap().is_none(),
        "the worker still waits for its running task"
    );
    let exit = release_and_wait_for_exit(&mut process, &dir, &running_task).await;
    assert_eq!(exit.code(), Some(0), "{exit:?}");
    let broker = celery::broker::AmqpBroker::connect(RABBITMQ_URL)
        .await
        .unwrap();
    common::delete_queue_and_exchange(&broker, &queue).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A second SIGINT during the warm shutdown stops the worker at once (Celery's cold shutdown):
/// the running task is not waited for, and its message (acks_late) goes back to its queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigint_stops_a_worker_process_cold() {
    if !common::rabbitmq("a_second_sigint_stops_a_worker_process_cold") {
        return;
    }
    let queue = common::unique_name("cli-cold");
    let (app, mut process) = worker_process(&queue).await;
    let (dir, running_task) = run_a_held_task(&app, "cli-cold").await;
    send_signal(&process.child, "-INT");
    tokio::time::timeout(Duration::from_secs(30), process.warm.notified())
        .await
        .expect("the first SIGINT starts a warm shutdown");
    send_signal(&process.child, "-INT");
    // Celery's status for a worker stopped with Ctrl-C.
    assert_stopped_cold(
        &mut process,
        &queue,
        &running_task,
        celery::cli::INTERRUPTED_EXIT_CODE,
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// SIGQUIT is Celery's cold shutdown at once, with no warm one first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigquit_stops_a_worker_process_cold() {
    if !common::rabbitmq("sigquit_stops_a_worker_process_cold") {
        return;
    }
    let queue = common::unique_name("cli-quit");
    let (app, mut process) = worker_process(&queue).await;
    let (dir, running_task) = run_a_held_task(&app, "cli-quit").await;
    send_signal(&process.child, "-QUIT");
    assert_stopped_cold(&mut process, &queue, &running_task, 0).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// With Celery's `REMAP_SIGTERM=SIGQUIT`, SIGTERM is the cold shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remapped_sigterm_stops_a_worker_process_cold() {
    if !common::rabbitmq("remapped_sigterm_stops_a_worker_process_cold") {
        return;
    }
    let queue = common::unique_name("cli-remap");
    let (app, mut process) = worker_process_with(&queue, &[("REMAP_SIGTERM", "SIGQUIT")]).await;
    let (dir, running_task) = run_a_held_task(&app, "cli-remap").await;
    terminate(&process.child);
    assert_stopped_cold(&mut process, &queue, &running_task, 0).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A worker still waiting for a broker it cannot reach stops on SIGTERM (and SIGINT), as
/// Celery's does, instead of going on trying.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_waiting_for_its_broker_stops_on_a_signal() {
    // Nothing listens on port 1 of 127.0.0.1: the connection is refused, and tried again.
    let unreachable = (
        "CELERY_CLI_WORKER_BROKER",
        "amqp://guest:guest@127.0.0.1:1//",
    );
    for (signal, status) in [("-TERM", 0), ("-INT", celery::cli::INTERRUPTED_EXIT_CODE)] {
        let mut process = spawn_worker_process("cli-unreachable", &[unreachable]);
        tokio::time::timeout(
            Duration::from_secs(30),
            process.waiting_for_broker.notified(),
        )
        .await
        .expect("the worker waits for its broker");
        send_signal(&process.child, signal);
        let exit = tokio::time::timeout(Duration::from_secs(10), process.child.wait())
            .await
            .expect("the worker stops instead of trying again")
            .unwrap();
        assert_eq!(exit.code(), Some(status), "{signal}: {exit:?}");
    }
}

/// Sends an acks_late task that runs until the worker stops (or a minute passes), and waits
/// until it runs.
async fn run_a_held_task(app: &Celery, test: &str) -> (PathBuf, AsyncResult<bool>) {
    let dir = hold_dir(test);
    let running_task = held_late::s(dir.display().to_string(), 60_000)
        .apply_async_with(app)
        .await
        .unwrap();
    running(&dir).await;
    (dir, running_task)
}

/// Lets the `held` task in `dir` finish, checks that it did, and waits for the worker to exit.
async fn release_and_wait_for_exit(
    process: &mut WorkerProcess,
    dir: &Path,
    running_task: &AsyncResult<bool>,
) -> std::process::ExitStatus {
    std::fs::write(dir.join("release"), b"").unwrap();
    assert!(
        running_task
            .get()
            .timeout(Duration::from_secs(30))
            .await
            .unwrap(),
        "the running task finished, released by the test"
    );
    tokio::time::timeout(Duration::from_secs(30), process.child.wait())
        .await
        .expect("the worker exits")
        .unwrap()
}

/// The worker exits without waiting for its running task, which stored nothing and whose
/// message RabbitMQ puts back in the queue.
async fn assert_stopped_cold(
    process: &mut WorkerProcess,
    queue: &str,
    running_task: &AsyncResult<bool>,
    exit_status: i32,
) {
    let exit = tokio::time::timeout(Duration::from_secs(30), process.child.wait())
        .await
        .expect("the worker exits without waiting for its task")
        .unwrap();
    assert_eq!(exit.code(), Some(exit_status), "{exit:?}");
    assert_eq!(running_task.state().await.unwrap(), State::Pending);
    let broker = celery::broker::AmqpBroker::connect(RABBITMQ_URL)
        .await
        .unwrap();
    use celery::broker::Broker;
    // RabbitMQ requeues the unacknowledged message once it sees the connection gone.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut back = 0;
    while back == 0 && Instant::now() < deadline {
        back = broker.purge(queue).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(back, 1, "the running task's message went back to its queue");
    common::delete_queue_and_exchange(&broker, queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_process_stops_warmly_on_sigterm_and_ignores_another() {
    if !common::rabbitmq("a_worker_process_stops_warmly_on_sigterm_and_ignores_another") {
        return;
    }
    let queue = common::unique_name("cli-worker");
    let (app, mut process) = worker_process(&queue).await;

    // Sent first, the held message reaches the worker before the running one.
    let held_back = add::s(2, 2)
        .with_options(CallOptions::new().countdown(60))
        .apply_async_with(&app)
        .await
        .unwrap();
    let dir = hold_dir("cli-worker");
    let running_task = held::s(dir.display().to_string(), 60_000)
        .apply_async_with(&app)
        .await
        .unwrap();
    running(&dir).await;
    terminate(&process.child);
    tokio::time::timeout(Duration::from_secs(30), process.warm.notified())
        .await
        .expect("SIGTERM starts a warm shutdown");
    assert!(
        process.child.try_wait().unwrap().is_none(),
        "the worker waits for its running task"
    );
    // Another SIGTERM is ignored, as Celery ignores it: the task still finishes, and the
    // worker exits with 0 (a cold shutdown would leave the task unfinished).
    terminate(&process.child);
    let exit = release_and_wait_for_exit(&mut process, &dir, &running_task).await;
    assert!(exit.success(), "warm shutdown exits cleanly: {exit:?}");
    assert_eq!(held_back.state().await.unwrap(), State::Pending);
    let broker = celery::broker::AmqpBroker::connect(RABBITMQ_URL)
        .await
        .unwrap();
    use celery::broker::Broker;
    assert_eq!(
        broker.purge(&queue).await.unwrap(),
        1,
        "the held message went back to its queue"
    );
    common::delete_queue_and_exchange(&broker, &queue).await;
    let _ = std::fs::remove_dir_all(&dir);
}
