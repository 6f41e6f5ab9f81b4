//! The rpc result backend (`rpc://`, Celery's `RPCBackend`): a worker sends each state of a task
//! as a message to the caller's reply queue, named after the calling app's id; the caller
//! consumes that queue and keeps the latest state of each task.
//!
//! It rides on the broker's AMQP connection settings (`broker_url`): results are received on a
//! connection of its own, and published through the app's broker when the app has one for that
//! server (as Celery publishes them through its producer pool), else on that same connection.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lapin::types::{AMQPValue, FieldTable, ShortString};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{ResultBackend, ResultCodec, ResultReceiver};
use crate::broker::amqp::{AmqpBroker, AmqpConsumer, AmqpOptions, Declaration};
use crate::broker::{Broker, BrokerError, Consumer};
use crate::error::Error;
use crate::protocol::{Message, Properties};
use crate::result::ResultMeta;

use crate::BoxFuture;

/// Celery's `result_expires` (one day): the reply queue's `x-expires`, in milliseconds.
const REPLY_QUEUE_EXPIRES_MS: i32 = 86_400_000;

/// How long a declaration of the reply queue is trusted, well within its `x-expires`.
const REDECLARE_AFTER: Duration = Duration::from_secs(3600);

/// How many waiting results are read one by one before consuming (Celery's `backlog_limit`);
/// the rest arrive through the consumer.
const BACKLOG_LIMIT: usize = 1000;

/// How many finished results are remembered for `state()`/`get()` after they arrived.
const KEPT_FINISHED: usize = 10_000;

/// How many states of a task that reached nobody are kept for its first subscriber (its
/// `get().on_message(…)`), the oldest dropped first. Celery's client reads them off its reply
/// queue, where they wait unbounded; here the consumer reads on, so a bound keeps a task's
/// progress updates that nobody asks for from growing without end.
const KEPT_UNSEEN: usize = 64;

/// Results as messages to the caller's reply queue.
pub struct RpcBackend {
    broker: AmqpBroker,
    /// Where a worker publishes results, when not on `broker`: see [`RpcBackend::publishing_through`].
    publisher: Option<Arc<dyn Broker>>,
    /// The reply queue: the app's id once [`bind_client`](ResultBackend::bind_client) names it.
    reply_queue: Mutex<String>,
    /// When the reply queue was last declared (by this client: its consumer's start counts).
    declared_at: Mutex<Option<Instant>>,
    codec: std::sync::RwLock<ResultCodec>,
    results: Arc<Mutex<Results>>,
    listener: tokio::sync::Mutex<Option<JoinHandle<()>>>,
}

/// What arrived on the reply queue: the latest state of each task and who waits for it.
#[derive(Default)]
struct Results {
    entries: HashMap<String, Entry>,
    /// Tasks in the order they finished, to forget the oldest.
    finished: VecDeque<String>,
}

#[derive(Default)]
struct Entry {
    latest: Option<ResultMeta>,
    /// Whether `latest` reached no subscriber yet.
    latest_unseen: bool,
    /// The states before `latest` that reached no subscriber, oldest first.
    earlier_unseen: VecDeque<ResultMeta>,
    subscribers: Vec<mpsc::UnboundedSender<ResultMeta>>,
}

impl RpcBackend {
    /// An rpc backend using the AMQP broker at `broker_url`; it connects on first use.
    pub fn new(broker_url: &str) -> Result<Self, Error> {
        Self::with_options(broker_url, AmqpOptions::default())
    }

    /// The same, connecting with the app's broker settings (`broker_connection_timeout`, …).
    pub fn with_options(broker_url: &str, options: AmqpOptions) -> Result<Self, Error> {
        let broker = AmqpBroker::new(broker_url, options).map_err(|error| {
            Error::Config(format!("rpc:// needs an amqp:// broker_url: {error}"))
        })?;
        Ok(RpcBackend {
            broker,
            publisher: None,
            reply_queue: Mutex::new(uuid::Uuid::new_v4().to_string()),
            declared_at: Mutex::new(None),
            codec: Default::default(),
            results: Arc::default(),
            listener: tokio::sync::Mutex::new(None),
        })
    }

