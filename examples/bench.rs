//! Benchmarks side by side, in one run on the same RabbitMQ: this project, raw lapin (the
//! ceiling), rusty-celery 0.5.5 and Python Celery 5.7.
//!
//! ```sh
//! cargo run --release --example bench                 # everything, a few minutes
//! cargo run --release --example bench -- --n 50000 --rounds 5 --skip python,eta
//! ```
//!
//! Flags (defaults in brackets):
//!
//! | flag | what |
//! |---|---|
//! | `--broker URL` | RabbitMQ [`$CELERY_BROKER_URL` or `amqp://guest:guest@127.0.0.1:5672//`] |
//! | `--n N` | tasks per publish and drain round [20000] |
//! | `--rounds R` | rounds; each figure is the median [3] |
//! | `--inflight K` | publishes in flight from the one client (`buffer_unordered`) [256] |
//! | `--concurrency C` | this project's worker concurrency when draining [2] |
//! | `--prefetch P` | prefetch when draining: this project (multiplier = P / C), raw, rusty [1000] |
//! | `--python-n N` | tasks per Python publish/drain round [min(N, 10000)] |
//! | `--rtt N` | `delay().get()` round trips, after 50 warm-ups [1000] |
//! | `--eta N` | ETA tasks held for the memory figure [100000] |
//! | `--eta-timeout S` | give up holding them after S seconds [180] |
//! | `--skip LIST` | any of `publish,drain,rtt,memory,eta,raw,rusty,python` |
//!
//! What is measured, all timed inside the process that does the work:
//! - **publish**: one warm-up message, then N `tasks.noop` from one client, K in flight; tasks/s
//!   until every publish returned, and until RabbitMQ holds every message (polled with a passive
//!   `queue.declare` every 2 ms; the later of the two). This project: `Producer::apply_async`
//!   with `broker_confirm_publish` off and on. Raw lapin: one message encoded by
//!   `app.producer().outgoing(..)`, published N times with the same properties and headers on one
//!   channel (with confirms, each future awaits its confirm: they pipeline). rusty-celery:
//!   `send_task`, K in flight (no confirms); and, for scale, raw lapin publishing one message
//!   rusty-celery sent (taken off its queue) N times the same way, which shows how much of the
//!   difference is the message (rusty-celery sends 4 headers, this project 10, Python Celery
//!   19). Raw lapin also publishes this project's message with all 19 headers
//!   (`HeaderSet::Full`), taking turns with the other two publishers without confirms, which
//!   shows what leaving out the empty ones buys. Python:
//!   `apply_async(producer=p)` in a loop with a held producer (no confirms, kombu's default).
//! - **drain**: N noop tasks already queued (this project's encoded messages, the same bytes for
//!   every peer), from worker ready to the N-th task run. This project: its worker, counting in
//!   the task. Raw: `basic.consume` with prefetch P, a `multiple` ack every 100 deliveries (and,
//!   for comparison, a row acknowledging every delivery on its own).
//!   rusty-celery: `consume_from` with prefetch P. Python: `celery worker -P prefork -c 2`,
//!   `worker_ready` to the N-th task counted in shared memory across the pool.
//! - **round trip**: `add.delay(1, 1).get()` one at a time over amqp + rpc://, against a worker in
//!   another process: this project (client and worker with default settings, confirms on; and a
//!   client with confirms off); raw lapin publishing the same message with `reply_to` (confirms
//!   on and off) to this project's worker, which shows the client's share; and the floor: that
//!   raw client answered by a raw lapin echo on another connection that acks first and replies as
//!   the rpc:// backend does. These take turns in blocks of 50, after 50 warm-ups each. Then
//!   Python's client and prefork worker.
//! - **memory broker**: publish and drain throughput on `memory://`.
//! - **ETA memory**: M tasks with a one-day countdown queued, then a worker in a child process;
//!   (RSS once it holds them all − RSS before it started) / M.
//!
//! `BENCH_CHILD_WRAPPER="heaptrack -o /tmp/eta"` (or `perf record -g -o …`) runs this binary's
//! child processes (the round-trip worker, the ETA worker) under a profiler.
//!
//! Queues are named `bench-<pid>-…` and deleted at the end. The last line is
//! `SUMMARY publish_vs_raw=… publish_confirm_vs_raw=… drain_vs_raw=… publish_vs_rusty=…
//! drain_vs_rusty=… publish_vs_python=… drain_vs_python=… rtt_p50_ms=… eta_bytes=…`
//! (publish ratios use confirms off unless named, "until RabbitMQ holds every message"; `n/a`
//! when a side could not run).

