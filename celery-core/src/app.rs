//! The app: settings, broker, result backend and task registry (Celery's `Celery(...)`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use serde_json::{Map, Value};

use crate::backend::{self, ResultBackend, ResultCodec};
use crate::broker::AmqpOptions;
use crate::broker::{self, Broker};
use crate::calling::{CallOptions, RetryPolicy};
use crate::compression::CompressionRegistry;
use crate::error::{Error, TaskError};
use crate::producer::Producer;
use crate::protocol::HeaderSet;
use crate::result::AsyncResult;
use crate::routing::{Queue, TaskRoute};
use crate::serializer::SerializerRegistry;
use crate::signature::RawSignature;
use crate::task::{Invocation, Task, TaskFuture, TaskOptions};
use crate::worker::WorkerBuilder;

/// The app's settings, under Celery's names and with Celery's defaults.
#[derive(Debug, Clone)]
pub struct Config {
    /// `memory://` (the embedded default) or an `amqp://` URL.
    pub broker_url: String,
    /// `memory://`, `rpc://` or `disabled://`. Left as it is (`memory://`), it is the default of
    /// an app on the in-memory broker only: on another broker the app has no result backend
    /// (Celery's `DisabledBackend`), as results kept in one process's memory would reach no
    /// client of another.
    pub result_backend: String,
    pub task_serializer: String,
    pub result_serializer: String,
    pub task_compression: Option<String>,
    pub result_compression: Option<String>,
    /// Content types (or serializer names) a worker accepts; others are rejected.
    pub accept_content: Vec<String>,
    /// What a client accepts in results; `None`: the same as `accept_content`.
    pub result_accept_content: Option<Vec<String>>,
    pub task_ignore_result: bool,
    /// Store name, args, kwargs, worker, retries and queue with each result.
    pub result_extended: bool,
    /// Store a STARTED state when a task begins.
    pub task_track_started: bool,
    pub task_acks_late: bool,
    pub task_default_queue: String,
    pub task_default_priority: Option<u8>,
    /// A task sent from a running task's body, or as its callback or next chain step, takes the
    /// running task's priority unless it has one (Celery's `task_inherit_parent_priority`).
    pub task_inherit_parent_priority: bool,
    /// Which headers a task message carries: [`HeaderSet::Lean`] (the default) leaves out
    /// those whose value is what a Celery task's request reads when one is missing (null ids,
    /// zero retries), which runs the same on a Celery worker and costs RabbitMQ less per
    /// message; [`HeaderSet::Full`] writes every header as Python Celery does.
    pub task_message_headers: HeaderSet,
    /// Queues with settings of their own (e.g. `x-max-priority`), by name.
    pub task_queues: Vec<Queue>,
    /// Task name or glob → queue and routing options, first match wins; a call's options and
    /// the task's attributes take precedence.
    pub task_routes: Vec<TaskRoute>,
    pub task_publish_retry: bool,
    pub task_publish_retry_policy: RetryPolicy,
    pub task_time_limit: Option<f64>,
    pub task_soft_time_limit: Option<f64>,
    /// Tasks run at once by a worker.
    pub worker_concurrency: usize,
    /// Unacknowledged messages per unit of concurrency.
    pub worker_prefetch_multiplier: u16,
    /// Channels kept open for publishing (RabbitMQ).
    pub broker_pool_limit: usize,
    /// Wait for RabbitMQ to confirm each published message (publisher confirms).
    pub broker_confirm_publish: bool,
    /// Seconds to wait for a broker connection.
    pub broker_connection_timeout: f64,
    /// Whether a worker starting while the broker cannot be reached retries instead of failing
    /// (Celery's `broker_connection_retry_on_startup`, on by default).
    pub broker_connection_retry_on_startup: bool,
    /// How many times it retries then; `None` for ever (Celery's `broker_connection_max_retries`,
    /// 100).
    pub broker_connection_max_retries: Option<u32>,
    /// A decompressed message body larger than this is refused.
    pub message_max_body_size: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            broker_url: "memory://".to_owned(),
            result_backend: "memory://".to_owned(),
            task_serializer: "json".to_owned(),
            result_serializer: "json".to_owned(),
            task_compression: None,
            result_compression: None,
            accept_content: vec!["json".to_owned()],
            result_accept_content: None,
            task_ignore_result: false,
            result_extended: false,
            task_track_started: false,
            task_acks_late: false,
            task_default_queue: "celery".to_owned(),
            task_default_priority: None,
            task_inherit_parent_priority: false,
            task_message_headers: HeaderSet::Lean,
            task_queues: Vec::new(),
            task_routes: Vec::new(),
            task_publish_retry: true,
            task_publish_retry_policy: RetryPolicy::default(),
            task_time_limit: None,
            task_soft_time_limit: None,
            worker_concurrency: std::thread::available_parallelism().map_or(2, usize::from),
            worker_prefetch_multiplier: 4,
            message_max_body_size: 64 * 1024 * 1024,
            broker_pool_limit: 10,
            broker_confirm_publish: true,
            broker_connection_timeout: 4.0,
            broker_connection_retry_on_startup: true,
            broker_connection_max_retries: Some(100),
        }
    }
}

