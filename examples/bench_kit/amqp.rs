//! Raw lapin: the ceilings (publishing the project's own message bytes, consuming with batched
//! acks) and the harness's own broker chores (declare, count, purge, delete).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use celery::protocol::{HeaderValue, Headers, Message};
use futures_util::stream::{self, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};

pub type Res<T> = Result<T, String>;

fn err(context: &str) -> impl Fn(lapin::Error) -> String + '_ {
    move |error| format!("{context}: {error}")
}

pub async fn connect(url: &str) -> Res<Connection> {
    let connect = Connection::connect(url, ConnectionProperties::default());
    tokio::time::timeout(Duration::from_secs(4), connect)
        .await
        .map_err(|_| format!("cannot connect to {url}: timed out"))?
        .map_err(err("connect"))
}

/// One message ready for lapin: route, properties and body, as the project's AMQP broker sends
/// them (`celery-core/src/broker/amqp.rs`, `basic_properties` and `encode_headers`).
#[derive(Clone)]
pub struct Wire {
    pub exchange: ShortString,
    pub routing_key: ShortString,
    pub properties: BasicProperties,
    pub body: Arc<Vec<u8>>,
}

impl Wire {
    pub fn new(exchange: &str, routing_key: &str, message: &Message) -> Wire {
        let p = &message.properties;
        let mut properties = BasicProperties::default();
        if !p.content_type.is_empty() {
            properties = properties.with_content_type(p.content_type.as_str().into());
        }
        if !p.content_encoding.is_empty() {
            properties = properties.with_content_encoding(p.content_encoding.as_str().into());
        }
        properties = properties.with_headers(table(&message.headers));
        if p.delivery_mode != 0 {
            properties = properties.with_delivery_mode(p.delivery_mode);
        }
        if let Some(priority) = p.priority {
            properties = properties.with_priority(priority);
        }
        if let Some(id) = &p.correlation_id {
            properties = properties.with_correlation_id(id.as_str().into());
        }
        if let Some(reply_to) = &p.reply_to {
            properties = properties.with_reply_to(reply_to.as_str().into());
        }
        if let Some(expiration) = &p.expiration {
            properties = properties.with_expiration(expiration.as_str().into());
        }
        Wire {
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            properties,
            body: Arc::new(message.body.clone()),
        }
    }
}

fn table(headers: &Headers) -> FieldTable {
    let map: BTreeMap<ShortString, AMQPValue> = headers
        .iter()
        .map(|(key, value)| (ShortString::from(key.as_ref()), value_of(value)))
        .collect();
    FieldTable::from(map)
}

fn value_of(value: &HeaderValue) -> AMQPValue {
    match value {
        HeaderValue::Null => AMQPValue::Void,
        HeaderValue::Bool(b) => AMQPValue::Boolean(*b),
        HeaderValue::Int(i) => match i32::try_from(*i) {
            Ok(small) => AMQPValue::LongInt(small),
            Err(_) => AMQPValue::LongLongInt(*i),
        },
        HeaderValue::Float(f) => AMQPValue::Double(*f),
        HeaderValue::Str(s) => AMQPValue::LongString(LongString::from(s.as_bytes())),
        HeaderValue::List(items) => AMQPValue::FieldArray(FieldArray::from(
            items.iter().map(value_of).collect::<Vec<_>>(),
        )),
        HeaderValue::Table(inner) => AMQPValue::FieldTable(table(inner)),
    }
}

pub async fn publish_channel(connection: &Connection, confirm: bool) -> Res<Channel> {
    let channel = connection
        .create_channel()
        .await
        .map_err(err("open channel"))?;
    if confirm {
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(err("confirm.select"))?;
    }
    Ok(channel)
}

/// Publishes `n` messages made by `make` on one channel, `inflight` at a time; with confirms,
/// each future ends with its confirm (they pipeline: RabbitMQ acks them in batches).
pub async fn publish_many(
    channel: &Channel,
    confirm: bool,
    inflight: usize,
    n: usize,
    make: impl FnMut(usize) -> Res<Wire>,
) -> Res<()> {
    let mut make = make;
    let mut publishes = stream::iter(0..n)
        .map(|i| {
            let wire = make(i);
            async move {
                let wire = wire?;
                let pending = channel
                    .basic_publish(
                        wire.exchange,
                        wire.routing_key,
                        BasicPublishOptions::default(),
                        &wire.body,
                        wire.properties,
                    )
                    .await
                    .map_err(err("basic.publish"))?;
                if confirm {
                    match pending.await.map_err(err("confirm"))? {
                        Confirmation::Nack(_) => {
                            return Err(String::from("the broker nacked a message"))
                        }
                        Confirmation::Ack(_) | Confirmation::NotRequested => {}
                    }
                }
                Ok::<(), String>(())
            }
        })
        .buffer_unordered(inflight.max(1));
    while let Some(done) = publishes.next().await {
        done?;
    }
    Ok(())
}

