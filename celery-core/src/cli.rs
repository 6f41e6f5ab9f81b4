//! Celery's command line for a user's own binary: `worker`, `call`, `result` and `purge`, with
//! Celery's flags.
//!
//! ```ignore
//! #[tokio::main]
//! async fn main() -> std::process::ExitCode {
//!     celery::cli::run(Celery::builder("tasks"), |app| {
//!         app.register(add::Task);
//!     })
//!     .await
//! }
//! ```
//!
//! The broker and result backend come from `--broker` / `--result-backend`, or the
//! `BROKER_URL` / `RESULT_BACKEND` environment variables (Celery's command line reads them), or
//! `CELERY_BROKER_URL` / `CELERY_RESULT_BACKEND`, or the builder.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use clap::{Parser, Subcommand};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::app::{Builder, Celery};
use crate::calling::{CallOptions, Expires};
use crate::error::Error;

/// Celery's commands.
#[derive(Debug, Parser)]
#[command(about = "A Celery app: run a worker, call tasks, read results, purge queues")]
pub struct Cli {
    /// Broker URL (memory://, amqp://user:pass@host:port/vhost); else `BROKER_URL`, else
    /// `CELERY_BROKER_URL`, as Celery reads them.
    #[arg(short = 'b', long, env = "BROKER_URL", global = true)]
    pub broker: Option<String>,
    /// Result backend URL (memory://, rpc://); else `RESULT_BACKEND`, else
    /// `CELERY_RESULT_BACKEND`, as Celery reads them.
    #[arg(long, env = "RESULT_BACKEND", global = true)]
    pub result_backend: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

/// One of Celery's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a worker.
    Worker {
        /// Queues to consume, comma-separated.
        #[arg(short = 'Q', long, value_delimiter = ',')]
        queues: Vec<String>,
        /// Tasks run at once.
        #[arg(short = 'c', long)]
        concurrency: Option<usize>,
        /// Log level: debug, info, warning, error, critical (any case).
        #[arg(short = 'l', long, default_value = "warning", value_parser = log_level)]
        loglevel: String,
        /// Node name (default celery@HOSTNAME); %h, %n and %d expand as in Celery.
        #[arg(short = 'n', long)]
        hostname: Option<String>,
        /// Unacknowledged messages per unit of concurrency (0 is the default, as Celery's
        /// command line reads it).
        #[arg(long)]
        prefetch_multiplier: Option<u16>,
    },
    /// Send a task by name and print its id (and, with --wait, its result).
    Call {
        name: String,
        /// Positional arguments, a JSON list.
        #[arg(short = 'a', long, default_value = "[]", value_parser = checked_with(parse_args))]
        args: String,
        /// Keyword arguments, a JSON object.
        #[arg(short = 'k', long, default_value = "{}", value_parser = checked_with(parse_kwargs))]
        kwargs: String,
        /// Seconds to wait before running (negative is at once, as in Celery).
        #[arg(long, allow_negative_numbers = true)]
        countdown: Option<f64>,
        /// ISO-8601 datetime (UTC when it has no offset).
        #[arg(long, value_parser = checked_with(parse_eta))]
        eta: Option<String>,
        /// Seconds after sending, or an ISO-8601 datetime (UTC when it has no offset).
        #[arg(long, allow_negative_numbers = true, value_parser = checked_with(parse_expires))]
        expires: Option<String>,
        #[arg(long)]
        queue: Option<String>,
        #[arg(long)]
        exchange: Option<String>,
        #[arg(long)]
        routing_key: Option<String>,
        #[arg(long)]
        priority: Option<u8>,
        #[arg(long)]
        serializer: Option<String>,
        #[arg(long)]
        compression: Option<String>,
        /// Wait for the result and print it.
        #[arg(long)]
        wait: bool,
        /// Seconds to wait with --wait.
        #[arg(long, default_value = "60", value_parser = seconds)]
        timeout: Duration,
    },
    /// Wait for a task's result and print it.
    Result {
        task_id: String,
        /// Seconds to wait.
        #[arg(long, default_value = "60", value_parser = seconds)]
        timeout: Duration,
        /// The task's name. Accepted as Celery's is; every task's result is in the app's
        /// backend here.
        #[arg(short = 't', long)]
        task: Option<String>,
        /// Print the task's traceback (an empty line when it has none) instead of waiting for
        /// its result.
        #[arg(long)]
        traceback: bool,
    },
    /// Remove all messages from queues.
    Purge {
        /// Queues, comma-separated; default: every queue the app knows.
        #[arg(short = 'Q', long, value_delimiter = ',')]
        queues: Vec<String>,
        /// Queues not to purge, comma-separated.
        #[arg(short = 'X', long, value_delimiter = ',')]
        exclude_queues: Vec<String>,
        /// Do not ask for confirmation.
        #[arg(short = 'f', long)]
        force: bool,
    },
}

