//! Load: many tasks through two workers on RabbitMQ while the client reads every result over
//! rpc://; each result must be right. Skipped when RabbitMQ is not reachable, unless
//! `CELERY_TEST_REQUIRE_SERVICES=1`.
//!
//! `CELERY_LOAD_TASKS` sets the number of tasks. The default is 100,000 in an optimized build
//! (`cargo test --release --test load`: about 30 s on 2 cores) and 20,000 in a debug build: there
//! the unoptimized AMQP client and codecs make it CPU-bound at about 900 tasks/s on 2 cores
//! shared with RabbitMQ (100,000 took 112 s), and this test must stay short.
//!
//! No speed is required: the rate is printed as information. The run fails only when no result
//! arrived for `CELERY_LOAD_TIMEOUT_S` seconds (the no-progress window, default 60), or when it
//! has not ended after 30 minutes in all (so that it always stops by itself).

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use celery::broker::AmqpBroker;
use celery::prelude::*;
use common::{unique_name, RABBITMQ_URL};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

#[task(name = "load.add")]
async fn add(x: i64, y: i64) -> i64 {
    x + y
}

/// The whole run's limit, against hanging only.
const CAP: Duration = Duration::from_secs(30 * 60);

/// Publishes in flight at once (each waits for its publisher confirm).
const PUBLISHING: usize = 128;
const WORKERS: usize = 2;
const CONCURRENCY: usize = 16;
const PREFETCH_MULTIPLIER: u16 = 8;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn app(name: &str, queue: &str) -> Celery {
    Celery::builder(name)
        .broker_url(RABBITMQ_URL)
        .result_backend("rpc://")
        // On the default exchange only: no exchange is left behind on the shared broker.
        .queue(Queue::new(queue).exchange("", "direct"))
        .task_default_queue(queue)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_through_two_workers_on_rabbitmq_every_result_right() {
    if !common::rabbitmq("tasks_through_two_workers_on_rabbitmq_every_result_right") {
        return;
    }
    let default_count = if cfg!(debug_assertions) {
        20_000
    } else {
        100_000
    };
    let count = setting("CELERY_LOAD_TASKS", default_count) as i64;
    let window = Duration::from_secs(setting("CELERY_LOAD_TIMEOUT_S", 60));
    let queue = unique_name("load");
    let client = app("load-client", &queue);

    let mut workers = Vec::new();
    for n in 0..WORKERS {
        let worker_app = app(&format!("load-worker-{n}"), &queue);
        worker_app.register(add::Task);
        let worker = worker_app
            .worker()
            .queues([queue.clone()])
            .concurrency(CONCURRENCY)
            .prefetch_multiplier(PREFETCH_MULTIPLIER)
            .hostname(format!("load{n}@127.0.0.1"))
            .start()
            .await
            .unwrap();
        workers.push(worker);
    }

    let started = Instant::now();
    // The reader checks each result as it arrives, while tasks are still being sent.
    let (results_tx, mut results_rx) =
        mpsc::unbounded_channel::<(i64, JoinHandle<Result<i64, Error>>)>();
    let right = Arc::new(AtomicI64::new(0));
    let counted = right.clone();
    let reader = tokio::spawn(async move {
        while let Some((i, waiting)) = results_rx.recv().await {
            let value = waiting.await.expect("the wait ends");
            match value {
                Ok(value) if value == 2 * i => counted.fetch_add(1, Ordering::Relaxed),
                other => panic!("add({i}, {i}) gave {other:?}"),
            };
        }
    });

    let run = async {
        let mut publishing = JoinSet::new();
        for i in 0..count {
            while publishing.len() >= PUBLISHING {
                publishing.join_next().await.unwrap().unwrap();
            }
            let (client, results_tx) = (client.clone(), results_tx.clone());
            publishing.spawn(async move {
                let result = add::s(i, i).apply_async_with(&client).await.unwrap();
                let waiting = tokio::spawn(async move { result.get().await });
                results_tx.send((i, waiting)).unwrap();
            });
        }
        while let Some(done) = publishing.join_next().await {
            done.unwrap();
        }
        let published = started.elapsed();
        drop(results_tx);
        reader.await.unwrap();
        published
    };
    // A watchdog: the run fails when the results stop coming, not because they come slowly.
    let watchdog = async {
        let (mut seen, mut since) = (0, Instant::now());
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = right.load(Ordering::Relaxed);
            if now != seen {
                (seen, since) = (now, Instant::now());
            } else if since.elapsed() >= window {
                return seen;
            }
        }
    };
    let published = tokio::select! {
        published = run => published,
        stuck_at = watchdog => panic!(
            "no result arrived for {} s (CELERY_LOAD_TIMEOUT_S): {stuck_at} of {count} results \
             after {:.0} s",
            window.as_secs(),
            started.elapsed().as_secs_f64()
        ),
        () = tokio::time::sleep(CAP) => panic!(
            "{count} tasks did not finish within {} min: {} results arrived",
            CAP.as_secs() / 60,
            right.load(Ordering::Relaxed)
        ),
    };
    let took = started.elapsed();
    assert_eq!(
        right.load(Ordering::Relaxed),
        count,
        "every result arrived and was right"
    );
    // Information, past libtest's capture of `eprintln!`.
    let _ = writeln!(
        std::io::stderr(),
        "load: {count} tasks through {WORKERS} workers: published in {:.1} s, all {count} results \
         right in {:.1} s ({:.0} tasks/s)",
        published.as_secs_f64(),
        took.as_secs_f64(),
        count as f64 / took.as_secs_f64()
    );

    for worker in workers {
        tokio::time::timeout(Duration::from_secs(30), worker.shutdown())
            .await
            .expect("the worker stops");
    }
    let oid = client.oid().to_owned();
    drop(client);
    let broker = AmqpBroker::connect(RABBITMQ_URL).await.unwrap();
    for name in [&queue, &oid] {
        let _ = broker.delete_queue(name).await;
    }
}
