//! Brokers: how messages travel (Celery's `broker_url`).

use std::fmt;

use crate::protocol::Message;
use crate::routing::Queue;
use crate::task::DeliveryInfo;
use crate::BoxFuture;

pub mod amqp;
pub mod memory;

pub use amqp::{AmqpBroker, AmqpOptions};
pub use memory::MemoryBroker;

/// What kind of failure a broker error is; publish retry policies select on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BrokerErrorKind {
    /// The connection could not be made or was lost.
    Connection,
    /// A channel failed (it can be reopened).
    Channel,
    /// The broker refused the message (a negative publisher confirm).
    Nack,
    /// The broker refused a declaration or an operation (wrong arguments, access refused).
    Refused,
    /// The broker was shut down by this process.
    Closed,
    /// The broker did not take a message in time (`CallOptions::timeout`): retried as a
    /// connection error, as kombu retries a socket timeout; the message may have arrived after
    /// all.
    Timeout,
}

/// The wait before reconnection attempt number `attempt` (from 1): 0.25 s, doubling up to 8 s.
/// Workers wait so when starting and when consuming again after a connection loss.
pub(crate) fn reconnect_backoff(attempt: u32) -> std::time::Duration {
    let exponent = attempt.saturating_sub(1).min(5);
    std::time::Duration::from_millis(250 << exponent)
}

impl BrokerErrorKind {
    /// Celery retries connection and channel errors by default.
    pub fn is_recoverable(self) -> bool {
        matches!(
            self,
            BrokerErrorKind::Connection | BrokerErrorKind::Channel | BrokerErrorKind::Timeout
        )
    }
}

impl fmt::Display for BrokerErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BrokerErrorKind::Connection => "connection error",
            BrokerErrorKind::Channel => "channel error",
            BrokerErrorKind::Nack => "message refused",
            BrokerErrorKind::Refused => "operation refused",
            BrokerErrorKind::Closed => "broker closed",
            BrokerErrorKind::Timeout => "timed out",
        })
    }
}

/// A broker failure.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct BrokerError {
    pub kind: BrokerErrorKind,
    pub message: String,
}

impl BrokerError {
    pub fn new(kind: BrokerErrorKind, message: impl Into<String>) -> Self {
        BrokerError {
            kind,
            message: message.into(),
        }
    }
}

/// A message broker.
pub trait Broker: Send + Sync + 'static {
    /// The broker's URL without its password: it names the broker in errors.
    fn url(&self) -> &str;

    /// Declares a queue, its exchange and the binding between them.
    fn declare<'a>(&'a self, queue: &'a Queue) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// Publishes a message; it has reached the broker when the future resolves.
    fn publish<'a>(
        &'a self,
        exchange: &'a str,
        routing_key: &'a str,
        message: &'a Message,
    ) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// Starts consuming from queues with at most `prefetch` unacknowledged messages (0: no limit).
    fn consume<'a>(
        &'a self,
        queues: &'a [Queue],
        prefetch: u16,
    ) -> BoxFuture<'a, Result<Box<dyn Consumer>, BrokerError>>;

    /// Removes every ready message from a queue and says how many there were.
    fn purge<'a>(&'a self, queue: &'a str) -> BoxFuture<'a, Result<u64, BrokerError>>;
}

/// A subscription to queues.
pub trait Consumer: Send {
    /// The next delivery; `None` once the consumer is cancelled or the broker is gone.
    fn next(&mut self) -> BoxFuture<'_, Option<Result<Delivery, BrokerError>>>;

    /// Changes how many unacknowledged messages the broker may deliver (0: no limit).
    fn set_prefetch(&mut self, prefetch: u16) -> BoxFuture<'_, Result<(), BrokerError>>;

    /// Stops deliveries; messages delivered but not acknowledged go back to their queues.
    fn cancel(&mut self) -> BoxFuture<'_, ()>;

    /// Waits until every acknowledgement and rejection given so far has gone to the broker.
    /// A consumer may send them in batches; a worker calls this before it stops, so that no
    /// finished task is delivered again.
    fn flush(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// Acknowledges or rejects one delivery.
pub trait Acker: Send + Sync {
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), BrokerError>>;
    fn reject(self: Box<Self>, requeue: bool) -> BoxFuture<'static, Result<(), BrokerError>>;

    /// Whether the broker has taken the delivery back: on RabbitMQ its channel closed (the
    /// connection was lost), so the message is delivered again, and this copy must not run.
    fn is_stale(&self) -> bool {
        false
    }
}

/// A received message and the means to acknowledge it.
pub struct Delivery {
    pub message: Message,
    pub info: DeliveryInfo,
    pub acker: Box<dyn Acker>,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("message", &self.message)
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// Opens the broker a URL names: `memory://[name]`, or `amqp://user:password@host:port/vhost`
/// (also `pyamqp://`), which connects on first use.
pub fn from_url(
    url: &str,
    options: AmqpOptions,
) -> Result<std::sync::Arc<dyn Broker>, crate::error::Error> {
    match url.split_once("://").map(|(scheme, _)| scheme) {
        Some("memory") => Ok(MemoryBroker::shared(url)),
        Some("amqp" | "amqps" | "pyamqp") => {
            Ok(std::sync::Arc::new(AmqpBroker::new(url, options)?))
        }
        _ => Err(crate::error::Error::Config(format!(
            "unsupported broker URL {url:?} (supported: memory://, amqp://)"
        ))),
    }
}
