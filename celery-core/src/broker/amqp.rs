//! The AMQP broker (`amqp://`, `pyamqp://`): RabbitMQ through `lapin`, speaking to queues,
//! exchanges and header tables exactly as Python Celery (py-amqp) does.
//!
//! One connection per broker, opened on first use and reopened on the next use after it is
//! lost. Publishing goes through a small pool of channels (Celery's `broker_pool_limit`), with
//! publisher confirms by default. Each consumer has a channel of its own, which stays open while
//! any of its deliveries is unacknowledged.

mod nesting_guard;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use lapin::uri::{AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ErrorKind,
    ExchangeKind,
};

mod acks;

use tokio::task::JoinHandle;

use self::acks::AckBatcher;
use super::{Acker, Broker, BrokerError, BrokerErrorKind, Consumer, Delivery};
use crate::error::Error;
use crate::protocol::{header_name, HeaderValue, Headers, Message, Properties};
use crate::routing::Queue;
use crate::task::DeliveryInfo;
use crate::BoxFuture;

/// How an [`AmqpBroker`] connects and publishes.
#[derive(Debug, Clone, PartialEq)]
pub struct AmqpOptions {
    /// Channels kept open for publishing (Celery's `broker_pool_limit`); 0 opens a channel per
    /// message.
    pub pool_limit: usize,
    /// Wait for the broker to confirm each published message (publisher confirms).
    pub confirm_publish: bool,
    /// How long to wait for a connection (Celery's `broker_connection_timeout`).
    pub connect_timeout: Duration,
}

impl Default for AmqpOptions {
    fn default() -> Self {
        AmqpOptions {
            pool_limit: 10,
            confirm_publish: true,
            connect_timeout: Duration::from_secs(4),
        }
    }
}

impl AmqpOptions {
    pub fn pool_limit(mut self, pool_limit: usize) -> Self {
        self.pool_limit = pool_limit;
        self
    }

    pub fn confirm_publish(mut self, confirm: bool) -> Self {
        self.confirm_publish = confirm;
        self
    }

    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }
}

/// A RabbitMQ broker.
pub struct AmqpBroker {
    shared: Arc<Shared>,
}

struct Shared {
    /// The URL with its password masked, for messages.
    url: String,
    uri: AMQPUri,
    options: AmqpOptions,
    connection: tokio::sync::Mutex<Option<Arc<Connection>>>,
    pool: Mutex<Pool>,
    /// The channel for declarations, purges and deletions. A refused declaration closes its
    /// channel, so these never share one with publishing.
    control: tokio::sync::Mutex<Option<Channel>>,
    /// Exchanges known to exist on the current connection: declared on it, or checked before a
    /// first publish to them.
    exchanges: Mutex<HashSet<String>>,
    /// The queues declared for publishers, declared again on every new connection.
    declared: Mutex<Vec<Declaration>>,
}

#[derive(Default)]
struct Pool {
    channels: Vec<Pooled>,
    opening: usize,
}

struct Pooled {
    channel: Channel,
    in_flight: Arc<AtomicUsize>,
}

/// A publishing channel in use; the pool sees how busy each channel is.
struct Lease {
    channel: Channel,
    in_flight: Arc<AtomicUsize>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl AmqpBroker {
    /// A broker for `amqp://user:password@host:port/vhost` that connects on first use.
    ///
    /// As in Celery, user and password default to `guest`, the host to `localhost`, and
    /// `amqp://host//` names the vhost `/` (an empty vhost is `/` too). `pyamqp://` is the same
    /// scheme. Query parameters `heartbeat`, `frame_max`, `channel_max` and
    /// `connection_timeout` (ms) are honoured; others are ignored.
    pub fn new(url: &str, options: AmqpOptions) -> Result<Self, Error> {
        let (uri, display) = parse_url(url)?;
        Ok(AmqpBroker {
            shared: Arc::new(Shared {
                url: display,
                uri,
                options,
                connection: tokio::sync::Mutex::new(None),
                pool: Mutex::default(),
                control: tokio::sync::Mutex::new(None),
                exchanges: Mutex::default(),
                declared: Mutex::default(),
            }),
        })
    }

    /// Connects now with the default options, so that a wrong URL or an unreachable broker shows
    /// at once.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        Self::connect_with(url, AmqpOptions::default()).await
    }

    /// Connects now with these options.
    pub async fn connect_with(url: &str, options: AmqpOptions) -> Result<Self, Error> {
        let broker = Self::new(url, options)?;
        broker.shared.connection().await?;
        Ok(broker)
    }

    /// Deletes a queue and says how many messages it held. This broker no longer declares it
    /// again after a reconnection; an app that still routes tasks to it declared it once and
    /// does not declare it again either, so its messages would be unroutable (an error with
    /// publisher confirms; dropped by RabbitMQ without them, as for Python Celery): delete
    /// only the queues nothing sends to any more.
    pub async fn delete_queue(&self, queue: &str) -> Result<u64, BrokerError> {
        let name = short(queue, "queue name")?;
        let (_guard, channel) = self.shared.control_channel().await?;
        let count = channel
            .queue_delete(name, QueueDeleteOptions::default())
            .await
            .map_err(|e| self.shared.error(format_args!("delete queue {queue:?}"), e))?;
        // Deleted on purpose: a new connection must not declare it again.
        self.shared
            .declared
            .lock()
            .expect("declarations poisoned")
            .retain(|declaration| declaration.queue != queue);
        Ok(u64::from(count))
    }

    /// Deletes an exchange (kombu's `Exchange.delete`); its bindings go with it. A later
    /// publish to it is checked again, and refused while it does not exist.
    pub async fn delete_exchange(&self, exchange: &str) -> Result<(), BrokerError> {
        let name = short(exchange, "exchange name")?;
        let (_guard, channel) = self.shared.control_channel().await?;
        channel
            .exchange_delete(name, ExchangeDeleteOptions::default())
            .await
            .map_err(|e| {
                self.shared
                    .error(format_args!("delete exchange {exchange:?}"), e)
            })?;
        self.shared
            .exchanges
            .lock()
            .expect("exchange set poisoned")
            .remove(exchange);
        Ok(())
    }

    /// Declares a queue with arguments of its own (the rpc reply queue's `x-expires`).
    pub(crate) async fn declare_queue(&self, declaration: &Declaration) -> Result<(), BrokerError> {
        let (_guard, channel) = self.shared.control_channel().await?;
        self.shared.declare_on(&channel, declaration).await
    }

    /// Takes the messages waiting in a queue, one `basic.get` each, without acknowledgements
    /// (declaring the queue first), up to `limit`: what Celery's rpc:// backend reads before
    /// it consumes (`_slurp_from_queue`), so that a first look at a result finds it.
    pub(crate) async fn take_waiting(
        &self,
        declaration: &Declaration,
        limit: usize,
    ) -> Result<Vec<Message>, BrokerError> {
        let (_guard, channel) = self.shared.control_channel().await?;
        self.shared.declare_on(&channel, declaration).await?;
        let queue = short(&declaration.queue, "queue name")?;
        let mut taken = Vec::new();
        while taken.len() < limit {
            let got = channel
                .basic_get(queue.clone(), BasicGetOptions { no_ack: true })
                .await
                .map_err(|e| {
                    self.shared
                        .error(format_args!("get from queue {:?}", declaration.queue), e)
                })?;
            let Some(got) = got else { break };
            let last = got.message_count == 0;
            taken.push(message_from(&got.delivery.properties, got.delivery.data));
            if last {
                break;
            }
        }
        Ok(taken)
    }

