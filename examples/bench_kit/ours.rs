//! This project's side of the bench: its tasks, publishing through `Producer`, draining with its
//! worker, round trips over amqp + rpc://, and the child processes (`--child worker|eta`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use celery::prelude::*;
use futures_util::stream::{self, StreamExt};
use tokio::io::AsyncBufReadExt;

use crate::amqp::{self, Res, Wire};

static RUN: AtomicUsize = AtomicUsize::new(0);
static TARGET: AtomicUsize = AtomicUsize::new(usize::MAX);
static DONE_AT: Mutex<Option<Instant>> = Mutex::new(None);

fn done() -> &'static tokio::sync::Notify {
    static DONE: OnceLock<tokio::sync::Notify> = OnceLock::new();
    DONE.get_or_init(tokio::sync::Notify::new)
}

/// Counts its runs; the `TARGET`-th records when it ran.
#[task(name = "tasks.noop", ignore_result)]
pub async fn noop() {
    if RUN.fetch_add(1, Ordering::AcqRel) + 1 == TARGET.load(Ordering::Acquire) {
        *DONE_AT.lock().unwrap() = Some(Instant::now());
        done().notify_one();
    }
}

#[task(name = "tasks.add")]
pub async fn add(x: i64, y: i64) -> i64 {
    x + y
}

/// Counts `noop` runs from zero up to `n`.
fn arm(n: usize) {
    RUN.store(0, Ordering::Release);
    *DONE_AT.lock().unwrap() = None;
    TARGET.store(n, Ordering::Release);
}

/// When the n-th `noop` ran.
async fn finished(timeout: Duration) -> Res<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(at) = DONE_AT.lock().unwrap().take() {
            return Ok(at);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if tokio::time::timeout(left, done().notified()).await.is_err() {
            return Err(format!(
                "only {} of {} tasks ran in {timeout:?}",
                RUN.load(Ordering::Acquire),
                TARGET.load(Ordering::Acquire)
            ));
        }
    }
}

/// An app on `broker` (with rpc:// results when it is AMQP) sending to `queue`.
pub fn app(broker: &str, queue: &str, confirm: bool) -> Res<Celery> {
    let backend = if broker.starts_with("memory://") {
        broker.to_owned()
    } else {
        "rpc://".to_owned()
    };
    let app = Celery::builder("bench")
        .broker_url(broker)
        .result_backend(backend)
        .task_default_queue(queue)
        .configure(|c| c.broker_confirm_publish = confirm)
        .build()
        .map_err(|e| e.to_string())?;
    app.register(noop::Task).register(add::Task);
    Ok(app)
}

/// One encoded `tasks.noop` message with every header Python Celery writes
/// (`HeaderSet::Full`), for the figure of what leaving out the empty ones buys.
pub fn full_headers_wire(broker: &str, queue: &str) -> Res<Wire> {
    let app = Celery::builder("bench")
        .broker_url(broker)
        .result_backend("rpc://")
        .task_default_queue(queue)
        .configure(|c| c.task_message_headers = celery::protocol::HeaderSet::Full)
        .build()
        .map_err(|e| e.to_string())?;
    app.register(noop::Task);
    wire(&app, None)
}

/// One encoded `tasks.noop` message as this project sends it, ready for lapin.
pub fn wire(app: &Celery, countdown: Option<u64>) -> Res<Wire> {
    let mut signature = noop::s();
    if let Some(seconds) = countdown {
        signature = signature.with_options(CallOptions::new().countdown(seconds));
    }
    let raw = signature.into_wire().map_err(|e| e.to_string())?;
    let outgoing = app
        .producer()
        .outgoing(raw, &celery::TaskOptions::DEFAULT)
        .map_err(|e| e.to_string())?;
    Ok(Wire::new(
        &outgoing.route.exchange,
        &outgoing.route.routing_key,
        &outgoing.message,
    ))
}

