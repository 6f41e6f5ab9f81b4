//! Helpers shared by the integration tests: apps on private in-memory brokers, and brokers that
//! record or fail publishes.

#![allow(dead_code)]

pub mod proxy;
mod services;

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use celery::broker::{Broker, BrokerError, BrokerErrorKind, Consumer, MemoryBroker};
use celery::protocol::Message;
use celery::{BoxFuture, Celery, Queue};

/// A unique `memory://` URL, so that tests running in parallel never share queues.
pub fn memory_url(test: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "memory://{test}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// An app on its own in-memory broker and backend.
pub fn app(test: &str) -> Celery {
    let url = memory_url(test);
    Celery::builder(test)
        .broker_url(&url)
        .result_backend(&url)
        .build()
        .unwrap()
}

pub const WAIT: Duration = Duration::from_secs(10);

/// A memory broker that keeps a copy of every published message, with its route.
pub struct RecordingBroker {
    inner: MemoryBroker,
    pub published: Mutex<Vec<(String, String, Message)>>,
}

impl RecordingBroker {
    pub fn new(test: &str) -> Arc<Self> {
        Arc::new(RecordingBroker {
            inner: MemoryBroker::new(memory_url(test)),
            published: Mutex::default(),
        })
    }

    pub fn last(&self) -> (String, String, Message) {
        self.published
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("nothing was published")
    }

    pub fn all(&self) -> Vec<(String, String, Message)> {
        self.published.lock().unwrap().clone()
    }

    pub fn ready_count(&self, queue: &str) -> usize {
        self.inner.ready_count(queue)
    }
}

impl Broker for RecordingBroker {
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
        self.published.lock().unwrap().push((
            exchange.to_owned(),
            routing_key.to_owned(),
            message.clone(),
        ));
        self.inner.publish(exchange, routing_key, message)
    }
    fn consume<'a>(
        &'a self,
        queues: &'a [Queue],
        prefetch: u16,
    ) -> BoxFuture<'a, Result<Box<dyn Consumer>, BrokerError>> {
        self.inner.consume(queues, prefetch)
    }
    fn purge<'a>(&'a self, queue: &'a str) -> BoxFuture<'a, Result<u64, BrokerError>> {
        self.inner.purge(queue)
    }
}

/// A broker whose first `failures` publishes fail with an error of `kind`, or with
/// [`stalling`](FlakyBroker::stalling), never finish.
pub struct FlakyBroker {
    inner: MemoryBroker,
    kind: BrokerErrorKind,
    stall: bool,
    failures: AtomicU32,
    pub attempts: AtomicU32,
}

impl FlakyBroker {
    pub fn new(test: &str, kind: BrokerErrorKind, failures: u32) -> Arc<Self> {
        Arc::new(FlakyBroker {
            inner: MemoryBroker::new(memory_url(test)),
            kind,
            stall: false,
            failures: AtomicU32::new(failures),
            attempts: AtomicU32::new(0),
        })
    }

    /// Its first `failures` publishes wait for ever, as on a broker that stopped reading.
    pub fn stalling(test: &str, failures: u32) -> Arc<Self> {
        Arc::new(FlakyBroker {
            inner: MemoryBroker::new(memory_url(test)),
            kind: BrokerErrorKind::Connection,
            stall: true,
            failures: AtomicU32::new(failures),
            attempts: AtomicU32::new(0),
        })
    }
}

impl Broker for FlakyBroker {
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
        self.attempts.fetch_add(1, Ordering::SeqCst);
        let failing = self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing && self.stall {
            return Box::pin(std::future::pending());
        }
        if failing {
            let error = BrokerError::new(self.kind, "connection refused (simulated)");
            return Box::pin(async move { Err(error) });
        }
        self.inner.publish(exchange, routing_key, message)
    }
    fn consume<'a>(
        &'a self,
        queues: &'a [Queue],
        prefetch: u16,
    ) -> BoxFuture<'a, Result<Box<dyn Consumer>, BrokerError>> {
        self.inner.consume(queues, prefetch)
    }
    fn purge<'a>(&'a self, queue: &'a str) -> BoxFuture<'a, Result<u64, BrokerError>> {
        self.inner.purge(queue)
    }
}

/// Reports a missing service: a skip (printed plainly, past libtest's capture), or a failure
/// under `CELERY_TEST_REQUIRE_SERVICES=1`. Returns false so callers can `return`.
pub fn skip(test: &str, reason: &str) -> bool {
    services::skip(test, reason);
    false
}

pub const RABBITMQ_URL: &str = "amqp://guest:guest@127.0.0.1:5672//";

/// RabbitMQ on 127.0.0.1:5672, or a skip.
pub fn rabbitmq(test: &str) -> bool {
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], 5672));
    match std::net::TcpStream::connect_timeout(&address, Duration::from_secs(2)) {
        Ok(_) => true,
        Err(error) => skip(
            test,
            &format!("RabbitMQ is not reachable at 127.0.0.1:5672 ({error})"),
        ),
    }
}

/// A Python with celery 5.7: `CELERY_PYTHON`, or the virtualenv `tests/python/ensure_venv.sh`
/// creates (installing celery from PyPI the first time), or a skip.
pub fn python_celery(test: &str) -> Option<std::path::PathBuf> {
    if let Ok(python) = std::env::var("CELERY_PYTHON") {
        return Some(python.into());
    }
    let found = services::ensure_venv(std::path::Path::new(env!("CARGO_MANIFEST_DIR")));
    match found {
        Ok(python) => Some(python),
        Err(reason) => {
            skip(test, &format!("no Python Celery 5.7 virtualenv: {reason}"));
            None
        }
    }
}

/// Deletes a test's queue on RabbitMQ, and the direct exchange of the same name that routing
/// to the queue by name declared.
pub async fn delete_queue_and_exchange(broker: &celery::broker::AmqpBroker, queue: &str) {
    broker.delete_queue(queue).await.unwrap();
    broker.delete_exchange(queue).await.unwrap();
}

/// A name no other test run uses, for queues on a shared RabbitMQ.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{prefix}-{}-{nanos:x}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