    /// Consumes queues without acknowledgements (`no_ack`: the broker forgets a message once
    /// it is sent), declaring them again after every reconnection; the caller has declared them
    /// (with [`take_waiting`](AmqpBroker::take_waiting)). For replies, as Celery's rpc://
    /// backend consumes them: a reply is wanted only by this process.
    pub(crate) async fn consume_unacknowledged(
        &self,
        declarations: Vec<Declaration>,
    ) -> Result<AmqpConsumer, BrokerError> {
        let (prefetch, acknowledged, declare_first) = (0, false, false);
        let shared = self.shared.clone();
        AmqpConsumer::start(shared, declarations, prefetch, acknowledged, declare_first).await
    }
}

impl fmt::Debug for AmqpBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpBroker")
            .field("url", &self.shared.url)
            .field("options", &self.shared.options)
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn error(&self, context: impl fmt::Display, error: lapin::Error) -> BrokerError {
        amqp_error(format_args!("{context} on {}", self.url), &error)
    }

    /// The connection, opened or reopened when there is none that works.
    async fn connection(&self) -> Result<Arc<Connection>, BrokerError> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            if connection.status().connected() {
                return Ok(connection.clone());
            }
            tracing::warn!(broker = %self.url, "connection lost, reconnecting");
        }
        *slot = None;
        let properties = ConnectionProperties::default().with_connection_name(LongString::from(
            format!("celery-rs {}", std::process::id()),
        ));
        let timeout = self.options.connect_timeout;
        let connection = tokio::time::timeout(
            timeout,
            // Through the nesting guard: lapin would recurse into a header table of any depth.
            Connection::connect_uri_with_runtime(
                self.uri.clone(),
                properties,
                async_rs::Runtime::new(nesting_guard::GuardedTokio::current()),
            ),
        )
        .await
        .map_err(|_| {
            BrokerError::new(
                BrokerErrorKind::Connection,
                format!(
                    "cannot connect to {}: timed out after {} s",
                    self.url,
                    timeout.as_secs_f64()
                ),
            )
        })?
        .map_err(|e| amqp_error(format_args!("cannot connect to {}", self.url), &e))?;
        tracing::debug!(broker = %self.url, "connected");
        // Whatever was known to exist may be gone with the old connection's broker.
        self.exchanges
            .lock()
            .expect("exchange set poisoned")
            .clear();
        self.redeclare(&connection).await;
        let connection = Arc::new(connection);
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// Declares again, on a new connection and before anything else can use it, the queues
    /// declared for publishers: a broker restarted without its definitions would otherwise drop
    /// their messages as unroutable (and confirm them). kombu declares again after reconnecting
    /// too. A declaration that fails is logged; the publish retry and the next reconnection try
    /// again.
    async fn redeclare(&self, connection: &Connection) {
        let declarations = self.declared.lock().expect("declarations poisoned").clone();
        let mut channel: Option<Channel> = None;
        for declaration in &declarations {
            // A refused declaration closes its channel: the next one gets a new channel.
            let open = match channel.take().filter(|c| c.status().connected()) {
                Some(open) => open,
                None => match connection.create_channel().await {
                    Ok(opened) => opened,
                    Err(error) => {
                        tracing::warn!(broker = %self.url, %error, "cannot declare the queues again");
                        return;
                    }
                },
            };
            if let Err(error) = self.declare_on(&open, declaration).await {
                tracing::warn!(broker = %self.url, queue = %declaration.queue, %error, "cannot declare a queue again after reconnecting");
            }
            channel = Some(open);
        }
        if let Some(channel) = channel {
            let _ = channel.close(200, "declared".into()).await;
        }
    }

    /// Remembers a queue declared for publishers, to declare it again on a new connection.
    fn remember_declaration(&self, declaration: Declaration) {
        let mut declared = self.declared.lock().expect("declarations poisoned");
        match declared.iter_mut().find(|d| d.queue == declaration.queue) {
            Some(known) => *known = declaration,
            None => declared.push(declaration),
        }
    }

    async fn open_channel(&self, confirm: bool) -> Result<Channel, BrokerError> {
        let connection = self.connection().await?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| self.error("open a channel", e))?;
        if confirm {
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(|e| self.error("enable publisher confirms", e))?;
        }
        Ok(channel)
    }

    /// The control channel, held for the duration of one operation.
    async fn control_channel(
        &self,
    ) -> Result<(tokio::sync::MutexGuard<'_, Option<Channel>>, Channel), BrokerError> {
        let mut slot = self.control.lock().await;
        let channel = match slot.as_ref() {
            Some(channel) if channel.status().connected() => channel.clone(),
            _ => {
                let channel = self.open_channel(false).await?;
                *slot = Some(channel.clone());
                channel
            }
        };
        Ok((slot, channel))
    }

    fn remember_exchange(&self, exchange: &str) {
        let mut known = self.exchanges.lock().expect("exchange set poisoned");
        if !known.contains(exchange) {
            known.insert(exchange.to_owned());
        }
    }

    /// Makes sure an exchange exists before a first publish to it. A publish to a missing
    /// exchange makes RabbitMQ close the channel, and with it every publish in flight on that
    /// pooled channel; a passive declaration on the control channel finds it out instead.
    async fn check_exchange(&self, exchange: &str) -> Result<(), BrokerError> {
        if always_exists(exchange)
            || self
                .exchanges
                .lock()
                .expect("exchange set poisoned")
                .contains(exchange)
        {
            return Ok(());
        }
        let (_guard, channel) = self.control_channel().await?;
        channel
            .exchange_declare(
                short(exchange, "exchange name")?,
                ExchangeKind::Direct,
                ExchangeDeclareOptions {
                    passive: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| self.error(format_args!("publish to exchange {exchange:?}"), e))?;
        self.remember_exchange(exchange);
        Ok(())
    }

    /// A publishing channel: an idle one, a new one while the pool has room, else the least
    /// busy one (publishes pipeline on a channel).
    async fn lease(&self) -> Result<Lease, BrokerError> {
        let limit = self.options.pool_limit;
        {
            let mut pool = self.pool.lock().expect("channel pool poisoned");
            pool.channels.retain(|p| p.channel.status().connected());
            let idle = pool
                .channels
                .iter()
                .find(|p| p.in_flight.load(Ordering::Acquire) == 0);
            let busiest_allowed = pool.channels.len() + pool.opening >= limit;
            let pick = match idle {
                Some(pooled) => Some(pooled),
                None if busiest_allowed => pool
                    .channels
                    .iter()
                    .min_by_key(|p| p.in_flight.load(Ordering::Acquire)),
                None => None,
            };
            if let Some(pooled) = pick {
                pooled.in_flight.fetch_add(1, Ordering::AcqRel);
                return Ok(Lease {
                    channel: pooled.channel.clone(),
                    in_flight: pooled.in_flight.clone(),
                });
            }
            pool.opening += 1;
        }
        // Counted back when dropped: a publish given up on (its timeout, a caller that stopped
        // waiting) may drop this future while the channel opens, and a count left behind would
        // keep the pool from ever opening that channel.
        struct Opening<'a>(&'a Mutex<Pool>);
        impl Drop for Opening<'_> {
            fn drop(&mut self) {
                let mut pool = self.0.lock().unwrap_or_else(PoisonError::into_inner);
                pool.opening -= 1;
            }
        }
        let opening = Opening(&self.pool);
        let opened = self.open_channel(self.options.confirm_publish).await;
        drop(opening);
        let mut pool = self.pool.lock().expect("channel pool poisoned");
        let channel = opened?;
        let in_flight = Arc::new(AtomicUsize::new(1));
        if pool.channels.len() < limit {
            pool.channels.push(Pooled {
                channel: channel.clone(),
                in_flight: in_flight.clone(),
            });
        }
        Ok(Lease { channel, in_flight })
    }

    async fn declare_on(
        &self,
        channel: &Channel,
        declaration: &Declaration,
    ) -> Result<(), BrokerError> {
        let Declaration {
            queue,
            durable,
            auto_delete,
            arguments,
            exchange,
            exchange_type,
            routing_key,
        } = declaration;
        // The predeclared exchanges may not be declared.
        if !always_exists(exchange) {
            channel
                .exchange_declare(
                    short(exchange, "exchange name")?,
                    exchange_kind(exchange_type),
                    ExchangeDeclareOptions {
                        durable: true,
                        ..ExchangeDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(|e| self.error(format_args!("declare exchange {exchange:?}"), e))?;
            self.remember_exchange(exchange);
        }
        channel
            .queue_declare(
                short(queue, "queue name")?,
                QueueDeclareOptions {
                    durable: *durable,
                    auto_delete: *auto_delete,
                    ..QueueDeclareOptions::default()
                },
                arguments.clone(),
            )
            .await
            .map_err(|e| self.error(format_args!("declare queue {queue:?}"), e))?;
        if !exchange.is_empty() {
            channel
                .queue_bind(
                    short(queue, "queue name")?,
                    short(exchange, "exchange name")?,
                    short(routing_key, "routing key")?,
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| {
                    self.error(
                        format_args!(
                            "bind queue {queue:?} to exchange {exchange:?} with key {routing_key:?}"
                        ),
                        e,
                    )
                })?;
        }
        Ok(())
    }
}

impl Broker for AmqpBroker {
    fn url(&self) -> &str {
        &self.shared.url
    }

    fn declare<'a>(&'a self, queue: &'a Queue) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let declaration = Declaration::from(queue);
            self.declare_queue(&declaration).await?;
            self.shared.remember_declaration(declaration);
            Ok(())
        })
    }

    fn publish<'a>(
        &'a self,
        exchange: &'a str,
        routing_key: &'a str,
        message: &'a Message,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let shared = &self.shared;
            let exchange_name = short(exchange, "exchange name")?;
            let key = short(routing_key, "routing key")?;
            let properties = basic_properties(message)?;
            shared.check_exchange(exchange).await?;
            let lease = shared.lease().await?;
            let context = || format!("publish to exchange {exchange:?} with key {routing_key:?}");
            let failed = |e| caught_by_another_refusal(shared.error(context(), e), exchange);
            // With confirms, a message no queue takes comes back (mandatory) before its
            // confirm, and the publish fails instead of RabbitMQ dropping it. Without them,
            // lapin would keep every returned message, so nothing is asked back.
            let options = BasicPublishOptions {
                mandatory: shared.options.confirm_publish,
                ..BasicPublishOptions::default()
            };
            let confirm = lease
                .channel
                .basic_publish(exchange_name, key, options, &message.body, properties)
                .await
                .map_err(failed)?;
            if !shared.options.confirm_publish {
                return Ok(());
            }
            match confirm.await.map_err(failed)? {
                Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
                // lapin hands a returned message to whichever confirm it completes next, and
                // a `multiple` ack completes several: it is this publish's only if it is this
                // message. Otherwise this one was routed (and the other is not reported).
                Confirmation::Ack(Some(returned))
                    if !is_this(&returned, exchange, routing_key, message) =>
                {
                    Ok(())
                }
                Confirmation::Ack(Some(returned)) => Err(BrokerError::new(
                    BrokerErrorKind::Refused,
                    format!(
                        "{} on {}: no queue took the message (returned: {} {})",
                        context(),
                        shared.url,
                        returned.reply_code,
                        returned.reply_text
                    ),
                )),
                Confirmation::Nack(_) => Err(BrokerError::new(
                    BrokerErrorKind::Nack,
                    format!(
                        "{} on {}: the broker refused the message",
                        context(),
                        shared.url
                    ),
                )),
            }
        })
    }

    fn consume<'a>(
        &'a self,
        queues: &'a [Queue],
        prefetch: u16,
    ) -> BoxFuture<'a, Result<Box<dyn Consumer>, BrokerError>> {
        let declarations = queues.iter().map(Declaration::from).collect();
        Box::pin(async move {
            // Declared by the app beforehand; declared again after reconnecting.
            let (acknowledged, declare_first) = (true, false);
            let shared = self.shared.clone();
            let consumer =
                AmqpConsumer::start(shared, declarations, prefetch, acknowledged, declare_first)
                    .await?;
            Ok(Box::new(consumer) as Box<dyn Consumer>)
        })
    }

    fn purge<'a>(&'a self, queue: &'a str) -> BoxFuture<'a, Result<u64, BrokerError>> {
        Box::pin(async move {
            let name = short(queue, "queue name")?;
            let (_guard, channel) = self.shared.control_channel().await?;
            let count = channel
                .queue_purge(name, QueuePurgeOptions::default())
                .await
                .map_err(|e| self.shared.error(format_args!("purge queue {queue:?}"), e))?;
            Ok(u64::from(count))
        })
    }
}

