//! Faults against a real RabbitMQ at 127.0.0.1:5672: a worker process killed with SIGKILL in the
//! middle of its tasks, the broker unreachable for a while (through a proxy that cuts and refuses
//! connections), and bad messages published straight to a queue with a dead-letter exchange.
//! Skipped when RabbitMQ is not reachable, unless `CELERY_TEST_REQUIRE_SERVICES=1`.
//!
//! The worker processes are this test binary run again (`--ignored --exact fault_worker_process`)
//! with `CELERY_FAULT_WORKER=<queue>`: that one test (ignored in a normal run) then serves the
//! queue until it is killed, its parent goes away (its stdin closes) or a minute passes.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use celery::backend::RpcBackend;
use celery::broker::{
    Acker, AmqpBroker, Broker, BrokerError, BrokerErrorKind, Consumer, Delivery, MemoryBroker,
};
use celery::prelude::*;
use celery::protocol::{HeaderValue, Message, Properties, TaskHeaders};
use celery::BoxFuture;
use celery::RetryPolicy;
use common::proxy::Proxy;
use common::{unique_name, RABBITMQ_URL};
use serde_json::{Map, Value};
use tokio::task::JoinSet;

const WORKER_ENV: &str = "CELERY_FAULT_WORKER";
const WORKER_CONCURRENCY: usize = 4;
const TASK_MS: u64 = 150;
const LONG: Duration = Duration::from_secs(30);

/// Sleeps, then says which message ran it and whether RabbitMQ had delivered it before.
#[task(name = "faults.late", bind, acks_late)]
async fn late(ctx: TaskContext, i: u32, ms: u64) -> (u32, bool) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    (i, ctx.request().delivery_info.redelivered)
}

/// The same, acknowledged when it starts (the default).
#[task(name = "faults.early", bind)]
async fn early(ctx: TaskContext, i: u32, ms: u64) -> (u32, bool) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    (i, ctx.request().delivery_info.redelivered)
}

/// Asks for a retry that cannot be sent (no date is infinitely far): Celery then rejects the
/// message (`Reject(exc, requeue=False)`), which an `acks_late` task has not acknowledged yet.
#[task(name = "faults.unsendable_retry", bind, acks_late)]
async fn unsendable_retry(ctx: TaskContext) -> Result<(), TaskError> {
    Err(ctx.retry().countdown(f64::INFINITY).into())
}

#[task(name = "faults.add")]
async fn add(x: i64, y: i64) -> i64 {
    tokio::time::sleep(Duration::from_millis(40)).await;
    x + y
}

/// A queue on the default exchange only, so that no exchange is left behind on the shared
/// broker once the queue is deleted.
fn direct_queue(name: &str) -> Queue {
    Queue::new(name).exchange("", "direct")
}

/// Deletes the queues a test used; `apps` are dropped first, so that no consumer of theirs
/// declares a reply queue again.
async fn delete_queues(apps: impl IntoIterator<Item = Celery>, queues: &[&str]) {
    drop(apps.into_iter().collect::<Vec<_>>());
    tokio::time::sleep(Duration::from_millis(50)).await;
    if let Ok(broker) = AmqpBroker::connect(RABBITMQ_URL).await {
        for queue in queues {
            let _ = broker.delete_queue(queue).await;
        }
    }
}

/// Not a test on its own: in a process started with `CELERY_FAULT_WORKER=<queue>` it is a worker
/// on that queue (concurrency 4, prefetch 8) until the process is killed.
#[test]
#[ignore = "the worker process that the fault tests start; does nothing on its own"]
fn fault_worker_process() {
    let Ok(queue) = std::env::var(WORKER_ENV) else {
        return;
    };
    // Never outlive the test that started it.
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(60));
        std::process::exit(3);
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let app = Celery::builder("faults-worker")
            .broker_url(RABBITMQ_URL)
            .result_backend("rpc://")
            .queue(direct_queue(&queue))
            .build()
            .unwrap();
        app.register(late::Task).register(early::Task);
        let worker = app
            .worker()
            .queues([queue])
            .concurrency(WORKER_CONCURRENCY)
            .prefetch_multiplier(2)
            .start()
            .await
            .unwrap();
        println!("fault worker ready");
        let _ = std::io::stdout().flush();
        worker.join().await;
    });
}

