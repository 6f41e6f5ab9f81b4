//! The in-memory broker (`memory://`), the embedded default: queues in this process that carry
//! encoded messages exactly as a server would, with acknowledgements, requeueing, prefetch limits
//! and priorities.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::Notify;

use super::{Acker, Broker, BrokerError, Consumer, Delivery};
use crate::protocol::Message;
use crate::routing::Queue;
use crate::task::DeliveryInfo;
use crate::BoxFuture;

/// A broker whose queues live in this process.
pub struct MemoryBroker {
    shared: Arc<Shared>,
}

struct Shared {
    url: String,
    state: Mutex<State>,
    published: Notify,
    unacked: AtomicUsize,
}

#[derive(Default)]
struct State {
    queues: HashMap<String, MemoryQueue>,
    bindings: HashMap<(String, String), Vec<String>>,
    next_sequence: u64,
}

#[derive(Default)]
struct MemoryQueue {
    max_priority: Option<u8>,
    ready: BinaryHeap<Queued>,
}

/// A queued message; higher priority first, then first in, first out. A requeued message keeps
/// its sequence number, so it goes back to the front as on RabbitMQ.
struct Queued {
    priority: u8,
    sequence: u64,
    exchange: String,
    routing_key: String,
    redelivered: bool,
    message: Message,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> Ordering {
        self.priority
            .cmp(&other.priority)
            .then_with(|| other.sequence.cmp(&self.sequence))
    }
}

impl MemoryBroker {
    pub fn new(url: impl Into<String>) -> Self {
        MemoryBroker {
            shared: Arc::new(Shared {
                url: url.into(),
                state: Mutex::default(),
                published: Notify::new(),
                unacked: AtomicUsize::new(0),
            }),
        }
    }

    /// The process-wide broker for this URL: an app's client and worker in one process share it.
    pub fn shared(url: &str) -> Arc<dyn Broker> {
        static BROKERS: OnceLock<Mutex<HashMap<String, Arc<MemoryBroker>>>> = OnceLock::new();
        let mut brokers = BROKERS
            .get_or_init(Mutex::default)
            .lock()
            .expect("memory brokers poisoned");
        brokers
            .entry(url.to_owned())
            .or_insert_with(|| Arc::new(MemoryBroker::new(url)))
            .clone()
    }

    /// How many delivered messages are not yet acknowledged or rejected, over all queues.
    pub fn unacked_count(&self) -> usize {
        self.shared.unacked.load(AtomicOrdering::Acquire)
    }

    /// How many messages are ready (not delivered) in a queue.
    pub fn ready_count(&self, queue: &str) -> usize {
        self.shared
            .lock()
            .queues
            .get(queue)
            .map_or(0, |q| q.ready.len())
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("memory broker poisoned")
    }

    fn enqueue(&self, queue: &str, mut item: Queued) {
        let mut state = self.lock();
        let queue = state.queues.entry(queue.to_owned()).or_default();
        item.priority = match queue.max_priority {
            Some(max) => item.priority.min(max),
            None => 0,
        };
        queue.ready.push(item);
        drop(state);
        self.published.notify_waiters();
    }
}

impl Broker for MemoryBroker {
    fn url(&self) -> &str {
        &self.shared.url
    }

    fn declare<'a>(&'a self, queue: &'a Queue) -> BoxFuture<'a, Result<(), BrokerError>> {
        let mut state = self.shared.lock();
        let entry = state.queues.entry(queue.name.clone()).or_default();
        entry.max_priority = queue.max_priority;
        let bound = state
            .bindings
            .entry((queue.exchange.clone(), queue.routing_key.clone()))
            .or_default();
        if !bound.contains(&queue.name) {
            bound.push(queue.name.clone());
        }
        Box::pin(async { Ok(()) })
    }

