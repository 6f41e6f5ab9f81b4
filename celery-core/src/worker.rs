//! The worker: consumes task messages, runs registered tasks, stores their results and sends
//! their callbacks (Celery's `celery worker`).
//!
//! Every message is settled: run and acknowledged, held until its ETA, rejected with a FAILURE
//! stored (bad message, unknown task), or put back in its queue on shutdown. None is dropped
//! silently and none crashes the worker.

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::FutureExt;
use serde_json::Value;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;

use crate::app::{Celery, RegisteredTask};
use crate::broker::{Acker, Consumer, Delivery};
use crate::calling::ApplyOptions;
use crate::compression::DecompressError;
use crate::error::{Error, ExceptionInfo, TaskError, TaskErrorKind};
use crate::protocol::{
    format_datetime, Body, Headers, Message, Properties, TaskHeaders, TaskMessage,
};
use crate::result::{child_entry, group_child_entry, ResultMeta, State};
use crate::signature::RawSignature;
use crate::task::{DeliveryInfo, Invocation, Request, TaskContext, TaskFuture, TaskOptions};

/// Configures and starts a [`Worker`].
pub struct WorkerBuilder {
    app: Celery,
    queues: Vec<String>,
    concurrency: usize,
    prefetch_multiplier: u16,
    hostname: String,
}

impl WorkerBuilder {
    pub(crate) fn new(app: Celery) -> Self {
        let config = app.config();
        WorkerBuilder {
            queues: vec![config.task_default_queue.clone()],
            concurrency: slots(config.worker_concurrency),
            prefetch_multiplier: config.worker_prefetch_multiplier,
            hostname: format!("celery@{}", app.hostname()),
            app,
        }
    }

    /// The queues to consume (`-Q`); default: `task_default_queue`.
    pub fn queues<S: Into<String>>(mut self, queues: impl IntoIterator<Item = S>) -> Self {
        self.queues = queues.into_iter().map(Into::into).collect();
        self
    }

    /// How many tasks run at once (`-c`); 0 is the number of CPUs, as in Celery.
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = slots(concurrency);
        self
    }

    /// Unacknowledged messages per unit of concurrency.
    pub fn prefetch_multiplier(mut self, multiplier: u16) -> Self {
        self.prefetch_multiplier = multiplier;
        self
    }

    /// The node name (`-n`), default `celery@<hostname>`; `%h` (the host name), `%n` (its
    /// first label) and `%d` (the rest) are expanded as Celery expands them.
    pub fn hostname(mut self, hostname: impl Into<String>) -> Self {
        self.hostname = expand_node_name(&hostname.into(), self.app.hostname());
        self
    }

    /// Declares the queues, starts consuming and returns the running worker.
    pub async fn start(self) -> Result<Worker, Error> {
        if self.queues.is_empty() || self.queues.iter().any(String::is_empty) {
            // RabbitMQ would name an empty one itself, and consume a queue nobody sends to.
            return Err(Error::Config(format!(
                "a worker needs queue names, and none empty: {:?}",
                self.queues
            )));
        }
        let queues: Vec<_> = self
            .queues
            .iter()
            .map(|name| self.app.queue(name))
            .collect();
        let prefetch = prefetch_count(self.prefetch());
        let consumer = self.connect(&queues, prefetch).await?;
        let (shutdown, shutdown_signal) = watch::channel(false);
        let runtime = Arc::new(Runtime {
            app: self.app.clone(),
            hostname: self.hostname.clone(),
            slots: Arc::new(Semaphore::new(self.concurrency)),
            shutdown: shutdown_signal,
        });
        tracing::info!(hostname = %self.hostname, queues = ?self.queues, concurrency = self.concurrency, tasks = ?self.app.task_names(), "worker ready");
        let main_loop = tokio::spawn(consume(runtime, consumer, prefetch));
        Ok(Worker {
            shutdown,
            main_loop,
        })
    }

    /// Declares the queues and starts consuming them. A broker that cannot be reached yet is
    /// tried again ([`reconnect_backoff`](crate::broker::reconnect_backoff)) as Celery's worker does with
    /// `broker_connection_retry_on_startup`; a refusal (credentials, arguments) fails at once.
    async fn connect(
        &self,
        queues: &[crate::routing::Queue],
        prefetch: u16,
    ) -> Result<Box<dyn crate::broker::Consumer>, Error> {
        let config = self.app.config();
        let broker = self.app.broker();
        let mut retries = 0u32;
        loop {
            let attempt = async {
                for queue in queues {
                    broker.declare(queue).await?;
                }
                broker.consume(queues, prefetch).await
            };
            let error = match attempt.await {
                Ok(consumer) => return Ok(consumer),
                Err(error) => error,
            };
            let may_retry = config.broker_connection_retry_on_startup
                && error.kind.is_recoverable()
                && config
                    .broker_connection_max_retries
                    .is_none_or(|max| retries < max);
            if !may_retry {
                return Err(error.into());
            }
            retries += 1;
            let wait = crate::broker::reconnect_backoff(retries);
            tracing::warn!(%error, retry = retries, wait_s = wait.as_secs_f64(), "cannot reach the broker; the worker tries again");
            tokio::time::sleep(wait).await;
        }
    }

    fn prefetch(&self) -> u32 {
        u32::try_from(self.concurrency)
            .unwrap_or(u32::MAX)
            .saturating_mul(u32::from(self.prefetch_multiplier))
    }
}

/// The prefetch count sent for `wanted` messages: past what AMQP's count can say, none at all
/// (0), as kombu's `QoS.set` sends it, rather than a limit the worker did not ask for.
fn prefetch_count(wanted: u32) -> u16 {
    u16::try_from(wanted).unwrap_or(0)
}

/// Task slots for a concurrency setting: 0 is the number of CPUs (Celery's default), and no
/// more than a semaphore can count.
fn slots(concurrency: usize) -> usize {
    let slots = match concurrency {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    slots.min(Semaphore::MAX_PERMITS)
}

/// Celery's node names (`celery.utils.nodenames`): a name without `@` is a host, `celery@`
/// before it (`-n foo` is `celery@foo`), and an empty half is `celery` or this host. Then `%h`
/// is the host name, `%n` its first label, `%d` the rest, `%i` the process index (`0`: this
/// worker is one process), `%I` the same with a dash (empty for the main process), `%%` a
/// percent sign.
fn expand_node_name(pattern: &str, host: &str) -> String {
    let (name_part, host_part) = pattern.split_once('@').unwrap_or(("", pattern));
    let pattern = format!(
        "{}@{}",
        if name_part.is_empty() {
            "celery"
        } else {
            name_part
        },
        if host_part.is_empty() {
            host
        } else {
            host_part
        },
    );
    let (name, domain) = host.split_once('.').unwrap_or((host, ""));
    let mut expanded = String::with_capacity(pattern.len() + host.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            expanded.push(c);
            continue;
        }
        match chars.next() {
            Some('h') => expanded.push_str(host),
            Some('n') => expanded.push_str(name),
            Some('d') => expanded.push_str(domain),
            Some('i') => expanded.push('0'),
            Some('I') => {}
            Some('%') => expanded.push('%'),
            Some(other) => {
                expanded.push('%');
                expanded.push(other);
            }
            None => expanded.push('%'),
        }
    }
    expanded
}

/// A running worker; [`shutdown`](Worker::shutdown) stops it gracefully.
pub struct Worker {
    shutdown: watch::Sender<bool>,
    main_loop: tokio::task::JoinHandle<()>,
}

impl Worker {
    /// Stops taking messages, finishes the running tasks and puts the held ones (ETA, waiting
    /// for a slot) back in their queues (Celery's warm shutdown).
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        if let Err(error) = self.main_loop.await {
            tracing::error!(%error, "worker loop ended abnormally");
        }
    }

    /// Runs until the worker stops by itself (its broker closed the consumer).
    pub async fn join(self) {
        let _ = self.main_loop.await;
    }
}

struct Runtime {
    app: Celery,
    hostname: String,
    slots: Arc<Semaphore>,
    shutdown: watch::Receiver<bool>,
}