/// A worker process, killed (SIGKILL) when dropped.
struct WorkerProcess {
    child: Child,
    /// Receives once the worker consumes its queue.
    ready: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl WorkerProcess {
    fn start(queue: &str) -> WorkerProcess {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "fault_worker_process",
                "--nocapture",
            ])
            .env(WORKER_ENV, queue)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start a worker process");
        let stdout = child.stdout.take().unwrap();
        let (ready, ready_rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut ready = Some(ready);
            for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
                let Ok(line) = line else { break };
                if line.contains("fault worker ready") {
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(());
                    }
                }
            }
        });
        WorkerProcess {
            child,
            ready: Some(ready_rx),
        }
    }

    /// Waits until the worker consumes its queue, however long it takes to start.
    async fn ready(&mut self) {
        let ready = self.ready.take().expect("waited for once");
        tokio::time::timeout(LONG, ready)
            .await
            .expect("the worker process starts")
            .expect("the worker process said it is ready");
    }

    fn kill(mut self) {
        self.child.kill().expect("SIGKILL the worker");
        let status = self.child.wait().unwrap();
        assert!(!status.success(), "the worker was killed: {status:?}");
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client app on RabbitMQ with rpc:// results, sending to `queue`.
fn client(name: &str, queue: &str) -> Celery {
    Celery::builder(name)
        .broker_url(RABBITMQ_URL)
        .result_backend("rpc://")
        .queue(direct_queue(queue))
        .task_default_queue(queue)
        .build()
        .unwrap()
}

type Finished = (String, Result<(u32, bool), Error>);

/// Sends `count` tasks named `task` and waits for each result in the background.
async fn send_all(app: &Celery, task: &str, count: u32) -> (BTreeSet<String>, JoinSet<Finished>) {
    let mut sent = BTreeSet::new();
    let mut waiting = JoinSet::new();
    for i in 0..count {
        let args = vec![Value::from(i), Value::from(TASK_MS)];
        let result = app
            .send_task(task, args, Map::new(), CallOptions::new())
            .await
            .unwrap()
            .cast::<(u32, bool)>();
        sent.insert(result.id().to_owned());
        waiting.spawn(async move {
            // Against hanging only: the tests wait for results with their own deadlines, and
            // a lost task's wait is aborted.
            let outcome = result.get().timeout(10 * LONG).await;
            (result.id().to_owned(), outcome)
        });
    }
    (sent, waiting)
}

/// Waits for `count` more results.
async fn collect(
    waiting: &mut JoinSet<Finished>,
    count: usize,
    into: &mut BTreeMap<String, (u32, bool)>,
) {
    for _ in 0..count {
        let (id, outcome) = tokio::time::timeout(LONG, waiting.join_next())
            .await
            .expect("results keep arriving")
            .expect("a result is awaited")
            .unwrap();
        into.insert(id, outcome.expect("the task succeeded"));
    }
}

/// Takes the results already in, without waiting; returns how many have arrived in all.
fn collect_finished(
    waiting: &mut JoinSet<Finished>,
    into: &mut BTreeMap<String, (u32, bool)>,
) -> usize {
    while let Some(joined) = waiting.try_join_next() {
        let (id, outcome) = joined.unwrap();
        into.insert(id, outcome.expect("the task succeeded"));
    }
    into.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_during_acks_late_tasks_loses_none_of_them() {
    if !common::rabbitmq("a_worker_killed_during_acks_late_tasks_loses_none_of_them") {
        return;
    }
    let started = Instant::now();
    let queue = unique_name("faults-kill-late");
    let app = client("faults-kill-late", &queue);
    let first = WorkerProcess::start(&queue);
    const COUNT: u32 = 40;
    let (sent, mut waiting) = send_all(&app, late::NAME, COUNT).await;

    // Two rounds have finished; the next four run and four more wait in the prefetch buffer.
    let mut finished = BTreeMap::new();
    collect(&mut waiting, 2 * WORKER_CONCURRENCY, &mut finished).await;
    tokio::time::sleep(Duration::from_millis(TASK_MS / 3)).await;
    first.kill();
    let at_kill = collect_finished(&mut waiting, &mut finished);

    let second = WorkerProcess::start(&queue);
    collect(&mut waiting, COUNT as usize - at_kill, &mut finished).await;
    let ids: BTreeSet<String> = finished.keys().cloned().collect();
    assert_eq!(ids, sent, "every task sent finished");
    assert_eq!(finished.len(), COUNT as usize);
    let values: BTreeSet<u32> = finished.values().map(|(i, _)| *i).collect();
    assert_eq!(values, (0..COUNT).collect());
    let redelivered = finished.values().filter(|(_, again)| *again).count();
    assert!(
        redelivered >= 1,
        "the tasks unacknowledged at the kill were delivered again and finished"
    );
    eprintln!(
        "acks_late kill: {at_kill} of {COUNT} finished before SIGKILL, {redelivered} redelivered \
         and finished by the second worker, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    drop(second);
    let oid = app.oid().to_owned();
    delete_queues([app], &[&queue, &oid]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_acks_late_a_killed_worker_loses_only_the_tasks_it_was_running() {
    if !common::rabbitmq("without_acks_late_a_killed_worker_loses_only_the_tasks_it_was_running") {
        return;
    }
    let queue = unique_name("faults-kill-early");
    let app = client("faults-kill-early", &queue);
    let first = WorkerProcess::start(&queue);
    const COUNT: u32 = 40;
    let (sent, mut waiting) = send_all(&app, early::NAME, COUNT).await;
    let mut finished = BTreeMap::new();
    collect(&mut waiting, 2 * WORKER_CONCURRENCY, &mut finished).await;
    tokio::time::sleep(Duration::from_millis(TASK_MS / 3)).await;
    first.kill();
    let at_kill = collect_finished(&mut waiting, &mut finished);

    let mut second = WorkerProcess::start(&queue);
    // The tasks running at the kill were acknowledged when they started: they never come back.
    // Everything else (queued, or prefetched and waiting for a slot) does. Once the new worker
    // runs them, results keep coming until only the lost ones are missing: the quiet window
    // starts with the first result after the worker is up, however long it took to start.
    second.ready().await;
    let first_after = tokio::time::timeout(LONG, waiting.join_next())
        .await
        .expect("results arrive from the new worker")
        .expect("results are awaited");
    let (id, outcome) = first_after.unwrap();
    finished.insert(id, outcome.expect("the task succeeded"));
    const QUIET: Duration = Duration::from_secs(3);
    while let Ok(Some(joined)) = tokio::time::timeout(QUIET, waiting.join_next()).await {
        let (id, outcome) = joined.unwrap();
        finished.insert(id, outcome.expect("the task succeeded"));
    }
    waiting.abort_all();
    let lost = sent.len() - finished.len();
    assert!(
        (1..=WORKER_CONCURRENCY).contains(&lost),
        "lost exactly the tasks running at the kill: {lost} lost, {at_kill} done before it"
    );
    assert!(
        finished.values().any(|(_, again)| *again),
        "prefetched messages not yet started were delivered again"
    );
    drop(second);
    let oid = app.oid().to_owned();
    delete_queues([app], &[&queue, &oid]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_unreachable_for_a_while_publishers_fail_clearly_and_workers_resume() {
    let test = "rabbitmq_unreachable_for_a_while_publishers_fail_clearly_and_workers_resume";
    if !common::rabbitmq(test) {
        return;
    }
    let proxy = Proxy::rabbitmq().unwrap();
    let queue = unique_name("faults-outage");
    let policy = RetryPolicy {
        max_retries: Some(2),
        interval_start: 0.1,
        interval_step: 0.1,
        interval_max: 0.2,
        retry_errors: None,
    };
    // The client publishes through the proxy; its reply queue is reached directly, so that
    // results are not what this test loses (see the README on rpc:// during an outage).
    let client = Celery::builder("faults-outage-client")
        .broker_url(proxy.amqp_url())
        .backend(Arc::new(RpcBackend::new(RABBITMQ_URL).unwrap()))
        .queue(direct_queue(&queue))
        .task_default_queue(&queue)
        .configure(|config| {
            config.task_publish_retry_policy = policy;
            config.broker_connection_timeout = 2.0;
        })
        .build()
        .unwrap();
    // The worker reaches the broker, and sends its results, only through the proxy.
    let worker_app = Celery::builder("faults-outage-worker")
        .broker_url(proxy.amqp_url())
        .result_backend("rpc://")
        .queue(direct_queue(&queue))
        .configure(|config| config.broker_connection_timeout = 2.0)
        .build()
        .unwrap();
    worker_app.register(add::Task);
    let worker = worker_app
        .worker()
        .queues([queue.clone()])
        .concurrency(WORKER_CONCURRENCY)
        .start()
        .await
        .unwrap();

    let mut sent = Vec::new();
    for i in 0..40 {
        sent.push((i, add::s(i, i).apply_async_with(&client).await.unwrap()));
    }
    let accepted_before = proxy.accepted();
    // Down with tasks queued and running.
    proxy.take_down();
    let down_at = Instant::now();

    let attempt = Instant::now();
    let error = add::s(0, 0).apply_async_with(&client).await.unwrap_err();
    let took = attempt.elapsed();
    let text = error.to_string();
    assert!(matches!(error, Error::Operational { .. }), "{error:?}");
    assert!(
        text.contains(&format!("127.0.0.1:{}", proxy.port())),
        "names the broker: {text}"
    );
    assert!(text.contains("after 2 retries"), "{text}");
    assert!(
        took >= Duration::from_millis(300),
        "waited 0.1 + 0.2 s: {took:?}"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
    let error = add::s(0, 0)
        .with_options(CallOptions::new().retry(false))
        .apply_async_with(&client)
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Operational { .. }), "{error:?}");
    assert!(!error.to_string().contains("retries"), "{error}");

    // Unreachable for two seconds in all.
    tokio::time::sleep(Duration::from_secs(2).saturating_sub(down_at.elapsed())).await;
    proxy.restore();
    assert!(
        proxy.refused() >= 2,
        "connections were attempted while down"
    );

    // Publishing works again (a first attempt may meet the dead connection: then it retries).
    for i in 40..80 {
        sent.push((i, add::s(i, i).apply_async_with(&client).await.unwrap()));
    }
    for (i, result) in &sent {
        let value = result.get().timeout(LONG).await;
        assert_eq!(value.unwrap(), 2 * i, "task {i}: {}", result.id());
    }
    assert!(
        proxy.accepted() > accepted_before,
        "the worker and the publisher reconnected"
    );
    tokio::time::timeout(LONG, worker.shutdown())
        .await
        .expect("the worker stops");
    let oid = client.oid().to_owned();
    delete_queues([client, worker_app], &[&queue, &oid]).await;
}

/// A worker started while the broker cannot be reached waits for it (Celery's
/// `broker_connection_retry_on_startup`), and fails at once when told not to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_started_before_the_broker_is_reachable_waits_for_it() {
    let test = "a_worker_started_before_the_broker_is_reachable_waits_for_it";
    if !common::rabbitmq(test) {
        return;
    }
    let proxy = Proxy::rabbitmq().unwrap();
    proxy.take_down();
    let queue = unique_name("faults-startup");
    let worker_app = |retry_on_startup: bool| {
        let app = Celery::builder("faults-startup-worker")
            .broker_url(proxy.amqp_url())
            .result_backend("rpc://")
            .queue(direct_queue(&queue))
            .configure(|config| {
                config.broker_connection_timeout = 1.0;
                config.broker_connection_retry_on_startup = retry_on_startup;
            })
            .build()
            .unwrap();
        app.register(add::Task);
        app
    };

    let refused = worker_app(false)
        .worker()
        .queues([queue.clone()])
        .start()
        .await;
    assert!(refused.is_err(), "no retry on startup: fails at once");

    let app = worker_app(true);
    let starting = {
        let queue = queue.clone();
        tokio::spawn(async move { app.worker().queues([queue]).start().await })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!starting.is_finished(), "still waiting for the broker");
    proxy.restore();
    let worker = tokio::time::timeout(LONG, starting)
        .await
        .expect("the worker starts once the broker is back")
        .unwrap()
        .expect("started");
    let client = Celery::builder("faults-startup-client")
        .broker_url(RABBITMQ_URL)
        .result_backend("rpc://")
        .queue(direct_queue(&queue))
        .task_default_queue(&queue)
        .build()
        .unwrap();
    let sum = add::s(1, 2).apply_async_with(&client).await.unwrap();
    assert_eq!(sum.get().timeout(LONG).await.unwrap(), 3);
    tokio::time::timeout(LONG, worker.shutdown())
        .await
        .expect("the worker stops");
    let oid = client.oid().to_owned();
    delete_queues([client], &[&queue, &oid]).await;
}

/// A captured log, for checking what the worker said.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn bad_message(reply_to: &str, id: &str, task: &str, content_type: &str, body: &[u8]) -> Message {
    Message {
        headers: TaskHeaders::new(task, id).to_table(),
        properties: Properties {
            correlation_id: Some(id.to_owned()),
            reply_to: Some(reply_to.to_owned()),
            content_type: content_type.to_owned(),
            content_encoding: "utf-8".to_owned(),
            delivery_mode: 2,
            priority: None,
            expiration: None,
        },
        body: body.to_vec(),
    }
}

const TOO_DEEP: &str = "bad-nesting";

/// Publishes `message` through raw lapin with a header `deep` added, `depth` arrays one inside
/// the other: this crate's broker refuses to send headers nested past 128 levels.
async fn publish_nested_too_deep(queue: &str, message: &Message, depth: usize) {
    use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString};
    let mut headers = FieldTable::default();
    for (key, value) in &message.headers {
        if let HeaderValue::Str(text) = value {
            let text = LongString::from(text.as_bytes());
            headers.insert(key.as_ref().into(), AMQPValue::LongString(text));
        }
    }
    let mut deep = AMQPValue::LongInt(7);
    for _ in 0..depth {
        deep = AMQPValue::FieldArray(FieldArray::from(vec![deep]));
    }
    headers.insert("deep".into(), deep);
    let given = &message.properties;
    let properties = lapin::BasicProperties::default()
        .with_content_type(given.content_type.as_str().into())
        .with_content_encoding(given.content_encoding.as_str().into())
        .with_delivery_mode(given.delivery_mode)
        .with_correlation_id(given.correlation_id.as_deref().unwrap_or_default().into())
        .with_reply_to(given.reply_to.as_deref().unwrap_or_default().into())
        .with_headers(headers);
    let connection = lapin::Connection::connect(RABBITMQ_URL, Default::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel.confirm_select(Default::default()).await.unwrap();
    channel
        .basic_publish(
            "".into(),
            queue.into(),
            Default::default(),
            &message.body,
            properties,
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let _ = connection.close(200, "published".into()).await;
}

/// Current-thread runtime: the worker's tasks run on this thread, so the log captured with a
/// thread-local subscriber is the worker's.
#[tokio::test]
async fn bad_messages_on_rabbitmq_fail_clearly_are_dead_lettered_and_the_worker_goes_on() {
    let test = "bad_messages_on_rabbitmq_fail_clearly_are_dead_lettered_and_the_worker_goes_on";
    if !common::rabbitmq(test) {
        return;
    }
    let log = Log::default();
    let writer = log.clone();
    let _capture = tracing_subscriber::util::SubscriberInitExt::set_default(
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing_subscriber::filter::LevelFilter::WARN)
            .with_writer(move || writer.clone())
            .finish(),
    );

    let queue = unique_name("faults-bad");
    let dead = unique_name("faults-bad-dead");
    let app = Celery::builder("faults-bad")
        .broker_url(RABBITMQ_URL)
        .result_backend("rpc://")
        .queue(
            direct_queue(&queue)
                .dead_letter_exchange("amq.direct")
                .dead_letter_routing_key(&dead),
        )
        .task_default_queue(&queue)
        .configure(|config| config.message_max_body_size = 1024)
        .build()
        .unwrap();
    app.register(add::Task);
    app.register(unsendable_retry::Task);
    // The dead-letter queue, bound to amq.direct under its own name.
    let broker = AmqpBroker::connect(RABBITMQ_URL).await.unwrap();
    let dead_queue = Queue::new(&dead).exchange("amq.direct", "direct");
    broker.declare(&dead_queue).await.unwrap();
    // The reply queue exists before the worker sends FAILUREs to it.
    app.backend().prepare_client().await.unwrap();
    let worker = app.worker().concurrency(2).start().await.unwrap();

    let oid = app.oid().to_owned();
    let message = |id: &str, task: &str, content_type: &str, body: &[u8]| {
        bad_message(&oid, id, task, content_type, body)
    };
    let mut corrupt = message(
        "bad-zlib",
        add::NAME,
        "application/json",
        b"not zlib at all",
    );
    corrupt.headers.push((
        "compression".into(),
        HeaderValue::Str("application/x-gzip".into()),
    ));
    let mut unknown_scheme = message("bad-scheme", add::NAME, "application/json", b"[[1, 2], {}]");
    unknown_scheme.headers.push((
        "compression".into(),
        HeaderValue::Str("application/x-snappy".into()),
    ));
    let mut no_task = message(
        "bad-headers",
        add::NAME,
        "application/json",
        b"[[1, 2], {}]",
    );
    no_task.headers.retain(|(key, _)| key != "task");
    // Published with a header nested past what the AMQP reader passes to lapin (which would
    // recurse into it on its I/O thread until the stack overflows: about 250 levels in a debug
    // build); see `publish_nested_too_deep`.
    let too_deep = message(TOO_DEEP, add::NAME, "application/json", b"[[1, 2], {}]");
    let too_large = [b' '; 4096];
    let cases = [
        (
            message("bad-json", add::NAME, "application/json", b"{not json"),
            "DecodeError",
            "not valid json",
        ),
        (
            message(
                "bad-shape",
                add::NAME,
                "application/json",
                br#"{"args": [1, 2]}"#,
            ),
            "DecodeError",
            "expected a list",
        ),
        (
            message(
                "bad-name",
                "faults.nobody",
                "application/json",
                br#"[[], {}, null]"#,
            ),
            "NotRegistered",
            "faults.nobody",
        ),
        // Looked up before the body is read, as Celery does: a body this worker does not
        // accept (pickle, for Python workers on a shared queue) is still NotRegistered.
        (
            message(
                "bad-name-pickle",
                "faults.nobody",
                "application/x-python-serialize",
                b"\x80\x04.",
            ),
            "NotRegistered",
            "faults.nobody",
        ),
        (
            message("bad-content", add::NAME, "application/x-unknown", b"?"),
            "ContentDisallowed",
            "application/x-unknown",
        ),
        (
            message("bad-size", add::NAME, "application/json", &too_large),
            "DecodeError",
            "too large",
        ),
        (corrupt, "DecodeError", "corrupt"),
        (unknown_scheme, "DecodeError", "unknown compression"),
        (no_task, "DecodeError", "missing header \"task\""),
        (too_deep, "DecodeError", "nested deeper than 128 levels"),
    ];
    // Well-formed messages whose arguments do not fit the task: they cannot run anywhere, so they
    // are rejected like the others, with TypeError stored.
    let misfits = [
        (
            message(
                "bad-types",
                add::NAME,
                "application/json",
                br#"[["one", 2], {}, null]"#,
            ),
            "TypeError",
            "argument 'x'",
        ),
        (
            message(
                "bad-arity",
                add::NAME,
                "application/json",
                br#"[[1, 2, 3], {}, null]"#,
            ),
            "TypeError",
            "takes 2 positional",
        ),
        // Runs, and fails as Celery's does when its retry cannot be sent: rejected, not
        // acknowledged, so RabbitMQ dead-letters it.
        (
            message(
                "bad-retry",
                unsendable_retry::NAME,
                "application/json",
                br#"[[], {}, null]"#,
            ),
            "Reject",
            "EncodeError(",
        ),
    ];
    for (message, _, _) in cases.iter().chain(&misfits) {
        if message.properties.correlation_id.as_deref() == Some(TOO_DEEP) {
            publish_nested_too_deep(&queue, message, 400).await;
        } else {
            app.broker().publish("", &queue, message).await.unwrap();
        }
    }
    // No headers, no id, not JSON: nothing to store a FAILURE under, rejected all the same.
    let anonymous = Message {
        headers: Vec::new(),
        properties: Properties {
            content_type: "application/json".to_owned(),
            content_encoding: "utf-8".to_owned(),
            delivery_mode: 2,
            ..Properties::default()
        },
        body: b"\xff\xfe garbage".to_vec(),
    };
    app.broker().publish("", &queue, &anonymous).await.unwrap();

    let good = add::s(2, 3).apply_async_with(&app).await.unwrap();
    assert_eq!(
        good.get().timeout(LONG).await.unwrap(),
        5,
        "the worker still serves the good messages sent after the bad ones"
    );
    for (message, exc_type, text) in cases.iter().chain(&misfits) {
        let id = message.properties.correlation_id.clone().unwrap();
        let error = app
            .result::<i64>(id.clone())
            .get()
            .timeout(LONG)
            .await
            .unwrap_err();
        let exception = error.exception().unwrap_or_else(|| panic!("{id}: {error}"));
        assert_eq!(exception.exc_type, *exc_type, "{id}: {exception}");
        assert!(
            exception.message().contains(text),
            "{id}: {exception} should mention {text:?}"
        );
    }
    tokio::time::timeout(LONG, worker.shutdown())
        .await
        .expect("the worker stops");

    // Each bad message was rejected, and RabbitMQ dead-lettered it; the good one was not.
    let mut consumer = broker
        .consume(std::slice::from_ref(&dead_queue), 0)
        .await
        .unwrap();
    let mut dead_ids = BTreeSet::new();
    for _ in 0..=cases.len() + misfits.len() {
        let delivery = tokio::time::timeout(LONG, consumer.next())
            .await
            .expect("a dead-lettered message")
            .expect("the consumer goes on")
            .expect("a delivery");
        let death = match delivery.message.header("x-death") {
            Some(HeaderValue::List(deaths)) => match deaths.first() {
                Some(HeaderValue::Table(death)) => death.clone(),
                other => panic!("x-death entry: {other:?}"),
            },
            other => panic!("x-death header: {other:?}"),
        };
        let field = |name: &str| {
            death
                .iter()
                .find(|(key, _)| key == name)
                .and_then(|(_, value)| value.as_str())
                .map(str::to_owned)
        };
        assert_eq!(field("reason").as_deref(), Some("rejected"));
        assert_eq!(field("queue").as_deref(), Some(queue.as_str()));
        let id = delivery.message.properties.correlation_id.clone();
        dead_ids.insert(id.unwrap_or_else(|| "<no id>".to_owned()));
        delivery.acker.ack().await.unwrap();
    }
    let mut expected: BTreeSet<String> = cases
        .iter()
        .chain(&misfits)
        .map(|(message, _, _)| message.properties.correlation_id.clone().unwrap())
        .collect();
    expected.insert("<no id>".to_owned());
    assert_eq!(dead_ids, expected);
    consumer.cancel().await;
    drop(consumer);
    assert_eq!(broker.purge(&dead).await.unwrap(), 0, "nothing else died");
    assert_eq!(
        broker.purge(&queue).await.unwrap(),
        0,
        "nothing was requeued"
    );

    // One clear line per rejected message, naming it and why.
    let text = log.text();
    let rejections: Vec<&str> = text
        .lines()
        .filter(|line| line.contains("rejecting message that cannot be run"))
        .collect();
    assert_eq!(rejections.len(), cases.len() + 1, "{text}");
    for (message, exc_type, _) in &cases {
        let id = message.properties.correlation_id.as_deref().unwrap();
        assert!(
            rejections
                .iter()
                .any(|line| line.contains(&format!("id=\"{id}\"")) && line.contains(exc_type)),
            "no log line for {id}:\n{text}"
        );
    }
    let oid = app.oid().to_owned();
    delete_queues([app], &[&queue, &dead, &oid]).await;
}

static COUNTED_RUNS: Mutex<Vec<(u32, bool)>> = Mutex::new(Vec::new());

#[task(name = "faults.counted", bind)]
async fn counted(ctx: TaskContext, i: u32) -> u32 {
    let redelivered = ctx.request().delivery_info.redelivered;
    COUNTED_RUNS.lock().unwrap().push((i, redelivered));
    i
}

/// A memory broker whose first acknowledgement is lost, as one is when the connection drops:
/// the ack fails and the message goes back to its queue.
struct LosesFirstAck {
    inner: MemoryBroker,
    lost: Arc<AtomicBool>,
}

struct LossyConsumer {
    inner: Box<dyn Consumer>,
    lost: Arc<AtomicBool>,
}

/// Dropping the real acker requeues the message, as a closed channel does.
struct LostAck(Box<dyn Acker>);

impl Acker for LostAck {
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), BrokerError>> {
        drop(self);
        Box::pin(async {
            Err(BrokerError::new(
                BrokerErrorKind::Channel,
                "cannot acknowledge the message: its channel is closed (simulated)",
            ))
        })
    }
    fn reject(self: Box<Self>, requeue: bool) -> BoxFuture<'static, Result<(), BrokerError>> {
        self.0.reject(requeue)
    }
}

impl Consumer for LossyConsumer {
    fn next(&mut self) -> BoxFuture<'_, Option<Result<Delivery, BrokerError>>> {
        Box::pin(async move {
            match self.inner.next().await? {
                Ok(delivery) if !self.lost.swap(true, Ordering::SeqCst) => Some(Ok(Delivery {
                    acker: Box::new(LostAck(delivery.acker)),
                    ..delivery
                })),
                other => Some(other),
            }
        })
    }
    fn set_prefetch(&mut self, prefetch: u16) -> BoxFuture<'_, Result<(), BrokerError>> {
        self.inner.set_prefetch(prefetch)
    }
    fn cancel(&mut self) -> BoxFuture<'_, ()> {
        self.inner.cancel()
    }
}