    fn publish<'a>(
        &'a self,
        exchange: &'a str,
        routing_key: &'a str,
        message: &'a Message,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        let targets = if exchange.is_empty() {
            vec![routing_key.to_owned()]
        } else {
            let state = self.shared.lock();
            state
                .bindings
                .get(&(exchange.to_owned(), routing_key.to_owned()))
                .cloned()
                .unwrap_or_default()
        };
        if targets.is_empty() {
            tracing::warn!(
                exchange,
                routing_key,
                "message is unroutable: no queue is bound with this key"
            );
        }
        for queue in &targets {
            let sequence = {
                let mut state = self.shared.lock();
                state.next_sequence += 1;
                state.next_sequence
            };
            let item = Queued {
                priority: message.properties.priority.unwrap_or(0),
                sequence,
                exchange: exchange.to_owned(),
                routing_key: routing_key.to_owned(),
                redelivered: false,
                message: message.clone(),
            };
            self.shared.enqueue(queue, item);
        }
        Box::pin(async { Ok(()) })
    }

    fn consume<'a>(
        &'a self,
        queues: &'a [Queue],
        prefetch: u16,
    ) -> BoxFuture<'a, Result<Box<dyn Consumer>, BrokerError>> {
        let consumer = MemoryConsumer {
            shared: self.shared.clone(),
            queues: queues.iter().map(|q| q.name.clone()).collect(),
            next_queue: 0,
            flow: Arc::new(Flow {
                prefetch: AtomicUsize::new(usize::from(prefetch)),
                in_flight: AtomicUsize::new(0),
                released: Notify::new(),
            }),
            cancelled: Arc::new(AtomicBool::new(false)),
        };
        Box::pin(async move { Ok(Box::new(consumer) as Box<dyn Consumer>) })
    }

    fn purge<'a>(&'a self, queue: &'a str) -> BoxFuture<'a, Result<u64, BrokerError>> {
        let purged = self
            .shared
            .lock()
            .queues
            .get_mut(queue)
            .map_or(0, |q| std::mem::take(&mut q.ready).len());
        Box::pin(async move { Ok(purged as u64) })
    }
}

/// Prefetch accounting shared by a consumer and its unacknowledged deliveries.
struct Flow {
    prefetch: AtomicUsize,
    in_flight: AtomicUsize,
    released: Notify,
}

struct MemoryConsumer {
    shared: Arc<Shared>,
    queues: Vec<String>,
    next_queue: usize,
    flow: Arc<Flow>,
    cancelled: Arc<AtomicBool>,
}

impl MemoryConsumer {
    fn try_take(&mut self) -> Option<Delivery> {
        let prefetch = self.flow.prefetch.load(AtomicOrdering::Acquire);
        if prefetch != 0 && self.flow.in_flight.load(AtomicOrdering::Acquire) >= prefetch {
            return None;
        }
        let mut state = self.shared.lock();
        for offset in 0..self.queues.len() {
            let index = (self.next_queue + offset) % self.queues.len();
            let name = &self.queues[index];
            if let Some(item) = state.queues.get_mut(name).and_then(|q| q.ready.pop()) {
                self.next_queue = index + 1;
                self.flow.in_flight.fetch_add(1, AtomicOrdering::AcqRel);
                self.shared.unacked.fetch_add(1, AtomicOrdering::AcqRel);
                let info = DeliveryInfo {
                    exchange: item.exchange.clone(),
                    routing_key: item.routing_key.clone(),
                    priority: item.message.properties.priority,
                    redelivered: item.redelivered,
                };
                let message = item.message.clone();
                let acker = MemoryAcker {
                    shared: self.shared.clone(),
                    flow: self.flow.clone(),
                    queue: name.clone(),
                    item: Some(item),
                };
                return Some(Delivery {
                    message,
                    info,
                    acker: Box::new(acker),
                });
            }
        }
        None
    }
}

impl Consumer for MemoryConsumer {
    fn next(&mut self) -> BoxFuture<'_, Option<Result<Delivery, BrokerError>>> {
        Box::pin(async move {
            loop {
                if self.cancelled.load(AtomicOrdering::Acquire) {
                    return None;
                }
                let shared = self.shared.clone();
                let flow = self.flow.clone();
                let published = shared.published.notified();
                let released = flow.released.notified();
                tokio::pin!(published, released);
                published.as_mut().enable();
                released.as_mut().enable();
                if let Some(delivery) = self.try_take() {
                    return Some(Ok(delivery));
                }
                tokio::select! {
                    _ = published => {}
                    _ = released => {}
                }
            }
        })
    }

    fn set_prefetch(&mut self, prefetch: u16) -> BoxFuture<'_, Result<(), BrokerError>> {
        self.flow
            .prefetch
            .store(usize::from(prefetch), AtomicOrdering::Release);
        self.flow.released.notify_waiters();
        Box::pin(async { Ok(()) })
    }

    fn cancel(&mut self) -> BoxFuture<'_, ()> {
        self.cancelled.store(true, AtomicOrdering::Release);
        self.shared.published.notify_waiters();
        Box::pin(async {})
    }
}