    /// Publishes results through `broker` (the app's, on the same server), as Celery's worker
    /// does through its producer pool: a worker's acknowledgements and results then share one
    /// connection, and results are confirmed or not as the app's other messages are
    /// (`broker_confirm_publish`).
    pub fn publishing_through(mut self, broker: Arc<dyn Broker>) -> Self {
        self.publisher = Some(broker);
        self
    }

    /// The queue this client receives results on.
    pub fn reply_queue(&self) -> String {
        self.reply_queue
            .lock()
            .expect("reply queue name poisoned")
            .clone()
    }

    fn error(&self, error: BrokerError) -> Error {
        Error::Backend {
            backend: self.url().to_owned(),
            reason: error.to_string(),
            recoverable: error.kind.is_recoverable(),
        }
    }

    fn mark_declared(&self) {
        *self.declared_at.lock().expect("declaration time poisoned") = Some(Instant::now());
    }

    fn declared(&self) -> bool {
        self.declared_at
            .lock()
            .expect("declaration time poisoned")
            .is_some()
    }

    fn declared_within(&self, period: Duration) -> bool {
        let declared_at = self.declared_at.lock().expect("declaration time poisoned");
        declared_at.is_some_and(|at| at.elapsed() < period)
    }

    fn results(&self) -> std::sync::MutexGuard<'_, Results> {
        self.results.lock().expect("rpc results poisoned")
    }

    /// Consumes the reply queue from now on (declaring it first), unless already consuming.
    async fn listen(&self) -> Result<(), Error> {
        let mut listener = self.listener.lock().await;
        if listener.as_ref().is_some_and(|task| !task.is_finished()) {
            return Ok(());
        }
        let queue = self.reply_queue();
        let codec = self.codec.read().expect("result codec poisoned").clone();
        // What is waiting already is read first, as Celery reads it (`basic.get`) when asked
        // for a state: a first `state()` finds a result that came before anyone listened,
        // instead of PENDING while the consumer starts. What comes after goes to the consumer.
        let waiting = self
            .broker
            .take_waiting(&reply_queue_declaration(&queue), BACKLOG_LIMIT)
            .await
            .map_err(|e| self.error(e))?;
        for message in &waiting {
            record_message(&self.results, &codec, message);
        }
        let consumer = self
            .broker
            .consume_unacknowledged(vec![reply_queue_declaration(&queue)])
            .await
            .map_err(|e| self.error(e))?;
        self.mark_declared();
        *listener = Some(tokio::spawn(receive(consumer, self.results.clone(), codec)));
        Ok(())
    }
}

impl Drop for RpcBackend {
    fn drop(&mut self) {
        if let Some(listener) = self.listener.get_mut().take() {
            listener.abort();
        }
    }
}

/// The reply queue as Celery 5.7 declares it: durable, auto-delete, `x-expires` one day.
fn reply_queue_declaration(name: &str) -> Declaration {
    let mut arguments = FieldTable::default();
    arguments.insert(
        ShortString::from("x-expires"),
        AMQPValue::LongInt(REPLY_QUEUE_EXPIRES_MS),
    );
    Declaration {
        queue: name.to_owned(),
        durable: true,
        auto_delete: true,
        arguments,
        exchange: String::new(),
        exchange_type: "direct".to_owned(),
        routing_key: name.to_owned(),
    }
}

/// Receives result messages until the backend is dropped. They are consumed with `no_ack`, as
/// Celery's rpc:// consumer takes them: acknowledging would only keep a reply for a later
/// consumer, and the reply queue (auto-delete) goes with this one.
async fn receive(mut consumer: AmqpConsumer, results: Arc<Mutex<Results>>, codec: ResultCodec) {
    while let Some(delivery) = consumer.next().await {
        let delivery = match delivery {
            Ok(delivery) => delivery,
            Err(error) => {
                tracing::warn!(%error, "rpc:// result consumer");
                continue;
            }
        };
        record_message(&results, &codec, &delivery.message);
    }
}

/// Records a result message; one that cannot be read is recorded as the task's failure.
fn record_message(results: &Mutex<Results>, codec: &ResultCodec, message: &Message) {
    let meta = match decode_result(codec, message) {
        Ok(meta) => meta,
        Err(error) => {
            tracing::error!(%error, "rpc:// refused a result message");
            // Whoever waits for that task learns why, instead of waiting forever.
            let Some(task_id) = message.properties.correlation_id.clone() else {
                return;
            };
            let kind = match error {
                Error::ContentDisallowed(_) => "ContentDisallowed",
                _ => "DecodeError",
            };
            let exception =
                crate::error::ExceptionInfo::new(kind, "kombu.exceptions", error.to_string());
            ResultMeta::exception(task_id, crate::result::State::Failure, &exception, None)
        }
    };
    results.lock().expect("rpc results poisoned").record(meta);
}