/// Parses the command line and runs the command on the app from `builder` (with the URLs of the
/// command line), after `register` has registered its tasks.
pub async fn run(builder: Builder, register: impl FnOnce(&Celery)) -> ExitCode {
    run_with(Cli::parse(), builder, register).await
}

/// Runs an already parsed command line.
pub async fn run_with(cli: Cli, mut builder: Builder, register: impl FnOnce(&Celery)) -> ExitCode {
    if let Command::Worker { loglevel, .. } = &cli.command {
        init_logging(loglevel);
    }
    if let Some(url) = given_or_from(cli.broker.as_ref(), "CELERY_BROKER_URL") {
        builder = builder.broker_url(url);
    }
    if let Some(url) = given_or_from(cli.result_backend.as_ref(), "CELERY_RESULT_BACKEND") {
        builder = builder.result_backend(url);
    }
    let app = match builder.build() {
        Ok(app) => app,
        Err(error) => return fail(&error),
    };
    app.set_current();
    register(&app);
    match execute(&app, cli.command, &mut std::io::stdout()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(&error),
    }
}

/// A URL from the command line (or its own variable, which clap reads), else from the app's
/// environment variable: Celery's command line sets `CELERY_BROKER_URL` from `-b`/`BROKER_URL`,
/// and its app reads that variable before its own setting.
fn given_or_from(given: Option<&String>, app_variable: &str) -> Option<String> {
    given.cloned().or_else(|| {
        std::env::var(app_variable)
            .ok()
            .filter(|url| !url.is_empty())
    })
}

fn fail(error: &Error) -> ExitCode {
    eprintln!("Error: {error}");
    ExitCode::FAILURE
}

/// Celery's log level names, checked when the command line is read (a misspelt one is an
/// error, not a silent WARNING).
fn log_level(text: &str) -> Result<String, String> {
    level_of(text).map(|_| text.to_owned()).ok_or_else(|| {
        format!("{text:?} is not a log level (debug, info, warning, error, critical)")
    })
}

fn level_of(text: &str) -> Option<tracing::Level> {
    match text.to_ascii_lowercase().as_str() {
        "debug" | "trace" => Some(tracing::Level::DEBUG),
        "info" => Some(tracing::Level::INFO),
        "warning" | "warn" => Some(tracing::Level::WARN),
        "error" | "critical" | "fatal" => Some(tracing::Level::ERROR),
        _ => None,
    }
}

/// Logs go to standard error, as Celery's do: standard output is the commands' own output.
fn init_logging(level: &str) {
    let _ = tracing_subscriber::fmt()
        .with_max_level(level_of(level).unwrap_or(tracing::Level::WARN))
        .with_target(false)
        .with_writer(std::io::stderr)
        .try_init();
}

/// A number of seconds, as `--timeout` takes it.
fn seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text.parse().map_err(|e| format!("{e}"))?;
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("{text} is not a number of seconds"))
}

// Checked as the command line is read too (`checked_with`), so that bad input is a usage error
// (status 2), as in Celery's click options; `execute` reads the text again.

/// `--args`: a JSON list.
fn parse_args(text: &str) -> Result<Vec<Value>, Error> {
    match parse_json("--args", text)? {
        Value::Array(args) => Ok(args),
        _ => Err(Error::Config("--args must be a JSON list".to_owned())),
    }
}

/// `--kwargs`: a JSON object.
fn parse_kwargs(text: &str) -> Result<serde_json::Map<String, Value>, Error> {
    match parse_json("--kwargs", text)? {
        Value::Object(kwargs) => Ok(kwargs),
        _ => Err(Error::Config("--kwargs must be a JSON object".to_owned())),
    }
}

fn checked_with<T>(
    parse: fn(&str) -> Result<T, Error>,
) -> impl Fn(&str) -> Result<String, String> + Clone {
    move |text| {
        parse(text)
            .map(|_| text.to_owned())
            .map_err(|error| error.to_string())
    }
}

fn parse_json(what: &str, text: &str) -> Result<Value, Error> {
    serde_json::from_str(text).map_err(|e| Error::Config(format!("{what} is not valid JSON: {e}")))
}