/// Acknowledges a delivery; dropped without an answer, it puts the message back, as a closed
/// AMQP channel does.
struct MemoryAcker {
    shared: Arc<Shared>,
    flow: Arc<Flow>,
    queue: String,
    item: Option<Queued>,
}

impl MemoryAcker {
    fn settle(&mut self, requeue: bool) {
        if let Some(mut item) = self.item.take() {
            self.flow.in_flight.fetch_sub(1, AtomicOrdering::AcqRel);
            self.shared.unacked.fetch_sub(1, AtomicOrdering::AcqRel);
            if requeue {
                item.redelivered = true;
                self.shared.enqueue(&self.queue, item);
            }
            self.flow.released.notify_waiters();
        }
    }
}

impl Drop for MemoryAcker {
    fn drop(&mut self) {
        self.settle(true);
    }
}

impl Acker for MemoryAcker {
    fn ack(mut self: Box<Self>) -> BoxFuture<'static, Result<(), BrokerError>> {
        self.settle(false);
        Box::pin(async { Ok(()) })
    }

    fn reject(mut self: Box<Self>, requeue: bool) -> BoxFuture<'static, Result<(), BrokerError>> {
        self.settle(requeue);
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Properties;

    fn message(body: &str, priority: u8) -> Message {
        Message {
            headers: Vec::new(),
            properties: Properties {
                priority: Some(priority),
                ..Properties::default()
            },
            body: body.as_bytes().to_vec(),
        }
    }

    async fn next_body(consumer: &mut Box<dyn Consumer>) -> (String, Delivery) {
        let delivery = consumer.next().await.unwrap().unwrap();
        (
            String::from_utf8(delivery.message.body.clone()).unwrap(),
            delivery,
        )
    }

    #[tokio::test]
    async fn fifo_prefetch_and_requeue_on_drop() {
        let broker = MemoryBroker::new("memory://unit");
        let queue = Queue::new("q");
        broker.declare(&queue).await.unwrap();
        for body in ["a", "b", "c"] {
            broker.publish("", "q", &message(body, 0)).await.unwrap();
        }
        let mut consumer = broker
            .consume(std::slice::from_ref(&queue), 2)
            .await
            .unwrap();
        let (a, da) = next_body(&mut consumer).await;
        let (b, db) = next_body(&mut consumer).await;
        assert_eq!((a.as_str(), b.as_str()), ("a", "b"));
        // prefetch 2 reached: nothing more until one is settled
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), consumer.next())
                .await
                .is_err()
        );
        da.acker.ack().await.unwrap();
        drop(db);
        let (again, redelivered) = next_body(&mut consumer).await;
        assert_eq!(again, "b");
        assert!(redelivered.info.redelivered);
        assert_eq!(broker.ready_count("q"), 1);
    }

    #[tokio::test]
    async fn priority_queues_serve_higher_priorities_first() {
        let broker = MemoryBroker::new("memory://unit-priority");
        let queue = Queue::new("p").max_priority(10);
        broker.declare(&queue).await.unwrap();
        for (body, priority) in [("low", 1), ("high", 9), ("mid", 5)] {
            broker
                .publish("p", "p", &message(body, priority))
                .await
                .unwrap();
        }
        let mut consumer = broker
            .consume(std::slice::from_ref(&queue), 0)
            .await
            .unwrap();
        let mut order = Vec::new();
        for _ in 0..3 {
            let (body, delivery) = next_body(&mut consumer).await;
            delivery.acker.ack().await.unwrap();
            order.push(body);
        }
        assert_eq!(order, ["high", "mid", "low"]);
        assert_eq!(broker.purge("p").await.unwrap(), 0);
    }
}