/// A result message as Celery's worker sends it: the meta as JSON, `correlation_id` = task id,
/// transient, priority 0, an empty header table and no `reply_to`.
fn result_message(codec: &ResultCodec, meta: &ResultMeta) -> Result<Message, Error> {
    let encoded = codec.encode(meta)?;
    let headers = encoded
        .compression
        .map(|scheme| {
            vec![(
                "compression".into(),
                crate::protocol::HeaderValue::Str(scheme),
            )]
        })
        .unwrap_or_default();
    Ok(Message {
        headers,
        properties: Properties {
            correlation_id: Some(meta.task_id.clone()),
            reply_to: None,
            content_type: encoded.content_type,
            content_encoding: encoded.content_encoding,
            delivery_mode: 1,
            priority: Some(0),
            expiration: None,
        },
        body: encoded.body,
    })
}

/// Reads a result message; the task is named by the meta's `task_id`, else by `correlation_id`.
fn decode_result(codec: &ResultCodec, message: &Message) -> Result<ResultMeta, Error> {
    let what = || {
        format!(
            "result message {}",
            message.properties.correlation_id.as_deref().unwrap_or("?")
        )
    };
    let compression = message.header("compression").and_then(|v| v.as_str());
    let value = codec.decode(&message.properties.content_type, compression, &message.body)?;
    let Value::Object(mut meta) = value else {
        return Err(Error::decode(what(), "the body is not a mapping"));
    };
    if !meta.contains_key("task_id") {
        let id = message
            .properties
            .correlation_id
            .clone()
            .ok_or_else(|| Error::decode(what(), "neither task_id nor correlation_id"))?;
        meta.insert("task_id".to_owned(), Value::String(id));
    }
    serde_json::from_value(Value::Object(meta)).map_err(|e| Error::decode(what(), e))
}

impl Results {
    /// Keeps a state as the task's latest and passes it to the task's subscribers. The first
    /// ready state is final: a task run twice (an `acks_late` message delivered again) sends a
    /// second one, which is dropped, as Celery's result keeps the first it cached.
    fn record(&mut self, meta: ResultMeta) {
        let task_id = meta.task_id.clone();
        let entry = self.entries.entry(task_id.clone()).or_default();
        if super::is_final(entry.latest.as_ref()) {
            tracing::debug!(task_id, state = %meta.status, "rpc:// a state after the task's result; kept the result");
            return;
        }
        entry
            .subscribers
            .retain(|subscriber| subscriber.send(meta.clone()).is_ok());
        let finishes = meta.status.is_ready();
        // A state nobody received is kept for the first to subscribe, as it would wait in
        // Celery's reply queue until a `get()` drains it.
        let unseen = entry.subscribers.is_empty();
        if let Some(previous) = entry.latest.replace(meta) {
            if std::mem::replace(&mut entry.latest_unseen, unseen) {
                if entry.earlier_unseen.len() == KEPT_UNSEEN {
                    entry.earlier_unseen.pop_front();
                }
                entry.earlier_unseen.push_back(previous);
            }
        } else {
            entry.latest_unseen = unseen;
        }
        if finishes {
            self.finished.push_back(task_id);
            self.forget_oldest();
        }
    }

    /// Forgets the oldest finished results past [`KEPT_FINISHED`]; one still watched (a
    /// group's `get()` waits on it) goes to the back of the line instead, to be forgotten later.
    fn forget_oldest(&mut self) {
        let mut looked_at = 0;
        while self.finished.len() > KEPT_FINISHED && looked_at < self.finished.len() {
            let Some(task_id) = self.finished.pop_front() else {
                break;
            };
            looked_at += 1;
            let watched = self
                .entries
                .get(&task_id)
                .is_some_and(|entry| entry.subscribers.iter().any(|s| !s.is_closed()));
            if watched {
                self.finished.push_back(task_id);
            } else {
                self.entries.remove(&task_id);
            }
        }
    }
}