async fn consume(runtime: Arc<Runtime>, mut consumer: Box<dyn Consumer>, base_prefetch: u16) {
    let mut shutdown = runtime.shutdown.clone();
    let mut jobs = JoinSet::new();
    // Messages whose ETA is ahead wait here, unacknowledged, in one timer-ordered set rather
    // than as a parked task each (a few hundred bytes a message instead of kilobytes).
    let (held_tx, mut held_rx) = mpsc::unbounded_channel::<Held>();
    let mut held = EtaSchedule::default();
    let mut prefetch = base_prefetch;
    loop {
        let next_due = held.next_due();
        tokio::select! {
            biased;
            _ = stopping(&mut shutdown) => break,
            Some(message) = held_rx.recv() => {
                held.insert(message);
                // Many arrive together: one prefetch change for all of them.
                while let Ok(message) = held_rx.try_recv() {
                    held.insert(message);
                }
                change_prefetch(consumer.as_mut(), &mut prefetch, base_prefetch, held.len()).await;
            }
            _ = tokio::time::sleep_until(next_due.unwrap_or_else(tokio::time::Instant::now)), if next_due.is_some() => {
                for message in held.take_due(tokio::time::Instant::now()) {
                    jobs.spawn(resume_held(runtime.clone(), message));
                }
                change_prefetch(consumer.as_mut(), &mut prefetch, base_prefetch, held.len()).await;
            }
            Some(finished) = jobs.join_next(), if !jobs.is_empty() => {
                if let Err(error) = finished {
                    tracing::error!(%error, "a message handler ended abnormally");
                }
            }
            delivery = consumer.next() => match delivery {
                None => break,
                Some(Err(error)) => {
                    tracing::error!(%error, "consumer error");
                    // The deliveries of a lost session go back to their queues and come again
                    // through the next: the copies held here are dropped, as Celery's consumer
                    // clears its ETA timer and reserved requests when its connection closes.
                    // Kept, an `acks_late` task would run twice, and the prefetch count would
                    // count them twice.
                    let stale = held.remove_stale();
                    if stale > 0 {
                        tracing::info!(stale, "dropped the ETA messages of a lost connection: the broker delivers them again");
                        change_prefetch(consumer.as_mut(), &mut prefetch, base_prefetch, held.len()).await;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Some(Ok(delivery)) => {
                    jobs.spawn(handle(runtime.clone(), delivery, held_tx.clone()));
                }
            }
        }
    }
    consumer.cancel().await;
    while let Some(finished) = jobs.join_next().await {
        if let Err(error) = finished {
            tracing::error!(%error, "a message handler ended abnormally");
        }
    }
    // Handlers that were deciding to hold a message have sent it by now.
    while let Ok(message) = held_rx.try_recv() {
        held.insert(message);
    }
    for message in held.drain() {
        let (request, acker) = message.into_parts();
        requeue(acker, &request).await;
    }
    consumer.flush().await;
    tracing::info!(hostname = %runtime.hostname, "worker stopped");
}

/// ETA messages stay unacknowledged while they wait, so the prefetch limit is raised by one for
/// each of them: other messages keep flowing (Celery's `qos.increment_eventually`).
/// Each change is a round trip to the broker, during which no delivery is taken: only a new
/// count is sent (past 65,535 held, the count stays "no limit").
async fn change_prefetch(
    consumer: &mut dyn Consumer,
    current: &mut u16,
    base_prefetch: u16,
    held: usize,
) {
    let wanted = prefetch_with_held(base_prefetch, held);
    if wanted == *current {
        return;
    }
    match consumer.set_prefetch(wanted).await {
        Ok(()) => *current = wanted,
        Err(error) => tracing::warn!(%error, "could not change the prefetch count"),
    }
}

/// The prefetch count with `held` ETA messages: past what AMQP's prefetch count can say, no
/// limit at all, as kombu does (clamping would stall a worker holding that many).
fn prefetch_with_held(base_prefetch: u16, held: usize) -> u16 {
    if base_prefetch == 0 {
        return 0;
    }
    u16::try_from(usize::from(base_prefetch) + held).unwrap_or(0)
}

/// A message held until its ETA: its request kept compact and its acker. The request is
/// MessagePack with fields by position (with names it takes ~250 bytes more a message), which
/// holds as long as the request's types write every field: the tests round-trip one request
/// with every field set and one with most empty.
struct Held {
    due: tokio::time::Instant,
    request: Box<[u8]>,
    acker: Box<dyn Acker>,
}

impl Held {
    fn new(due: tokio::time::Instant, request: &Request, acker: Box<dyn Acker>) -> Self {
        let request = rmp_serde::to_vec(request)
            .expect("a request always encodes as MessagePack")
            .into_boxed_slice();
        Held {
            due,
            request,
            acker,
        }
    }

    fn into_parts(self) -> (Request, Box<dyn Acker>) {
        let request = rmp_serde::from_slice(&self.request)
            .expect("a request encoded by Held::new always decodes");
        (request, self.acker)
    }
}

/// The held ETA messages in due order.
#[derive(Default)]
struct EtaSchedule {
    /// A heap rather than a tree: a few dozen bytes a message instead of over a hundred.
    messages: std::collections::BinaryHeap<Scheduled>,
    arrivals: u64,
}

/// A held message in the heap: the earliest due first, equal ETAs in arrival order.
struct Scheduled {
    arrival: u64,
    message: Held,
}

impl Scheduled {
    fn key(&self) -> (tokio::time::Instant, u64) {
        (self.message.due, self.arrival)
    }
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    /// Reversed: `BinaryHeap` is a max-heap and the earliest must come out first.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.key().cmp(&self.key())
    }
}

impl EtaSchedule {
    fn insert(&mut self, message: Held) {
        self.arrivals += 1;
        self.messages.push(Scheduled {
            arrival: self.arrivals,
            message,
        });
    }

    fn len(&self) -> usize {
        self.messages.len()
    }

    fn next_due(&self) -> Option<tokio::time::Instant> {
        self.messages.peek().map(|scheduled| scheduled.message.due)
    }

    fn take_due(&mut self, now: tokio::time::Instant) -> Vec<Held> {
        let mut due = Vec::new();
        while self.next_due().is_some_and(|next| next <= now) {
            due.extend(self.messages.pop().map(|scheduled| scheduled.message));
        }
        due
    }

    /// Drops the messages whose delivery the broker took back; returns how many.
    fn remove_stale(&mut self) -> usize {
        let before = self.messages.len();
        self.messages
            .retain(|scheduled| !scheduled.message.acker.is_stale());
        before - self.messages.len()
    }

    fn drain(&mut self) -> impl Iterator<Item = Held> {
        std::mem::take(&mut self.messages)
            .into_sorted_vec()
            .into_iter()
            .rev()
            .map(|scheduled| scheduled.message)
    }
}

/// Resolves once the worker is asked to stop.
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Why a message cannot be run, and the task id to store a FAILURE under when it has one.
struct Unusable {
    task_id: Option<String>,
    task: Option<String>,
    exception: ExceptionInfo,
    /// The chain steps after it that the body still names, each its id and reply queue: their
    /// failure is stored too (Celery runs the task and fails its chain when a callback does not
    /// read), or whoever waits on the chain would wait for ever.
    chain: Vec<(String, Option<String>)>,
}

/// What becomes of a delivery, decided without waiting on anything.
enum Accepted {
    /// Registered and due: run it when a slot is free.
    Run(RegisteredTask, TaskContext, Box<dyn Acker>),
    /// Handed to the ETA schedule.
    Held,
    /// Cannot run: rejected with its FAILURE stored.
    Unusable(Box<(Properties, Unusable)>, Box<dyn Acker>),
    /// Due later but the worker is stopping: back to its queue.
    Requeue(Box<Request>, Box<dyn Acker>),
}

async fn handle(runtime: Arc<Runtime>, delivery: Delivery, held_tx: mpsc::UnboundedSender<Held>) {
    // The decisions are made in a plain function and the rare paths are boxed, so that each
    // message's future (one allocation, moved once) holds little more than the running task.
    match accept(&runtime, delivery, &held_tx) {
        Accepted::Run(task, context, acker) => run_when_free(runtime, task, context, acker).await,
        Accepted::Held => {}
        Accepted::Unusable(rejected, acker) => {
            let (properties, unusable) = *rejected;
            Box::pin(reject_unusable(&runtime, &properties, unusable, acker)).await;
        }
        Accepted::Requeue(request, acker) => Box::pin(requeue(acker, &request)).await,
    }
}

/// Decodes a delivery and decides: run, hold until its ETA, or reject.
fn accept(
    runtime: &Runtime,
    delivery: Delivery,
    held_tx: &mpsc::UnboundedSender<Held>,
) -> Accepted {
    let Delivery {
        message,
        info,
        acker,
    } = delivery;
    // The properties move on (to the request, or to the rejection): not copied.
    let Message {
        headers: table,
        properties,
        body,
    } = message;
    let headers = match read_headers(table, &properties) {
        Ok(headers) => headers,
        Err(unusable) => return Accepted::Unusable(Box::new((properties, *unusable)), acker),
    };
    // Looked up by the header before the body is read, as Celery's consumer does: a message
    // for a task this worker does not have is NotRegistered whatever its body (a pickle body
    // meant for Python workers on a shared queue, say), not a content error.
    let Some(task) = runtime.app.task(&headers.task) else {
        let unusable = Unusable {
            exception: not_registered(&headers.task),
            task_id: Some(headers.id),
            task: Some(headers.task),
            chain: Vec::new(),
        };
        return Accepted::Unusable(Box::new((properties, unusable)), acker);
    };
    let body = match read_body(&runtime.app, &headers, &properties, &body) {
        Ok(read) => read,
        Err(unusable) => return Accepted::Unusable(Box::new((properties, *unusable)), acker),
    };
    let decoded = TaskMessage {
        headers,
        properties,
        body,
    };
    let request = request_of(runtime, decoded, info);
    tracing::info!(task = %request.task, id = %request.id, "Task received");

    // A message that has already expired is revoked now, not held until its ETA (Celery checks
    // `req.revoked()` on receipt): held, it would keep its task PENDING and the message
    // unacknowledged for nothing.
    let eta = match is_expired(&request) {
        true => None,
        false => request
            .eta
            .as_deref()
            .and_then(crate::protocol::parse_datetime),
    };
    if let Some(eta) = eta {
        let wait = (eta.with_timezone(&Utc) - Utc::now())
            .to_std()
            .unwrap_or_default();
        if !wait.is_zero() {
            let due = tokio::time::Instant::now() + wait;
            return match held_tx.send(Held::new(due, &request, acker)) {
                Ok(()) => Accepted::Held,
                // The worker is stopping: the message goes back to its queue.
                Err(refused) => Accepted::Requeue(Box::new(request), refused.0.into_parts().1),
            };
        }
    }
    // From here on the request lives in the task's context: shared, not copied.
    let context = TaskContext::new(request, Some(runtime.app.clone()), &task.options);
    Accepted::Run(task, context, acker)
}

/// Runs a held message once its ETA has come.
async fn resume_held(runtime: Arc<Runtime>, message: Held) {
    let (request, acker) = message.into_parts();
    match runtime.app.task(&request.task) {
        Some(task) => {
            let context = TaskContext::new(request, Some(runtime.app.clone()), &task.options);
            run_when_free(runtime, task, context, acker).await;
        }
        // Checked when the message came, and a registry only grows; but never loop on it.
        None => {
            let exception = not_registered(&request.task);
            Box::pin(reject_with_failure(&runtime, &request, exception, acker)).await;
        }
    }
}

/// Waits for a free slot and runs the task, unless it expired meanwhile.
async fn run_when_free(
    runtime: Arc<Runtime>,
    task: RegisteredTask,
    context: TaskContext,
    acker: Box<dyn Acker>,
) {
    let request = context.request();
    if is_expired(request) {
        return Box::pin(revoke_expired(&runtime, &task, request, acker)).await;
    }
    let mut shutdown = runtime.shutdown.clone();
    let slot = tokio::select! {
        slot = runtime.slots.clone().acquire_owned() => slot,
        _ = stopping(&mut shutdown) => return requeue(acker, request).await,
    };
    let Ok(_slot) = slot else {
        return requeue(acker, request).await;
    };
    // Waited for (its ETA, a slot) across a lost connection: the broker delivers it again, and
    // an `acks_late` task, not acknowledged before it runs, would run twice.
    if acker.is_stale() {
        tracing::info!(task = %request.task, id = %request.id, "not running a message of a lost connection: the broker delivers it again");
        return;
    }
    if is_expired(request) {
        return Box::pin(revoke_expired(&runtime, &task, request, acker)).await;
    }
    execute(&runtime, &task, &context, acker).await;
}

/// Whether a task's states are not stored: the message says (Celery 5.7's
/// `get_actual_ignore_result`: the caller's explicit choice wins), else the task, else the app.
fn ignores_result(app: &Celery, task: &RegisteredTask, request: &Request) -> bool {
    request.ignore_result.unwrap_or_else(|| {
        task.options
            .ignore_result
            .unwrap_or(app.config().task_ignore_result)
    })
}

fn is_expired(request: &Request) -> bool {
    request
        .expires
        .as_deref()
        .and_then(crate::protocol::parse_datetime)
        .is_some_and(|expires| expires.with_timezone(&Utc) <= Utc::now())
}

async fn requeue(acker: Box<dyn Acker>, request: &Request) {
    tracing::info!(task = %request.task, id = %request.id, "shutting down: message returned to its queue");
    if let Err(error) = acker.reject(true).await {
        tracing::warn!(%error, id = %request.id, "could not return the message; the broker will redeliver it");
    }
}

/// An expired task is not run: REVOKED is stored (unless its results are ignored, as Celery's
/// `Request.store_errors` says) and the message acknowledged.
async fn revoke_expired(
    runtime: &Runtime,
    task: &RegisteredTask,
    request: &Request,
    acker: Box<dyn Acker>,
) {
    tracing::info!(task = %request.task, id = %request.id, "Discarding revoked task: expired");
    if !ignores_result(&runtime.app, task, request) {
        let exception = ExceptionInfo::celery("TaskRevokedError", "expired");
        store(
            runtime,
            request,
            ResultMeta::exception(request.id.clone(), State::Revoked, &exception, None),
        )
        .await;
    }
    settle(acker.ack().await, &request.id);
}

async fn reject_unusable(
    runtime: &Runtime,
    properties: &Properties,
    unusable: Unusable,
    acker: Box<dyn Acker>,
) {
    tracing::error!(
        task = unusable.task.as_deref().unwrap_or("?"),
        id = unusable.task_id.as_deref().unwrap_or("?"),
        content_type = %properties.content_type,
        error = %unusable.exception,
        "rejecting message that cannot be run"
    );
    let own = unusable
        .task_id
        .iter()
        .map(|id| (id, properties.reply_to.as_deref()));
    let steps = unusable
        .chain
        .iter()
        .map(|(id, reply_to)| (id, reply_to.as_deref().or(properties.reply_to.as_deref())));
    for (task_id, reply_to) in own.chain(steps) {
        let meta =
            ResultMeta::exception(task_id.clone(), State::Failure, &unusable.exception, None);
        if let Err(error) = store_retrying(&runtime.app, meta, reply_to).await {
            tracing::error!(%error, id = %task_id, "could not store the FAILURE of a rejected message");
        }
    }
    settle(
        acker.reject(false).await,
        unusable.task_id.as_deref().unwrap_or("?"),
    );
}

/// Rejects (dead-letters) a decoded message that cannot run, with its FAILURE stored.
async fn reject_with_failure(
    runtime: &Runtime,
    request: &Request,
    exception: ExceptionInfo,
    acker: Box<dyn Acker>,
) {
    store(
        runtime,
        request,
        ResultMeta::exception(request.id.clone(), State::Failure, &exception, None),
    )
    .await;
    settle(acker.reject(false).await, &request.id);
}

fn settle(result: Result<(), crate::broker::BrokerError>, task_id: &str) {
    if let Err(error) = result {
        tracing::warn!(%error, id = %task_id, "could not acknowledge the message; the broker may redeliver it");
    }
}

/// Decodes a received message: headers, `accept_content`, size limit, decompression, body.
pub fn decode(app: &Celery, message: &Message) -> Result<TaskMessage, Error> {
    let (headers, body, properties) = decode_message(app, message.clone()).map_err(|rejected| {
        let (_, unusable) = *rejected;
        Error::Decode {
            what: format!(
                "message {}",
                unusable.task_id.as_deref().unwrap_or("without an id")
            ),
            reason: unusable.exception.to_string(),
        }
    })?;
    Ok(TaskMessage {
        headers,
        properties,
        body,
    })
}

/// Decodes a message's headers and body, its header strings moved rather than copied; the
/// properties come back either way, to move on to the request or the rejection.
fn decode_message(
    app: &Celery,
    message: Message,
) -> Result<(TaskHeaders, Body, Properties), Box<(Properties, Unusable)>> {
    let Message {
        headers: table,
        properties,
        body,
    } = message;
    let read = read_headers(table, &properties).and_then(|headers| {
        let body = read_body(app, &headers, &properties, &body)?;
        Ok((headers, body))
    });
    match read {
        Ok((headers, body)) => Ok((headers, body, properties)),
        Err(unusable) => Err(Box::new((properties, *unusable))),
    }
}

/// A message's headers, their strings moved out of the table.
/// (The error path is boxed: it is rare, and the common one stays small.)
fn read_headers(table: Headers, properties: &Properties) -> Result<TaskHeaders, Box<Unusable>> {
    TaskHeaders::from_owned_table(table).map_err(|(error, table)| {
        // Whatever can be read of the id and name, for the FAILURE and the log.
        let header = |name: &str| {
            let value = crate::protocol::find_header(&table, name)?;
            value.as_str().map(str::to_owned)
        };
        Box::new(Unusable {
            task_id: header("id").or_else(|| properties.correlation_id.clone()),
            task: header("task"),
            exception: ExceptionInfo::new("DecodeError", "kombu.exceptions", error.to_string()),
            chain: Vec::new(),
        })
    })
}

/// A message's body (`accept_content`, size limit, decompression).
fn read_body(
    app: &Celery,
    headers: &TaskHeaders,
    properties: &Properties,
    body: &[u8],
) -> Result<Body, Box<Unusable>> {
    match decode_body(app, headers, properties, body) {
        Ok(decoded) => Ok(decoded),
        Err(undecodable) => Err(Box::new(Unusable {
            task_id: Some(headers.id.clone()),
            task: Some(headers.task.clone()),
            exception: ExceptionInfo::new(
                undecodable.exc_type,
                "kombu.exceptions",
                undecodable.text,
            ),
            chain: undecodable.chain,
        })),
    }
}

/// Why a body cannot be used: the exception's type and text, and the chain steps it names.
struct Undecodable {
    exc_type: &'static str,
    text: String,
    chain: Vec<(String, Option<String>)>,
}

impl From<(&'static str, String)> for Undecodable {
    fn from((exc_type, text): (&'static str, String)) -> Self {
        Undecodable {
            exc_type,
            text,
            chain: Vec::new(),
        }
    }
}

/// Checks a message's content type against `accept_content` and its size against the limit,
/// decompresses and decodes its body.
fn decode_body(
    app: &Celery,
    headers: &TaskHeaders,
    properties: &Properties,
    body: &[u8],
) -> Result<Body, Undecodable> {
    let config = app.config();
    let content_type = properties.content_type.as_str();
    let serializer = app
        .serializers()
        .get(content_type)
        .map_err(|e| ("ContentDisallowed", e.to_string()))?;
    if !app
        .serializers()
        .accepts(&config.accept_content, serializer.as_ref())
    {
        return Err(Undecodable::from((
            "ContentDisallowed",
            Error::ContentDisallowed(content_type.to_owned()).to_string(),
        )));
    }
    let limit = config.message_max_body_size;
    let too_large = || ("DecodeError", Error::BodyTooLarge { limit }.to_string());
    let decompressed;
    let bytes = match &headers.compression {
        None if body.len() > limit => return Err(too_large().into()),
        None => body,
        Some(name) => {
            let scheme = app
                .compressions()
                .get(name)
                .map_err(|e| ("DecodeError", e.to_string()))?;
            decompressed = scheme.decompress(body, limit).map_err(|e| match e {
                DecompressError::TooLarge => too_large(),
                DecompressError::Corrupt(reason) => (
                    "DecodeError",
                    format!("corrupt {} body: {reason}", scheme.name()),
                ),
            })?;
            &decompressed
        }
    };
    if let Some(decoded) = serializer.decode_body(bytes) {
        return Ok(decoded);
    }
    let value = serializer.decode(bytes).map_err(|e| {
        (
            "DecodeError",
            format!("body is not valid {}: {e}", serializer.name()),
        )
    })?;
    let chain = chain_step_ids(&value);
    Body::from_value(value).map_err(|e| Undecodable {
        exc_type: "DecodeError",
        text: e.to_string(),
        chain,
    })
}

/// The ids (and reply queues) of the chain steps a decoded body names in its embed, read
/// leniently: for a body whose embed does not read as a whole.
fn chain_step_ids(body: &Value) -> Vec<(String, Option<String>)> {
    let steps = body
        .get(2)
        .and_then(|embed| embed.get("chain"))
        .and_then(Value::as_array);
    steps
        .into_iter()
        .flatten()
        .filter_map(|step| {
            let options = step.get("options")?;
            let id = options.get("task_id")?.as_str()?.to_owned();
            let reply_to = options
                .get("reply_to")
                .and_then(Value::as_str)
                .map(str::to_owned);
            Some((id, reply_to))
        })
        .collect()
}

fn request_of(runtime: &Runtime, message: TaskMessage, delivery_info: DeliveryInfo) -> Request {
    let TaskMessage {
        headers,
        properties,
        body,
    } = message;
    let embed = body.embed;
    if embed.chord.as_ref().is_some_and(|chord| !chord.is_null()) {
        // Only a result backend that counts a chord's parts can run its body; Celery's rpc://
        // refuses chords, so a client on such a backend is talking to the wrong workers.
        tracing::warn!(id = %headers.id, task = %headers.task, "the message is part of a chord; this worker does not run chord bodies");
    }
    Request {
        id: headers.id,
        task: headers.task,
        args: body.args,
        kwargs: body.kwargs,
        retries: headers.retries,
        eta: headers.eta.map(format_datetime),
        expires: headers.expires.map(format_datetime),
        root_id: headers.root_id,
        parent_id: headers.parent_id,
        group: headers.group,
        group_index: headers.group_index,
        origin: headers.origin,
        reply_to: properties.reply_to,
        correlation_id: properties.correlation_id,
        delivery_info,
        hostname: Some(runtime.hostname.clone()),
        ignore_result: headers.ignore_result,
        timelimit: headers.timelimit,
        callbacks: embed.callbacks.unwrap_or_default(),
        errbacks: embed.errbacks.unwrap_or_default(),
        chain: embed.chain.unwrap_or_default(),
        shadow: headers.shadow,
        // As Celery's `_get_custom_headers`: what is not Celery's own.
        headers: headers
            .extra
            .iter()
            .filter(|(name, _)| !crate::protocol::is_reserved_header(name))
            .map(|(name, value)| (name.to_string(), Value::from(value)))
            .collect(),
        is_eager: false,
    }
}

/// Stores a state, adding the request's group/parent and the `result_extended` fields.
async fn store(runtime: &Runtime, request: &Request, mut meta: ResultMeta) {
    meta.describe(request, runtime.app.config().result_extended);
    if let Err(error) = store_retrying(&runtime.app, meta, request.reply_to.as_deref()).await {
        tracing::error!(%error, id = %request.id, "could not store the task's state");
    }
}

/// Stores a state, retrying while the backend cannot be reached, as Celery's rpc backend
/// publishes results (`max_retries` 20, the first retry at once, then one a second): a result
/// is not lost to a broker outage shorter than that. A refusal is not retried: the same result
/// would be refused again, and the task's slot would wait 20 s for nothing.
async fn store_retrying(
    app: &Celery,
    meta: ResultMeta,
    reply_to: Option<&str>,
) -> Result<(), Error> {
    const RETRIES: u32 = 20;
    let mut retries = 0;
    loop {
        match app.backend().store(&meta, reply_to).await {
            Err(
                error @ Error::Backend {
                    recoverable: true, ..
                },
            ) if retries < RETRIES => {
                let wait = Duration::from_secs(u64::from(retries > 0));
                tracing::warn!(%error, id = %meta.task_id, retry = retries + 1, "could not store the task's state, retrying");
                tokio::time::sleep(wait).await;
                retries += 1;
            }
            done => return done,
        }
    }
}

/// Turns a panic's payload into the task's failure.
pub(crate) fn panic_error(payload: Box<dyn Any + Send>) -> TaskError {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic with a non-string payload".to_owned());
    TaskError::from_exception(ExceptionInfo::new("Panic", "rust", message))
}

async fn execute(
    runtime: &Runtime,
    task: &RegisteredTask,
    context: &TaskContext,
    acker: Box<dyn Acker>,
) {
    let app = &runtime.app;
    let config = app.config();
    let acks_late = task.options.acks_late.unwrap_or(config.task_acks_late);
    let request = context.request();
    // The task takes a copy of the arguments: a retry sends the originals.
    let mut invocation = Invocation::new(
        context.clone(),
        request.args.clone(),
        request.kwargs.clone(),
    );
    // The arguments are read before the message is acknowledged: a message whose arguments do
    // not fit the task cannot run anywhere, so it is rejected (dead-lettered) like any other
    // message that cannot be run, with its FAILURE stored.
    let prepared = if task.is_errback {
        Box::pin(async {
            invocation.errback = errback_input_from_message(app, &mut invocation).await;
            prepare(task, invocation)
        })
        .await
    } else {
        prepare(task, invocation)
    };
    let run = match prepared {
        Ok(run) => run,
        Err(error) => {
            let exception = error
                .exception()
                .cloned()
                .unwrap_or_else(|| ExceptionInfo::builtin("TypeError", error.to_string()));
            tracing::error!(task = %request.task, id = %request.id, error = %exception, "rejecting message whose arguments do not fit the task");
            // In Celery the TypeError is raised in the task's body: it is stored, and the chain
            // after it fails, unless results are ignored; its errbacks run either way.
            let ignore_result = ignores_result(&runtime.app, task, request);
            let failure = Failure::new(exception, None, Vec::new());
            Box::pin(fail(runtime, request, failure, ignore_result)).await;
            return settle(acker.reject(false).await, &request.id);
        }
    };
    let mut acker = Some(acker);
    if !acks_late {
        if let Some(acker) = acker.take() {
            // Acknowledged at start, a task runs at most once: when the acknowledgement fails
            // (the connection is lost), the broker delivers the message again, so it must not
            // run here too.
            if let Err(error) = acker.ack().await {
                tracing::warn!(%error, task = %request.task, id = %request.id, "could not acknowledge the message, not running it: the broker delivers it again");
                return;
            }
        }
    }
    let ignore_result = ignores_result(&runtime.app, task, request);
    if !ignore_result
        && task
            .options
            .track_started
            .unwrap_or(config.task_track_started)
    {
        // What Celery's worker stores with STARTED (`AsyncResult.info` reads it).
        let who = serde_json::json!({"pid": std::process::id(), "hostname": runtime.hostname});
        let started = ResultMeta::new(request.id.clone(), State::Started, who);
        Box::pin(store(runtime, request, started)).await;
    }

    let started = Instant::now();
    let hard_limit = time_limit([
        request.timelimit.0,
        task.options.time_limit,
        config.task_time_limit,
    ]);
    let outcome = run_task(run, hard_limit, context.clone()).await;
    let runtime_s = started.elapsed().as_secs_f64();

    let nothing_to_send = ignore_result && request.callbacks.is_empty() && request.chain.is_empty();
    let settlement = match outcome {
        // The common case of a task whose result nobody keeps: nothing to wait for.
        Ok(value) if nothing_to_send => {
            tracing::info!(task = %request.task, id = %request.id, runtime_s, result = %value, "Task succeeded");
            Settlement::Ack
        }
        outcome => {
            let ran = Ran {
                outcome,
                runtime_s,
                children: context.take_children(),
            };
            Box::pin(report(runtime, task, request, ran, ignore_result)).await
        }
    };
    if let Some(acker) = acker {
        let settled = match settlement {
            Settlement::Ack => acker.ack().await,
            Settlement::Reject => acker.reject(false).await,
        };
        settle(settled, &request.id);
    }
}

/// What becomes of a message whose acknowledgement waited for its task (`acks_late`).
enum Settlement {
    Ack,
    /// Rejected without requeueing (dead-lettered where the queue has a dead-letter exchange).
    Reject,
}

/// Sends what follows a task's run: callbacks and result, or the retry, or the failure and
/// errbacks; and says what becomes of a message not acknowledged yet.
async fn report(
    runtime: &Runtime,
    task: &RegisteredTask,
    request: &Request,
    ran: Ran,
    ignore_result: bool,
) -> Settlement {
    let app = &runtime.app;
    let Ran {
        outcome,
        runtime_s,
        mut children,
    } = ran;
    match outcome.map_err(|error| *error.kind) {
        Ok(value) => {
            tracing::info!(task = %request.task, id = %request.id, runtime_s, result = %value, "Task succeeded");
            // Callbacks go first, as in Celery, so that the stored result lists them as children.
            if !(request.callbacks.is_empty() && request.chain.is_empty()) {
                let sent = Box::pin(send_callbacks(runtime, request, &value, &mut children));
                // As in Celery, a task whose callbacks or next step cannot be sent fails:
                // stored as a success, its chain would wait for ever. Those sent before are
                // still its children.
                if let Err(error) = sent.await {
                    let exception = follow_up_exception(&error);
                    tracing::error!(task = %request.task, id = %request.id, error = %exception, "Task failed: its callbacks could not be sent");
                    let failure = Failure::new(exception, None, children);
                    Box::pin(fail(runtime, request, failure, ignore_result)).await;
                    return Settlement::Ack;
                }
            }
            if !ignore_result {
                let mut meta = ResultMeta::new(request.id.clone(), State::Success, value);
                meta.children = children;
                Box::pin(store(runtime, request, meta)).await;
            }
            Settlement::Ack
        }
        Err(TaskErrorKind::Retry(retry)) => {
            tracing::info!(task = %request.task, id = %request.id, countdown = retry.countdown, "Task retry");
            match Box::pin(resend_for_retry(app, task, request, &retry)).await {
                // As Celery stores RETRY only when errors are stored.
                Ok(()) if ignore_result => Settlement::Ack,
                Ok(()) => {
                    // Celery's `mark_as_retry` stores the exception the retry was given, and
                    // null without one (`AsyncResult.info` is then None, not a made-up error).
                    let mut retrying = match &retry.exc {
                        Some(exception) => {
                            ResultMeta::exception(request.id.clone(), State::Retry, exception, None)
                        }
                        None => ResultMeta::new(request.id.clone(), State::Retry, Value::Null),
                    };
                    // As Celery's `mark_as_retry` stores through `store_result(request=…)`:
                    // the tasks this run sent are its children, and so is the retry, which
                    // Celery's `Task.retry` sends from the task's body like any other.
                    retrying.children = children;
                    retrying.children.push(child_entry(&request.id));
                    Box::pin(store(runtime, request, retrying)).await;
                    Settlement::Ack
                }
                // Celery's `Task.retry` raises `Reject(exc, requeue=False)` when the retry
                // cannot be sent: the task fails with that, and a message not acknowledged yet
                // is rejected, not acknowledged, so that a dead-letter exchange keeps it.
                Err(error) => {
                    tracing::error!(%error, id = %request.id, "could not send the retry");
                    let failure = Failure::new(unsent_retry(&error), None, children);
                    Box::pin(fail(runtime, request, failure, ignore_result)).await;
                    Settlement::Reject
                }
            }
        }
        Err(TaskErrorKind::Exception { info, traceback }) => {
            tracing::error!(task = %request.task, id = %request.id, runtime_s, exception = %info, "Task raised an exception");
            let failure = Failure::new(info, traceback, children);
            Box::pin(fail(runtime, request, failure, ignore_result)).await;
            Settlement::Ack
        }
    }
}

/// Celery's `Reject(exc, requeue=False)` for a retry that could not be sent: its arguments as
/// Celery stores them, the exception by its repr (`OperationalError('…')`; an exception is not
/// JSON) and the `requeue` flag.
fn unsent_retry(error: &Error) -> ExceptionInfo {
    let cause = follow_up_exception(error);
    let mut reason = format!("{}(", cause.exc_type);
    crate::protocol::python_repr(&Value::String(cause.message()), &mut reason);
    reason.push(')');
    ExceptionInfo {
        exc_type: "Reject".to_owned(),
        exc_message: Value::Array(vec![Value::String(reason), Value::Bool(false)]),
        exc_module: Some("celery.exceptions".to_owned()),
    }
}

/// Reads a task's arguments; a panic there is the task's failure, not the worker's.
fn prepare(task: &RegisteredTask, invocation: Invocation) -> Result<TaskFuture, TaskError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (task.run)(invocation)))
        .unwrap_or_else(|payload| Err(panic_error(payload)))
}