/// Runs one command on an app, writing what Celery would print to `out`.
///
/// `worker` runs until a signal stops it, and then ends the process itself when it must stop
/// at once (a cold shutdown) or exit with a status other than 0 (a shutdown begun by SIGINT),
/// as Celery's worker does; after a warm shutdown begun by SIGTERM it returns.
pub async fn execute(
    app: &Celery,
    command: Command,
    out: &mut (dyn Write + Send),
) -> Result<(), Error> {
    match command {
        Command::Worker {
            queues,
            concurrency,
            hostname,
            prefetch_multiplier,
            ..
        } => {
            let mut worker = app.worker();
            if !queues.is_empty() {
                worker = worker.queues(queues);
            }
            if let Some(concurrency) = concurrency {
                worker = worker.concurrency(concurrency);
            }
            if let Some(hostname) = hostname {
                worker = worker.hostname(hostname);
            }
            // Celery's command line skips a 0 (its option is read only when true).
            if let Some(multiplier) = prefetch_multiplier.filter(|&multiplier| multiplier != 0) {
                worker = worker.prefetch_multiplier(multiplier);
            }
            // Listening from before the start: a signal that comes while the worker starts, or
            // while another is handled, is not lost.
            let mut signals = ShutdownSignals::listen();
            let mut stop = StopRequests::default();
            // A worker still waiting for its broker stops on a signal too, as Celery's does:
            // it has nothing to finish.
            let worker = tokio::select! {
                started = worker.start() => started?,
                signal = signals.next() => {
                    stop.heard(signal);
                    tracing::warn!("worker: stopped before it was ready");
                    return stop.finish();
                }
            };
            if stop.heard(signals.next().await) == Stop::Cold {
                cold_shutdown(stop.exit_status());
            }
            tracing::warn!("worker: warm shutdown (finishing running tasks)");
            let shutdown = worker.shutdown();
            tokio::pin!(shutdown);
            loop {
                tokio::select! {
                    () = &mut shutdown => break,
                    signal = signals.next() => if stop.heard(signal) == Stop::Cold {
                        cold_shutdown(stop.exit_status());
                    },
                }
            }
            stop.finish()
        }
        Command::Call {
            name,
            args,
            kwargs,
            countdown,
            eta,
            expires,
            queue,
            exchange,
            routing_key,
            priority,
            serializer,
            compression,
            wait,
            timeout,
        } => {
            let args = parse_args(&args)?;
            let kwargs = parse_kwargs(&kwargs)?;
            let mut options = CallOptions::new();
            if let Some(seconds) = countdown {
                options = options.countdown(seconds);
            }
            if let Some(at) = eta.as_deref().map(parse_eta).transpose()?.flatten() {
                options = options.eta(at);
            }
            if let Some(expires) = expires.as_deref().map(parse_expires).transpose()?.flatten() {
                options = options.expires(expires);
            }
            if let Some(queue) = queue {
                options = options.queue(queue);
            }
            if let Some(exchange) = exchange {
                options = options.exchange(exchange);
            }
            if let Some(key) = routing_key {
                options = options.routing_key(key);
            }
            if let Some(priority) = priority {
                options = options.priority(priority);
            }
            if let Some(name) = serializer {
                options = options.serializer(name);
            }
            if let Some(name) = compression {
                options = options.compression(name);
            }
            let result = app.send_task(&name, args, kwargs, options).await?;
            writeln!(out, "{}", result.id()).map_err(output_error)?;
            if wait {
                print_result(&result, timeout, out).await?;
            }
            Ok(())
        }
        Command::Result {
            task_id,
            timeout,
            traceback: false,
            ..
        } => print_result(&app.result::<Value>(task_id), timeout, out).await,
        Command::Result {
            task_id,
            traceback: true,
            ..
        } => {
            // As Celery's: what is stored now, without waiting.
            let meta = app.result::<Value>(task_id).info().await?;
            let traceback = meta.and_then(|meta| meta.traceback).unwrap_or_default();
            writeln!(out, "{traceback}").map_err(output_error)
        }
        Command::Purge {
            queues,
            exclude_queues,
            force,
        } => {
            // As Celery: a set of names (sorted, each once), by default every queue the app
            // knows (the default one and `task_queues`), less the excluded ones.
            let mut names: BTreeSet<String> = if queues.is_empty() {
                let config = app.config();
                std::iter::once(config.task_default_queue.clone())
                    .chain(config.task_queues.iter().map(|queue| queue.name.clone()))
                    .collect()
            } else {
                queues.into_iter().collect()
            };
            for excluded in &exclude_queues {
                names.remove(excluded);
            }
            if names.is_empty() {
                // Celery has nothing to do, and says nothing.
                return Ok(());
            }
            let queues_headline = format!("queue{}", plural(names.len() as u64));
            if !force && !confirm(&names, &queues_headline, out)? {
                // Celery aborts (exit status 1).
                return Err(Error::Config("purge aborted: nothing removed".to_owned()));
            }
            let mut total = 0;
            for queue in &names {
                total += match app.broker().purge(queue).await {
                    Ok(count) => count,
                    // A queue that does not exist holds nothing (Celery counts it as 0).
                    Err(error) if error.kind == crate::broker::BrokerErrorKind::Refused => {
                        tracing::info!(%error, queue, "no such queue to purge");
                        0
                    }
                    Err(error) => return Err(error.into()),
                };
            }
            if total == 0 {
                writeln!(
                    out,
                    "No messages purged from {} {queues_headline}.",
                    names.len()
                )
            } else {
                writeln!(
                    out,
                    "Purged {total} message{} from {} known task {queues_headline}.",
                    plural(total),
                    names.len(),
                )
            }
            .map_err(output_error)
        }
    }
}