impl ResultBackend for RpcBackend {
    fn url(&self) -> &str {
        "rpc://"
    }

    fn bind_client(&self, oid: &str, codec: &ResultCodec) {
        *self.codec.write().expect("result codec poisoned") = codec.clone();
        let mut name = self.reply_queue.lock().expect("reply queue name poisoned");
        if *name != oid && self.declared() {
            tracing::warn!(
                reply_queue = %name,
                oid,
                "rpc:// backend already receiving results on another queue; results for {oid} \
                 will not arrive here"
            );
            return;
        }
        *name = oid.to_owned();
    }

    fn prepare_client(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            // Celery declares the reply queue before every call that wants a result (a round
            // trip each). This client declares it once, and again an hour later, well before its
            // one-day `x-expires` could pass without a consumer (a client that sends but has not
            // read a result yet). Once it reads, its consumer keeps the queue from expiring, and
            // declares it again should it be deleted (RabbitMQ cancels the consumer).
            if self.declared_within(REDECLARE_AFTER) {
                return Ok(());
            }
            let queue = self.reply_queue();
            self.broker
                .declare_queue(&reply_queue_declaration(&queue))
                .await
                .map_err(|e| self.error(e))?;
            self.mark_declared();
            Ok(())
        })
    }

    fn store<'a>(
        &'a self,
        meta: &'a ResultMeta,
        reply_to: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let Some(reply_to) = reply_to.filter(|r| !r.is_empty()) else {
                tracing::warn!(task_id = %meta.task_id, state = %meta.status, "rpc:// cannot send a result without the caller's reply_to; dropped");
                return Ok(());
            };
            let message = result_message(&self.codec.read().expect("result codec poisoned"), meta)?;
            let publisher: &dyn Broker = match &self.publisher {
                Some(publisher) => publisher.as_ref(),
                None => &self.broker,
            };
            publisher
                .publish("", reply_to, &message)
                .await
                .map_err(|e| self.error(e))
        })
    }

    fn get<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<Option<ResultMeta>, Error>> {
        Box::pin(async move {
            self.listen().await?;
            Ok(self
                .results()
                .entries
                .get(task_id)
                .and_then(|entry| entry.latest.clone()))
        })
    }

    fn subscribe<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<ResultReceiver, Error>> {
        Box::pin(async move {
            self.listen().await?;
            let (sender, receiver) = mpsc::unbounded_channel();
            let mut results = self.results();
            let entry = results.entries.entry(task_id.to_owned()).or_default();
            // Waits that gave up (a `get()` timed out) leave closed senders behind.
            entry
                .subscribers
                .retain(|subscriber| !subscriber.is_closed());
            // What reached nobody yet, in order, then the latest state (again, to a later
            // subscriber: its `get()` needs it).
            for earlier in entry.earlier_unseen.drain(..) {
                let _ = sender.send(earlier);
            }
            if let Some(latest) = &entry.latest {
                let _ = sender.send(latest.clone());
            }
            entry.latest_unseen = false;
            entry.subscribers.push(sender);
            Ok(receiver)
        })
    }

    fn forget<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        self.results().entries.remove(task_id);
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::HeaderValue;
    use crate::result::State;
    use base64::Engine;
    use serde_json::json;

    fn fixture(name: &str) -> Value {
        let path = format!(
            "{}/../tests/fixtures/python/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn base64(value: &Value) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(value.as_str().unwrap())
            .unwrap()
    }

    /// A fixture result message as this crate receives it.
    fn received(fixture: &Value) -> Message {
        let properties = &fixture["properties"];
        Message {
            headers: Vec::new(),
            properties: Properties {
                correlation_id: properties["correlation_id"].as_str().map(str::to_owned),
                reply_to: None,
                content_type: fixture["content_type"].as_str().unwrap().to_owned(),
                content_encoding: fixture["content_encoding"].as_str().unwrap().to_owned(),
                delivery_mode: 1,
                priority: Some(0),
                expiration: None,
            },
            body: base64(&fixture["body_base64"]),
        }
    }

    #[test]
    fn python_results_decode_and_encode_back_to_the_same_bytes_and_properties() {
        for name in [
            "result_success_add.json",
            "result_failure_valueerror.json",
            "result_progress.json",
            "result_progress_final_success.json",
            "result_retry.json",
        ] {
            let fixture = fixture(name);
            let message = received(&fixture);
            let meta = decode_result(&ResultCodec::default(), &message).unwrap();
            assert_eq!(
                meta.task_id,
                fixture["properties"]["correlation_id"].as_str().unwrap()
            );
            let ours = result_message(&ResultCodec::default(), &meta).unwrap();
            assert_eq!(ours.body, message.body, "{name}: body");

            let properties = crate::broker::amqp::basic_properties(&ours).unwrap();
            let (raw, _) = cookie_factory::gen(
                lapin::protocol::basic::gen_properties(&properties),
                Vec::new(),
            )
            .unwrap();
            assert_eq!(
                raw,
                base64(&fixture["properties_raw_base64"]),
                "{name}: properties"
            );
        }
    }

    #[test]
    fn a_result_without_task_id_is_matched_on_its_correlation_id() {
        let mut message = received(&fixture("result_progress.json"));
        message.body = br#"{"status": "PROGRESS", "result": {"progress": 50}}"#.to_vec();
        message.properties.correlation_id = Some("the-id".to_owned());
        let meta = decode_result(&ResultCodec::default(), &message).unwrap();
        assert_eq!(meta.task_id, "the-id");
        assert_eq!(meta.status, State::Custom("PROGRESS".to_owned()));

        message.body = b"[1]".to_vec();
        assert!(decode_result(&ResultCodec::default(), &message).is_err());
    }

    /// A worker's results go through the app's broker when it is given one; this one is an
    /// in-memory broker, so nothing reaches the rpc backend's own (unreachable) server.
    #[tokio::test]
    async fn results_are_published_through_the_given_broker() {
        let broker = crate::broker::MemoryBroker::shared("memory://rpc-publishing-through");
        let backend = RpcBackend::new("amqp://guest:guest@127.0.0.1:1//")
            .unwrap()
            .publishing_through(broker.clone());
        let meta = ResultMeta::new("the-id".to_owned(), State::Success, json!(4));
        backend.store(&meta, Some("reply-queue")).await.unwrap();

        let queue = crate::routing::Queue::new("reply-queue");
        let mut consumer = broker
            .consume(std::slice::from_ref(&queue), 0)
            .await
            .unwrap();
        let delivery = consumer.next().await.unwrap().unwrap();
        assert_eq!(
            delivery.message.properties.correlation_id.as_deref(),
            Some("the-id")
        );
        let received = decode_result(&ResultCodec::default(), &delivery.message).unwrap();
        assert_eq!(
            (received.status, received.result),
            (State::Success, json!(4))
        );
    }

    #[test]
    fn compressed_results_are_read() {
        let mut message = received(&fixture("result_success_add.json"));
        use crate::compression::Compression;
        message.body = crate::compression::Zlib.compress(&message.body).unwrap();
        message.headers = vec![(
            "compression".into(),
            HeaderValue::Str("application/x-gzip".to_owned()),
        )];
        assert_eq!(
            decode_result(&ResultCodec::default(), &message)
                .unwrap()
                .result,
            json!(4)
        );
    }

    /// Through `subscribe()` itself, without a server: a listener that never ends stands in for
    /// the reply queue's consumer, so `listen()` has nothing to do, and states are recorded as
    /// that consumer records them.
    #[tokio::test]
    async fn subscribers_get_the_latest_state_then_every_change_in_order() {
        let backend = RpcBackend::new("amqp://guest:guest@127.0.0.1:1//").unwrap();
        *backend.listener.lock().await = Some(tokio::spawn(std::future::pending()));
        let record = |state: &str, result: Value| {
            backend
                .results()
                .record(ResultMeta::new("t".into(), state.into(), result));
        };
        let record_for = |task: &str, state: &str| {
            backend
                .results()
                .record(ResultMeta::new(task.into(), state.into(), json!(null)));
        };
        let states = |receiver: &mut ResultReceiver| -> Vec<String> {
            std::iter::from_fn(|| receiver.try_recv().ok())
                .map(|m| m.status.to_string())
                .collect()
        };
        // States that came before anyone subscribed reach the first subscriber, in order (they
        // would wait in Celery's reply queue for its `get()`), and only the first.
        record_for("early", "STARTED");
        record_for("early", "PROGRESS");
        record_for("early", "SUCCESS");
        let mut first = backend.subscribe("early").await.unwrap();
        assert_eq!(states(&mut first), ["STARTED", "PROGRESS", "SUCCESS"]);
        let mut second = backend.subscribe("early").await.unwrap();
        assert_eq!(states(&mut second), ["SUCCESS"]);
        // At most KEPT_UNSEEN of them, the oldest dropped.
        for _ in 0..KEPT_UNSEEN + 10 {
            record_for("chatty", "PROGRESS");
        }
        record_for("chatty", "SUCCESS");
        let mut late = backend.subscribe("chatty").await.unwrap();
        assert_eq!(states(&mut late).len(), KEPT_UNSEEN + 1);

        let mut before = backend.subscribe("t").await.unwrap();
        assert_eq!(states(&mut before), [] as [&str; 0], "nothing stored yet");
        record("STARTED", json!(null));
        let mut receiver = backend.subscribe("t").await.unwrap();
        let gave_up = backend.subscribe("t").await.unwrap();
        drop(gave_up);
        record("PROGRESS", json!({"progress": 50}));
        record("SUCCESS", json!(4));
        assert_eq!(states(&mut receiver), ["STARTED", "PROGRESS", "SUCCESS"]);
        assert_eq!(states(&mut before), ["STARTED", "PROGRESS", "SUCCESS"]);
        let mut after = backend.subscribe("t").await.unwrap();
        assert_eq!(
            states(&mut after),
            ["SUCCESS"],
            "the result, to a late subscriber"
        );
        // The subscribers that went away were dropped: the two receivers kept, and the last.
        assert_eq!(backend.results().entries["t"].subscribers.len(), 3);
        assert_eq!(backend.results().finished, ["early", "chatty", "t"]);
    }

    #[test]
    fn the_first_result_of_a_task_run_twice_is_kept() {
        let mut results = Results::default();
        let meta = |state: &str, result: Value| ResultMeta::new("t".into(), state.into(), result);
        results.record(meta("SUCCESS", json!(4)));
        // The same message delivered again (acks_late) and run by another worker.
        results.record(meta("STARTED", json!(null)));
        results.record(meta("FAILURE", json!({"exc_type": "ValueError"})));
        let latest = results.entries["t"].latest.clone().unwrap();
        assert_eq!((latest.status, latest.result), (State::Success, json!(4)));
        assert_eq!(results.finished, ["t"], "finished once");
    }

    #[test]
    fn only_the_latest_finished_results_are_kept() {
        let mut results = Results::default();
        for i in 0..KEPT_FINISHED + 5 {
            results.record(ResultMeta::new(i.to_string(), State::Success, json!(i)));
        }
        assert_eq!(results.entries.len(), KEPT_FINISHED);
        assert!(!results.entries.contains_key("0"));
        assert!(results
            .entries
            .contains_key(&(KEPT_FINISHED + 4).to_string()));
    }

    #[test]
    fn a_watched_result_is_kept_past_the_limit() {
        let mut results = Results::default();
        let (sender, _receiver) = mpsc::unbounded_channel();
        results
            .entries
            .entry("watched".to_owned())
            .or_default()
            .subscribers
            .push(sender);
        results.record(ResultMeta::new("watched".into(), State::Success, json!(0)));
        for i in 0..KEPT_FINISHED + 5 {
            results.record(ResultMeta::new(i.to_string(), State::Success, json!(i)));
        }
        assert!(results.entries.contains_key("watched"));
        assert_eq!(results.entries.len(), KEPT_FINISHED);
        assert_eq!(
            results.finished.len(),
            KEPT_FINISHED,
            "still counted, to go later"
        );
        assert!(
            !results.entries.contains_key("0"),
            "the oldest unwatched goes"
        );
    }

    #[test]
    fn the_reply_queue_is_declared_as_celery_5_7_declares_it() {
        let declaration = reply_queue_declaration("oid");
        assert!(declaration.durable && declaration.auto_delete);
        assert_eq!(declaration.exchange, "");
        assert_eq!(
            declaration.arguments.inner()["x-expires"],
            AMQPValue::LongInt(86_400_000)
        );
        assert_eq!(declaration.arguments.inner().len(), 1);
    }
}
