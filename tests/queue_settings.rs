//! Queues a Python Celery 5.7 app declared with common settings (`task_queue_max_priority`,
//! queue arguments, `task_default_queue_type`, `task_create_missing_queue_type`,
//! `task_default_exchange_type`), consumed by a Rust worker and published to by a Rust client
//! with the same settings: RabbitMQ refuses a declaration with other arguments or another
//! exchange type (406 PRECONDITION_FAILED), and a channel-wide prefetch limit on a quorum queue
//! (540 NOT_IMPLEMENTED).
//!
//! Needs RabbitMQ on 127.0.0.1:5672 and a virtualenv with celery 5.7 (`CELERY_PYTHON`, or the
//! one `tests/python/ensure_venv.sh` makes); without them the tests say they were skipped.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use celery::broker::AmqpBroker;
use celery::prelude::*;
use celery::{Config, Queue};
use common::RABBITMQ_URL;
use serde_json::{json, Map, Value};

const WAIT: Duration = Duration::from_secs(30);

#[task(name = "tasks.add")]
async fn add(x: i64, y: i64) -> i64 {
    x + y
}

fn python_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python")
}

/// Declares `queue` as a Celery app with `settings` does (`tests/python/declare_queue.py`) and
/// returns what it declared.
async fn python_declares(python: &Path, queue: &str, settings: Value) -> Value {
    let mut command = tokio::process::Command::new(python);
    command
        .arg("declare_queue.py")
        .arg(queue)
        .arg(settings.to_string())
        .current_dir(python_dir())
        .env("CELERY_BROKER_URL", RABBITMQ_URL)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("declare_queue.py timed out")
        .expect("run declare_queue.py");
    assert!(
        output.status.success(),
        "declare_queue.py {queue} {settings} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("declare_queue.py printed {stdout:?}: {e}"))
}

fn app(configure: impl FnOnce(&mut Config)) -> Celery {
    let app = Celery::builder("queue-settings")
        .broker_url(RABBITMQ_URL)
        .result_backend("rpc://")
        .configure(configure)
        .build()
        .unwrap();
    app.register(add::Task);
    app
}

/// A Rust worker consumes `queue`, and a Rust client sends it `tasks.add` (once with a
/// countdown, which the worker holds until due), both of which run.
async fn rust_worker_and_client_run_a_task(app: &Celery, queue: &str) -> Result<(), String> {
    let worker = app
        .worker()
        .queues([queue])
        .concurrency(2)
        .start()
        .await
        .map_err(|e| format!("the Rust worker could not start: {e}"))?;
    let outcome = async {
        let send = |countdown: Option<f64>| {
            let mut options = CallOptions::new().queue(queue);
            if let Some(seconds) = countdown {
                options = options.countdown(seconds);
            }
            app.send_task("tasks.add", vec![json!(2), json!(2)], Map::new(), options)
        };
        let now = send(None).await.map_err(|e| format!("publish: {e}"))?;
        let later = send(Some(1.0))
            .await
            .map_err(|e| format!("publish with a countdown: {e}"))?;
        for (what, result) in [("plain", now), ("countdown", later)] {
            let value = result
                .get()
                .timeout(WAIT)
                .await
                .map_err(|e| format!("{what}: {e}"))?;
            if value != json!(4) {
                return Err(format!("{what}: {value}"));
            }
        }
        Ok(())
    }
    .await;
    worker.shutdown().await;
    outcome
}

/// Deletes the test's queue and the exchanges it used.
async fn cleanup(queue: &str, exchanges: &[&str]) {
    let broker = AmqpBroker::connect(RABBITMQ_URL).await.unwrap();
    broker.delete_queue(queue).await.unwrap();
    for exchange in exchanges {
        broker.delete_exchange(exchange).await.unwrap();
    }
}

fn services(test: &str) -> Option<PathBuf> {
    if !common::rabbitmq(test) {
        return None;
    }
    common::python_celery(test)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_queue_max_priority_declares_what_python_declares() {
    const TEST: &str = "task_queue_max_priority_declares_what_python_declares";
    let Some(python) = services(TEST) else { return };
    let queue = common::unique_name("qs-max-priority");
    let declared = python_declares(
        &python,
        &queue,
        json!({"task_default_queue": queue, "task_queue_max_priority": 10}),
    )
    .await;
    assert_eq!(declared["queue_arguments"], json!({"x-max-priority": 10}));

    // Without the setting, the declaration is refused, as the mixed fleet saw.
    let without = app(|c| c.task_default_queue = queue.clone());
    let refused = without.worker().queues([&queue]).start().await.err();
    let with = app(|c| {
        c.task_default_queue = queue.clone();
        c.task_queue_max_priority = Some(10);
    });
    let outcome = rust_worker_and_client_run_a_task(&with, &queue).await;
    cleanup(&queue, &[&queue]).await;
    let refused = refused.expect("a declaration without x-max-priority is refused");
    assert!(refused.to_string().contains("x-max-priority"), "{refused}");
    outcome.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_arguments_declare_what_python_declares() {
    const TEST: &str = "queue_arguments_declare_what_python_declares";
    let Some(python) = services(TEST) else { return };
    let queue = common::unique_name("qs-arguments");
    let arguments = json!({
        "x-message-ttl": 600_000,
        "x-max-length": 5_000_000_000_i64,
        "x-overflow": "reject-publish",
    });
    let declared = python_declares(
        &python,
        &queue,
        json!({"task_queues": [{"name": queue, "queue_arguments": arguments}]}),
    )
    .await;
    assert_eq!(declared["queue_arguments"], arguments);

    let rust_queue = Queue::new(&queue)
        .argument("x-message-ttl", 600_000)
        .argument("x-max-length", 5_000_000_000_i64)
        .argument("x-overflow", "reject-publish");
    let app = app(|c| c.task_queues = vec![rust_queue]);
    let outcome = rust_worker_and_client_run_a_task(&app, &queue).await;
    cleanup(&queue, &[&queue]).await;
    outcome.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_default_queue_is_declared_and_consumed() {
    const TEST: &str = "a_quorum_default_queue_is_declared_and_consumed";
    let Some(python) = services(TEST) else { return };
    let queue = common::unique_name("qs-quorum-default");
    let declared = python_declares(
        &python,
        &queue,
        json!({"task_default_queue": queue, "task_default_queue_type": "quorum"}),
    )
    .await;
    assert_eq!(
        declared["queue_arguments"],
        json!({"x-queue-type": "quorum"})
    );

    let app = app(|c| {
        c.task_default_queue = queue.clone();
        c.task_default_queue_type = "quorum".to_owned();
        // Applied to classic queues only: RabbitMQ refuses x-max-priority on a quorum queue.
        c.task_queue_max_priority = Some(10);
    });
    // The worker consumes with a prefetch count per consumer (no 540 NOT_IMPLEMENTED).
    let outcome = rust_worker_and_client_run_a_task(&app, &queue).await;
    cleanup(&queue, &[&queue]).await;
    outcome.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_created_for_a_name_take_the_missing_queue_type() {
    const TEST: &str = "queues_created_for_a_name_take_the_missing_queue_type";
    let Some(python) = services(TEST) else { return };
    let queue = common::unique_name("qs-quorum-missing");
    let declared = python_declares(
        &python,
        &queue,
        json!({"task_create_missing_queue_type": "quorum"}),
    )
    .await;
    assert_eq!(
        declared["queue_arguments"],
        json!({"x-queue-type": "quorum"})
    );

    let app = app(|c| c.task_create_missing_queue_type = "quorum".to_owned());
    let outcome = rust_worker_and_client_run_a_task(&app, &queue).await;
    cleanup(&queue, &[&queue]).await;
    outcome.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_exchange_type_key_and_name_are_python_s() {
    const TEST: &str = "the_default_exchange_type_key_and_name_are_python_s";
    let Some(python) = services(TEST) else { return };
    let queue = common::unique_name("qs-topic");
    let exchange = format!("{queue}.exchange");
    let routing_key = format!("{queue}.tasks");
    let settings = json!({
        "task_default_queue": queue,
        "task_default_exchange": exchange,
        "task_default_exchange_type": "topic",
        "task_default_routing_key": routing_key,
    });
    let declared = python_declares(&python, &queue, settings).await;
    assert_eq!(
        (
            &declared["exchange"],
            &declared["exchange_type"],
            &declared["routing_key"]
        ),
        (&json!(exchange), &json!("topic"), &json!(routing_key))
    );

    let app = app(|c| {
        c.task_default_queue = queue.clone();
        c.task_default_exchange = Some(exchange.clone());
        c.task_default_exchange_type = "topic".to_owned();
        c.task_default_routing_key = Some(routing_key.clone());
    });
    // Published to the topic exchange with the queue's key, as Celery publishes it.
    let outcome = rust_worker_and_client_run_a_task(&app, &queue).await;
    cleanup(&queue, &[&exchange]).await;
    outcome.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_not_to_declare_is_used_as_it_is() {
    const TEST: &str = "a_queue_not_to_declare_is_used_as_it_is";
    let Some(python) = services(TEST) else { return };
    let queue = common::unique_name("qs-no-declare");
    let arguments = json!({"x-message-ttl": 600_000, "x-queue-type": "quorum"});
    python_declares(
        &python,
        &queue,
        json!({"task_queues": [{"name": queue, "queue_arguments": arguments}]}),
    )
    .await;

    // Declared with none of those arguments, it would be refused; not declared, it is used.
    // (Its declared quorum type is not known here: the worker's prefetch count stays global,
    // which RabbitMQ refuses on a quorum queue, unless the type is given too.)
    let rust_queue = Queue::new(&queue).queue_type("quorum").no_declare(true);
    let app = app(|c| c.task_queues = vec![rust_queue]);
    let outcome = rust_worker_and_client_run_a_task(&app, &queue).await;
    cleanup(&queue, &[&queue]).await;
    outcome.unwrap();
}