/// The time limit that applies: the first set of `candidates` (the message's, the task's, the
/// app's), as Celery's `time_limit or task.time_limit` reads them: 0 is none.
fn time_limit<const N: usize>(candidates: [Option<f64>; N]) -> Option<f64> {
    candidates
        .into_iter()
        .flatten()
        .find(|&seconds| seconds != 0.0)
}

async fn run_task(
    run: TaskFuture,
    hard_limit: Option<f64>,
    running: TaskContext,
) -> Result<Value, TaskError> {
    // A panic becomes the task's failure instead of taking the worker down; the task runs in
    // the message's own tokio task (a task of its own would cost a spawn per message).
    let guarded = running.run_as(std::panic::AssertUnwindSafe(run).catch_unwind());
    let outcome = match hard_limit {
        None => guarded.await,
        Some(seconds) => {
            // A limit from a message may be anything: a negative one has passed already (as
            // Python's timer would find it), one too large for a Duration never comes.
            let limit = Duration::try_from_secs_f64(seconds).unwrap_or(if seconds > 0.0 {
                Duration::MAX
            } else {
                Duration::ZERO
            });
            match tokio::time::timeout(limit, guarded).await {
                Ok(outcome) => outcome,
                // Dropping the task's future cancels it.
                Err(_) => return Err(TaskError::from_exception(time_limit_exceeded(seconds))),
            }
        }
    };
    outcome.unwrap_or_else(|payload| Err(panic_error(payload)))
}