/// Consumes `n` messages with a prefetch of `prefetch`, acknowledging every `ack_every`-th with
/// `multiple` (and the last); the time from `basic.consume`-ok to the n-th delivery.
pub async fn drain(
    connection: &Connection,
    queue: &str,
    n: usize,
    prefetch: u16,
    ack_every: usize,
) -> Res<Duration> {
    let (channel, mut consumer) = consume(connection, queue, prefetch, "bench-raw").await?;
    let started = Instant::now();
    let mut count = 0;
    while count < n {
        let delivery = consumer
            .next()
            .await
            .ok_or("the consumer ended early")?
            .map_err(err("consume"))?;
        count += 1;
        if count % ack_every.max(1) == 0 || count == n {
            delivery
                .acker
                .ack(BasicAckOptions {
                    multiple: ack_every > 1,
                })
                .await
                .map_err(err("basic.ack"))?;
        }
    }
    let elapsed = started.elapsed();
    let _ = channel.close(200, "drained".into()).await;
    Ok(elapsed)
}

/// The harness's control channel.
pub struct Control {
    connection: Connection,
    channel: tokio::sync::Mutex<Channel>,
}

impl Control {
    pub async fn open(url: &str) -> Res<Control> {
        let connection = connect(url).await?;
        let channel = connection
            .create_channel()
            .await
            .map_err(err("open channel"))?;
        Ok(Control {
            connection,
            channel: tokio::sync::Mutex::new(channel),
        })
    }

    /// A failed operation closes its channel: open another for the next one.
    async fn channel(&self) -> Res<Channel> {
        let mut channel = self.channel.lock().await;
        if !channel.status().connected() {
            *channel = self
                .connection
                .create_channel()
                .await
                .map_err(err("open channel"))?;
        }
        Ok(channel.clone())
    }