#[path = "bench_kit/amqp.rs"]
mod amqp;
#[path = "bench_kit/ours.rs"]
mod ours;
#[path = "bench_kit/peers.rs"]
mod peers;
#[path = "bench_kit/report.rs"]
mod report;

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use amqp::{Control, Res, Wire};
use ours::WorkerShape;
use report::{Figures, Samples};

struct Args {
    broker: String,
    n: usize,
    rounds: usize,
    inflight: usize,
    concurrency: usize,
    prefetch: u32,
    python_n: Option<usize>,
    rtt: usize,
    eta: usize,
    eta_timeout: u64,
    skip: Vec<String>,
}

impl Args {
    fn parse(mut argv: impl Iterator<Item = String>) -> Res<Args> {
        let mut args = Args {
            broker: std::env::var("CELERY_BROKER_URL")
                .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672//".to_owned()),
            n: 20_000,
            rounds: 3,
            inflight: 256,
            concurrency: 2,
            prefetch: 1000,
            python_n: None,
            rtt: 1000,
            eta: 100_000,
            eta_timeout: 180,
            skip: Vec::new(),
        };
        while let Some(flag) = argv.next() {
            let mut value = || argv.next().ok_or_else(|| format!("{flag} needs a value"));
            fn num<T: std::str::FromStr>(flag: &str, text: String) -> Res<T> {
                text.parse()
                    .map_err(|_| format!("{flag}: not a number: {text:?}"))
            }
            match flag.as_str() {
                "--broker" => args.broker = value()?,
                "--n" => args.n = num(&flag, value()?)?,
                "--rounds" => args.rounds = num(&flag, value()?)?,
                "--inflight" => args.inflight = num(&flag, value()?)?,
                "--concurrency" => args.concurrency = num(&flag, value()?)?,
                "--prefetch" => args.prefetch = num(&flag, value()?)?,
                "--python-n" => args.python_n = Some(num(&flag, value()?)?),
                "--rtt" => args.rtt = num(&flag, value()?)?,
                "--eta" => args.eta = num(&flag, value()?)?,
                "--eta-timeout" => args.eta_timeout = num(&flag, value()?)?,
                "--skip" => args.skip = value()?.split(',').map(str::to_owned).collect(),
                "-h" | "--help" => {
                    println!("see the top of examples/bench.rs for the flags");
                    std::process::exit(0);
                }
                other => return Err(format!("unknown flag {other:?} (see examples/bench.rs)")),
            }
        }
        args.rounds = args.rounds.max(1);
        args.n = args.n.max(1);
        Ok(args)
    }

    fn runs(&self, part: &str) -> bool {
        !self.skip.iter().any(|s| s == part)
    }

    fn python_n(&self) -> usize {
        self.python_n.unwrap_or(self.n.min(10_000)).max(1)
    }

    fn shape(&self) -> WorkerShape {
        WorkerShape {
            concurrency: self.concurrency.max(1),
            prefetch: self.prefetch.max(1),
        }
    }
}

/// `--child worker|eta …`: this binary as a worker process.
async fn child(mut argv: impl Iterator<Item = String>) -> Res<()> {
    let role = argv.next().unwrap_or_default();
    let (mut broker, mut queue, mut n, mut timeout) = (String::new(), String::new(), 0, 180);
    while let (Some(flag), Some(value)) = (argv.next(), argv.next()) {
        match flag.as_str() {
            "--broker" => broker = value,
            "--queue" => queue = value,
            "--n" => n = value.parse().map_err(|_| "--n")?,
            "--timeout" => timeout = value.parse().map_err(|_| "--timeout")?,
            other => return Err(format!("unknown child flag {other}")),
        }
    }
    match role.as_str() {
        "worker" => ours::child_worker(&broker, &queue).await,
        "eta" => ours::child_eta(&broker, &queue, n, Duration::from_secs(timeout)).await,
        other => Err(format!("unknown child role {other:?}")),
    }
}