/// A queue to declare: its flags and arguments, and the exchange it is bound to ("" for none).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Declaration {
    pub queue: String,
    pub durable: bool,
    pub auto_delete: bool,
    pub arguments: FieldTable,
    pub exchange: String,
    pub exchange_type: String,
    pub routing_key: String,
}

impl From<&Queue> for Declaration {
    /// The arguments kombu sends for the queue: `x-max-priority` (as py-amqp's `I`) and
    /// `x-dead-letter-exchange`/`-routing-key` (as `S`) only when set, so that redeclaring a
    /// queue Python declared never fails.
    fn from(queue: &Queue) -> Self {
        let mut arguments = FieldTable::default();
        if let Some(max) = queue.max_priority {
            arguments.insert(
                ShortString::from("x-max-priority"),
                AMQPValue::LongInt(i32::from(max)),
            );
        }
        let dead_letter = [
            ("x-dead-letter-exchange", &queue.dead_letter_exchange),
            ("x-dead-letter-routing-key", &queue.dead_letter_routing_key),
        ];
        for (name, value) in dead_letter {
            if let Some(value) = value {
                arguments.insert(
                    ShortString::from(name),
                    AMQPValue::LongString(LongString::from(value.as_bytes())),
                );
            }
        }
        Declaration {
            queue: queue.name.clone(),
            durable: queue.durable,
            auto_delete: queue.auto_delete,
            arguments,
            exchange: queue.exchange.clone(),
            exchange_type: queue.exchange_type.clone(),
            routing_key: queue.routing_key.clone(),
        }
    }
}

fn exchange_kind(exchange_type: &str) -> ExchangeKind {
    match exchange_type {
        "direct" => ExchangeKind::Direct,
        "fanout" => ExchangeKind::Fanout,
        "topic" => ExchangeKind::Topic,
        "headers" => ExchangeKind::Headers,
        other => ExchangeKind::Custom(other.to_owned()),
    }
}

/// A consumer of one or more queues on a channel of its own.
pub(crate) struct AmqpConsumer {
    /// What each session is opened with; its prefetch follows `set_prefetch`.
    plan: SessionPlan,
    session: Option<Session>,
    /// A reconnection under way, as a task of its own: the worker's loop drops the `next()`
    /// future whenever another event comes first, and a backoff or a connection attempt made
    /// inside it would start over each time (a busy worker would never reconnect).
    reconnecting: Option<JoinHandle<Result<Session, BrokerError>>>,
    cancelled: bool,
    /// Consecutive failures, for the reconnection backoff.
    failures: u32,
}

/// A channel and its consumers, one per queue.
struct Session {
    channel: Channel,
    consumers: Vec<Option<lapin::Consumer>>,
    /// The first delivery waiting in each consumer, taken out to compare delivery tags.
    heads: Vec<Option<lapin::message::Delivery>>,
    /// `None` when consuming with `no_ack`.
    acks: Option<AckBatcher>,
    /// The prefetch count the channel was given.
    prefetch: u16,
    /// The queue whose consumer the broker cancelled (the queue was deleted, its node went
    /// down): the session ends there, and the next one declares the queue again.
    cancelled_queue: Option<String>,
}

