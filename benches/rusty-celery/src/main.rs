//! rusty-celery 0.5.5 (the `celery` crate on crates.io) as a peer of `examples/bench.rs`.
//!
//! ```text
//! rusty-celery-bench publish --broker URL --queue Q --n N [--inflight K]
//!     one JSON line {"start", "returned", "extra"} (epoch seconds): `send_task` of N
//!     `tasks.noop`, K in flight, after one warm-up message (extra = 1)
//! rusty-celery-bench drain --broker URL --queue Q --n N [--prefetch P]
//!     one JSON line {"seconds", "n"}: from just before `consume_from` to the N-th task run,
//!     on a queue the bench filled beforehand
//! ```

// The `celery::task` macro of celery-codegen 0.5.5 defines a non-local impl.
#![allow(non_local_definitions)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use celery::prelude::*;
use futures_util::stream::{self, StreamExt};

static RUN: AtomicUsize = AtomicUsize::new(0);
static TARGET: AtomicUsize = AtomicUsize::new(usize::MAX);
static DONE_AT: Mutex<Option<Instant>> = Mutex::new(None);

fn done() -> &'static tokio::sync::Notify {
    static DONE: OnceLock<tokio::sync::Notify> = OnceLock::new();
    DONE.get_or_init(tokio::sync::Notify::new)
}

#[celery::task(name = "tasks.noop")]
fn noop() -> TaskResult<()> {
    if RUN.fetch_add(1, Ordering::AcqRel) + 1 == TARGET.load(Ordering::Acquire) {
        *DONE_AT.lock().unwrap() = Some(Instant::now());
        done().notify_one();
    }
    Ok(())
}

fn epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

struct Args {
    mode: String,
    broker: String,
    queue: String,
    n: usize,
    inflight: usize,
    prefetch: u16,
}

fn args() -> Args {
    let mut argv = std::env::args().skip(1);
    let mut parsed = Args {
        mode: argv.next().unwrap_or_default(),
        broker: "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned(),
        queue: "bench".to_owned(),
        n: 20_000,
        inflight: 256,
        prefetch: 1000,
    };
    while let Some(flag) = argv.next() {
        let value = argv
            .next()
            .unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--broker" => parsed.broker = value,
            "--queue" => parsed.queue = value,
            "--n" => parsed.n = value.parse().expect("--n"),
            "--inflight" => parsed.inflight = value.parse().expect("--inflight"),
            "--prefetch" => parsed.prefetch = value.parse().expect("--prefetch"),
            other => panic!("unknown flag {other}"),
        }
    }
    parsed
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = args();
    let queue = args.queue.clone();
    let app = celery::app!(
        broker = AMQPBroker { args.broker.clone() },
        tasks = [noop],
        task_routes = ["*" => queue.as_str()],
        default_queue = queue.as_str(),
        prefetch_count = args.prefetch,
    )
    .await?;
    match args.mode.as_str() {
        "publish" => {
            app.send_task(noop::new()).await?;
            let start = epoch();
            let mut sends = stream::iter(0..args.n)
                .map(|_| app.send_task(noop::new()))
                .buffer_unordered(args.inflight.max(1));
            while let Some(sent) = sends.next().await {
                sent?;
            }
            let returned = epoch();
            // lapin 2 may still hold frames when `basic_publish` returns: closing the connection
            // flushes them (exiting without it loses messages).
            app.close().await?;
            println!(r#"{{"start": {start}, "returned": {returned}, "extra": 1}}"#);
        }
        "drain" => {
            TARGET.store(args.n, Ordering::Release);
            let queues = [queue.as_str()];
            let started = Instant::now();
            tokio::select! {
                consumed = app.consume_from(&queues) => {
                    return Err(format!("the worker stopped early: {consumed:?}").into());
                }
                _ = done().notified() => {}
            }
            let at = DONE_AT.lock().unwrap().expect("done time recorded");
            let seconds = (at - started).as_secs_f64();
            println!(r#"{{"seconds": {seconds}, "n": {}}}"#, args.n);
        }
        other => return Err(format!("unknown mode {other:?} (publish|drain)").into()),
    }
    // Deliveries still held by the worker go back to the queue when the connection closes.
    std::process::exit(0);
}