    /// Declares a queue as Celery (and this project) does: durable, on the durable direct
    /// exchange of the same name, bound with its name.
    pub async fn declare(&self, queue: &str) -> Res<()> {
        let channel = self.channel().await?;
        channel
            .exchange_declare(
                queue.into(),
                lapin::ExchangeKind::Direct,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(err("exchange.declare"))?;
        channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(err("queue.declare"))?;
        channel
            .queue_bind(
                queue.into(),
                queue.into(),
                queue.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(err("queue.bind"))
    }

    /// Ready messages in a queue.
    pub async fn count(&self, queue: &str) -> Res<u32> {
        let channel = self.channel().await?;
        let declared = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(err("queue.declare passive"))?;
        Ok(declared.message_count())
    }

    /// Polls until a queue holds `want` ready messages; when it did. Gives up after `timeout`,
    /// or once the count has not moved for 10 s (messages lost on the way).
    pub async fn wait_count(&self, queue: &str, want: u32, timeout: Duration) -> Res<SystemTime> {
        let deadline = Instant::now() + timeout;
        let mut last = (u32::MAX, Instant::now());
        loop {
            let count = self.count(queue).await?;
            if count >= want {
                return Ok(SystemTime::now());
            }
            if count != last.0 {
                last = (count, Instant::now());
            }
            let stalled = count > 0 && last.1.elapsed() > Duration::from_secs(10);
            if stalled || Instant::now() > deadline {
                let why = if stalled {
                    "no progress for 10 s".to_owned()
                } else {
                    format!("timed out after {timeout:?}")
                };
                return Err(format!(
                    "queue {queue} holds {count} of {want} messages: {why}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    pub async fn purge(&self, queue: &str) -> Res<u32> {
        let channel = self.channel().await?;
        channel
            .queue_purge(queue.into(), QueuePurgeOptions::default())
            .await
            .map_err(err("queue.purge"))
    }

    /// One message taken off a queue (acknowledged), as a message to publish again straight to
    /// that queue through the default exchange, the way rusty-celery sends.
    pub async fn take_one(&self, queue: &str) -> Res<Wire> {
        let channel = self.channel().await?;
        let message = channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .map_err(err("basic.get"))?
            .ok_or_else(|| format!("queue {queue} is empty"))?;
        let delivery = message.delivery;
        Ok(Wire {
            exchange: "".into(),
            routing_key: queue.into(),
            properties: delivery.properties,
            body: Arc::new(delivery.data),
        })
    }

    /// Deletes a queue and the exchange of the same name, if they exist.
    pub async fn delete(&self, queue: &str) {
        if let Ok(channel) = self.channel().await {
            let _ = channel
                .queue_delete(queue.into(), QueueDeleteOptions::default())
                .await;
        }
        if let Ok(channel) = self.channel().await {
            let _ = channel
                .exchange_delete(queue.into(), ExchangeDeleteOptions::default())
                .await;
        }
    }
}

/// A channel of its own with `prefetch` consuming `queue`, acknowledgements expected.
async fn consume(
    connection: &Connection,
    queue: &str,
    prefetch: u16,
    tag: &str,
) -> Res<(Channel, lapin::Consumer)> {
    let channel = connection
        .create_channel()
        .await
        .map_err(err("open channel"))?;
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await
        .map_err(err("basic.qos"))?;
    let consumer = channel
        .basic_consume(
            queue.into(),
            tag.into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(err("basic.consume"))?;
    Ok((channel, consumer))
}

/// A raw lapin echo on `queue`, on a connection of its own: it acknowledges each request, then
/// replies to its `reply_to` as the rpc:// backend would (transient, default exchange). Stops when
/// dropped.
pub struct Echo {
    connection: Connection,
    task: tokio::task::JoinHandle<()>,
}

impl Echo {
    pub async fn start(url: &str, queue: &str) -> Res<Echo> {
        let connection = connect(url).await?;
        let (channel, mut requests) = consume(&connection, queue, 8, "bench-echo").await?;
        let task = tokio::spawn(async move {
            let reply = br#"{"status": "SUCCESS", "result": 2}"#;
            while let Some(Ok(delivery)) = requests.next().await {
                let _ = delivery.acker.ack(BasicAckOptions::default()).await;
                let Some(reply_to) = delivery.properties.reply_to().clone() else {
                    continue;
                };
                let properties = BasicProperties::default()
                    .with_content_type("application/json".into())
                    .with_delivery_mode(1);
                let _ = channel
                    .basic_publish(
                        "".into(),
                        reply_to,
                        BasicPublishOptions::default(),
                        reply,
                        properties,
                    )
                    .await;
            }
        });
        Ok(Echo { connection, task })
    }

    pub async fn stop(self) {
        self.task.abort();
        let _ = self.connection.close(200, "done".into()).await;
    }
}

/// A raw lapin client doing round trips one at a time: publishes `wire` with a `reply_to` of
/// its own (awaiting the confirm when `confirm`), then waits for any reply.
pub struct RawClient {
    connection: Connection,
    channel: Channel,
    replies: lapin::Consumer,
    properties: BasicProperties,
    wire: Wire,
    confirm: bool,
}

impl RawClient {
    pub async fn connect(url: &str, wire: &Wire, confirm: bool) -> Res<RawClient> {
        let connection = connect(url).await?;
        let channel = publish_channel(&connection, confirm).await?;
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(err("declare the reply queue"))?;
        let replies = channel
            .basic_consume(
                queue.name().clone(),
                "bench-raw-client".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(err("basic.consume"))?;
        let properties = wire.properties.clone().with_reply_to(queue.name().clone());
        Ok(RawClient {
            connection,
            channel,
            replies,
            properties,
            wire: wire.clone(),
            confirm,
        })
    }

    /// One round trip, in milliseconds.
    pub async fn round_trip(&mut self) -> Res<f64> {
        let began = Instant::now();
        let pending = self
            .channel
            .basic_publish(
                self.wire.exchange.clone(),
                self.wire.routing_key.clone(),
                BasicPublishOptions::default(),
                &self.wire.body,
                self.properties.clone(),
            )
            .await
            .map_err(err("basic.publish"))?;
        if self.confirm {
            pending.await.map_err(err("confirm"))?;
        }
        tokio::time::timeout(Duration::from_secs(10), self.replies.next())
            .await
            .map_err(|_| String::from("no reply within 10 s"))?
            .ok_or("the reply consumer ended")?
            .map_err(err("reply"))?;
        Ok(began.elapsed().as_secs_f64() * 1000.0)
    }

    pub async fn close(self) {
        let _ = self.connection.close(200, "done".into()).await;
    }
}