impl AmqpConsumer {
    async fn start(
        shared: Arc<Shared>,
        declarations: Vec<Declaration>,
        prefetch: u16,
        acknowledged: bool,
        declare_first: bool,
    ) -> Result<Self, BrokerError> {
        let plan = SessionPlan {
            shared,
            declarations,
            prefetch,
            acknowledged,
        };
        let session = plan.open(declare_first).await?;
        Ok(AmqpConsumer {
            plan,
            session: Some(session),
            reconnecting: None,
            cancelled: false,
            failures: 0,
        })
    }

    /// Opens a new session after `delay`, in a task of its own; declares the queues again, as
    /// they may have gone with the connection (auto-delete, a broker restarted without durable
    /// queues, a queue deleted while consumed).
    fn reconnect_later(&self, delay: Duration) -> JoinHandle<Result<Session, BrokerError>> {
        let plan = self.plan.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            plan.open(true).await
        })
    }
}

/// What a consumer session is opened with.
#[derive(Clone)]
struct SessionPlan {
    shared: Arc<Shared>,
    declarations: Vec<Declaration>,
    prefetch: u16,
    /// Whether the broker waits for an acknowledgement of each delivery (no `no_ack`).
    acknowledged: bool,
}

impl SessionPlan {
    async fn open(&self, declare: bool) -> Result<Session, BrokerError> {
        let shared = &self.shared;
        let channel = shared.open_channel(false).await?;
        if declare {
            for declaration in &self.declarations {
                shared.declare_on(&channel, declaration).await?;
            }
        }
        // Celery sets a channel-wide limit on RabbitMQ (its `qos_semantics_matches_spec` is
        // false there): one budget for all the queues, changeable while consuming.
        channel
            .basic_qos(self.prefetch, BasicQosOptions { global: true })
            .await
            .map_err(|e| shared.error("set the prefetch count", e))?;
        let mut consumers = Vec::with_capacity(self.declarations.len());
        for declaration in &self.declarations {
            let tag = format!("celery-rs-{}", uuid::Uuid::new_v4());
            let consumer = channel
                .basic_consume(
                    short(&declaration.queue, "queue name")?,
                    ShortString::from(tag),
                    BasicConsumeOptions {
                        no_ack: !self.acknowledged,
                        ..BasicConsumeOptions::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(|e| {
                    shared.error(format_args!("consume queue {:?}", declaration.queue), e)
                })?;
            consumers.push(Some(consumer));
        }
        Ok(Session {
            heads: consumers.iter().map(|_| None).collect(),
            acks: self
                .acknowledged
                .then(|| AckBatcher::start(channel.clone())),
            channel,
            consumers,
            prefetch: self.prefetch,
            cancelled_queue: None,
        })
    }
}

impl AmqpConsumer {
    fn delivery(acks: Option<&AckBatcher>, delivery: lapin::message::Delivery) -> Delivery {
        let lapin::message::Delivery {
            delivery_tag,
            exchange,
            routing_key,
            redelivered,
            properties,
            data,
            ..
        } = delivery;
        let message = message_from(&properties, data);
        Delivery {
            info: DeliveryInfo {
                exchange: exchange.into(),
                routing_key: routing_key.into(),
                priority: message.properties.priority,
                redelivered,
            },
            message,
            // lapin's own acker is not used: acknowledgements go through the batcher, which
            // sends one `multiple` ack for many deliveries.
            acker: match acks {
                Some(acks) => Box::new(AmqpAcker {
                    tag: delivery_tag,
                    pending: true,
                    acks: acks.clone(),
                }),
                None => Box::new(NothingToAcknowledge),
            },
        }
    }
}

impl Session {
    /// The next delivery of any of the queues, lowest delivery tag first.
    ///
    /// The queues share the channel, whose tags the broker numbers in the order it sends, and
    /// lapin hands each delivery to its queue's consumer in that order. Handed out in tag order,
    /// the acknowledgement window sees increasing tags, and a `multiple` acknowledgement never
    /// covers a delivery still waiting in another queue's consumer. So each consumer's first
    /// delivery is taken out, the consumers without one are polled again until a pass finds
    /// nothing new (a lower tag reached its consumer before a higher one was seen), and the
    /// lowest is handed out.
    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<lapin::Result<lapin::message::Delivery>>> {
        loop {
            let mut found = false;
            for (consumer, head) in self.consumers.iter_mut().zip(&mut self.heads) {
                let (Some(stream), None) = (consumer.as_mut(), head.as_ref()) else {
                    continue;
                };
                match Pin::new(&mut *stream).poll_next(cx) {
                    Poll::Ready(Some(Ok(delivery))) => {
                        *head = Some(delivery);
                        found = true;
                    }
                    Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error))),
                    Poll::Ready(None) => {
                        // Every queue is consumed again through a new session (what this one
                        // still holds goes back to its queue as its channel closes), as kombu
                        // recovers from `ConsumerCancelled`: not one queue left unread.
                        tracing::warn!(queue = %stream.queue(), "the broker cancelled a consumer");
                        self.cancelled_queue = Some(stream.queue().to_string());
                        *consumer = None;
                        return Poll::Ready(None);
                    }
                    Poll::Pending => {}
                }
            }
            if !found {
                break;
            }
        }
        let lowest = self
            .heads
            .iter_mut()
            .filter(|head| head.is_some())
            .min_by_key(|head| head.as_ref().map(|delivery| delivery.delivery_tag));
        if let Some(delivery) = lowest.and_then(Option::take) {
            return Poll::Ready(Some(Ok(delivery)));
        }
        Poll::Pending
    }
}

impl Consumer for AmqpConsumer {
    fn next(&mut self) -> BoxFuture<'_, Option<Result<Delivery, BrokerError>>> {
        Box::pin(async move {
            loop {
                if self.cancelled {
                    return None;
                }
                let Some(session) = self.session.as_mut() else {
                    let delay = super::reconnect_backoff(self.failures);
                    let attempt = match &mut self.reconnecting {
                        Some(attempt) => attempt,
                        None => self.reconnecting.insert(self.reconnect_later(delay)),
                    };
                    // Awaited by reference: if this future is dropped, the attempt goes on.
                    let outcome = attempt.await;
                    self.reconnecting = None;
                    let error = match outcome {
                        Ok(Ok(mut session)) => {
                            tracing::info!(broker = %self.plan.shared.url, "consuming again after a connection loss");
                            self.failures = 0;
                            // A prefetch changed while reconnecting.
                            if session.prefetch != self.plan.prefetch {
                                if let Err(error) = session
                                    .channel
                                    .basic_qos(self.plan.prefetch, BasicQosOptions { global: true })
                                    .await
                                {
                                    tracing::warn!(%error, "could not change the prefetch count");
                                }
                                session.prefetch = self.plan.prefetch;
                            }
                            self.session = Some(session);
                            continue;
                        }
                        Ok(Err(error)) => error,
                        Err(ended) => BrokerError::new(
                            BrokerErrorKind::Connection,
                            format!("reconnecting to {}: {ended}", self.plan.shared.url),
                        ),
                    };
                    self.failures += 1;
                    return Some(Err(error));
                };
                let item = std::future::poll_fn(|cx| session.poll_next(cx)).await;
                let error = match item {
                    Some(Ok(delivery)) => {
                        if let Some(acks) = &session.acks {
                            acks.delivered(delivery.delivery_tag);
                        }
                        return Some(Ok(Self::delivery(session.acks.as_ref(), delivery)));
                    }
                    Some(Err(error)) => self.plan.shared.error("consume", error),
                    None if self.cancelled => return None,
                    // As kombu treats a consumer the broker cancelled (`ConsumerCancelled`):
                    // a recoverable error; a new session declares the queue again.
                    None => BrokerError::new(
                        BrokerErrorKind::Channel,
                        format!(
                            "the broker {} cancelled the consumer of {}",
                            self.plan.shared.url,
                            session.cancelled_queue.as_deref().unwrap_or("a queue")
                        ),
                    ),
                };
                self.session = None;
                self.failures += 1;
                return Some(Err(error));
            }
        })
    }

    fn set_prefetch(&mut self, prefetch: u16) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async move {
            self.plan.prefetch = prefetch;
            match &self.session {
                Some(session) => session
                    .channel
                    .basic_qos(prefetch, BasicQosOptions { global: true })
                    .await
                    .map_err(|e| self.plan.shared.error("set the prefetch count", e)),
                // The next session starts with it.
                None => Ok(()),
            }
        })
    }

    fn flush(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(acks) = self.session.as_ref().and_then(|s| s.acks.as_ref()) {
                acks.flush().await;
            }
        })
    }

    /// Stops deliveries. The channel stays open while deliveries are unacknowledged, so a
    /// running task can still be acknowledged; it closes (and the broker requeues what was
    /// never acknowledged) once the consumer and all its deliveries are dropped.
    fn cancel(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.cancelled = true;
            if let Some(attempt) = self.reconnecting.take() {
                attempt.abort();
            }
            let Some(session) = &self.session else {
                return;
            };
            for consumer in session.consumers.iter().flatten() {
                if let Err(error) = session
                    .channel
                    .basic_cancel(consumer.tag(), BasicCancelOptions::default())
                    .await
                {
                    tracing::warn!(%error, queue = %consumer.queue(), "could not cancel a consumer");
                }
            }
        })
    }
}