/// Celery's `TimeLimitExceeded(timeout)` (billiard's): the limit itself is its argument, a number
/// a Python client reads back from `exc.args[0]`; whole seconds as Python's int, as a limit set
/// in whole seconds is.
fn time_limit_exceeded(seconds: f64) -> ExceptionInfo {
    let limit = match seconds.fract() == 0.0 && seconds.abs() < 9.0e15 {
        true => Value::from(seconds as i64),
        false => Value::from(seconds),
    };
    ExceptionInfo {
        exc_type: "TimeLimitExceeded".to_owned(),
        exc_message: Value::Array(vec![limit]),
        exc_module: Some("billiard.exceptions".to_owned()),
    }
}

/// Celery's `NotRegistered(name)`: its one argument is the task's name.
fn not_registered(name: &str) -> ExceptionInfo {
    ExceptionInfo::celery("NotRegistered", name)
}

/// An errback that came as a message has args `[failed_task_id, …]`; its exception is looked up
/// in the result backend, where the failure was stored before the errback was sent.
async fn errback_input_from_message(
    app: &Celery,
    invocation: &mut Invocation,
) -> Option<crate::task::ErrbackInput> {
    let Some(Value::String(failed_id)) = invocation.args.first().cloned() else {
        return None;
    };
    invocation.args.remove(0);
    let stored = app.backend().get(&failed_id).await.ok().flatten();
    let exception = stored
        .as_ref()
        .and_then(ResultMeta::exception_info)
        .unwrap_or_else(|| {
            ExceptionInfo::celery("TaskError", "the failed task's exception is not stored")
        });
    let traceback = stored.and_then(|meta| meta.traceback);
    Some((
        Request {
            id: failed_id,
            ..Request::default()
        },
        exception,
        traceback,
    ))
}