#[tokio::main]
async fn main() {
    let mut argv = std::env::args().skip(1).peekable();
    if argv.peek().map(String::as_str) == Some("--child") {
        argv.next();
        if let Err(error) = child(argv).await {
            eprintln!("bench child: {error}");
            std::process::exit(1);
        }
        return;
    }
    let args = match Args::parse(argv) {
        Ok(args) => args,
        Err(error) => {
            eprintln!("bench: {error}");
            std::process::exit(2);
        }
    };
    let figures = run(&args).await;
    figures.print(&args.summary_context());
}

impl Args {
    fn summary_context(&self) -> report::Context {
        report::Context {
            n: self.n,
            python_n: self.python_n(),
            rounds: self.rounds,
            inflight: self.inflight,
            shape: self.shape(),
            rtt: self.rtt,
            eta: self.eta,
        }
    }
}

/// Queue names of this run, remembered for the cleanup.
struct Names {
    prefix: String,
    made: Vec<String>,
}

impl Names {
    fn queue(&mut self, name: &str) -> String {
        let queue = format!("{}-{name}", self.prefix);
        self.made.push(queue.clone());
        queue
    }
}

async fn run(args: &Args) -> Figures {
    let mut figures = Figures::default();
    let mut names = Names {
        prefix: format!("bench-{}", std::process::id()),
        made: Vec::new(),
    };
    progress("start");
    let control = match Control::open(&args.broker).await {
        Ok(control) => Some(control),
        Err(error) => {
            figures.note(format!(
                "RabbitMQ not reachable ({error}): only the memory broker is measured"
            ));
            None
        }
    };
    let rusty = match (&control, args.runs("rusty")) {
        (Some(_), true) => peers::build_rusty().map_err(|error| {
            figures.note(format!("rusty-celery not measured: {error}"));
        }),
        _ => Err(()),
    };
    let python = match (&control, args.runs("python")) {
        (Some(_), true) => peers::python().map_err(|error| {
            figures.note(format!("Python Celery not measured: {error}"));
        }),
        _ => Err(()),
    };
    let peers = Peers {
        rusty: rusty.ok(),
        python: python.ok(),
    };

    if let Some(control) = &control {
        if args.runs("publish") {
            progress("publish…");
            if let Err(error) = publish_phase(args, control, &peers, &mut names, &mut figures).await
            {
                figures.note(format!("publish phase stopped: {error}"));
            }
        }
        if args.runs("drain") {
            progress("drain…");
            if let Err(error) = drain_phase(args, control, &peers, &mut names, &mut figures).await {
                figures.note(format!("drain phase stopped: {error}"));
            }
        }
        if args.runs("rtt") {
            progress("round trips…");
            if let Err(error) = rtt_phase(args, control, &peers, &mut names, &mut figures).await {
                figures.note(format!("round-trip phase stopped: {error}"));
            }
        }
    }
    if args.runs("memory") {
        progress("memory broker…");
        if let Err(error) = memory_phase(args, &mut figures).await {
            figures.note(format!("memory broker phase stopped: {error}"));
        }
    }
    if let Some(control) = &control {
        if args.runs("eta") {
            progress("ETA memory…");
            if let Err(error) = eta_phase(args, control, &mut names, &mut figures).await {
                figures.note(format!("ETA phase stopped: {error}"));
            }
        }
        for queue in &names.made {
            control.delete(queue).await;
        }
    }
    figures
}

/// A line on stderr with the time since the run began.
fn progress(what: &str) {
    static BEGAN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let began = BEGAN.get_or_init(std::time::Instant::now);
    eprintln!("[{:>6.1} s] {what}", began.elapsed().as_secs_f64());
}

struct Peers {
    rusty: Option<PathBuf>,
    python: Option<PathBuf>,
}

fn secs(from: SystemTime, to: SystemTime) -> f64 {
    to.duration_since(from).unwrap_or_default().as_secs_f64()
}

/// A publisher in this process against the queue poller: (returned s, in queue s).
async fn timed_publish(
    control: &Control,
    queue: &str,
    n: usize,
    publishing: impl std::future::Future<Output = Res<(SystemTime, SystemTime)>>,
) -> Res<(f64, f64)> {
    let (published, reached) = tokio::join!(
        publishing,
        control.wait_count(queue, n as u32 + 1, Duration::from_secs(300))
    );
    let (start, returned) = published?;
    let reached = reached?.max(returned);
    Ok((secs(start, returned), secs(start, reached)))
}