impl Drop for AmqpConsumer {
    fn drop(&mut self) {
        // A session opened for nobody would hold its channel and take deliveries.
        if let Some(attempt) = self.reconnecting.take() {
            attempt.abort();
        }
    }
}

/// Acknowledges or rejects one delivery through its channel's [`AckBatcher`], which keeps the
/// channel open until then. Dropped without an answer, it puts the message back in its queue.
struct AmqpAcker {
    tag: u64,
    pending: bool,
    acks: AckBatcher,
}

impl Acker for AmqpAcker {
    fn is_stale(&self) -> bool {
        self.pending && !self.acks.channel_open()
    }

    fn ack(mut self: Box<Self>) -> BoxFuture<'static, Result<(), BrokerError>> {
        let queued = match std::mem::take(&mut self.pending) {
            true => self.acks.ack(self.tag),
            false => Ok(()),
        };
        Box::pin(std::future::ready(queued))
    }

    fn reject(mut self: Box<Self>, requeue: bool) -> BoxFuture<'static, Result<(), BrokerError>> {
        let queued = match std::mem::take(&mut self.pending) {
            true => self.acks.reject(self.tag, requeue),
            false => Ok(()),
        };
        Box::pin(std::future::ready(queued))
    }
}

impl Drop for AmqpAcker {
    fn drop(&mut self) {
        if self.pending {
            if let Err(error) = self.acks.reject(self.tag, true) {
                tracing::debug!(%error, "could not requeue a dropped delivery");
            }
        }
    }
}

/// The acker of a delivery consumed with `no_ack`: the broker has already forgotten it.
struct NothingToAcknowledge;

impl Acker for NothingToAcknowledge {
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), BrokerError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn reject(self: Box<Self>, _requeue: bool) -> BoxFuture<'static, Result<(), BrokerError>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// Classifies a lapin error: connection trouble, channel trouble, or a refusal by the broker.
fn amqp_error(context: impl fmt::Display, error: &lapin::Error) -> BrokerError {
    let kind = match error.kind() {
        ErrorKind::ProtocolError(amqp) => match amqp.get_id() {
            // ACCESS_REFUSED, NOT_FOUND, RESOURCE_LOCKED, PRECONDITION_FAILED, INVALID_PATH,
            // NOT_ALLOWED, NOT_IMPLEMENTED: asking again gets the same answer.
            403..=406 | 402 | 530 | 540 => BrokerErrorKind::Refused,
            _ if error.is_amqp_soft_error() => BrokerErrorKind::Channel,
            _ => BrokerErrorKind::Connection,
        },
        ErrorKind::InvalidChannel(_)
        | ErrorKind::InvalidChannelState(..)
        | ErrorKind::ChannelsLimitReached => BrokerErrorKind::Channel,
        ErrorKind::AuthProviderError(_) | ErrorKind::SerialisationError(_) => {
            BrokerErrorKind::Refused
        }
        _ => BrokerErrorKind::Connection,
    };
    BrokerError::new(kind, format!("{context}: {error}"))
}

/// A refusal closes the whole channel, and lapin reports it to every publish in flight on that
/// channel. RabbitMQ's text names the exchange it refused (`no exchange 'x'`, `access to exchange
/// 'x'`); when that is not the exchange of this publish, this message was not refused, only
/// caught in the closing channel: a channel error, which the publish retry sends again.
fn caught_by_another_refusal(error: BrokerError, exchange: &str) -> BrokerError {
    if error.kind != BrokerErrorKind::Refused {
        return error;
    }
    let named = error
        .message
        .split_once("exchange '")
        .and_then(|(_, rest)| rest.split_once('\''))
        .map(|(name, _)| name);
    match named {
        Some(name) if name != exchange => BrokerError::new(
            BrokerErrorKind::Channel,
            format!(
                "{} (the broker refused another message on the same channel, which closed it)",
                error.message
            ),
        ),
        _ => error,
    }
}

/// The default exchange and the `amq.*` ones: predeclared by every broker.
fn always_exists(exchange: &str) -> bool {
    exchange.is_empty() || exchange.starts_with("amq.")
}

/// An AMQP short string (names, keys, most properties): at most 255 bytes.
fn short(value: &str, what: &str) -> Result<ShortString, BrokerError> {
    ShortString::try_new(value).map_err(|error| {
        BrokerError::new(
            BrokerErrorKind::Refused,
            format!("{what} {value:?} cannot be sent: {error}"),
        )
    })
}

/// The basic properties of a message; `headers` is always present (an empty table for result
/// messages, as Celery sends them).
pub(crate) fn basic_properties(message: &Message) -> Result<BasicProperties, BrokerError> {
    let Properties {
        correlation_id,
        reply_to,
        content_type,
        content_encoding,
        delivery_mode,
        priority,
        expiration,
    } = &message.properties;
    let mut properties = BasicProperties::default();
    if !content_type.is_empty() {
        properties = properties.with_content_type(short(content_type, "content_type")?);
    }
    if !content_encoding.is_empty() {
        properties = properties.with_content_encoding(short(content_encoding, "content_encoding")?);
    }
    properties = properties.with_headers(encode_headers(&message.headers)?);
    if *delivery_mode != 0 {
        properties = properties.with_delivery_mode(*delivery_mode);
    }
    if let Some(priority) = priority {
        properties = properties.with_priority(*priority);
    }
    if let Some(id) = correlation_id {
        properties = properties.with_correlation_id(short(id, "correlation_id")?);
    }
    if let Some(reply_to) = reply_to {
        properties = properties.with_reply_to(short(reply_to, "reply_to")?);
    }
    if let Some(expiration) = expiration {
        properties = properties.with_expiration(short(expiration, "expiration")?);
    }
    Ok(properties)
}