impl Broker for LosesFirstAck {
    fn url(&self) -> &str {
        self.inner.url()
    }
    fn declare<'a>(&'a self, queue: &'a Queue) -> BoxFuture<'a, Result<(), BrokerError>> {
        self.inner.declare(queue)
    }
    fn publish<'a>(
        &'a self,
        exchange: &'a str,
        routing_key: &'a str,
        message: &'a Message,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        self.inner.publish(exchange, routing_key, message)
    }
    fn consume<'a>(
        &'a self,
        queues: &'a [Queue],
        prefetch: u16,
    ) -> BoxFuture<'a, Result<Box<dyn Consumer>, BrokerError>> {
        Box::pin(async move {
            let inner = self.inner.consume(queues, prefetch).await?;
            let lost = self.lost.clone();
            Ok(Box::new(LossyConsumer { inner, lost }) as Box<dyn Consumer>)
        })
    }
    fn purge<'a>(&'a self, queue: &'a str) -> BoxFuture<'a, Result<u64, BrokerError>> {
        self.inner.purge(queue)
    }
}

/// Needs no RabbitMQ. Acknowledged when it starts, a task must not run when that
/// acknowledgement fails: the broker delivers the message again, and it runs then, once.
#[tokio::test]
async fn a_task_whose_early_acknowledgement_is_lost_runs_once_on_redelivery() {
    let broker = Arc::new(LosesFirstAck {
        inner: MemoryBroker::new(common::memory_url("faults-lost-ack")),
        lost: Arc::default(),
    });
    let app = Celery::builder("faults-lost-ack")
        .broker(broker)
        .result_backend(common::memory_url("faults-lost-ack"))
        .build()
        .unwrap();
    app.register(counted::Task);
    let worker = app.worker().concurrency(1).start().await.unwrap();
    let result = counted::s(7).apply_async_with(&app).await.unwrap();
    assert_eq!(result.get().timeout(common::WAIT).await.unwrap(), 7);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        *COUNTED_RUNS.lock().unwrap(),
        [(7, true)],
        "ran once, from the redelivered message"
    );
    worker.shutdown().await;
}