/// How a task's run ended: its outcome, and the tasks sent from its body.
struct Ran {
    outcome: Result<Value, TaskError>,
    runtime_s: f64,
    /// As its result lists them (`[[id, null], null]` each).
    children: Vec<Value>,
}

/// A task's failure, and the tasks it sent before it failed.
struct Failure {
    exception: ExceptionInfo,
    traceback: Option<String>,
    children: Vec<Value>,
}

impl Failure {
    fn new(exception: ExceptionInfo, traceback: Option<String>, children: Vec<Value>) -> Self {
        Failure {
            exception,
            traceback,
            children,
        }
    }
}

async fn fail(runtime: &Runtime, request: &Request, failure: Failure, ignore_result: bool) {
    let Failure {
        exception,
        traceback,
        children,
    } = failure;
    if !ignore_result {
        let mut meta = ResultMeta::exception(
            request.id.clone(),
            State::Failure,
            &exception,
            traceback.clone(),
        );
        meta.children = children;
        store(runtime, request, meta).await;
        fail_chain(runtime, request, &exception, traceback.clone()).await;
    }
    send_errbacks(runtime, request, &exception, traceback).await;
}

/// Stores the failure for every step of the chain after a failed task as well (Celery's
/// `_fail_chain`): whoever waits on the chain, which is the last step's result, learns of the
/// failure instead of waiting for ever. Each step was given its id and `reply_to` when the chain
/// was sent; a step without an id (a nested canvas) is skipped, as in Celery.
async fn fail_chain(
    runtime: &Runtime,
    request: &Request,
    exception: &ExceptionInfo,
    traceback: Option<String>,
) {
    for step in &request.chain {
        let Some(step_id) = step.options.task_id.clone() else {
            continue;
        };
        let mut meta = ResultMeta::exception(step_id, State::Failure, exception, traceback.clone());
        meta.group_id = step.options.group_id.clone();
        let reply_to = step
            .options
            .reply_to
            .as_deref()
            .or(request.reply_to.as_deref());
        if let Err(error) = store_retrying(&runtime.app, meta, reply_to).await {
            tracing::error!(%error, id = %request.id, step = %step.task, "could not store the failure of a chain step");
        }
    }
}

async fn resend_for_retry(
    app: &Celery,
    task: &RegisteredTask,
    request: &Request,
    retry: &crate::task::RetryRequest,
) -> Result<(), Error> {
    let eta = match retry.eta {
        Some(eta) => eta,
        None => crate::calling::seconds_after(Utc::now(), retry.countdown, "retry countdown")?,
    };
    let mut signature = RawSignature::new(request.task.clone());
    signature.args = request.args.clone();
    signature.kwargs = request.kwargs.clone();
    let options = &mut signature.options;
    options.task_id = Some(request.id.clone());
    options.eta = Some(eta);
    options.expires = request
        .expires
        .as_deref()
        .and_then(crate::protocol::parse_datetime)
        .map(crate::calling::Expires::At);
    options.queue = Some(request.delivery_info.routing_key.clone())
        .filter(|q| !q.is_empty() && request.delivery_info.exchange.is_empty());
    options.exchange = Some(request.delivery_info.exchange.clone()).filter(|e| !e.is_empty());
    if options.exchange.is_some() {
        options.routing_key = Some(request.delivery_info.routing_key.clone());
    }
    options.priority = request.delivery_info.priority;
    options.link = request.callbacks.clone();
    options.link_error = request.errbacks.clone();
    options.chain = request.chain.clone();
    options.root_id = request.root_id.clone();
    // As Celery's `signature_from_request`: the request's parent, else (sent from within the
    // task) the task itself.
    options.parent_id = Some(request.parent_id.as_ref().unwrap_or(&request.id).clone());
    // The call's own time limits and result choice go with it (`as_execution_options`).
    (options.time_limit, options.soft_time_limit) = request.timelimit;
    options.ignore_result = Some(ignores_result(app, task, request));
    options.group_id = request.group.clone();
    options.group_index = request.group_index;
    options.shadow = request.shadow.clone();
    // Without RabbitMQ's dead-lettering headers, as Celery's `as_execution_options`.
    options.headers = request.headers.clone();
    options
        .headers
        .retain(|name, _| !crate::protocol::X_DEATH_HEADERS.contains(&name.as_str()));
    options.reply_to = request.reply_to.clone();
    options.retries = Some(request.retries.saturating_add(1));
    app.producer()
        .send(signature, &task.options)
        .await
        .map(drop)
}

/// Sends a follow-up task (a callback, the next chain step or an errback message) and returns
/// its id.
async fn send_follow_up(
    app: &Celery,
    mut signature: RawSignature,
    request: &Request,
    kind: FollowUp,
) -> Result<String, Error> {
    signature.options.parent_id = Some(request.id.clone());
    signature.options.root_id = Some(request.root_or_own_id().to_owned());
    let inherits = kind == FollowUp::Callback && app.config().task_inherit_parent_priority;
    if inherits && request.delivery_info.priority.is_some() {
        signature.options.priority = request.delivery_info.priority;
    }
    let name = signature.task.clone();
    app.producer()
        .send(signature, &TaskOptions::UNKNOWN)
        .await
        .map(|sent| sent.id)
        .inspect_err(|error| {
            tracing::error!(%error, parent = %request.id, task = %name, "could not send a follow-up task");
        })
}

/// What a follow-up task is to the task it follows. With `task_inherit_parent_priority`,
/// callbacks and chain steps take its priority (Celery's trace sends them with it); errbacks do
/// not (`_call_task_errbacks` sends them with parent and root only).
#[derive(Debug, Clone, Copy, PartialEq)]
enum FollowUp {
    Callback,
    Errback,
}