/// A received message in the broker-neutral form.
fn message_from(properties: &BasicProperties, body: Vec<u8>) -> Message {
    let text = |value: &Option<ShortString>| value.as_ref().map(|s| s.as_str().to_owned());
    Message {
        headers: properties
            .headers()
            .as_ref()
            .map(decode_headers)
            .unwrap_or_default(),
        properties: Properties {
            correlation_id: text(properties.correlation_id()),
            reply_to: text(properties.reply_to()),
            content_type: text(properties.content_type()).unwrap_or_default(),
            content_encoding: text(properties.content_encoding()).unwrap_or_default(),
            delivery_mode: properties.delivery_mode().unwrap_or(0),
            priority: *properties.priority(),
            expiration: text(properties.expiration()),
        },
        body,
    }
}

/// Whether a message RabbitMQ returned is this one: the same destination, correlation id and
/// body.
fn is_this(
    returned: &lapin::message::BasicReturnMessage,
    exchange: &str,
    routing_key: &str,
    message: &Message,
) -> bool {
    let delivery = &returned.delivery;
    delivery.exchange.as_str() == exchange
        && delivery.routing_key.as_str() == routing_key
        && delivery
            .properties
            .correlation_id()
            .as_ref()
            .map(|id| id.as_str())
            == message.properties.correlation_id.as_deref()
        && delivery.data == message.body
}

/// Encodes a header table with the field types py-amqp writes: `S`, `I` (or `l` beyond 32 bits),
/// `t`, `d`, `V`, `A`, `F`.
///
/// The table is sent in key order (lapin keeps tables sorted); AMQP tables are unordered, and
/// Python reads them into a dict.
fn encode_headers(headers: &Headers) -> Result<FieldTable, BrokerError> {
    encode_table(headers, 1)
}

/// A table at this level of nesting (the headers themselves are the first). Refused past
/// [`nesting_guard::MAX_HEADER_NESTING`], which a reader of this crate would not pass on, and
/// before lapin, whose writer recurses on its I/O thread as its reader does.
fn encode_table(headers: &Headers, level: usize) -> Result<FieldTable, BrokerError> {
    let entries = headers
        .iter()
        .map(|(key, value)| Ok((short(key, "header name")?, encode_value(value, level)?)))
        .collect::<Result<Vec<_>, BrokerError>>()?;
    // Collected at once, the map is sorted and built in one go; inserting the ~20 headers of a
    // task one by one shifted the entries of its nodes each time.
    Ok(FieldTable::from(BTreeMap::from_iter(entries)))
}

fn encode_value(value: &HeaderValue, level: usize) -> Result<AMQPValue, BrokerError> {
    if matches!(value, HeaderValue::List(_) | HeaderValue::Table(_))
        && level >= nesting_guard::MAX_HEADER_NESTING
    {
        return Err(BrokerError::new(
            BrokerErrorKind::Refused,
            format!(
                "headers nested deeper than {} levels cannot be sent",
                nesting_guard::MAX_HEADER_NESTING
            ),
        ));
    }
    Ok(match value {
        HeaderValue::Null => AMQPValue::Void,
        HeaderValue::Bool(b) => AMQPValue::Boolean(*b),
        HeaderValue::Int(i) => match i32::try_from(*i) {
            Ok(small) => AMQPValue::LongInt(small),
            Err(_) => AMQPValue::LongLongInt(*i),
        },
        HeaderValue::Float(f) => AMQPValue::Double(*f),
        HeaderValue::Str(s) => AMQPValue::LongString(LongString::from(s.as_bytes())),
        HeaderValue::List(items) => AMQPValue::FieldArray(FieldArray::from(
            items
                .iter()
                .map(|item| encode_value(item, level + 1))
                .collect::<Result<Vec<_>, _>>()?,
        )),
        HeaderValue::Table(table) => AMQPValue::FieldTable(encode_table(table, level + 1)?),
    })
}

fn decode_headers(table: &FieldTable) -> Headers {
    table
        .into_iter()
        .map(|(key, value)| (header_name(key.as_str()), decode_value(value)))
        .collect()
}

/// Every AMQP field type into the nearest header value: integers of all widths and timestamps
/// (seconds) as `Int`, floats and decimals as `Float`, strings and byte arrays as `Str`.
fn decode_value(value: &AMQPValue) -> HeaderValue {
    match value {
        AMQPValue::Void => HeaderValue::Null,
        AMQPValue::Boolean(b) => HeaderValue::Bool(*b),
        AMQPValue::ShortShortInt(i) => HeaderValue::Int(i64::from(*i)),
        AMQPValue::ShortShortUInt(i) => HeaderValue::Int(i64::from(*i)),
        AMQPValue::ShortInt(i) => HeaderValue::Int(i64::from(*i)),
        AMQPValue::ShortUInt(i) => HeaderValue::Int(i64::from(*i)),
        AMQPValue::LongInt(i) => HeaderValue::Int(i64::from(*i)),
        AMQPValue::LongUInt(i) => HeaderValue::Int(i64::from(*i)),
        AMQPValue::LongLongInt(i) => HeaderValue::Int(*i),
        AMQPValue::Timestamp(t) => match i64::try_from(*t) {
            Ok(t) => HeaderValue::Int(t),
            Err(_) => HeaderValue::Float(*t as f64),
        },
        AMQPValue::Float(f) => HeaderValue::Float(f64::from(*f)),
        AMQPValue::Double(f) => HeaderValue::Float(*f),
        AMQPValue::DecimalValue(d) => {
            HeaderValue::Float(f64::from(d.value) / 10f64.powi(i32::from(d.scale)))
        }
        AMQPValue::ShortString(s) => HeaderValue::Str(s.as_str().to_owned()),
        AMQPValue::LongString(s) => {
            HeaderValue::Str(String::from_utf8_lossy(s.as_bytes()).into_owned())
        }
        AMQPValue::ByteArray(bytes) => {
            HeaderValue::Str(String::from_utf8_lossy(bytes.as_slice()).into_owned())
        }
        AMQPValue::FieldArray(items) => {
            HeaderValue::List(items.as_slice().iter().map(decode_value).collect())
        }
        AMQPValue::FieldTable(table) => HeaderValue::Table(decode_headers(table)),
    }
}

/// Reads a broker URL the way kombu does; returns it parsed and with its password masked.
fn parse_url(url: &str) -> Result<(AMQPUri, String), Error> {
    let invalid = |why: &str| Error::Config(format!("invalid AMQP broker URL {url:?}: {why}"));
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| invalid("expected scheme://"))?;
    let scheme = match scheme {
        "amqp" | "pyamqp" => AMQPScheme::AMQP,
        "amqps" => {
            return Err(Error::Config(format!(
                "broker URL {:?}: amqps:// (TLS) is not supported by this build; use amqp://",
                mask_password(url)
            )))
        }
        other => return Err(invalid(&format!("unknown scheme {other:?}"))),
    };
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, Some(query)),
        None => (rest, None),
    };
    let rest = rest.split('#').next().unwrap_or_default();
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, ""),
    };
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((userinfo, hostport)) => (Some(userinfo), hostport),
        None => (None, authority),
    };
    let (username, password) = match userinfo {
        None => (None, None),
        Some(userinfo) => match userinfo.split_once(':') {
            Some((user, password)) => (Some(user), Some(password)),
            None => (Some(userinfo), None),
        },
    };
    let decode = |text: &str| percent_decode(text).ok_or_else(|| invalid("bad percent-encoding"));
    let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| invalid("unclosed '[' in the host"))?;
        (host, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        }
    };
    let port = match port.filter(|p| !p.is_empty()) {
        Some(port) => port
            .parse::<u16>()
            .map_err(|_| invalid(&format!("bad port {port:?}")))?,
        None => scheme.default_port(),
    };
    let vhost = decode(path)?;
    let mut query_string = AMQPQueryString::default();
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| invalid(&format!("bad value for {key}: {value:?}")))
        };
        match key {
            "heartbeat" => query_string.heartbeat = Some(number()?.min(u64::from(u16::MAX)) as u16),
            "frame_max" => query_string.frame_max = Some(number()?.min(u64::from(u32::MAX)) as u32),
            "channel_max" => {
                query_string.channel_max = Some(number()?.min(u64::from(u16::MAX)) as u16)
            }
            "connection_timeout" => query_string.connection_timeout = Some(number()?),
            _ => {}
        }
    }
    let uri = AMQPUri {
        scheme,
        authority: AMQPAuthority {
            userinfo: AMQPUserInfo {
                username: username
                    .filter(|u| !u.is_empty())
                    .map(decode)
                    .transpose()?
                    .unwrap_or_else(|| "guest".to_owned()),
                password: password
                    .map(decode)
                    .transpose()?
                    .unwrap_or_else(|| "guest".to_owned()),
            },
            host: if host.is_empty() {
                "localhost".to_owned()
            } else {
                host.to_owned()
            },
            port,
        },
        vhost: if vhost.is_empty() {
            "/".to_owned()
        } else {
            vhost
        },
        query: query_string,
    };
    Ok((uri, mask_password(url)))
}