static HELD_RUNS: Mutex<Vec<(u32, bool)>> = Mutex::new(Vec::new());

/// Acknowledged after it runs: a copy of it held across a lost connection must not run.
#[task(name = "faults.held_late", bind, acks_late)]
async fn held_late(ctx: TaskContext, i: u32) -> u32 {
    let redelivered = ctx.request().delivery_info.redelivered;
    HELD_RUNS.lock().unwrap().push((i, redelivered));
    i
}

/// An `acks_late` task held for its ETA when the worker's connection is lost runs once, from
/// the message RabbitMQ delivers again, not also from the copy held through the old connection
/// (whose acknowledgement could never reach the broker), as Celery's consumer drops its ETA
/// timer entries when its connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acks_late_task_held_across_a_connection_loss_runs_once() {
    let test = "an_acks_late_task_held_across_a_connection_loss_runs_once";
    if !common::rabbitmq(test) {
        return;
    }
    let proxy = Proxy::rabbitmq().unwrap();
    let queue = unique_name("faults-held");
    let sender = client("faults-held-client", &queue);
    let worker_app = Celery::builder("faults-held-worker")
        .broker_url(proxy.amqp_url())
        .result_backend("rpc://")
        .queue(direct_queue(&queue))
        .build()
        .unwrap();
    worker_app.register(held_late::Task);
    let worker = worker_app
        .worker()
        .queues([queue.clone()])
        .concurrency(2)
        .start()
        .await
        .unwrap();
    let mut results = Vec::new();
    for i in 0..3 {
        let held = held_late::s(i).with_options(CallOptions::new().countdown(1.5));
        results.push(held.apply_async_with(&sender).await.unwrap());
    }
    // Held by the worker, then its connection is lost and comes back before their ETA.
    tokio::time::sleep(Duration::from_millis(400)).await;
    proxy.cut();
    for (i, result) in (0..3).zip(&results) {
        assert_eq!(result.get().timeout(LONG).await.unwrap(), i);
    }
    // Time for a second run of any of them, had one been left.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut runs = HELD_RUNS.lock().unwrap().clone();
    runs.sort();
    assert_eq!(
        runs,
        [(0, true), (1, true), (2, true)],
        "each ran once, from the message delivered again"
    );
    tokio::time::timeout(LONG, worker.shutdown())
        .await
        .expect("the worker stops");
    let oid = sender.oid().to_owned();
    delete_queues([sender, worker_app], &[&queue, &oid]).await;
}