/// Sends the callbacks, then the next chain step, with the result, adding their ids to
/// `children`. As Celery's trace (`_dispatch_callbacks_and_chain`), the first that cannot be
/// sent stops the rest: the task then fails and its chain with it, so a step sent anyway would
/// run under an id already reported as failed.
async fn send_callbacks(
    runtime: &Runtime,
    request: &Request,
    result: &Value,
    children: &mut Vec<Value>,
) -> Result<(), Error> {
    let mut sendings = callback_follow_ups(&request.callbacks, result)?;
    let mut chain = request.chain.clone();
    if let Some(mut next) = chain.pop() {
        if canvas_kind(&next).is_none() {
            // Celery sends the next step with `apply_async(chain=rest)`, which replaces a chain
            // of its own options.
            next.options.chain.clear();
        }
        let mut step = sending(&next, result)?;
        step.signatures = carry(step.signatures, chain)?;
        sendings.push(step);
    }
    for sending in sendings {
        let mut ids: Vec<String> = Vec::with_capacity(sending.signatures.len());
        for signature in sending.signatures {
            let sent = send_follow_up(&runtime.app, signature, request, FollowUp::Callback);
            let id = match sent.await {
                Ok(id) => id,
                Err(error) => {
                    children.extend(ids.iter().map(|id| child_entry(id)));
                    return Err(error);
                }
            };
            ids.push(id);
        }
        match sending.group_id {
            // As Celery's `add_trail` of a `GroupResult`: one entry for the group.
            Some(group_id) => children.push(group_child_entry(&group_id, &ids)),
            None => children.extend(ids.iter().map(|id| child_entry(id))),
        }
    }
    Ok(())
}

/// What a callback or chain step becomes when sent: tasks, or a group of them, which the
/// parent's result lists as one child (a `GroupResult`).
#[derive(Debug)]
struct Sending {
    group_id: Option<String>,
    signatures: Vec<RawSignature>,
}

fn sending(signature: &RawSignature, result: &Value) -> Result<Sending, Error> {
    if canvas_kind(signature) != Some("group") {
        let signatures = follow_ups(signature, result)?;
        return Ok(Sending {
            group_id: None,
            signatures,
        });
    }
    let (group_id, signatures) = group_sent(signature, result)?;
    Ok(Sending {
        group_id: Some(group_id),
        signatures,
    })
}

/// What Celery's trace sends for the link callbacks: one callback as it is; more than one,
/// each group callback on its own, then the others as one group (each keeping a group id of its
/// own, as Celery's `freeze` keeps it).
fn callback_follow_ups(callbacks: &[RawSignature], result: &Value) -> Result<Vec<Sending>, Error> {
    if let [only] = callbacks {
        return Ok(vec![sending(only, result)?]);
    }
    let (groups, others): (Vec<RawSignature>, Vec<RawSignature>) = callbacks
        .iter()
        .cloned()
        .partition(|callback| canvas_kind(callback) == Some("group"));
    let mut sendings = groups
        .iter()
        .map(|group| sending(group, result))
        .collect::<Result<Vec<_>, _>>()?;
    if !others.is_empty() {
        let group_id = uuid::Uuid::new_v4().to_string();
        let mut signatures = Vec::new();
        let defaults = ApplyOptions::default();
        group_follow_ups(others, &group_id, &defaults, result, &mut signatures)?;
        sendings.push(Sending {
            group_id: Some(group_id),
            signatures,
        });
    }
    Ok(sendings)
}

/// The kind of canvas a signature is (`group`, `chain`, …), or none for a task. Celery's
/// `Signature.from_dict` reads an empty `subtask_type` as none too.
fn canvas_kind(signature: &RawSignature) -> Option<&str> {
    signature
        .subtask_type
        .as_deref()
        .filter(|kind| !kind.is_empty())
}

/// The signatures a group or chain holds in its `kwargs.tasks`.
fn canvas_members(signature: &RawSignature, kind: &str) -> Result<Vec<RawSignature>, Error> {
    let tasks = signature
        .kwargs
        .get("tasks")
        .cloned()
        .unwrap_or(Value::Null);
    serde_json::from_value(tasks).map_err(|error| Error::Encode {
        what: format!("the {kind} {}", signature.task),
        reason: format!("its kwargs.tasks are not a list of signatures: {error}"),
    })
}

/// What to send for a callback or the next chain step, applied to its parent's `result`: the
/// signature with the result as first argument (unless immutable); for a group, each of its
/// members so; for a chain, its first step so, carrying the others. That is what Celery's
/// `signature(d).apply_async((result,))` sends for each kind. A group's or chain's own
/// `immutable` is not read, as Celery's `from_dict` drops it: each member says for itself.
fn follow_ups(signature: &RawSignature, result: &Value) -> Result<Vec<RawSignature>, Error> {
    match canvas_kind(signature) {
        None => {
            let mut plain = signature.clone();
            plain.args = signature.args_with_parent_result(result);
            Ok(vec![plain])
        }
        Some("group") => Ok(group_sent(signature, result)?.1),
        Some("chain") => {
            let mut steps = canvas_members(signature, "chain")?;
            if steps.is_empty() {
                return Ok(Vec::new());
            }
            apply_chain_options(&mut steps, &signature.options);
            // Last step first, as a message carries its chain.
            let rest: Vec<RawSignature> = steps.drain(1..).rev().collect();
            carry(follow_ups(&steps[0], result)?, rest)
        }
        Some(other) => Err(unsupported_canvas(other)),
    }
}

/// A group's id and its members as sent. Its id is Celery's `_freeze_gid`: the one it was
/// frozen with, a new one when it was never frozen.
fn group_sent(
    signature: &RawSignature,
    result: &Value,
) -> Result<(String, Vec<RawSignature>), Error> {
    let members = canvas_members(signature, "group")?;
    let group_id = signature
        .options
        .task_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let mut sent = Vec::new();
    let shared = canvas_wide(&signature.options);
    group_follow_ups(members, &group_id, &shared, result, &mut sent)?;
    Ok((group_id, sent))
}

/// The members of a group as Celery's `group.apply_async` sends them: the group's options over
/// each member's own, except a group id the member has; each member's place in its group; a
/// group within the group unrolled into it (`_prepared`), its own options dropped.
fn group_follow_ups(
    members: Vec<RawSignature>,
    group_id: &str,
    shared: &ApplyOptions,
    result: &Value,
    sent: &mut Vec<RawSignature>,
) -> Result<(), Error> {
    for (index, mut member) in members.into_iter().enumerate() {
        if canvas_kind(&member) == Some("group") {
            let inner = canvas_members(&member, "group")?;
            group_follow_ups(inner, group_id, shared, result, sent)?;
            continue;
        }
        let own_group = member.options.group_id.take();
        member.options.merge(shared.clone());
        member.options.group_id = Some(own_group.unwrap_or_else(|| group_id.to_owned()));
        member.options.group_index = i64::try_from(index).ok();
        sent.extend(follow_ups(&member, result)?);
    }
    Ok(())
}

/// A group's or chain's options that its members take over: all but what belongs to the canvas
/// itself (its id, its place in a group, its callbacks) or is set per message when sent.
fn canvas_wide(options: &ApplyOptions) -> ApplyOptions {
    ApplyOptions {
        task_id: None,
        group_id: None,
        group_index: None,
        link: Vec::new(),
        link_error: Vec::new(),
        chain: Vec::new(),
        parent_id: None,
        root_id: None,
        ..options.clone()
    }
}

/// A chain's options on its steps (`steps` first to last), as Celery's `_chain.run` applies
/// them: its errbacks on every step, its id, group and callbacks on the last step (the chain's
/// result is the last step's), the rest on the first step, which is sent.
fn apply_chain_options(steps: &mut [RawSignature], options: &ApplyOptions) {
    for step in steps.iter_mut() {
        for errback in &options.link_error {
            if !step.options.link_error.contains(errback) {
                step.options.link_error.push(errback.clone());
            }
        }
    }
    if let Some(last) = steps.last_mut() {
        let own = &mut last.options;
        if own.task_id.is_none() {
            own.task_id.clone_from(&options.task_id);
        }
        if own.group_id.is_none() {
            own.group_id.clone_from(&options.group_id);
        }
        if options.group_index.is_some() {
            own.group_index = options.group_index;
        }
        own.link.extend(options.link.iter().cloned());
    }
    if let Some(first) = steps.first_mut() {
        first.options.merge(canvas_wide(options));
    }
}

/// Gives the steps that come `later` (last first) to the one step a signature became, to run
/// after the step's own chain. A group became several steps: steps after it would wait for all
/// of its members, which is a chord.
fn carry(
    mut steps: Vec<RawSignature>,
    later: Vec<RawSignature>,
) -> Result<Vec<RawSignature>, Error> {
    match steps.as_mut_slice() {
        [step] => {
            let own = std::mem::replace(&mut step.options.chain, later);
            step.options.chain.extend(own);
            Ok(steps)
        }
        _ if later.is_empty() => Ok(steps),
        _ => Err(unsupported_canvas(
            "a group followed by more steps (a chord)",
        )),
    }
}

/// A canvas this worker cannot apply as a callback: chords need a result backend that counts
/// their parts, which rpc:// is not (Celery raises `NotImplementedError` for them there).
fn unsupported_canvas(what: &str) -> Error {
    Error::Encode {
        what: format!("a callback that is {what}"),
        reason: "this worker applies tasks, groups and chains as callbacks; chords and other \
                 canvases need a result backend that supports them"
            .to_owned(),
    }
}

/// The exception of a task whose callbacks could not be sent, as kombu names it.
fn follow_up_exception(error: &Error) -> ExceptionInfo {
    let name = match error {
        Error::Encode { .. } | Error::UnknownCodec { .. } => "EncodeError",
        _ => "OperationalError",
    };
    ExceptionInfo::new(name, "kombu.exceptions", error.to_string())
}