fn output_error(error: std::io::Error) -> Error {
    Error::Config(format!("cannot write the output: {error}"))
}

fn plural(count: u64) -> &'static str {
    if count == 1 {
        ""
    } else {
        "s"
    }
}

/// Celery's question before a purge (click's `confirm`): `y` or `yes` purges, anything else
/// (or nothing) does not.
fn confirm(
    names: &BTreeSet<String>,
    queues_headline: &str,
    out: &mut (dyn Write + Send),
) -> Result<bool, Error> {
    let names = names
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    write!(
        out,
        "WARNING:This will remove all tasks from {queues_headline}: {names}.\n         There is no undo for this operation!\n\n(to skip this prompt use the -f option)\nAre you sure you want to delete all tasks? [y/N]: "
    )
    .and_then(|()| out.flush())
    .map_err(output_error)?;
    let mut answer = String::new();
    let answered = std::io::stdin().read_line(&mut answer).is_ok();
    Ok(answered && matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
}

async fn print_result(
    result: &crate::result::AsyncResult<Value>,
    timeout: Duration,
    out: &mut (dyn Write + Send),
) -> Result<(), Error> {
    let value: Value = result.get().timeout(timeout).await?;
    out.write_all(&python_echo(&value))
        .and_then(|()| out.write_all(b"\n"))
        .map_err(output_error)
}

/// A result as Celery's `result` prints it (`click.echo`, Python's `str()`): text as it is,
/// `None` as an empty line, bytes raw, a datetime, date, time, decimal or UUID as Python prints
/// it, anything else as its repr (`{'sum': [4, 'four']}`).
fn python_echo(value: &Value) -> Vec<u8> {
    use crate::serializer::kombu;
    if let Some(Ok(bytes)) = kombu::bytes_of(value) {
        return bytes;
    }
    match kombu::special(value) {
        // Python's `str(datetime)` is its `isoformat(" ")`.
        Some(("datetime", Value::String(iso))) => return iso.replacen('T', " ", 1).into_bytes(),
        Some(("date" | "time" | "decimal", Value::String(text))) => {
            return text.clone().into_bytes()
        }
        Some(("uuid", inner)) => {
            if let Some(id) = kombu::uuid_of(inner) {
                return id.hyphenated().to_string().into_bytes();
            }
        }
        _ => {}
    }
    match value {
        Value::Null => Vec::new(),
        Value::String(text) => text.clone().into_bytes(),
        other => {
            let mut repr = String::new();
            crate::protocol::python_repr(other, &mut repr);
            repr.into_bytes()
        }
    }
}

/// `--eta`: a moment, as Celery's `call` takes it; empty is none, as Celery reads it.
fn parse_eta(text: &str) -> Result<Option<DateTime<FixedOffset>>, Error> {
    if text.is_empty() {
        return Ok(None);
    }
    crate::protocol::parse_datetime(text)
        .map(Some)
        .ok_or_else(|| Error::Config(format!("--eta is not an ISO-8601 datetime: {text}")))
}

/// `--expires`: seconds after sending, or a moment, as Celery's `call` takes it; empty is none.
fn parse_expires(text: &str) -> Result<Option<Expires>, Error> {
    if text.is_empty() {
        return Ok(None);
    }
    if let Ok(seconds) = text.parse::<f64>() {
        return Ok(Some(Expires::After(seconds)));
    }
    crate::protocol::parse_datetime(text)
        .map(|at| Some(Expires::At(at)))
        .ok_or_else(|| {
            Error::Config(format!(
                "--expires is neither seconds nor an ISO-8601 datetime: {text}"
            ))
        })
}

/// The exit status of a worker stopped with SIGINT (Ctrl-C) first, as Celery's (`EX_FAILURE`).
/// A worker stopped with SIGTERM or SIGQUIT first exits with 0.
pub const INTERRUPTED_EXIT_CODE: i32 = 1;

/// Stops the process at once. What was not acknowledged (tasks with acks_late, held and
/// prefetched messages) goes back to its queue when the connection drops; tasks already
/// acknowledged are not run.
fn cold_shutdown(exit_status: i32) -> ! {
    tracing::warn!("worker: cold shutdown (running tasks are stopped)");
    std::process::exit(exit_status);
}

/// What the signals heard so far ask of a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Stop taking messages and let running tasks finish.
    Warm,
    /// Stop at once.
    Cold,
}