/// The URL with its password replaced by `**`, as Celery prints it.
fn mask_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:**@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::TaskHeaders;
    use base64::Engine;
    use lapin::types::{ByteArray, DecimalValue};
    use serde_json::Value;

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

    fn encode_table(table: &FieldTable) -> Vec<u8> {
        let (bytes, _) =
            cookie_factory::gen(lapin::types::generation::gen_field_table(table), Vec::new())
                .unwrap();
        bytes
    }

    /// The AMQP type letters of a table, in the fixture's `header_amqp_types` shape.
    fn type_letters(value: &AMQPValue) -> Value {
        match value {
            AMQPValue::FieldArray(items) => {
                serde_json::json!({"A": items.as_slice().iter().map(type_letters).collect::<Vec<_>>()})
            }
            AMQPValue::FieldTable(table) => serde_json::json!({"F": table
                .into_iter()
                .map(|(k, v)| (k.to_string(), type_letters(v)))
                .collect::<serde_json::Map<_, _>>()}),
            other => Value::String(other.get_type().get_id().to_string()),
        }
    }

    #[test]
    fn headers_are_sent_as_deep_as_a_reader_passes_them_on_and_no_deeper() {
        let nested = |depth: usize| {
            let mut value = HeaderValue::Int(1);
            for _ in 0..depth {
                value = HeaderValue::List(vec![value]);
            }
            vec![("deep".into(), value)]
        };
        // The table, then 127 lists: 128 levels.
        let deepest = nested(nesting_guard::MAX_HEADER_NESTING - 1);
        let table = encode_headers(&deepest).expect("128 levels are sent");
        assert_eq!(decode_headers(&table), deepest);
        let error = encode_headers(&nested(nesting_guard::MAX_HEADER_NESTING)).unwrap_err();
        assert_eq!(error.kind, BrokerErrorKind::Refused);
        assert!(error.to_string().contains("deeper than 128"), "{error}");
        // Tables count as lists do.
        let mut value = HeaderValue::Int(1);
        for _ in 0..nesting_guard::MAX_HEADER_NESTING {
            value = HeaderValue::Table(vec![("t".into(), value)]);
        }
        assert!(encode_headers(&vec![("deep".into(), value)]).is_err());
    }

    #[test]
    fn task_headers_encode_as_python_writes_them() {
        let fixture = fixture("task_add_2_2.json");
        let id = "a1b2c3d4-0000-4000-8000-000000000001";
        let mut headers = TaskHeaders::new("tasks.add", id);
        headers.root_id = Some(id.to_owned());
        headers.argsrepr = Some("(2, 2)".to_owned());
        headers.kwargsrepr = Some("{}".to_owned());
        headers.origin = Some("gen11001@vm".to_owned());
        let ours = encode_headers(&headers.to_table()).unwrap();

        let raw = base64(&fixture["headers_raw_base64"]);
        let (rest, python) = lapin::types::parsing::parse_field_table(raw.as_slice()).unwrap();
        assert!(rest.is_empty());
        // Same entries with the same AMQP types and values...
        assert_eq!(ours, python);
        let letters: serde_json::Map<_, _> = ours
            .into_iter()
            .map(|(k, v)| (k.to_string(), type_letters(v)))
            .collect();
        let expected = fixture["header_amqp_types"].as_object().unwrap();
        assert_eq!(letters.len(), expected.len());
        for (key, letter) in expected {
            assert_eq!(&letters[key], letter, "header {key}");
        }
        // ...and the same bytes, once the entries are put in the same (sorted) order.
        assert_eq!(encode_table(&ours), encode_table(&python));
        assert_eq!(encode_table(&ours).len(), raw.len());
    }

    #[test]
    fn integers_use_32_bits_when_they_fit() {
        let table = encode_headers(&vec![
            ("small".into(), HeaderValue::Int(i64::from(i32::MAX))),
            ("negative".into(), HeaderValue::Int(i64::from(i32::MIN))),
            ("large".into(), HeaderValue::Int(1 << 40)),
            ("float".into(), HeaderValue::Float(0.5)),
            ("text".into(), HeaderValue::Str("héllo".into())),
        ])
        .unwrap();
        let inner = table.inner();
        assert_eq!(inner["small"], AMQPValue::LongInt(i32::MAX));
        assert_eq!(inner["negative"], AMQPValue::LongInt(i32::MIN));
        assert_eq!(inner["large"], AMQPValue::LongLongInt(1 << 40));
        assert_eq!(inner["float"], AMQPValue::Double(0.5));
        assert_eq!(inner["text"].get_type().get_id(), 'S');
    }

    #[test]
    fn every_field_type_decodes_to_the_nearest_header_value() {
        let mut nested = FieldTable::default();
        nested.insert("k".into(), AMQPValue::ShortString("v".into()));
        let cases = [
            (AMQPValue::Boolean(true), HeaderValue::Bool(true)),
            (AMQPValue::ShortShortInt(-1), HeaderValue::Int(-1)),
            (AMQPValue::ShortShortUInt(255), HeaderValue::Int(255)),
            (AMQPValue::ShortInt(-300), HeaderValue::Int(-300)),
            (AMQPValue::ShortUInt(60000), HeaderValue::Int(60000)),
            (AMQPValue::LongInt(-5), HeaderValue::Int(-5)),
            (
                AMQPValue::LongUInt(4_000_000_000),
                HeaderValue::Int(4_000_000_000),
            ),
            (AMQPValue::LongLongInt(1 << 40), HeaderValue::Int(1 << 40)),
            (AMQPValue::Float(1.5), HeaderValue::Float(1.5)),
            (AMQPValue::Double(2.25), HeaderValue::Float(2.25)),
            (
                AMQPValue::DecimalValue(DecimalValue {
                    scale: 2,
                    value: 150,
                }),
                HeaderValue::Float(1.5),
            ),
            (
                AMQPValue::ShortString("s".into()),
                HeaderValue::Str("s".into()),
            ),
            (
                AMQPValue::LongString("l".into()),
                HeaderValue::Str("l".into()),
            ),
            (
                AMQPValue::Timestamp(1_700_000_000),
                HeaderValue::Int(1_700_000_000),
            ),
            (
                AMQPValue::ByteArray(ByteArray::from(&b"raw"[..])),
                HeaderValue::Str("raw".into()),
            ),
            (AMQPValue::Void, HeaderValue::Null),
            (
                AMQPValue::FieldArray(vec![AMQPValue::LongInt(1), AMQPValue::Void].into()),
                HeaderValue::List(vec![HeaderValue::Int(1), HeaderValue::Null]),
            ),
            (
                AMQPValue::FieldTable(nested),
                HeaderValue::Table(vec![("k".into(), HeaderValue::Str("v".into()))]),
            ),
        ];
        for (amqp, expected) in cases {
            assert_eq!(decode_value(&amqp), expected, "{amqp:?}");
        }
    }

    #[test]
    fn properties_round_trip_and_priority_is_sent_only_when_set() {
        let message = Message {
            headers: vec![("lang".into(), HeaderValue::Str("py".into()))],
            properties: Properties {
                correlation_id: Some("id".into()),
                reply_to: Some("oid".into()),
                content_type: "application/json".into(),
                content_encoding: "utf-8".into(),
                delivery_mode: 2,
                priority: None,
                expiration: Some("60000".into()),
            },
            body: b"[]".to_vec(),
        };
        let properties = basic_properties(&message).unwrap();
        assert_eq!(*properties.priority(), None);
        assert_eq!(message_from(&properties, b"[]".to_vec()), message);
    }

    /// A publish given up on while its channel opens (a broker that accepted the connection
    /// and then said nothing) leaves the pool's count of channels being opened as it was: a
    /// count left behind kept the pool from opening channels again.
    #[tokio::test]
    async fn a_publish_given_up_while_its_channel_opens_leaves_the_pool_as_it_was() {
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("amqp://127.0.0.1:{}//", silent.local_addr().unwrap().port());
        let broker = AmqpBroker::new(&url, AmqpOptions::default()).unwrap();
        for _ in 0..3 {
            let attempt = broker.shared.lease();
            let given_up = tokio::time::timeout(Duration::from_millis(50), attempt).await;
            assert!(given_up.is_err(), "the silent broker answered");
            assert_eq!(broker.shared.pool.lock().unwrap().opening, 0);
        }
        drop(silent);
    }

    #[test]
    fn long_names_are_refused_not_panicked_on() {
        let long = "x".repeat(300);
        let error = encode_headers(&vec![(long.clone().into(), HeaderValue::Null)]).unwrap_err();
        assert_eq!(error.kind, BrokerErrorKind::Refused);
        let message = Message {
            headers: Vec::new(),
            properties: Properties {
                reply_to: Some(long),
                ..Properties::default()
            },
            body: Vec::new(),
        };
        assert!(basic_properties(&message).is_err());
    }

    #[test]
    fn urls_read_as_kombu_reads_them() {
        let (uri, shown) = parse_url("amqp://guest@localhost//").unwrap();
        assert_eq!(uri.vhost, "/");
        assert_eq!(uri.authority.userinfo.password, "guest");
        assert_eq!(
            (uri.authority.host.as_str(), uri.authority.port),
            ("localhost", 5672)
        );
        assert_eq!(shown, "amqp://guest@localhost//");

        let (uri, shown) =
            parse_url("pyamqp://user:p%40ss@rabbit:5673/my%2Fvhost?heartbeat=30").unwrap();
        assert_eq!(uri.authority.userinfo.username, "user");
        assert_eq!(uri.authority.userinfo.password, "p@ss");
        assert_eq!(
            (uri.authority.host.as_str(), uri.authority.port),
            ("rabbit", 5673)
        );
        assert_eq!(uri.vhost, "my/vhost");
        assert_eq!(uri.query.heartbeat, Some(30));
        assert_eq!(
            shown,
            "pyamqp://user:**@rabbit:5673/my%2Fvhost?heartbeat=30"
        );

        for url in ["amqp://", "amqp://localhost", "amqp://localhost/"] {
            let (uri, _) = parse_url(url).unwrap();
            assert_eq!(uri.vhost, "/", "{url}");
            assert_eq!(uri.authority.host, "localhost", "{url}");
            assert_eq!(uri.authority.userinfo.username, "guest", "{url}");
        }
        let (uri, _) = parse_url("amqp://[::1]:5000/v").unwrap();
        assert_eq!(
            (
                uri.authority.host.as_str(),
                uri.authority.port,
                uri.vhost.as_str()
            ),
            ("::1", 5000, "v")
        );

        assert!(matches!(
            parse_url("amqp://h:notaport/"),
            Err(Error::Config(_))
        ));
        let Err(Error::Config(message)) = parse_url("amqps://u:secret@h//") else {
            panic!("amqps must be refused");
        };
        assert!(
            message.contains("TLS") && !message.contains("secret"),
            "{message}"
        );
    }

    #[test]
    fn broker_errors_are_classified() {
        use lapin::protocol::{AMQPError, AMQPErrorKind, AMQPHardError, AMQPSoftError};
        let protocol = |kind: AMQPErrorKind| {
            lapin::Error::from(ErrorKind::ProtocolError(AMQPError::new(kind, "x".into())))
        };
        let kind = |error: lapin::Error| amqp_error("op", &error).kind;
        assert_eq!(
            kind(protocol(AMQPSoftError::PRECONDITIONFAILED.into())),
            BrokerErrorKind::Refused
        );
        assert_eq!(
            kind(protocol(AMQPSoftError::ACCESSREFUSED.into())),
            BrokerErrorKind::Refused
        );
        assert_eq!(
            kind(protocol(AMQPSoftError::NOROUTE.into())),
            BrokerErrorKind::Channel
        );
        assert_eq!(
            kind(protocol(AMQPHardError::CONNECTIONFORCED.into())),
            BrokerErrorKind::Connection
        );
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(
            kind(ErrorKind::IOError(Arc::new(io)).into()),
            BrokerErrorKind::Connection
        );
    }

    #[test]
    fn a_refusal_naming_another_exchange_is_a_channel_error_of_this_publish() {
        let refused = |text: &str| BrokerError::new(BrokerErrorKind::Refused, text);
        let missing = "publish: NOT_FOUND - no exchange 'gone' in vhost '/'";
        let ours = caught_by_another_refusal(refused(missing), "gone");
        assert_eq!(ours.kind, BrokerErrorKind::Refused);
        let neighbour = caught_by_another_refusal(refused(missing), "");
        assert_eq!(neighbour.kind, BrokerErrorKind::Channel);
        assert!(
            neighbour.to_string().contains("no exchange 'gone'"),
            "{neighbour}"
        );
        // Refusals that name no exchange (a message over the size limit) cannot be told apart.
        let too_large = "PRECONDITION_FAILED - message size 9 is larger than configured max size 8";
        let unnamed = caught_by_another_refusal(refused(too_large), "");
        assert_eq!(unnamed.kind, BrokerErrorKind::Refused);
        let lost = BrokerError::new(BrokerErrorKind::Connection, "no exchange 'gone'");
        assert_eq!(
            caught_by_another_refusal(lost, "").kind,
            BrokerErrorKind::Connection
        );
    }

    #[test]
    fn priority_queues_declare_x_max_priority_as_a_signed_int() {
        let plain = Declaration::from(&Queue::new("q"));
        assert!(plain.arguments.inner().is_empty());
        let priority = Declaration::from(&Queue::new("p").max_priority(10));
        assert_eq!(
            priority.arguments.inner()["x-max-priority"],
            AMQPValue::LongInt(10)
        );
    }

    #[test]
    fn dead_letter_arguments_are_declared_as_long_strings_when_set() {
        let queue = Queue::new("q")
            .dead_letter_exchange("dlx")
            .dead_letter_routing_key("dead");
        let declaration = Declaration::from(&queue);
        let arguments = declaration.arguments.inner();
        assert_eq!(
            arguments["x-dead-letter-exchange"],
            AMQPValue::LongString("dlx".into())
        );
        assert_eq!(
            arguments["x-dead-letter-routing-key"],
            AMQPValue::LongString("dead".into())
        );
        let only_exchange = Declaration::from(&Queue::new("q").dead_letter_exchange("dlx"));
        assert_eq!(only_exchange.arguments.inner().len(), 1);
    }
}