/// One encoded `tasks.add(1, 1)` message as this project sends it: what a round trip sends.
pub fn add_wire(app: &Celery) -> Res<Wire> {
    let raw = add::s(1, 1).into_wire().map_err(|e| e.to_string())?;
    let outgoing = app
        .producer()
        .outgoing(raw, &celery::TaskOptions::DEFAULT)
        .map_err(|e| e.to_string())?;
    Ok(Wire::new(
        &outgoing.route.exchange,
        &outgoing.route.routing_key,
        &outgoing.message,
    ))
}

/// One warm-up message (it declares the queue and the reply queue), then `n` `apply_async`
/// through one held producer, `inflight` at a time; when it started and when all returned.
pub async fn publish(app: &Celery, n: usize, inflight: usize) -> Res<(SystemTime, SystemTime)> {
    let producer = app.producer();
    producer
        .apply_async(noop::s())
        .await
        .map_err(|e| e.to_string())?;
    let start = SystemTime::now();
    let mut sends = stream::iter(0..n)
        .map(|_| producer.apply_async(noop::s()))
        .buffer_unordered(inflight.max(1));
    while let Some(sent) = sends.next().await {
        sent.map_err(|e| e.to_string())?;
    }
    Ok((start, SystemTime::now()))
}

/// How the worker runs in the drain benchmarks.
#[derive(Clone, Copy, Debug)]
pub struct WorkerShape {
    pub concurrency: usize,
    pub prefetch: u32,
}

impl WorkerShape {
    fn multiplier(&self) -> u16 {
        let per_slot = self.prefetch.div_ceil(self.concurrency.max(1) as u32);
        per_slot.clamp(1, u32::from(u16::MAX)) as u16
    }
}

/// Starts a worker on `queue` holding `n` noop tasks; time from `start()` returning to the n-th
/// task run.
pub async fn drain(app: &Celery, queue: &str, n: usize, shape: WorkerShape) -> Res<Duration> {
    arm(n);
    let worker = app
        .worker()
        .queues([queue])
        .concurrency(shape.concurrency)
        .prefetch_multiplier(shape.multiplier())
        .start()
        .await
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let at = finished(Duration::from_secs(300)).await;
    worker.shutdown().await;
    Ok(at? - started)
}

/// The in-memory broker: publish `n` (all returned = all queued), then drain them.
pub async fn memory_round(
    app: &Celery,
    n: usize,
    inflight: usize,
    shape: WorkerShape,
) -> Res<(Duration, Duration)> {
    let (start, returned) = publish(app, n, inflight).await?;
    let publish_time = returned.duration_since(start).unwrap_or_default();
    let queue = app.config().task_default_queue.clone();
    // The warm-up message is drained too.
    let drain_time = drain(app, &queue, n + 1, shape).await?;
    Ok((publish_time, drain_time))
}

/// One `add.delay(1, 1).get()`, in milliseconds.
pub async fn round_trip(app: &Celery) -> Res<f64> {
    let began = Instant::now();
    let result = add::s(1, 1)
        .apply_async_with(app)
        .await
        .map_err(|e| e.to_string())?;
    let value = result
        .get()
        .timeout(Duration::from_secs(30))
        .await
        .map_err(|e| e.to_string())?;
    if value != 2 {
        return Err(format!("add(1, 1) returned {value}"));
    }
    Ok(began.elapsed().as_secs_f64() * 1000.0)
}

/// A child process of this binary (`--child …`), with its stdin piped: closing it stops the
/// child.
pub struct Child {
    pub process: tokio::process::Child,
    pub stdout: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl Child {
    pub fn spawn(args: &[&str]) -> Res<Child> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        // `BENCH_CHILD_WRAPPER="heaptrack -o /tmp/eta"` (say) runs the children under a profiler.
        let wrapper = std::env::var("BENCH_CHILD_WRAPPER").unwrap_or_default();
        let mut words = wrapper.split_whitespace();
        let mut command = match words.next() {
            Some(program) => {
                let mut command = tokio::process::Command::new(program);
                command.args(words).arg(exe);
                command
            }
            None => tokio::process::Command::new(exe),
        };
        let mut process = command
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("spawn child: {e}"))?;
        let stdout = process.stdout.take().expect("piped stdout");
        Ok(Child {
            process,
            stdout: tokio::io::BufReader::new(stdout).lines(),
        })
    }

    pub async fn line(&mut self, timeout: Duration) -> Res<String> {
        match tokio::time::timeout(timeout, self.stdout.next_line()).await {
            Err(_) => Err(format!("no answer from the child in {timeout:?}")),
            Ok(Err(e)) => Err(e.to_string()),
            Ok(Ok(None)) => Err("the child exited without answering".into()),
            Ok(Ok(Some(line))) => Ok(line),
        }
    }

    /// Closes stdin and waits a little for a clean exit, then kills.
    pub async fn stop(mut self, grace: Duration) {
        drop(self.process.stdin.take());
        if tokio::time::timeout(grace, self.process.wait())
            .await
            .is_err()
        {
            let _ = self.process.kill().await;
        }
    }
}