/// The signals a worker has heard, folded as Celery 5.7's handlers fold them. SIGTERM and SIGINT
/// ask for a warm shutdown, SIGQUIT for a cold one. The first SIGINT also makes the next SIGINT
/// cold (Celery's "Hitting Ctrl+C again" handler), so SIGTERM then SIGINT is still warm, and a
/// SIGTERM during a warm shutdown changes nothing.
///
/// The first request fixes the exit status: 1 after SIGINT, 0 after SIGTERM or SIGQUIT.
/// Celery's worker fixes it when its loop first sees a request, within about a second, so two
/// signals closer together than that can end with the second one's status there.
#[derive(Debug, Default)]
struct StopRequests {
    /// A SIGINT was heard: the next one is cold.
    cold_on_interrupt: bool,
    /// Set by the first request.
    exit_status: Option<i32>,
}

impl StopRequests {
    fn heard(&mut self, signal: ShutdownSignal) -> Stop {
        match signal {
            ShutdownSignal::Quit => {
                self.exit_status.get_or_insert(0);
                Stop::Cold
            }
            ShutdownSignal::Interrupt if self.cold_on_interrupt => Stop::Cold,
            ShutdownSignal::Interrupt => {
                self.cold_on_interrupt = true;
                self.exit_status.get_or_insert(INTERRUPTED_EXIT_CODE);
                tracing::warn!("worker: hitting Ctrl+C again will terminate all running tasks");
                Stop::Warm
            }
            ShutdownSignal::Terminate => {
                self.exit_status.get_or_insert(0);
                Stop::Warm
            }
        }
    }

    fn exit_status(&self) -> i32 {
        self.exit_status.unwrap_or(0)
    }

    /// After the worker stopped warmly: returns when the status is 0, else ends the process
    /// with it (what `execute` returns cannot carry a status).
    fn finish(&self) -> Result<(), Error> {
        match self.exit_status() {
            0 => Ok(()),
            status => std::process::exit(status),
        }
    }
}

/// The signals a worker stops on, as Celery's (see [`StopRequests`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ShutdownSignal {
    Interrupt,
    Terminate,
    Quit,
}

/// SIGINT, SIGTERM and SIGQUIT, in the order they come. A task listens for them from the start
/// and passes each on at once: tokio merges the deliveries of a signal that come before its
/// listener is polled again, so a listener polled only when the worker is ready for the next
/// signal would hear two quick Ctrl-C as one.
struct ShutdownSignals {
    heard: mpsc::UnboundedReceiver<ShutdownSignal>,
}

impl ShutdownSignals {
    fn listen() -> Self {
        let (sender, heard) = mpsc::unbounded_channel();
        // Celery's `REMAP_SIGTERM=SIGQUIT`: SIGTERM stops the worker cold, for platforms that
        // send SIGKILL soon after SIGTERM.
        let terminate_is_quit = std::env::var("REMAP_SIGTERM").is_ok_and(|name| name == "SIGQUIT");
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let listeners = (|| {
                Ok::<_, std::io::Error>([
                    signal(SignalKind::interrupt())?,
                    signal(SignalKind::quit())?,
                    signal(SignalKind::terminate())?,
                ])
            })();
            match listeners {
                Ok(listeners) => {
                    tokio::spawn(pass_on(listeners, terminate_is_quit, sender));
                    return ShutdownSignals { heard };
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGINT, SIGTERM and SIGQUIT; Ctrl-C only");
                }
            }
        }
        let _ = terminate_is_quit;
        tokio::spawn(async move {
            while tokio::signal::ctrl_c().await.is_ok()
                && sender.send(ShutdownSignal::Interrupt).is_ok()
            {}
        });
        ShutdownSignals { heard }
    }

    /// The next signal (or one that came since the last).
    async fn next(&mut self) -> ShutdownSignal {
        match self.heard.recv().await {
            Some(signal) => signal,
            // The listener is gone (it could not listen any more): no signal will come.
            None => std::future::pending().await,
        }
    }
}