async fn send_errbacks(
    runtime: &Runtime,
    request: &Request,
    exception: &ExceptionInfo,
    traceback: Option<String>,
) {
    let app = &runtime.app;
    let mut as_messages = Vec::new();
    for errback in &request.errbacks {
        let in_process = match canvas_kind(errback) {
            None => app.task(&errback.task).filter(|task| task.is_errback),
            Some(_) => None,
        };
        let Some(task) = in_process else {
            as_messages.push(errback.clone());
            continue;
        };
        // Registered here and taking (request, exc, traceback): called in-process, under a
        // request of its own (Celery calls it as a function, with a new request): its
        // `update_state` must not overwrite the failed task's FAILURE. Tasks it sends are the
        // failed task's children, as Celery's `current_worker_task` skips a task called
        // directly; its result is stored already, so they are not listed in it.
        let errback_request = Request {
            id: uuid::Uuid::new_v4().to_string(),
            task: errback.task.clone(),
            parent_id: Some(request.id.clone()),
            root_id: Some(request.root_or_own_id().to_owned()),
            ..Request::default()
        };
        let running = TaskContext::new(request.clone(), Some(app.clone()), &task.options);
        let context = TaskContext::new(errback_request, Some(app.clone()), &task.options);
        let mut invocation = Invocation::new(context, errback.args.clone(), errback.kwargs.clone());
        invocation.errback = Some((request.clone(), exception.clone(), traceback.clone()));
        let outcome = match prepare(&task, invocation) {
            Ok(run) => run_task(run, time_limit([task.options.time_limit]), running).await,
            Err(error) => Err(error),
        };
        if let Err(error) = outcome {
            tracing::error!(errback = %errback.task, id = %request.id, error = %error, "errback failed");
        }
    }
    if as_messages.is_empty() {
        return;
    }
    // Python's convention for errbacks not callable here: sent as one group (Celery's
    // `_call_task_errbacks`), each with the failed task's id as first argument unless
    // immutable (`si`).
    let group_id = uuid::Uuid::new_v4().to_string();
    let failed_id = Value::String(request.id.clone());
    let mut sent = Vec::new();
    let expanded = group_follow_ups(
        as_messages,
        &group_id,
        &ApplyOptions::default(),
        &failed_id,
        &mut sent,
    );
    if let Err(error) = expanded {
        tracing::error!(%error, parent = %request.id, "could not send the errbacks");
    }
    for signature in sent {
        // `send_follow_up` logs what it could not send; the others are still sent.
        let _ = send_follow_up(app, signature, request, FollowUp::Errback).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_expand_as_celerys() {
        let host = "worker1.example.com";
        assert_eq!(
            expand_node_name("celery@%h", host),
            "celery@worker1.example.com"
        );
        assert_eq!(expand_node_name("w1@%n", host), "w1@worker1");
        assert_eq!(expand_node_name("x@%n.%d", host), "x@worker1.example.com");
        assert_eq!(expand_node_name("100%%@%x%", "h"), "100%@%x%");
        assert_eq!(expand_node_name("w@%d", "bare"), "w@");
        // What Celery 5.7's `host_format(default_nodename(name))` gave on a host named `vm`.
        assert_eq!(expand_node_name("foo", "vm"), "celery@foo");
        assert_eq!(expand_node_name("%h", "vm"), "celery@vm");
        assert_eq!(expand_node_name("a@%i", "vm"), "a@0");
        assert_eq!(expand_node_name("a@%I", "vm"), "a@");
        assert_eq!(expand_node_name("foo@", "vm"), "foo@vm");
        assert_eq!(expand_node_name("@bar", "vm"), "celery@bar");
        assert_eq!(expand_node_name("", "vm"), "celery@vm");
    }

    #[test]
    fn concurrency_zero_is_the_cpus_and_large_ones_do_not_overflow() {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(slots(0), cpus);
        assert_eq!(slots(3), 3);
        assert_eq!(slots(usize::MAX), Semaphore::MAX_PERMITS);
        let builder = Celery::builder("slots")
            .build()
            .unwrap()
            .worker()
            .concurrency(60_000)
            .prefetch_multiplier(u16::MAX);
        assert_eq!(builder.prefetch(), 60_000 * 65_535);
        let huge = Celery::builder("slots-huge")
            .build()
            .unwrap()
            .worker()
            .concurrency(usize::MAX)
            .prefetch_multiplier(u16::MAX);
        assert_eq!(huge.prefetch(), u32::MAX);
        // Past 65,535 the count sent is "no limit", as kombu's `QoS.set` sends it.
        assert_eq!(prefetch_count(huge.prefetch()), 0);
        assert_eq!(prefetch_count(65_535), 65_535);
        assert_eq!(prefetch_count(8), 8);
    }

    #[tokio::test]
    async fn a_worker_without_queue_names_is_refused() {
        let app = Celery::builder("no-queues").build().unwrap();
        for queues in [vec![], vec!["celery".to_owned(), String::new()]] {
            let error = app.worker().queues(queues).start().await.err().unwrap();
            assert!(error.to_string().contains("queue names"), "{error}");
        }
    }
    use crate::broker::BrokerError;
    use crate::BoxFuture;

    /// A group and a chain as Python Celery 5.7 writes them in `link` or in a chain (frozen:
    /// each member has its id and `reply_to`).
    fn python_canvas(kind: &str, members: &[(i64, bool)]) -> RawSignature {
        let tasks: Vec<Value> = members
            .iter()
            .enumerate()
            .map(|(index, &(arg, immutable))| {
                serde_json::json!({"task": "tasks.add", "args": [arg], "kwargs": {},
                    "options": {"task_id": format!("member-{index}"), "reply_to": "client"},
                    "subtask_type": null, "immutable": immutable})
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "task": format!("celery.{kind}"), "args": [], "kwargs": {"tasks": tasks},
            "options": {"task_id": format!("the-{kind}")}, "subtask_type": kind, "immutable": false
        }))
        .unwrap()
    }

    #[test]
    fn a_group_callback_sends_each_member_with_the_result() {
        let group = python_canvas("group", &[(1, false), (2, false), (3, true)]);
        let sent = follow_ups(&group, &serde_json::json!(10)).unwrap();
        let seen: Vec<_> = sent
            .iter()
            .map(|s| {
                (
                    s.options.task_id.as_deref().unwrap(),
                    s.args.clone(),
                    s.options.group_index,
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                (
                    "member-0",
                    vec![serde_json::json!(10), serde_json::json!(1)],
                    Some(0)
                ),
                (
                    "member-1",
                    vec![serde_json::json!(10), serde_json::json!(2)],
                    Some(1)
                ),
                ("member-2", vec![serde_json::json!(3)], Some(2)),
            ]
        );
        assert!(sent
            .iter()
            .all(|s| s.options.group_id.as_deref() == Some("the-group")));
    }

    #[test]
    fn a_chain_callback_sends_its_first_step_carrying_the_others() {
        let chain = python_canvas("chain", &[(1, false), (2, false), (3, false)]);
        let sent = follow_ups(&chain, &serde_json::json!(10)).unwrap();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].args, [serde_json::json!(10), serde_json::json!(1)]);
        // Last step first, as a message carries its chain; their arguments wait for results.
        let rest: Vec<_> = sent[0]
            .options
            .chain
            .iter()
            .map(|s| (s.options.task_id.as_deref().unwrap(), s.args.clone()))
            .collect();
        assert_eq!(
            rest,
            [
                ("member-2", vec![serde_json::json!(3)]),
                ("member-1", vec![serde_json::json!(2)])
            ]
        );
    }

    fn json_signature(value: Value) -> RawSignature {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_groups_options_reach_its_members_as_celerys_group_apply_async_sends_them() {
        // Never frozen (no id), with a queue and a nested group, as a Python client may send it;
        // an immutable flag on a canvas is dropped by Celery's `from_dict`.
        let group = json_signature(serde_json::json!({
            "task": "celery.group", "subtask_type": "group", "immutable": true,
            "options": {"queue": "gpu", "priority": 3},
            "kwargs": {"tasks": [
                {"task": "tasks.a", "args": [1], "options": {"queue": "cpu", "group_index": 7}},
                {"task": "tasks.b", "options": {"group_id": "its-own"}},
                {"task": "celery.group", "subtask_type": "group", "options": {"queue": "other"},
                 "kwargs": {"tasks": [{"task": "tasks.c"}, {"task": "tasks.d"}]}},
            ]},
        }));
        let sent = follow_ups(&group, &serde_json::json!(10)).unwrap();
        let seen: Vec<_> = sent
            .iter()
            .map(|s| {
                (
                    s.task.as_str(),
                    s.args.clone(),
                    s.options.queue.as_deref(),
                    s.options.priority,
                    s.options.group_index,
                )
            })
            .collect();
        let ten = serde_json::json!(10);
        assert_eq!(
            seen,
            [
                (
                    "tasks.a",
                    vec![ten.clone(), serde_json::json!(1)],
                    Some("gpu"),
                    Some(3),
                    Some(0)
                ),
                ("tasks.b", vec![ten.clone()], Some("gpu"), Some(3), Some(1)),
                ("tasks.c", vec![ten.clone()], Some("gpu"), Some(3), Some(0)),
                ("tasks.d", vec![ten.clone()], Some("gpu"), Some(3), Some(1)),
            ]
        );
        let group_ids: Vec<_> = sent
            .iter()
            .map(|s| s.options.group_id.clone().unwrap())
            .collect();
        assert_eq!(group_ids[1], "its-own");
        assert_eq!(uuid::Uuid::parse_str(&group_ids[0]).map(|_| ()), Ok(()));
        assert!(
            group_ids[2..].iter().all(|id| *id == group_ids[0]),
            "{group_ids:?}"
        );
        // Each group that was never frozen gets an id of its own.
        let again = follow_ups(&group, &serde_json::json!(10)).unwrap();
        assert_ne!(again[0].options.group_id, sent[0].options.group_id);
    }

    #[test]
    fn a_chains_options_go_where_celerys_chain_run_puts_them() {
        let errback = serde_json::json!({"task": "tasks.on_error", "options": {}});
        let chain = json_signature(serde_json::json!({
            "task": "celery.chain", "subtask_type": "chain", "immutable": true,
            "options": {"task_id": "the-chain", "queue": "gpu", "link_error": [errback],
                        "link": [{"task": "tasks.after"}]},
            "kwargs": {"tasks": [
                {"task": "tasks.a", "args": [1]},
                {"task": "tasks.b"},
                {"task": "tasks.c"},
            ]},
        }));
        let sent = follow_ups(&chain, &serde_json::json!(10)).unwrap();
        assert_eq!(sent.len(), 1);
        let first = &sent[0];
        // Not immutable: the chain's own flag is dropped, the first step takes the result.
        assert_eq!(first.args, [serde_json::json!(10), serde_json::json!(1)]);
        assert_eq!(first.options.queue.as_deref(), Some("gpu"));
        assert_eq!(first.options.task_id, None);
        let later: Vec<_> = first.options.chain.iter().collect();
        assert_eq!(
            later.iter().map(|s| s.task.as_str()).collect::<Vec<_>>(),
            ["tasks.c", "tasks.b"]
        );
        let last = later[0];
        assert_eq!(last.options.task_id.as_deref(), Some("the-chain"));
        assert_eq!(last.options.link.len(), 1);
        assert_eq!(later[1].options.queue, None);
        assert!(later[1].options.link.is_empty());
        for step in [first, later[0], later[1]] {
            assert_eq!(step.options.link_error.len(), 1, "{}", step.task);
        }
    }

    #[test]
    fn an_empty_subtask_type_is_a_plain_task() {
        let plain = json_signature(serde_json::json!({"task": "tasks.a", "subtask_type": ""}));
        let sent = follow_ups(&plain, &serde_json::json!(1)).unwrap();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].args, [serde_json::json!(1)]);
    }

    #[test]
    fn several_callbacks_go_as_one_group_after_the_group_callbacks() {
        let callbacks: Vec<RawSignature> = vec![
            json_signature(serde_json::json!({"task": "tasks.a"})),
            json_signature(
                serde_json::json!({"task": "celery.group", "subtask_type": "group",
                "options": {"task_id": "g"}, "kwargs": {"tasks": [{"task": "tasks.b"}]}}),
            ),
            json_signature(serde_json::json!({"task": "tasks.c"})),
        ];
        let sendings = callback_follow_ups(&callbacks, &Value::Null).unwrap();
        // Each group is one child of the parent: the group callback, then the others.
        let groups: Vec<_> = sendings.iter().map(|s| s.group_id.clone()).collect();
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].as_deref(), Some("g"));
        assert!(groups[1].as_deref().is_some_and(|id| id != "g"));
        let sent: Vec<&RawSignature> = sendings.iter().flat_map(|s| &s.signatures).collect();
        let seen: Vec<_> = sent
            .iter()
            .map(|s| (s.task.as_str(), s.options.group_index))
            .collect();
        assert_eq!(
            seen,
            [
                ("tasks.b", Some(0)),
                ("tasks.a", Some(0)),
                ("tasks.c", Some(1))
            ]
        );
        assert_eq!(sent[0].options.group_id.as_deref(), Some("g"));
        assert_eq!(sent[1].options.group_id, groups[1]);
        assert_eq!(sent[2].options.group_id, groups[1]);
        // One callback is sent as it is.
        let one = callback_follow_ups(&callbacks[..1], &Value::Null).unwrap();
        assert_eq!(one[0].group_id, None);
        assert_eq!(one[0].signatures[0].options.group_id, None);
    }

    #[test]
    fn chords_and_malformed_canvases_are_errors_not_tasks_named_celery_something() {
        let mut chord = python_canvas("group", &[(1, false)]);
        chord.subtask_type = Some("chord".to_owned());
        let error = follow_ups(&chord, &Value::Null).unwrap_err().to_string();
        assert!(error.contains("chord"), "{error}");
        let mut malformed = python_canvas("group", &[]);
        malformed
            .kwargs
            .insert("tasks".to_owned(), serde_json::json!("not a list"));
        assert!(follow_ups(&malformed, &Value::Null).is_err());
    }

    struct NoAcker;

    impl Acker for NoAcker {
        fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), BrokerError>> {
            Box::pin(async { Ok(()) })
        }
        fn reject(self: Box<Self>, _: bool) -> BoxFuture<'static, Result<(), BrokerError>> {
            Box::pin(async { Ok(()) })
        }
    }

    /// A backend whose every store fails, reachable or not; it counts the attempts.
    struct FailingBackend {
        recoverable: bool,
        stores: std::sync::atomic::AtomicUsize,
    }

    impl crate::backend::ResultBackend for FailingBackend {
        fn url(&self) -> &str {
            "failing://"
        }
        fn store<'a>(
            &'a self,
            _: &'a ResultMeta,
            _: Option<&'a str>,
        ) -> BoxFuture<'a, Result<(), Error>> {
            self.stores
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Box::pin(async {
                Err(Error::Backend {
                    backend: "failing://".to_owned(),
                    reason: "no".to_owned(),
                    recoverable: self.recoverable,
                })
            })
        }
        fn get<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Option<ResultMeta>, Error>> {
            Box::pin(async { Ok(None) })
        }
        fn subscribe<'a>(
            &'a self,
            _: &'a str,
        ) -> BoxFuture<'a, Result<crate::backend::ResultReceiver, Error>> {
            Box::pin(async { Ok(tokio::sync::mpsc::unbounded_channel().1) })
        }
        fn forget<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<(), Error>> {
            Box::pin(async { Ok(()) })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn storing_a_result_is_retried_while_unreachable_and_not_when_refused() {
        for (recoverable, attempts) in [(true, 21), (false, 1)] {
            let backend = Arc::new(FailingBackend {
                recoverable,
                stores: Default::default(),
            });
            let app = Celery::builder("t")
                .backend(backend.clone())
                .build()
                .unwrap();
            let meta = ResultMeta::new("id".to_owned(), State::Success, serde_json::json!(1));
            let stored = store_retrying(&app, meta, None).await;
            assert!(matches!(stored, Err(Error::Backend { .. })), "{stored:?}");
            let stores = backend.stores.load(std::sync::atomic::Ordering::Relaxed);
            assert_eq!(stores, attempts, "recoverable: {recoverable}");
        }
    }

    fn held(id: &str, due: tokio::time::Instant) -> Held {
        let request = Request {
            id: id.to_owned(),
            task: "tasks.add".to_owned(),
            args: vec![serde_json::json!(2), serde_json::json!({"x": [1.5, null]})],
            eta: Some("2026-11-24T00:00:00+00:00".to_owned()),
            callbacks: vec![RawSignature::new("tasks.mul")],
            ..Request::default()
        };
        Held::new(due, &request, Box::new(NoAcker))
    }

    #[test]
    fn a_held_request_comes_back_unchanged() {
        let now = tokio::time::Instant::now();
        let request = Request {
            id: "a".to_owned(),
            task: "tasks.add".to_owned(),
            args: vec![serde_json::json!(2), serde_json::json!({"x": [1.5, null]})],
            eta: Some("2026-11-24T00:00:00+00:00".to_owned()),
            callbacks: vec![RawSignature::new("tasks.mul")],
            ..Request::default()
        };
        let (back, _) = Held::new(now, &request, Box::new(NoAcker)).into_parts();
        assert_eq!(back, request);

        // Every part a message can carry, nested signatures with their options included.
        let mut callback = RawSignature::new("tasks.mul");
        callback.args = vec![serde_json::json!(3)];
        callback.options.queue = Some("q".to_owned());
        callback.options.countdown = Some(1.5);
        callback.options.link = vec![RawSignature::new("tasks.log")];
        callback.options.retry_policy = Some(
            crate::calling::RetryPolicy {
                max_retries: Some(7),
                interval_start: 0.5,
                interval_step: 0.25,
                interval_max: 2.0,
                retry_errors: None,
            }
            .into(),
        );
        callback.options.eta = crate::protocol::parse_datetime("2026-11-24T01:02:03+01:00");
        callback.options.expires = Some(crate::calling::Expires::After(30.0));
        callback.options.priority = Some(5);
        callback.options.time_limit = Some(2.5);
        callback.options.ignore_result = Some(true);
        let full = Request {
            kwargs: serde_json::from_value(serde_json::json!({"k": {"n": [1, "x"]}})).unwrap(),
            retries: 2,
            expires: Some("2026-11-25T00:00:00+00:00".to_owned()),
            root_id: Some("root".to_owned()),
            parent_id: Some("parent".to_owned()),
            group: Some("g".to_owned()),
            group_index: Some(1),
            reply_to: Some("reply".to_owned()),
            correlation_id: Some("a".to_owned()),
            delivery_info: DeliveryInfo {
                exchange: "ex".to_owned(),
                routing_key: "rk".to_owned(),
                priority: Some(3),
                redelivered: true,
            },
            hostname: Some("celery@here".to_owned()),
            ignore_result: Some(true),
            timelimit: (Some(10.0), None),
            callbacks: vec![callback.clone()],
            errbacks: vec![RawSignature::new("tasks.on_error")],
            chain: vec![callback],
            shadow: Some("shadowed".to_owned()),
            headers: serde_json::json!({"periodic_task_name": "nightly"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            ..request
        };
        let (back, _) = Held::new(now, &full, Box::new(NoAcker)).into_parts();
        assert_eq!(back, full);
    }

    #[test]
    fn held_messages_come_due_in_eta_order_and_ties_in_arrival_order() {
        let now = tokio::time::Instant::now();
        let second = Duration::from_secs(1);
        let mut schedule = EtaSchedule::default();
        schedule.insert(held("late", now + 3 * second));
        schedule.insert(held("first", now + second));
        schedule.insert(held("second", now + second));
        schedule.insert(held("middle", now + 2 * second));
        assert_eq!(schedule.next_due(), Some(now + second));
        assert!(schedule.take_due(now).is_empty());
        let ids = |due: Vec<Held>| -> Vec<String> {
            due.into_iter().map(|h| h.into_parts().0.id).collect()
        };
        assert_eq!(
            ids(schedule.take_due(now + 2 * second)),
            ["first", "second", "middle"]
        );
        assert_eq!(schedule.len(), 1);
        assert_eq!(schedule.next_due(), Some(now + 3 * second));
        assert_eq!(ids(schedule.drain().collect()), ["late"]);
        assert_eq!(schedule.next_due(), None);
    }

    #[test]
    fn each_held_message_raises_the_prefetch_until_amqp_cannot_say_it() {
        assert_eq!(prefetch_with_held(8, 0), 8);
        assert_eq!(prefetch_with_held(8, 100), 108);
        assert_eq!(prefetch_with_held(8, 65_527), 65_535);
        // 0 is "no limit", as kombu sends past the largest count.
        assert_eq!(prefetch_with_held(8, 65_528), 0);
        assert_eq!(prefetch_with_held(0, 10), 0);
    }
}