async fn raw_publish(
    channel: &lapin::Channel,
    confirm: bool,
    wire: &Wire,
    n: usize,
    inflight: usize,
) -> Res<(SystemTime, SystemTime)> {
    amqp::publish_many(channel, confirm, 1, 1, |_| Ok(wire.clone())).await?;
    let start = SystemTime::now();
    amqp::publish_many(channel, confirm, inflight, n, |_| Ok(wire.clone())).await?;
    Ok((start, SystemTime::now()))
}

/// Keeps a round's figure, or the reason it failed (and stops asking that peer).
fn record(samples: &mut Samples, outcome: Res<(f64, f64)>, n: usize) {
    match outcome {
        Ok((first, second)) => samples.push(n as f64 / first, n as f64 / second),
        Err(error) => samples.fail(error),
    }
}

/// A publisher in a round of the publish phase.
#[derive(Clone, Copy)]
enum Turn {
    Ours,
    Raw,
    RawFullHeaders,
}

async fn publish_phase(
    args: &Args,
    control: &Control,
    peers: &Peers,
    names: &mut Names,
    figures: &mut Figures,
) -> Res<()> {
    let (n, k) = (args.n, args.inflight);
    let q_off = names.queue("pub-ours-off");
    let q_on = names.queue("pub-ours-on");
    let q_raw_off = names.queue("pub-raw-off");
    let q_raw_on = names.queue("pub-raw-on");
    let q_rusty = names.queue("pub-rusty");
    let q_full = names.queue("pub-raw-full");
    let q_python = names.queue("pub-python");
    for queue in [
        &q_off, &q_on, &q_raw_off, &q_raw_on, &q_rusty, &q_full, &q_python,
    ] {
        control.declare(queue).await?;
    }
    let app_off = ours::app(&args.broker, &q_off, false)?;
    let app_on = ours::app(&args.broker, &q_on, true)?;
    let wire_off = ours::wire(&ours::app(&args.broker, &q_raw_off, false)?, None)?;
    let wire_on = ours::wire(&ours::app(&args.broker, &q_raw_on, true)?, None)?;
    let wire_full = ours::full_headers_wire(&args.broker, &q_full)?;
    let raw = amqp::connect(&args.broker).await?;
    let raw_off = amqp::publish_channel(&raw, false).await?;
    let raw_on = amqp::publish_channel(&raw, true).await?;
    figures.message_body = Some(wire_off.body.len());
    let mut rusty_message: Option<Wire> = None;

    for round in 0..args.rounds {
        progress(&format!("  round {}/{}", round + 1, args.rounds));
        // Each publisher takes its turn first, second (and third): a publisher following a
        // purge of 20,000 persistent messages can find RabbitMQ still busy with the last one's.
        // Without confirms, raw lapin publishing the message with every header Python writes
        // takes turns with the other two, for what the lean header table buys.
        for confirm in [false, true] {
            let mut turns = vec![Turn::Ours, Turn::Raw];
            if !confirm {
                turns.push(Turn::RawFullHeaders);
            }
            let first = round % turns.len();
            turns.rotate_left(first);
            for turn in turns {
                let (queue, samples) = match (turn, confirm) {
                    (Turn::Ours, false) => (&q_off, &mut figures.publish_ours_off),
                    (Turn::Ours, true) => (&q_on, &mut figures.publish_ours_on),
                    (Turn::Raw, false) => (&q_raw_off, &mut figures.publish_raw_off),
                    (Turn::Raw, true) => (&q_raw_on, &mut figures.publish_raw_on),
                    (Turn::RawFullHeaders, _) => (&q_full, &mut figures.publish_raw_full_headers),
                };
                let outcome = match turn {
                    Turn::Ours => {
                        let app = if confirm { &app_on } else { &app_off };
                        timed_publish(control, queue, n, ours::publish(app, n, k)).await
                    }
                    _ if !args.runs("raw") => continue,
                    Turn::Raw | Turn::RawFullHeaders => {
                        let (channel, wire) = match (turn, confirm) {
                            (Turn::RawFullHeaders, _) => (&raw_off, &wire_full),
                            (_, true) => (&raw_on, &wire_on),
                            (_, false) => (&raw_off, &wire_off),
                        };
                        let publishing = raw_publish(channel, confirm, wire, n, k);
                        timed_publish(control, queue, n, publishing).await
                    }
                };
                record(samples, outcome, n);
                control.purge(queue).await?;
            }
        }

        if let Some(binary) = &peers.rusty {
            if figures.publish_rusty.error.is_none() {
                let outcome =
                    peers::rusty_publish(control, binary, &args.broker, &q_rusty, n, k).await;
                let published = outcome.is_ok();
                record(&mut figures.publish_rusty, outcome, n);
                let wanted = figures.publish_raw_rusty_message.error.is_none();
                if published && wanted && rusty_message.is_none() && args.runs("raw") {
                    match control.take_one(&q_rusty).await {
                        Ok(wire) => rusty_message = Some(wire),
                        Err(error) => figures.publish_raw_rusty_message.fail(error),
                    }
                }
                control.purge(&q_rusty).await?;
            }
        }
        // rusty-celery's own message, published by raw lapin: tells the message's share of
        // the difference from the client's.
        if let Some(wire) = &rusty_message {
            let publishing = raw_publish(&raw_off, false, wire, n, k);
            let outcome = timed_publish(control, &q_rusty, n, publishing).await;
            record(&mut figures.publish_raw_rusty_message, outcome, n);
            control.purge(&q_rusty).await?;
        }
        if let Some(python) = &peers.python {
            if figures.publish_python.error.is_none() {
                let pn = args.python_n();
                let outcome =
                    peers::python_publish(control, python, &args.broker, &q_python, pn).await;
                record(&mut figures.publish_python, outcome, pn);
                control.purge(&q_python).await?;
            }
        }
    }
    let _ = raw.close(200, "done".into()).await;
    Ok(())
}

