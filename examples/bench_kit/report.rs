//! The figures of a run, the table and the SUMMARY line.

use crate::amqp::Res;
use crate::ours::WorkerShape;

/// The rounds of one figure: two rates per round (publish: until every publish returned, and
/// until RabbitMQ held every message; drain: the same rate twice), or why it could not run.
#[derive(Default)]
pub struct Samples {
    pub first: Vec<f64>,
    pub second: Vec<f64>,
    pub error: Option<String>,
}

impl Samples {
    pub fn push(&mut self, first: f64, second: f64) {
        self.first.push(first);
        self.second.push(second);
    }

    pub fn fail(&mut self, error: String) {
        self.error.get_or_insert(error);
    }

    /// The median of the headline rate (the second).
    pub fn median(&self) -> Option<f64> {
        median(&self.second)
    }

    fn median_first(&self) -> Option<f64> {
        median(&self.first)
    }
}

fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    })
}

pub struct Eta {
    pub held: u64,
    pub wanted: u64,
    pub rss_before: u64,
    pub rss_after: u64,
    pub seconds: f64,
}

impl Eta {
    fn bytes_per_task(&self) -> Option<f64> {
        (self.held > 0).then(|| (self.rss_after as f64 - self.rss_before as f64) / self.held as f64)
    }
}

#[derive(Default)]
pub struct Figures {
    pub publish_ours_off: Samples,
    pub publish_raw_off: Samples,
    pub publish_ours_on: Samples,
    pub publish_raw_on: Samples,
    pub publish_rusty: Samples,
    /// Raw lapin publishing a message rusty-celery sent (through the default exchange).
    pub publish_raw_rusty_message: Samples,
    /// Raw lapin publishing this project's message with every header Python writes
    /// (`HeaderSet::Full`), confirms off: what the lean header table buys RabbitMQ.
    pub publish_raw_full_headers: Samples,
    pub publish_python: Samples,
    pub drain_ours: Samples,
    pub drain_raw: Samples,
    /// Raw lapin acknowledging each delivery: not a ceiling, a measure of per-message acks.
    pub drain_raw_each: Samples,
    pub drain_rusty: Samples,
    pub drain_python: Samples,
    /// This project's round trips with client confirms on (default) and off: (p50, p99) ms.
    pub rtt_ours: [Option<Res<(f64, f64)>>; 2],
    pub rtt_python: Option<Res<(f64, f64)>>,
    /// A raw lapin client against this project's worker, confirms on and off: apart from
    /// `rtt_ours`, the client's share of a round trip; apart from `rtt_raw`, the worker's.
    pub rtt_raw_client: [Option<Res<(f64, f64)>>; 2],
    /// Raw lapin client and echo, confirms on and off: the floors.
    pub rtt_raw: [Option<Res<(f64, f64)>>; 2],
    pub memory_publish: Samples,
    pub memory_drain: Samples,
    pub eta: Option<Eta>,
    pub message_body: Option<usize>,
    pub notes: Vec<String>,
}

/// The settings the figures were taken with.
pub struct Context {
    pub n: usize,
    pub python_n: usize,
    pub rounds: usize,
    pub inflight: usize,
    pub shape: WorkerShape,
    pub rtt: usize,
    pub eta: usize,
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn show(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.decimals$}"))
}

fn rate(value: Option<f64>) -> String {
    value.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.0}"))
}

fn rounds(values: &[f64]) -> String {
    values
        .iter()
        .map(|v| format!("{v:.0}"))
        .collect::<Vec<_>>()
        .join(" ")
}

impl Figures {
    pub fn note(&mut self, note: String) {
        eprintln!("note: {note}");
        self.notes.push(note);
    }

