//! Celery's command line against RabbitMQ: `call --wait` and `result` print what a worker
//! returned, and a `worker` process stops warmly on SIGTERM: the running task finishes and the
//! held message goes back to its queue.

mod common;

use std::time::Duration;

use celery::cli::{execute, run_with, Cli};
use celery::prelude::*;
use clap::Parser;
use common::RABBITMQ_URL;

#[task(name = "cli.add")]
async fn add(x: i64, y: i64) -> i64 {
    x + y
}

#[task(name = "cli.slow_late", acks_late)]
async fn slow_late(ms: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    ms
}

#[task(name = "cli.slow")]
async fn slow(ms: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    ms
}

fn builder() -> celery::Builder {
    Celery::builder("cli")
        .broker_url(RABBITMQ_URL)
        .result_backend("rpc://")
}

fn register(app: &Celery) {
    app.register(add::Task)
        .register(slow::Task)
        .register(slow_late::Task);
}

/// Run by the child processes of `a_worker_process_stops_warmly_on_sigterm` and
/// `a_second_signal_stops_a_worker_process_cold`.
#[tokio::test]
async fn worker_process_entry() {
    let Ok(queue) = std::env::var("CELERY_CLI_WORKER_QUEUE") else {
        return;
    };
    let cli =
        Cli::try_parse_from(["cli", "worker", "-Q", &queue, "-c", "2", "-l", "info"]).unwrap();
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
    celery::broker::AmqpBroker::connect(RABBITMQ_URL)
        .await
        .unwrap()
        .delete_queue(&queue)
        .await
        .unwrap();
}

/// `purge` without `-Q` empties every queue the app knows, as Celery's does (in memory: no
/// server needed).
#[tokio::test]
async fn purge_without_queues_empties_every_known_queue() {
    let app = Celery::builder("cli-purge")
        .broker_url(common::memory_url("cli-purge"))
        .queue(Queue::new("cli-purge-other"))
        .build()
        .unwrap();
    add::s(1, 1).apply_async_with(&app).await.unwrap();
    add::s(2, 2)
        .with_options(CallOptions::new().queue("cli-purge-other"))
        .apply_async_with(&app)
        .await
        .unwrap();
    let purge = Cli::try_parse_from(["cli", "purge", "-f"]).unwrap().command;
    let mut out = Vec::new();
    execute(&app, purge, &mut out).await.unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap().trim(),
        "Purged 2 messages from 2 known task queues."
    );
}

/// A worker process (this binary's `worker_process_entry`) serving `queue`, once it runs tasks;
/// and an app sending there.
async fn worker_process(queue: &str) -> (Celery, tokio::process::Child) {
    let app = builder().task_default_queue(queue).build().unwrap();
    let child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "worker_process_entry", "--nocapture"])
        .env("CELERY_CLI_WORKER_QUEUE", queue)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let ready = add::s(1, 2).apply_async_with(&app).await.unwrap();
    assert_eq!(
        ready.get().timeout(Duration::from_secs(30)).await.unwrap(),
        3,
        "the worker process is up"
    );
    (app, child)
}

/// A second SIGTERM during the warm shutdown stops the worker at once (Celery's cold shutdown):
/// the running task is not waited for, and its message (acks_late) goes back to its queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_stops_a_worker_process_cold() {
    if !common::rabbitmq("a_second_signal_stops_a_worker_process_cold") {
        return;
    }
    let queue = common::unique_name("cli-cold");
    let (app, mut child) = worker_process(&queue).await;
    let running = slow_late::s(20_000).apply_async_with(&app).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = child.id().unwrap().to_string();
    let signalled = std::time::Instant::now();
    for _ in 0..2 {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(status.success());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let exit = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("the worker exits without waiting for its 20 s task")
        .unwrap();
    assert!(signalled.elapsed() < Duration::from_secs(15));
    assert_eq!(
        exit.code(),
        Some(celery::cli::COLD_SHUTDOWN_EXIT_CODE),
        "{exit:?}"
    );
    assert_eq!(running.state().await.unwrap(), State::Pending);
    let broker = celery::broker::AmqpBroker::connect(RABBITMQ_URL)
        .await
        .unwrap();
    use celery::broker::Broker;
    // RabbitMQ requeues the unacknowledged message once it sees the connection gone.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut back = 0;
    while back == 0 && std::time::Instant::now() < deadline {
        back = broker.purge(&queue).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(back, 1, "the running task's message went back to its queue");
    broker.delete_queue(&queue).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_process_stops_warmly_on_sigterm() {
    if !common::rabbitmq("a_worker_process_stops_warmly_on_sigterm") {
        return;
    }
    let queue = common::unique_name("cli-worker");
    let (app, mut child) = worker_process(&queue).await;

    let running = slow::s(1000).apply_async_with(&app).await.unwrap();
    let held = add::s(2, 2)
        .with_options(CallOptions::new().countdown(60))
        .apply_async_with(&app)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = child.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());

    assert_eq!(
        running
            .get()
            .timeout(Duration::from_secs(10))
            .await
            .unwrap(),
        1000,
        "the running task finished"
    );
    let exit = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("the worker exits")
        .unwrap();
    assert!(exit.success(), "warm shutdown exits cleanly: {exit:?}");
    assert_eq!(held.state().await.unwrap(), State::Pending);
    let broker = celery::broker::AmqpBroker::connect(RABBITMQ_URL)
        .await
        .unwrap();
    use celery::broker::Broker;
    assert_eq!(
        broker.purge(&queue).await.unwrap(),
        1,
        "the held message went back to its queue"
    );
    broker.delete_queue(&queue).await.unwrap();
}