/// A task known to this app, for its worker and for the options of its signatures.
#[derive(Clone)]
pub struct RegisteredTask {
    pub name: &'static str,
    pub options: TaskOptions,
    pub params: &'static [&'static str],
    pub is_errback: bool,
    pub(crate) run: fn(Invocation) -> Result<TaskFuture, TaskError>,
    /// The task type, to tell a second registration of the same task from another task with
    /// the same name.
    pub(crate) type_id: fn() -> std::any::TypeId,
}

/// A Celery app: what `delay`, `apply_async`, `send_task` and workers go through.
///
/// Cloning is cheap and every clone is the same app.
#[derive(Clone)]
pub struct Celery {
    inner: Arc<AppInner>,
}

struct AppInner {
    main: String,
    config: Config,
    broker: Arc<dyn Broker>,
    backend: Arc<dyn ResultBackend>,
    registry: RwLock<HashMap<String, RegisteredTask>>,
    serializers: SerializerRegistry,
    compressions: CompressionRegistry,
    /// This client's id: the `reply_to` of its messages (Celery's `app.thread_oid`).
    oid: String,
    origin: String,
    hostname: String,
    /// Queues declared by this process, or being declared: one declaration each.
    declared: Mutex<HashMap<String, Arc<tokio::sync::OnceCell<()>>>>,
}

static CURRENT: RwLock<Option<Celery>> = RwLock::new(None);

impl Celery {
    /// An app on the embedded in-memory broker and result backend.
    pub fn new(main: impl Into<String>) -> Self {
        Self::builder(main)
            .build()
            .expect("the default configuration is valid")
    }

    pub fn builder(main: impl Into<String>) -> Builder {
        Builder {
            main: main.into(),
            config: Config::default(),
            broker: None,
            backend: None,
            backend_chosen: false,
        }
    }

    /// Makes this the app that `add::delay(...)` and friends use.
    pub fn set_current(&self) -> &Self {
        *CURRENT.write().expect("current app lock poisoned") = Some(self.clone());
        self
    }

    /// The app set with [`set_current`](Self::set_current).
    pub fn current() -> Option<Celery> {
        CURRENT.read().expect("current app lock poisoned").clone()
    }

    pub fn main(&self) -> &str {
        &self.inner.main
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.inner.broker
    }

    pub fn backend(&self) -> &Arc<dyn ResultBackend> {
        &self.inner.backend
    }

    pub fn serializers(&self) -> &SerializerRegistry {
        &self.inner.serializers
    }

    pub fn compressions(&self) -> &CompressionRegistry {
        &self.inner.compressions
    }

    /// The reply queue name of this client.
    pub fn oid(&self) -> &str {
        &self.inner.oid
    }

    /// `gen<pid>@<hostname>`, the `origin` header of sent messages.
    pub fn origin(&self) -> &str {
        &self.inner.origin
    }

    pub fn hostname(&self) -> &str {
        &self.inner.hostname
    }