    pub fn print(&self, context: &Context) {
        let shape = context.shape;
        println!();
        println!(
            "celery-rs bench: {} tasks per round (Python {}), {} rounds, medians; {} publishes in \
             flight; drain prefetch {}",
            context.n, context.python_n, context.rounds, context.inflight, shape.prefetch
        );
        if let Some(body) = self.message_body {
            println!("message: tasks.noop, protocol v2, JSON body of {body} bytes, persistent");
        }

        println!();
        println!(
            "{:<46} {:>11} {:>11} {:>8}  rounds (in queue)",
            "publish, tasks/s", "returned", "in queue", "vs raw"
        );
        let raw_off = self.publish_raw_off.median();
        let raw_on = self.publish_raw_on.median();
        let rows = [
            (
                "this project, confirms off",
                &self.publish_ours_off,
                raw_off,
            ),
            (
                "raw lapin, confirms off (ceiling)",
                &self.publish_raw_off,
                raw_off,
            ),
            ("this project, confirms on", &self.publish_ours_on, raw_on),
            (
                "raw lapin, confirms on (ceiling)",
                &self.publish_raw_on,
                raw_on,
            ),
            (
                "rusty-celery 0.5.5 send_task (no confirms)",
                &self.publish_rusty,
                raw_off,
            ),
            (
                "raw lapin publishing rusty-celery's message",
                &self.publish_raw_rusty_message,
                raw_off,
            ),
            (
                "raw lapin, every header as Python writes them",
                &self.publish_raw_full_headers,
                raw_off,
            ),
            (
                "Python Celery 5.7 apply_async (no confirms)",
                &self.publish_python,
                raw_off,
            ),
        ];
        for (name, samples, raw) in rows {
            publish_row(name, samples, raw);
        }

        println!();
        println!(
            "{:<46} {:>11} {:>11} {:>8}  rounds",
            "drain, tasks/s (ready to N-th task)", "", "tasks/s", "vs raw"
        );
        let raw = self.drain_raw.median();
        let ours_name = format!(
            "this project (concurrency {}, prefetch {})",
            shape.concurrency, shape.prefetch
        );
        let rows = [
            (ours_name.as_str(), &self.drain_ours),
            ("raw lapin (multiple ack per 100, ceiling)", &self.drain_raw),
            (
                "raw lapin (an ack per message; for scale)",
                &self.drain_raw_each,
            ),
            ("rusty-celery 0.5.5", &self.drain_rusty),
            ("Python Celery 5.7 (prefork -c 2)", &self.drain_python),
        ];
        for (name, samples) in rows {
            match (&samples.error, samples.median()) {
                (Some(error), None) => println!("  {name:<44} not measured: {error}"),
                (None, None) => println!("  {name:<44} not run"),
                _ => println!(
                    "  {name:<44} {:>11} {:>11} {:>8}  {}",
                    "",
                    rate(samples.median()),
                    show(ratio(samples.median(), raw), 2),
                    rounds(&samples.second)
                ),
            }
        }

        println!();
        println!(
            "{:<46} {:>11} {:>11}",
            format!("round trip delay().get() x{}, ms", context.rtt),
            "p50",
            "p99"
        );
        let rtt_rows = [
            ("this project (default: confirms on)", &self.rtt_ours[0]),
            ("this project (client confirms off)", &self.rtt_ours[1]),
            (
                "raw lapin client -> this worker, confirm on",
                &self.rtt_raw_client[0],
            ),
            (
                "raw lapin client -> this worker, confirm off",
                &self.rtt_raw_client[1],
            ),
            ("raw lapin echo, confirms on (floor)", &self.rtt_raw[0]),
            ("raw lapin echo, confirms off (floor)", &self.rtt_raw[1]),
            ("Python Celery 5.7 (prefork -c 2 worker)", &self.rtt_python),
        ];
        for (name, outcome) in rtt_rows {
            match outcome {
                None => println!("  {name:<44} not run"),
                Some(Err(error)) => println!("  {name:<44} failed: {error}"),
                Some(Ok((p50, p99))) => println!("  {name:<44} {p50:>11.3} {p99:>11.3}"),
            }
        }

        println!();
        println!("{:<46} {:>11}", "memory broker, tasks/s", "");
        for (name, samples) in [
            ("publish (apply_async)", &self.memory_publish),
            ("drain (worker)", &self.memory_drain),
        ] {
            match (&samples.error, samples.median()) {
                (Some(error), None) => println!("  {name:<44} failed: {error}"),
                (None, None) => println!("  {name:<44} not run"),
                _ => println!(
                    "  {name:<44} {:>11}              {}",
                    rate(samples.median()),
                    rounds(&samples.second)
                ),
            }
        }

        println!();
        match &self.eta {
            None => println!("ETA tasks held ({}): not measured", context.eta),
            Some(eta) => println!(
                "ETA tasks held: {} of {} in {:.1} s; worker RSS {:.1} MiB before, {:.1} MiB after: \
                 {} bytes per held task",
                eta.held,
                eta.wanted,
                eta.seconds,
                eta.rss_before as f64 / 1048576.0,
                eta.rss_after as f64 / 1048576.0,
                show(eta.bytes_per_task(), 0)
            ),
        }

        let ours_off = self.publish_ours_off.median();
        let ours_on = self.publish_ours_on.median();
        let drain = self.drain_ours.median();
        let summary = [
            ("publish_vs_raw", show(ratio(ours_off, raw_off), 2)),
            ("publish_confirm_vs_raw", show(ratio(ours_on, raw_on), 2)),
            ("drain_vs_raw", show(ratio(drain, raw), 2)),
            (
                "publish_vs_rusty",
                show(ratio(ours_off, self.publish_rusty.median()), 2),
            ),
            (
                "drain_vs_rusty",
                show(ratio(drain, self.drain_rusty.median()), 2),
            ),
            (
                "publish_vs_python",
                show(ratio(ours_off, self.publish_python.median()), 1),
            ),
            (
                "drain_vs_python",
                show(ratio(drain, self.drain_python.median()), 1),
            ),
            (
                "rtt_p50_ms",
                show(
                    self.rtt_ours[0]
                        .as_ref()
                        .and_then(|r| r.as_ref().ok())
                        .map(|(p50, _)| *p50),
                    3,
                ),
            ),
            (
                "eta_bytes",
                show(self.eta.as_ref().and_then(Eta::bytes_per_task), 0),
            ),
        ];
        println!();
        println!(
            "targets: publish >= 0.85 x raw (confirms off and on); drain >= 0.8 x raw; >= 1.1 x \
             rusty-celery; >= 10 x Python; rtt p50 <= 0.5 ms; <= 1024 bytes per held ETA task"
        );
        for note in &self.notes {
            println!("note: {note}");
        }
        let failures = [
            (
                "publish, this project, confirms off",
                &self.publish_ours_off,
            ),
            ("publish, raw, confirms off", &self.publish_raw_off),
            ("publish, this project, confirms on", &self.publish_ours_on),
            ("publish, raw, confirms on", &self.publish_raw_on),
            ("publish, rusty-celery", &self.publish_rusty),
            (
                "publish, raw, rusty-celery's message",
                &self.publish_raw_rusty_message,
            ),
            ("publish, raw, every header", &self.publish_raw_full_headers),
            ("publish, Python", &self.publish_python),
            ("drain, this project", &self.drain_ours),
            ("drain, raw", &self.drain_raw),
            ("drain, raw, ack per message", &self.drain_raw_each),
            ("drain, rusty-celery", &self.drain_rusty),
            ("drain, Python", &self.drain_python),
            ("memory broker", &self.memory_publish),
        ];
        for (name, samples) in failures {
            if let (Some(error), false) = (&samples.error, samples.second.is_empty()) {
                println!(
                    "note: {name}: a round failed after {} succeeded: {error}",
                    samples.second.len()
                );
            }
        }
        let line: Vec<String> = summary.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("SUMMARY {}", line.join(" "));
    }
}

fn publish_row(name: &str, samples: &Samples, raw: Option<f64>) {
    match (&samples.error, samples.median()) {
        (Some(error), None) => println!("  {name:<44} not measured: {error}"),
        (None, None) => println!("  {name:<44} not run"),
        _ => println!(
            "  {name:<44} {:>11} {:>11} {:>8}  {}",
            rate(samples.median_first()),
            rate(samples.median()),
            show(ratio(samples.median(), raw), 2),
            rounds(&samples.second)
        ),
    }
}