async fn drain_phase(
    args: &Args,
    control: &Control,
    peers: &Peers,
    names: &mut Names,
    figures: &mut Figures,
) -> Res<()> {
    let n = args.n;
    let q_ours = names.queue("drain-ours");
    let q_raw = names.queue("drain-raw");
    let q_rusty = names.queue("drain-rusty");
    let q_python = names.queue("drain-python");
    for queue in [&q_ours, &q_raw, &q_rusty, &q_python] {
        control.declare(queue).await?;
    }
    let connection = amqp::connect(&args.broker).await?;
    let app = ours::app(&args.broker, &q_ours, true)?;
    let encoder = |queue: &str| ours::app(&args.broker, queue, true);
    let (enc_raw, enc_rusty, enc_python) =
        (encoder(&q_raw)?, encoder(&q_rusty)?, encoder(&q_python)?);
    let seconds = |d: Duration| d.as_secs_f64();

    for round in 0..args.rounds {
        progress(&format!("  round {}/{}", round + 1, args.rounds));
        ours::fill(&connection, &app, n, None).await?;
        let outcome = ours::drain(&app, &q_ours, n, args.shape()).await;
        record(
            &mut figures.drain_ours,
            outcome.map(|d| (seconds(d), seconds(d))),
            n,
        );
        control.purge(&q_ours).await?;

        if args.runs("raw") {
            let prefetch = args.prefetch.min(65535) as u16;
            ours::fill(&connection, &enc_raw, n, None).await?;
            let outcome = amqp::drain(&connection, &q_raw, n, prefetch, 100).await;
            record(
                &mut figures.drain_raw,
                outcome.map(|d| (seconds(d), seconds(d))),
                n,
            );
            control.purge(&q_raw).await?;
            // For scale: what acknowledging each message on its own costs.
            ours::fill(&connection, &enc_raw, n, None).await?;
            let outcome = amqp::drain(&connection, &q_raw, n, prefetch, 1).await;
            record(
                &mut figures.drain_raw_each,
                outcome.map(|d| (seconds(d), seconds(d))),
                n,
            );
            control.purge(&q_raw).await?;
        }

        if let Some(binary) = &peers.rusty {
            if figures.drain_rusty.error.is_none() {
                ours::fill(&connection, &enc_rusty, n, None).await?;
                let outcome =
                    peers::rusty_drain(binary, &args.broker, &q_rusty, n, args.prefetch).await;
                record(&mut figures.drain_rusty, outcome.map(|s| (s, s)), n);
                control.purge(&q_rusty).await?;
            }
        }
        if let Some(python) = &peers.python {
            if figures.drain_python.error.is_none() {
                let pn = args.python_n();
                ours::fill(&connection, &enc_python, pn, None).await?;
                let outcome = peers::python_drain(python, &args.broker, &q_python, pn).await;
                record(&mut figures.drain_python, outcome.map(|s| (s, s)), pn);
                control.purge(&q_python).await?;
            }
        }
    }
    let _ = connection.close(200, "done".into()).await;
    Ok(())
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((q * sorted.len() as f64) as usize).min(sorted.len() - 1)]
}