#[cfg(unix)]
async fn pass_on(
    [mut interrupt, mut quit, mut terminate]: [tokio::signal::unix::Signal; 3],
    terminate_is_quit: bool,
    sender: mpsc::UnboundedSender<ShutdownSignal>,
) {
    loop {
        // When several are pending, in Python's order (its handlers run by signal number).
        let signal = tokio::select! {
            biased;
            Some(()) = interrupt.recv() => ShutdownSignal::Interrupt,
            Some(()) = quit.recv() => ShutdownSignal::Quit,
            Some(()) = terminate.recv() => if terminate_is_quit {
                ShutdownSignal::Quit
            } else {
                ShutdownSignal::Terminate
            },
            else => return,
        };
        if sender.send(signal).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each signal's answer, and the exit status after the last of them.
    fn fold(signals: &[ShutdownSignal]) -> (Vec<Stop>, i32) {
        let mut stop = StopRequests::default();
        let answers = signals.iter().map(|&signal| stop.heard(signal)).collect();
        (answers, stop.exit_status())
    }

    /// What Celery 5.7's prefork worker did, with a task running and the signals far enough
    /// apart for its loop to see each (1.5 to 12 s).
    #[test]
    fn signals_fold_into_celerys_shutdowns_and_exit_statuses() {
        use ShutdownSignal::{Interrupt as Int, Quit, Terminate as Term};
        use Stop::{Cold, Warm};
        assert_eq!(fold(&[]), (vec![], 0));
        assert_eq!(fold(&[Term]), (vec![Warm], 0));
        assert_eq!(fold(&[Int]), (vec![Warm], 1));
        assert_eq!(fold(&[Quit]), (vec![Cold], 0));
        assert_eq!(fold(&[Int, Int]), (vec![Warm, Cold], 1));
        assert_eq!(fold(&[Term, Term]), (vec![Warm, Warm], 0));
        assert_eq!(fold(&[Term, Term, Term]), (vec![Warm, Warm, Warm], 0));
        // SIGINT after SIGTERM stays warm, and SIGTERM's status stays; another SIGINT is cold.
        assert_eq!(fold(&[Term, Int]), (vec![Warm, Warm], 0));
        assert_eq!(fold(&[Term, Int, Int]), (vec![Warm, Warm, Cold], 0));
        assert_eq!(fold(&[Int, Term]), (vec![Warm, Warm], 1));
        assert_eq!(fold(&[Int, Term, Int]), (vec![Warm, Warm, Cold], 1));
        assert_eq!(fold(&[Int, Quit]), (vec![Warm, Cold], 1));
        assert_eq!(fold(&[Term, Quit]), (vec![Warm, Cold], 0));
    }

    #[test]
    fn celerys_flags_parse() {
        let cli = Cli::try_parse_from([
            "app",
            "worker",
            "-Q",
            "celery,priority.high",
            "-c",
            "4",
            "-l",
            "info",
        ])
        .unwrap();
        match cli.command {
            Command::Worker {
                queues,
                concurrency,
                loglevel,
                ..
            } => {
                assert_eq!(queues, ["celery", "priority.high"]);
                assert_eq!((concurrency, loglevel.as_str()), (Some(4), "info"));
            }
            other => panic!("{other:?}"),
        }
        for level in ["INFO", "Warning", "critical"] {
            assert!(
                Cli::try_parse_from(["app", "worker", "-l", level]).is_ok(),
                "{level}"
            );
        }
        let misspelt = Cli::try_parse_from(["app", "worker", "-l", "infoo"]).unwrap_err();
        assert!(
            misspelt.to_string().contains("not a log level"),
            "{misspelt}"
        );
        let cli = Cli::try_parse_from([
            "app",
            "--broker",
            "memory://x",
            "call",
            "tasks.add",
            "--args",
            "[2, 2]",
            "--countdown",
            "1",
            "--queue",
            "q",
            "--wait",
        ])
        .unwrap();
        assert_eq!(cli.broker.as_deref(), Some("memory://x"));
        assert!(
            matches!(cli.command, Command::Call { ref name, wait: true, countdown: Some(c), .. } if name == "tasks.add" && c == 1.0)
        );

        // Bad input is a usage error (status 2), as Celery's click options make it.
        for bad in [
            ["--args", "[1,"],
            ["--args", "{\"a\": 1}"],
            ["--kwargs", "[1]"],
            ["--eta", "soon"],
            ["--expires", "2030-13-01"],
        ] {
            let error = Cli::try_parse_from(["app", "call", "tasks.add", bad[0], bad[1]])
                .expect_err(bad[1]);
            assert_eq!(error.exit_code(), 2, "{bad:?}: {error}");
        }

        // Negative numbers are values, as Celery's click options take them.
        let cli = Cli::try_parse_from([
            "app",
            "call",
            "tasks.add",
            "--countdown",
            "-5",
            "--expires",
            "-5",
        ])
        .unwrap();
        assert!(
            matches!(cli.command, Command::Call { countdown: Some(c), expires: Some(ref e), .. } if c == -5.0 && e == "-5")
        );

        let timeout = |text: &str| {
            Cli::try_parse_from(["app", "result", "some-id", "--timeout", text]).map(
                |cli| match cli.command {
                    Command::Result { timeout, .. } => timeout,
                    other => panic!("{other:?}"),
                },
            )
        };
        assert_eq!(timeout("2.5").unwrap(), Duration::from_millis(2500));
        for refused in ["-1", "inf", "NaN", "1e30", "soon"] {
            assert!(timeout(refused).is_err(), "--timeout {refused}");
        }
    }

    #[test]
    fn expires_takes_seconds_or_a_datetime() {
        assert_eq!(parse_expires("90").unwrap(), Some(Expires::After(90.0)));
        assert_eq!(parse_expires("1.5").unwrap(), Some(Expires::After(1.5)));
        let at = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00+02:00").unwrap();
        assert_eq!(
            parse_expires("2026-01-01T00:00:00+02:00").unwrap(),
            Some(Expires::At(at))
        );
        // Celery's shorter forms too, naive ones in UTC; a bare number is seconds, as in Celery.
        let at = chrono::DateTime::parse_from_rfc3339("2026-01-01T10:30:00Z").unwrap();
        assert_eq!(
            parse_expires("2026-01-01 10:30").unwrap(),
            Some(Expires::At(at))
        );
        assert_eq!(parse_expires("2026").unwrap(), Some(Expires::After(2026.0)));
        let error = parse_expires("tomorrow").unwrap_err().to_string();
        assert!(
            error.contains("--expires") && error.contains("tomorrow"),
            "{error}"
        );
    }

    /// What `celery result` printed for each value, returned by a Python task (kombu's json).
    #[test]
    fn results_print_as_celerys_result_command_prints_them() {
        use serde_json::json;
        let printed = |value: Value| String::from_utf8(python_echo(&value)).unwrap();
        assert_eq!(printed(json!("hello")), "hello");
        assert_eq!(printed(json!(null)), "");
        assert_eq!(printed(json!(4)), "4");
        assert_eq!(printed(json!(2.5)), "2.5");
        assert_eq!(printed(json!(true)), "True");
        assert_eq!(
            printed(json!({"sum": [4, "four"], "ok": true})),
            "{'sum': [4, 'four'], 'ok': True}"
        );
        assert_eq!(
            printed(json!({"__type__": "datetime", "__value__": "2030-01-02T03:04:05"})),
            "2030-01-02 03:04:05"
        );
        assert_eq!(
            printed(json!({"__type__": "decimal", "__value__": "1.10"})),
            "1.10"
        );
        assert_eq!(
            printed(
                json!({"__type__": "uuid", "__value__": {"hex": "12345678123456781234567812345678"}})
            ),
            "12345678-1234-5678-1234-567812345678"
        );
        assert_eq!(
            python_echo(&json!({"__type__": "base64", "__value__": "AP9ieXRlcw=="})),
            b"\x00\xffbytes"
        );
    }

    #[test]
    fn urls_come_from_the_option_then_celerys_variables() {
        use clap::CommandFactory;
        let command = Cli::command();
        let env_of = |name: &str| {
            let arg = command.get_arguments().find(|arg| arg.get_id() == name);
            arg.and_then(|arg| arg.get_env()).map(|env| env.to_owned())
        };
        assert_eq!(env_of("broker").as_deref(), Some("BROKER_URL".as_ref()));
        assert_eq!(
            env_of("result_backend").as_deref(),
            Some("RESULT_BACKEND".as_ref())
        );
        // A variable of this test's own: the others' environment is left alone.
        let variable = "CELERY_CLI_TEST_APP_URL";
        std::env::set_var(variable, "amqp://from-the-app-variable//");
        let given = "amqp://given//".to_owned();
        assert_eq!(given_or_from(Some(&given), variable), Some(given));
        assert_eq!(
            given_or_from(None, variable).as_deref(),
            Some("amqp://from-the-app-variable//")
        );
        std::env::remove_var(variable);
        assert_eq!(given_or_from(None, variable), None);
    }

    #[test]
    fn empty_eta_and_expires_are_none_as_in_celery() {
        assert_eq!(parse_eta("").unwrap(), None);
        assert_eq!(parse_expires("").unwrap(), None);
        let at = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap();
        assert_eq!(parse_eta("2026-01-01").unwrap(), Some(at));
        let error = parse_eta("soon").unwrap_err().to_string();
        assert!(error.contains("--eta") && error.contains("soon"), "{error}");
    }

    #[tokio::test]
    async fn call_and_result_go_through_the_app() {
        let url = "memory://cli-unit";
        let app = Celery::builder("cli")
            .broker_url(url)
            .result_backend(url)
            .build()
            .unwrap();
        let call = Command::Call {
            name: "tasks.nobody".into(),
            args: "[1]".into(),
            kwargs: "{}".into(),
            countdown: None,
            eta: Some("2026-01-01T00:00:00+00:00".into()),
            expires: None,
            queue: Some("cli-q".into()),
            exchange: None,
            routing_key: None,
            priority: None,
            serializer: None,
            compression: None,
            wait: false,
            timeout: Duration::from_secs(1),
        };
        let mut out = Vec::new();
        execute(&app, call, &mut out).await.unwrap();
        let printed = String::from_utf8(out).unwrap();
        let id = printed.trim_end_matches('\n');
        assert_eq!(id.len(), 36, "call prints the task id: {printed:?}");
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{id:?}");

        // The message is in the queue: the purge command removes it and says so.
        let purge = || Command::Purge {
            queues: vec!["cli-q".into()],
            exclude_queues: vec![],
            force: true,
        };
        let mut out = Vec::new();
        execute(&app, purge(), &mut out).await.unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Purged 1 message from 1 known task queue.\n",
            "the call reached the queue"
        );
        let mut out = Vec::new();
        execute(&app, purge(), &mut out).await.unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "No messages purged from 1 queue.\n",
            "the purge command emptied the queue"
        );

        // `result` prints a stored result as Celery's does (Python's `str()` of it).
        let meta = crate::result::ResultMeta::new(
            id.to_owned(),
            crate::result::State::Success,
            serde_json::json!({"sum": [4, "four"]}),
        );
        app.backend().store(&meta, None).await.unwrap();
        let result = Command::Result {
            task_id: id.to_owned(),
            timeout: Duration::from_secs(5),
            task: None,
            traceback: false,
        };
        let mut out = Vec::new();
        execute(&app, result, &mut out).await.unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "{'sum': [4, 'four']}\n");
        // `--traceback` prints what is stored now: a failure's traceback, or an empty line.
        let failed = crate::result::ResultMeta::exception(
            "failed-task".to_owned(),
            crate::result::State::Failure,
            &crate::error::ExceptionInfo::new("ValueError", "builtins", "bad"),
            Some("Traceback (most recent call last):\nValueError: bad".to_owned()),
        );
        app.backend().store(&failed, None).await.unwrap();
        let traceback = |id: &str| {
            let args = ["app", "result", id, "--traceback", "-t", "tasks.divide"];
            Cli::try_parse_from(args).unwrap().command
        };
        let mut out = Vec::new();
        execute(&app, traceback("failed-task"), &mut out)
            .await
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Traceback (most recent call last):\nValueError: bad\n"
        );
        let mut out = Vec::new();
        execute(&app, traceback("unknown-task"), &mut out)
            .await
            .unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "\n");

        // And fails, printing nothing, for a task with no result by the deadline.
        let missing = Command::Result {
            task_id: "no-such-task".into(),
            timeout: Duration::from_millis(50),
            task: None,
            traceback: false,
        };
        let mut out = Vec::new();
        let error = execute(&app, missing, &mut out).await.unwrap_err();
        assert!(matches!(error, Error::Timeout { .. }), "{error:?}");
        assert!(out.is_empty());

        let bad = Command::Call {
            name: "t".into(),
            args: "{".into(),
            kwargs: "{}".into(),
            countdown: None,
            eta: None,
            expires: None,
            queue: None,
            exchange: None,
            routing_key: None,
            priority: None,
            serializer: None,
            compression: None,
            wait: false,
            timeout: Duration::from_secs(1),
        };
        assert!(execute(&app, bad, &mut Vec::new())
            .await
            .unwrap_err()
            .to_string()
            .contains("--args is not valid JSON"));
    }
}
