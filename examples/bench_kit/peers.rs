//! The peers in child processes: rusty-celery 0.5.5 (benches/rusty-celery, built here) and
//! Python Celery 5.7 (tests/python/bench_celery.py in the interop tests' virtualenv). Each times
//! itself and answers with one JSON line or files of epoch timestamps.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::amqp::{Control, Res};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn epoch(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// What a publishing child reports: epoch seconds when it started and when all its sends
/// returned, and how many messages it sent besides the `n` timed ones.
pub struct ChildPublish {
    pub start: f64,
    pub returned: f64,
    pub extra: u32,
}

fn json_line(stdout: &[u8], who: &str) -> Res<Value> {
    let text = String::from_utf8_lossy(stdout);
    let line = text
        .lines()
        .rev()
        .find(|line| line.trim_start().starts_with('{'))
        .ok_or_else(|| format!("{who} printed no JSON line"))?;
    serde_json::from_str(line).map_err(|e| format!("{who} printed {line:?}: {e}"))
}

fn number(value: &Value, key: &str) -> Res<f64> {
    value[key]
        .as_f64()
        .ok_or_else(|| format!("no {key:?} in {value}"))
}

/// Runs a publishing child while polling the queue from here; seconds until all its sends
/// returned, and until RabbitMQ held every message (never before they returned).
pub async fn timed_child_publish(
    control: &Control,
    queue: &str,
    n: usize,
    mut command: tokio::process::Command,
    who: &str,
) -> Res<(f64, f64)> {
    let output = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    // Every peer sends one warm-up message besides the n timed ones.
    let want = n as u32 + 1;
    let (output, reached) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(300), output),
        control.wait_count(queue, want, Duration::from_secs(300))
    );
    let output = output
        .map_err(|_| format!("{who} did not finish in 300 s"))?
        .map_err(|e| format!("{who}: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        return Err(format!(
            "{who} failed ({}): {}",
            output.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        ));
    }
    let report = json_line(&output.stdout, who)?;
    let sent = ChildPublish {
        start: number(&report, "start")?,
        returned: number(&report, "returned")?,
        extra: number(&report, "extra")? as u32,
    };
    if sent.extra != 1 {
        return Err(format!("{who} sent {} warm-up messages, not 1", sent.extra));
    }
    let reached = epoch(reached?);
    Ok((
        sent.returned - sent.start,
        reached.max(sent.returned) - sent.start,
    ))
}

// ---- rusty-celery -------------------------------------------------------------------------

/// Builds benches/rusty-celery (its own workspace and lockfile) into target/rusty-celery.
pub fn build_rusty() -> Res<PathBuf> {
    let root = root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let target = root.join("target").join("rusty-celery");
    eprintln!("building rusty-celery 0.5.5 (benches/rusty-celery; the first build takes minutes)…");
    let status = std::process::Command::new(cargo)
        .arg("build")
        .arg("--release")
        .arg("--quiet")
        .arg("--manifest-path")
        .arg(root.join("benches/rusty-celery/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!(
            "cargo build of benches/rusty-celery failed ({status})"
        ));
    }
    let binary = target.join("release").join("rusty-celery-bench");
    if binary.exists() {
        Ok(binary)
    } else {
        Err(format!("{} was not built", binary.display()))
    }
}

fn rusty_command(
    binary: &Path,
    mode: &str,
    broker: &str,
    queue: &str,
    n: usize,
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(binary);
    command
        .arg(mode)
        .args(["--broker", broker, "--queue", queue, "--n"])
        .arg(n.to_string());
    command
}

pub async fn rusty_publish(
    control: &Control,
    binary: &Path,
    broker: &str,
    queue: &str,
    n: usize,
    inflight: usize,
) -> Res<(f64, f64)> {
    let mut command = rusty_command(binary, "publish", broker, queue, n);
    command.args(["--inflight", &inflight.to_string()]);
    timed_child_publish(control, queue, n, command, "rusty-celery").await
}

/// Drains `n` messages already queued; seconds, as the child timed them.
pub async fn rusty_drain(
    binary: &Path,
    broker: &str,
    queue: &str,
    n: usize,
    prefetch: u32,
) -> Res<f64> {
    let mut command = rusty_command(binary, "drain", broker, queue, n);
    command.args(["--prefetch", &prefetch.min(u32::from(u16::MAX)).to_string()]);
    let output = tokio::time::timeout(
        Duration::from_secs(300),
        command
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| "rusty-celery did not drain in 300 s".to_owned())?
    .map_err(|e| e.to_string())?;
    if !output.status.success() {
        return Err(format!(
            "rusty-celery drain failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .last()
                .unwrap_or_default()
        ));
    }
    number(&json_line(&output.stdout, "rusty-celery")?, "seconds")
}

// ---- Python Celery ------------------------------------------------------------------------