async fn stdin_closed() {
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(_)) = lines.next_line().await {}
}

/// `--child worker --broker URL --queue Q`: a worker for the round trips; prints READY, runs
/// until stdin closes.
pub async fn child_worker(broker: &str, queue: &str) -> Res<()> {
    let app = app(broker, queue, true)?;
    let worker = app
        .worker()
        .queues([queue])
        .start()
        .await
        .map_err(|e| e.to_string())?;
    println!("READY");
    stdin_closed().await;
    worker.shutdown().await;
    Ok(())
}

/// Resident memory of this process, in bytes.
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kib| kib * 1024)
}

/// Counts the worker's "Task received" log events: each ETA message is received, then held.
struct CountReceived(Arc<AtomicUsize>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CountReceived {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _context: tracing_subscriber::layer::Context<'_, S>,
    ) {
        struct Received(bool);
        impl tracing::field::Visit for Received {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 = format!("{value:?}") == "Task received";
                }
            }
        }
        let mut received = Received(false);
        event.record(&mut received);
        if received.0 {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// `--child eta --broker URL --queue Q --n N --timeout S`: resident memory before a worker
/// starts and once it holds the queue's `n` ETA tasks; prints one JSON line, then waits to be
/// killed (its connection's end returns the messages to the queue).
pub async fn child_eta(broker: &str, queue: &str, n: usize, timeout: Duration) -> Res<()> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::Layer;
    let received = Arc::new(AtomicUsize::new(0));
    let filter = tracing_subscriber::filter::filter_fn(|meta| {
        meta.target().starts_with("celery_core::worker") && *meta.level() <= tracing::Level::INFO
    });
    let subscriber =
        tracing_subscriber::registry().with(CountReceived(received.clone()).with_filter(filter));
    tracing::subscriber::set_global_default(subscriber).map_err(|e| e.to_string())?;

    let app = app(broker, queue, true)?;
    // Connect and declare first, so that the connection is not part of the difference.
    app.broker()
        .declare(&app.queue(queue))
        .await
        .map_err(|e| e.to_string())?;
    let before = rss_bytes();
    let started = Instant::now();
    let worker = app
        .worker()
        .queues([queue])
        .start()
        .await
        .map_err(|e| e.to_string())?;
    let mut last = (0, Instant::now());
    let complete = loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let held = received.load(Ordering::Relaxed);
        if held >= n {
            break true;
        }
        if held != last.0 {
            last = (held, Instant::now());
        }
        if started.elapsed() > timeout || last.1.elapsed() > Duration::from_secs(10) {
            break false;
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_bytes();
    let held = received.load(Ordering::Relaxed);
    println!(
        r#"{{"rss_before": {before}, "rss_after": {after}, "held": {held}, "complete": {complete}, "seconds": {seconds}}}"#
    );
    stdin_closed().await;
    drop(worker);
    std::process::exit(0);
}

/// Publishes `n` distinct encoded noop messages (countdown optional) with raw lapin and
/// confirms: filling queues for the drain and ETA benchmarks, outside any timing.
pub async fn fill(
    connection: &lapin::Connection,
    app: &Celery,
    n: usize,
    countdown: Option<u64>,
) -> Res<()> {
    let channel = amqp::publish_channel(connection, true).await?;
    let result = amqp::publish_many(&channel, true, 512, n, |_| wire(app, countdown)).await;
    let _ = channel.close(200, "filled".into()).await;
    result
}