    /// Registers a task so this app's workers run it: `app.register(add::Task)`.
    ///
    /// A name is taken by the first task registered under it, as in Celery: another task
    /// registered under the same name later is refused, with an error in the log (two
    /// functions named alike in different modules get the same default name; give one a
    /// `#[task(name = "…")]`).
    pub fn register<T: Task + 'static>(&self, _task: T) -> &Self {
        let entry = RegisteredTask {
            name: T::NAME,
            options: T::OPTIONS,
            params: T::PARAMS,
            is_errback: T::IS_ERRBACK,
            run: T::run,
            type_id: std::any::TypeId::of::<T>,
        };
        let mut registry = self.inner.registry.write().expect("task registry poisoned");
        match registry.get(T::NAME) {
            Some(existing) if (existing.type_id)() != (entry.type_id)() => {
                tracing::error!(
                    task = T::NAME,
                    refused = std::any::type_name::<T>(),
                    "another task is registered under this name already; this one is not \
                     (give it a name of its own: #[task(name = \"…\")])"
                );
            }
            Some(_) => {}
            None => {
                registry.insert(T::NAME.to_owned(), entry);
            }
        }
        drop(registry);
        self
    }

    /// A registered task by name.
    pub fn task(&self, name: &str) -> Option<RegisteredTask> {
        self.inner
            .registry
            .read()
            .expect("task registry poisoned")
            .get(name)
            .cloned()
    }

    /// The names of the registered tasks, sorted.
    pub fn task_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .inner
            .registry
            .read()
            .expect("task registry poisoned")
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    }

    /// The queue a name refers to: a configured one, or Celery's automatic direct queue.
    pub fn queue(&self, name: &str) -> Queue {
        self.inner
            .config
            .task_queues
            .iter()
            .find(|q| q.name == name)
            .cloned()
            .unwrap_or_else(|| Queue::new(name))
    }

    /// The publisher: it routes, encodes and publishes task messages with the retry policy.
    pub fn producer(&self) -> Producer {
        Producer::new(self.clone())
    }

    /// Sends a task by name, for tasks not defined in this process (Celery's `send_task`).
    pub async fn send_task(
        &self,
        name: &str,
        args: Vec<Value>,
        kwargs: Map<String, Value>,
        options: CallOptions<Value>,
    ) -> Result<AsyncResult<Value>, Error> {
        if let Some(error) = options.error {
            return Err(error);
        }
        let mut raw = RawSignature::new(name);
        raw.args = args;
        raw.kwargs = kwargs;
        raw.options = options.options;
        let sent = self.producer().send(raw, &TaskOptions::UNKNOWN).await?;
        Ok(AsyncResult::of_sent(sent, self.clone()))
    }

    /// The result of a task by id.
    pub fn result<R>(&self, task_id: impl Into<String>) -> AsyncResult<R> {
        AsyncResult::new(task_id, self.clone())
    }

    /// A worker for this app's registered tasks.
    pub fn worker(&self) -> WorkerBuilder {
        WorkerBuilder::new(self.clone())
    }

    /// Declares a queue once per process. The first publish to it declares it, and publishes
    /// that come meanwhile wait for that declaration: sent before the queue exists, RabbitMQ
    /// would drop their messages as unroutable (and confirm them). A failed declaration is tried
    /// again by the next publish.
    pub(crate) async fn declare_once(&self, queue: &Queue) -> Result<(), broker::BrokerError> {
        let once = {
            let mut declared = self.inner.declared.lock().expect("declared set poisoned");
            match declared.get(&queue.name) {
                Some(once) => once.clone(),
                None => declared.entry(queue.name.clone()).or_default().clone(),
            }
        };
        once.get_or_try_init(|| self.broker().declare(queue))
            .await
            .map(|_| ())
    }
}

/// Builds a [`Celery`] app.
pub struct Builder {
    main: String,
    config: Config,
    broker: Option<Arc<dyn Broker>>,
    backend: Option<Arc<dyn ResultBackend>>,
    /// Whether `result_backend` was set, even to the default's value.
    backend_chosen: bool,
}

impl Builder {
    pub fn broker_url(mut self, url: impl Into<String>) -> Self {
        self.config.broker_url = url.into();
        self
    }

    /// Where results are stored: `memory://` (the default on the in-memory broker), `rpc://`
    /// (through the broker), `disabled://` (nowhere, the default on other brokers).
    pub fn result_backend(mut self, url: impl Into<String>) -> Self {
        self.config.result_backend = url.into();
        self.backend_chosen = true;
        self
    }

    /// Uses a broker object instead of one named by URL.
    pub fn broker(mut self, broker: Arc<dyn Broker>) -> Self {
        self.broker = Some(broker);
        self
    }

    /// Uses a result backend object instead of one named by URL.
    pub fn backend(mut self, backend: Arc<dyn ResultBackend>) -> Self {
        self.backend = Some(backend);
        self
    }

    pub fn task_serializer(mut self, name: impl Into<String>) -> Self {
        self.config.task_serializer = name.into();
        self
    }

    pub fn result_serializer(mut self, name: impl Into<String>) -> Self {
        self.config.result_serializer = name.into();
        self
    }

    pub fn task_compression(mut self, name: impl Into<String>) -> Self {
        self.config.task_compression = Some(name.into());
        self
    }

    pub fn accept_content<S: Into<String>>(mut self, content: impl IntoIterator<Item = S>) -> Self {
        self.config.accept_content = content.into_iter().map(Into::into).collect();
        self
    }

    pub fn task_ignore_result(mut self, ignore: bool) -> Self {
        self.config.task_ignore_result = ignore;
        self
    }

    pub fn result_extended(mut self, extended: bool) -> Self {
        self.config.result_extended = extended;
        self
    }

    pub fn task_track_started(mut self, track: bool) -> Self {
        self.config.task_track_started = track;
        self
    }

    pub fn task_default_queue(mut self, queue: impl Into<String>) -> Self {
        self.config.task_default_queue = queue.into();
        self
    }

    /// Declares a queue with settings of its own (e.g. `Queue::new("p").max_priority(10)`).
    pub fn queue(mut self, queue: Queue) -> Self {
        self.config.task_queues.retain(|q| q.name != queue.name);
        self.config.task_queues.push(queue);
        self
    }