/// Who does round trips in the round-trip phase. They take turns in blocks of [`RTT_BLOCK`],
/// so that the drift of RabbitMQ and of the machine over the phase falls on all of them alike
/// (measured one after the other, the floor moved by a third between runs minutes apart).
enum RoundTripper {
    Ours(celery::Celery),
    Raw(Box<amqp::RawClient>),
}

impl RoundTripper {
    async fn round_trip(&mut self) -> Res<f64> {
        match self {
            RoundTripper::Ours(app) => ours::round_trip(app).await,
            RoundTripper::Raw(client) => client.round_trip().await,
        }
    }
}

/// A figure of the round-trip phase: (p50, p99) in ms, or why not.
type RoundTrips = Option<Res<(f64, f64)>>;

const RTT_BLOCK: usize = 50;
const RTT_WARMUP: usize = 50;

async fn rtt_phase(
    args: &Args,
    control: &Control,
    peers: &Peers,
    names: &mut Names,
    figures: &mut Figures,
) -> Res<()> {
    let n = args.rtt.max(1);
    let queue = names.queue("rtt-ours");
    let mut worker = ours::Child::spawn(&[
        "--child",
        "worker",
        "--broker",
        &args.broker,
        "--queue",
        &queue,
    ])?;
    let ready = worker.line(Duration::from_secs(30)).await;
    if ready.as_deref() != Ok("READY") {
        worker.stop(Duration::from_secs(1)).await;
        return Err(format!("the worker child did not start: {ready:?}"));
    }
    let echo_queue = names.queue("rtt-echo");
    let mut echo = None;
    // Where each figure goes, and who measures it.
    let mut trippers: Vec<(&mut RoundTrips, Res<RoundTripper>)> = Vec::new();
    let [ours_confirm, ours_no_confirm] = &mut figures.rtt_ours;
    trippers.push((
        ours_confirm,
        ours::app(&args.broker, &queue, true).map(RoundTripper::Ours),
    ));
    trippers.push((
        ours_no_confirm,
        ours::app(&args.broker, &queue, false).map(RoundTripper::Ours),
    ));
    if args.runs("raw") {
        let wire = ours::app(&args.broker, &queue, true).and_then(|app| ours::add_wire(&app));
        let raw = |queue: &str, confirm: bool| {
            let wire = wire.clone();
            let queue = queue.to_owned();
            async move {
                let mut wire = wire?;
                wire.routing_key = queue.as_str().into();
                wire.exchange = "".into();
                amqp::RawClient::connect(&args.broker, &wire, confirm)
                    .await
                    .map(|client| RoundTripper::Raw(Box::new(client)))
            }
        };
        let [client_confirm, client_no_confirm] = &mut figures.rtt_raw_client;
        trippers.push((client_confirm, raw(&queue, true).await));
        trippers.push((client_no_confirm, raw(&queue, false).await));
        let started = async {
            control.declare(&echo_queue).await?;
            amqp::Echo::start(&args.broker, &echo_queue).await
        }
        .await;
        let [raw_confirm, raw_no_confirm] = &mut figures.rtt_raw;
        match started {
            Ok(started) => {
                echo = Some(started);
                trippers.push((raw_confirm, raw(&echo_queue, true).await));
                trippers.push((raw_no_confirm, raw(&echo_queue, false).await));
            }
            Err(error) => {
                *raw_confirm = Some(Err(error.clone()));
                *raw_no_confirm = Some(Err(error));
            }
        }
    }

    let mut samples: Vec<Vec<f64>> = trippers.iter().map(|_| Vec::with_capacity(n)).collect();
    let mut failures: Vec<Option<String>> = trippers.iter().map(|_| None).collect();
    let blocks = n.div_ceil(RTT_BLOCK);
    for block in 0..=blocks {
        // Block 0 warms every client up; which one goes first rotates with each block.
        let count = if block == 0 {
            RTT_WARMUP
        } else {
            RTT_BLOCK.min(n - (block - 1) * RTT_BLOCK)
        };
        for turn in 0..trippers.len() {
            let index = (turn + block) % trippers.len();
            let (_, tripper) = &mut trippers[index];
            let tripper = match tripper {
                Ok(tripper) if failures[index].is_none() => tripper,
                Ok(_) => continue,
                Err(error) => {
                    failures[index] = Some(error.clone());
                    continue;
                }
            };
            for _ in 0..count {
                match tripper.round_trip().await {
                    Ok(ms) if block > 0 => samples[index].push(ms),
                    Ok(_) => {}
                    Err(error) => {
                        failures[index] = Some(error);
                        break;
                    }
                }
            }
        }
    }
    worker.stop(Duration::from_secs(10)).await;
    for (((figure, tripper), mut sorted), failure) in
        trippers.into_iter().zip(samples).zip(failures)
    {
        if let Ok(RoundTripper::Raw(client)) = tripper {
            client.close().await;
        }
        *figure = Some(match failure {
            Some(error) => Err(error),
            None => {
                sorted.sort_by(f64::total_cmp);
                Ok((percentile(&sorted, 0.5), percentile(&sorted, 0.99)))
            }
        });
    }
    if let Some(echo) = echo {
        echo.stop().await;
    }

    if let Some(python) = &peers.python {
        let queue = names.queue("rtt-python");
        figures.rtt_python = Some(peers::python_rtt(python, &args.broker, &queue, n).await);
    }
    Ok(())
}