/// The interop tests' virtualenv python (tests/python/ensure_venv.sh creates it when missing).
pub fn python() -> Res<PathBuf> {
    let script = root().join("tests/python/ensure_venv.sh");
    let output = std::process::Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !output.status.success() {
        return Err(format!("{} failed ({})", script.display(), output.status));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let python = PathBuf::from(text.lines().last().unwrap_or_default().trim());
    if python.exists() {
        Ok(python)
    } else {
        Err(format!("ensure_venv.sh printed no usable python: {text:?}"))
    }
}

fn python_command(python: &Path, broker: &str, queue: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(python);
    command
        .current_dir(root().join("tests/python"))
        .env("BENCH_BROKER", broker)
        .env("BENCH_QUEUE", queue)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    command
}

pub async fn python_publish(
    control: &Control,
    python: &Path,
    broker: &str,
    queue: &str,
    n: usize,
) -> Res<(f64, f64)> {
    let mut command = python_command(python, broker, queue);
    command.args(["bench_celery.py", "publish", &n.to_string()]);
    timed_child_publish(control, queue, n, command, "python celery").await
}

/// A prefork worker with 2 processes; it writes `ready` and, after `target` noop tasks, `done`
/// (epoch seconds) into its own directory.
pub struct PythonWorker {
    process: tokio::process::Child,
    dir: PathBuf,
}

impl PythonWorker {
    pub async fn start(python: &Path, broker: &str, queue: &str, target: usize) -> Res<Self> {
        let dir = std::env::temp_dir().join(format!(
            "celery-bench-{}-{}",
            std::process::id(),
            epoch(SystemTime::now())
        ));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(dir.join("worker.log")).map_err(|e| e.to_string())?;
        let mut command = python_command(python, broker, queue);
        command
            .env("BENCH_TARGET", target.to_string())
            .env("BENCH_DIR", &dir)
            .args([
                "-m",
                "celery",
                "-A",
                "bench_celery",
                "worker",
                "-P",
                "prefork",
                "-c",
                "2",
            ])
            .args(["-Q", queue, "-l", "WARNING", "-n"])
            .arg(format!("bench{}@%h", std::process::id()))
            .args([
                "--without-heartbeat",
                "--without-gossip",
                "--without-mingle",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true);
        let process = command
            .spawn()
            .map_err(|e| format!("cannot start the Python worker: {e}"))?;
        let mut worker = PythonWorker { process, dir };
        if let Err(error) = worker.wait_file("ready", Duration::from_secs(60)).await {
            worker.stop().await;
            return Err(error);
        }
        Ok(worker)
    }

    async fn wait_file(&mut self, name: &str, timeout: Duration) -> Res<f64> {
        let path = self.dir.join(name);
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(text) = std::fs::read_to_string(&path) {
                return text
                    .trim()
                    .parse()
                    .map_err(|e| format!("{}: {e}", path.display()));
            }
            if let Ok(Some(status)) = self.process.try_wait() {
                let log = std::fs::read_to_string(self.dir.join("worker.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                return Err(format!(
                    "the Python worker exited ({status}): {}",
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the Python worker wrote no {name:?} in {timeout:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Seconds from `worker_ready` to the `target`-th task.
    pub async fn drained(&mut self, timeout: Duration) -> Res<f64> {
        let ready = self.wait_file("ready", timeout).await?;
        let done = self.wait_file("done", timeout).await?;
        Ok(done - ready)
    }

    /// Warm shutdown (SIGTERM), then SIGKILL after 15 s.
    pub async fn stop(mut self) {
        if let Some(pid) = self.process.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        if tokio::time::timeout(Duration::from_secs(15), self.process.wait())
            .await
            .is_err()
        {
            let _ = self.process.kill().await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub async fn python_drain(python: &Path, broker: &str, queue: &str, n: usize) -> Res<f64> {
    let mut worker = PythonWorker::start(python, broker, queue, n).await?;
    let seconds = worker.drained(Duration::from_secs(300)).await;
    worker.stop().await;
    seconds
}

/// Round trips from a Python client to a Python worker: (p50, p99) in ms.
pub async fn python_rtt(python: &Path, broker: &str, queue: &str, n: usize) -> Res<(f64, f64)> {
    let worker = PythonWorker::start(python, broker, queue, 0).await?;
    let mut command = python_command(python, broker, queue);
    command
        .args(["bench_celery.py", "rtt", &n.to_string(), "50"])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(300), command.output()).await;
    worker.stop().await;
    let output = output
        .map_err(|_| "the Python round trips took over 300 s".to_owned())?
        .map_err(|e| e.to_string())?;
    if !output.status.success() {
        return Err(format!(
            "python rtt failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .last()
                .unwrap_or_default()
        ));
    }
    let report = json_line(&output.stdout, "python rtt")?;
    Ok((number(&report, "p50_ms")?, number(&report, "p99_ms")?))
}