    /// Adds a `task_routes` entry: `.route(TaskRoute::new("feed.*", "feeds"))`.
    pub fn route(mut self, route: TaskRoute) -> Self {
        self.config.task_routes.push(route);
        self
    }

    /// Changes any other setting.
    pub fn configure(mut self, change: impl FnOnce(&mut Config)) -> Self {
        change(&mut self.config);
        self
    }

    pub fn build(mut self) -> Result<Celery, Error> {
        // A broker the app opened from `broker_url` is the one an rpc:// backend publishes
        // results through; one given ready-made may be anything.
        let opened_from_url = self.broker.is_none();
        let options = AmqpOptions {
            pool_limit: self.config.broker_pool_limit,
            confirm_publish: self.config.broker_confirm_publish,
            connect_timeout: std::time::Duration::try_from_secs_f64(
                self.config.broker_connection_timeout,
            )
            .map_err(|_| {
                Error::Config(format!(
                    "broker_connection_timeout must be a number of seconds, not {}",
                    self.config.broker_connection_timeout
                ))
            })?,
        };
        let broker = match self.broker {
            Some(broker) => broker,
            None => broker::from_url(&self.config.broker_url, options.clone())?,
        };
        let chosen =
            self.backend_chosen || self.config.result_backend != Config::default().result_backend;
        if !chosen && !broker.url().starts_with("memory://") {
            // Results in this process's memory would reach no client on another: none at all,
            // as Celery has without a result backend, and `get()` says so.
            self.config.result_backend = "disabled://".to_owned();
        }
        let backend = match self.backend {
            Some(backend) => backend,
            None => backend::from_url(
                &self.config.result_backend,
                &self.config.broker_url,
                options,
                opened_from_url.then_some(&broker),
            )?,
        };
        let serializers = SerializerRegistry::default();
        let compressions = CompressionRegistry::default();
        serializers.get(&self.config.task_serializer)?;
        serializers.get(&self.config.result_serializer)?;
        for name in self
            .config
            .task_compression
            .iter()
            .chain(&self.config.result_compression)
        {
            compressions.get(name)?;
        }
        let hostname = gethostname::gethostname().to_string_lossy().into_owned();
        let oid = uuid::Uuid::new_v4().to_string();
        let codec = ResultCodec {
            serializers: serializers.clone(),
            compressions: compressions.clone(),
            serializer: self.config.result_serializer.clone(),
            compression: self.config.result_compression.clone(),
            accept: self
                .config
                .result_accept_content
                .clone()
                .unwrap_or_else(|| self.config.accept_content.clone()),
            max_body: self.config.message_max_body_size,
        };
        backend.bind_client(&oid, &codec);
        Ok(Celery {
            inner: Arc::new(AppInner {
                main: self.main,
                origin: format!("gen{}@{}", std::process::id(), hostname),
                hostname,
                oid,
                config: self.config,
                broker,
                backend,
                registry: RwLock::default(),
                serializers,
                compressions,
                declared: Mutex::default(),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rpc client's own connection waits `broker_connection_timeout` like the broker's,
    /// not the default 4 s: a server that accepts and never answers (on 127.0.0.1).
    #[tokio::test]
    async fn the_rpc_client_connects_with_the_brokers_timeout() {
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = silent.local_addr().unwrap().port();
        let app = Celery::builder("rpc-timeout")
            .broker_url(format!("amqp://guest:guest@127.0.0.1:{port}//"))
            .result_backend("rpc://")
            .configure(|config| config.broker_connection_timeout = 0.3)
            .build()
            .unwrap();
        let started = std::time::Instant::now();
        let error = app.result::<i32>("some-id").state().await.unwrap_err();
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "{:?}: {error}",
            started.elapsed()
        );
        drop(silent);
    }

    #[tokio::test]
    async fn on_a_real_broker_without_a_result_backend_get_says_so_at_once() {
        // Nothing connects before the first publish: no server is needed here.
        let app = Celery::builder("no-backend")
            .broker_url("amqp://guest:guest@127.0.0.1:5672//")
            .build()
            .unwrap();
        assert_eq!(app.backend().url(), "disabled://");
        let error = app.result::<i32>("some-id").get().await.unwrap_err();
        assert!(
            error
                .to_string()
                .contains("no result backend is configured"),
            "{error}"
        );

        // Chosen, even the in-memory one, it is kept.
        let chosen = Celery::builder("memory-backend")
            .broker_url("amqp://guest:guest@127.0.0.1:5672//")
            .result_backend("memory://")
            .build()
            .unwrap();
        assert_eq!(chosen.backend().url(), "memory://");
        // The embedded default: in-memory broker and backend.
        let embedded = Celery::builder("embedded").build().unwrap();
        assert_eq!(embedded.backend().url(), "memory://");
    }
}