async fn memory_phase(args: &Args, figures: &mut Figures) -> Res<()> {
    let url = format!("memory://bench-{}", std::process::id());
    let app = ours::app(&url, "bench-memory", true)?;
    for _ in 0..args.rounds {
        let outcome = ours::memory_round(&app, args.n, args.inflight, args.shape()).await;
        match outcome {
            Ok((publish, drain)) => {
                let (p, d) = (
                    args.n as f64 / publish.as_secs_f64(),
                    (args.n + 1) as f64 / drain.as_secs_f64(),
                );
                figures.memory_publish.push(p, p);
                figures.memory_drain.push(d, d);
            }
            Err(error) => {
                figures.memory_publish.fail(error.clone());
                figures.memory_drain.fail(error);
                break;
            }
        }
    }
    Ok(())
}

async fn eta_phase(
    args: &Args,
    control: &Control,
    names: &mut Names,
    figures: &mut Figures,
) -> Res<()> {
    let n = args.eta.max(1);
    let queue = names.queue("eta");
    control.declare(&queue).await?;
    let app = ours::app(&args.broker, &queue, true)?;
    let connection = amqp::connect(&args.broker).await?;
    ours::fill(&connection, &app, n, Some(86_400)).await?;
    let _ = connection.close(200, "done".into()).await;
    let mut child = ours::Child::spawn(&[
        "--child",
        "eta",
        "--broker",
        &args.broker,
        "--queue",
        &queue,
        "--n",
        &n.to_string(),
        "--timeout",
        &args.eta_timeout.to_string(),
    ])?;
    // Lines before the JSON one come from a BENCH_CHILD_WRAPPER, if any.
    let deadline = std::time::Instant::now() + Duration::from_secs(args.eta_timeout + 60);
    let line = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match child.line(left).await {
            Ok(line) if !line.trim_start().starts_with('{') => continue,
            other => break other,
        }
    };
    // It exits once its stdin closes (killed after a minute): its connection closes and
    // RabbitMQ takes the held messages back.
    child.stop(Duration::from_secs(60)).await;
    let report: serde_json::Value =
        serde_json::from_str(&line?).map_err(|e| format!("ETA child: {e}"))?;
    figures.eta = Some(report::Eta {
        held: report["held"].as_u64().unwrap_or(0),
        wanted: n as u64,
        rss_before: report["rss_before"].as_u64().unwrap_or(0),
        rss_after: report["rss_after"].as_u64().unwrap_or(0),
        seconds: report["seconds"].as_f64().unwrap_or(0.0),
    });
    control.purge(&queue).await?;
    Ok(())
}
