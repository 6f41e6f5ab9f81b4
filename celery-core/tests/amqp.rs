//! The AMQP broker and the rpc:// backend against a real RabbitMQ at 127.0.0.1:5672
//! (guest/guest). Skipped when it is not reachable, unless `CELERY_TEST_REQUIRE_SERVICES=1`.

use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use celery_core::backend::{ResultBackend, RpcBackend};
use celery_core::broker::amqp::{AmqpBroker, AmqpOptions};
use celery_core::broker::{Broker, BrokerErrorKind, Consumer, Delivery};
use celery_core::protocol::{HeaderValue, Headers, Message, Properties, TaskHeaders};
use celery_core::task::{Invocation, Task, TaskOptions};
use celery_core::{CallOptions, Celery, Error, Queue, ResultMeta, State, TaskError};
use serde_json::{json, Map, Value};

const RABBITMQ: &str = "127.0.0.1:5672";
const URL: &str = "amqp://guest:guest@127.0.0.1:5672//";
const WAIT: Duration = Duration::from_secs(10);

#[path = "../../tests/common/services.rs"]
mod services;

/// Whether RabbitMQ answers; says why a test is skipped when it does not (a failure under
/// `CELERY_TEST_REQUIRE_SERVICES=1`).
fn rabbitmq_available() -> bool {
    let address = RABBITMQ.parse().expect("socket address");
    match TcpStream::connect_timeout(&address, Duration::from_secs(2)) {
        Ok(_) => true,
        Err(error) => {
            // libtest runs each test on a thread named after it.
            let thread = std::thread::current();
            let test = thread.name().unwrap_or("a test");
            services::skip(
                test,
                &format!("RabbitMQ not reachable at {RABBITMQ} ({error})"),
            );
            false
        }
    }
}

macro_rules! require_rabbitmq {
    () => {
        if !rabbitmq_available() {
            return;
        }
    };
}

fn unique(what: &str) -> String {
    format!("celery-rs-test-{what}-{}", uuid::Uuid::new_v4().simple())
}

async fn broker() -> AmqpBroker {
    AmqpBroker::connect(URL).await.expect("connect to RabbitMQ")
}

fn message(body: &str) -> Message {
    Message {
        headers: Vec::new(),
        properties: Properties {
            content_type: "text/plain".to_owned(),
            content_encoding: "utf-8".to_owned(),
            delivery_mode: 2,
            ..Properties::default()
        },
        body: body.as_bytes().to_vec(),
    }
}

async fn next(consumer: &mut Box<dyn Consumer>) -> Delivery {
    tokio::time::timeout(WAIT, consumer.next())
        .await
        .expect("a delivery in time")
        .expect("the consumer goes on")
        .expect("a delivery, not an error")
}

fn body(delivery: &Delivery) -> String {
    String::from_utf8(delivery.message.body.clone()).unwrap()
}

/// Header tables come back in key order (AMQP tables are unordered).
fn sorted(mut headers: Headers) -> Headers {
    for (_, value) in &mut headers {
        if let HeaderValue::Table(table) = value {
            *table = sorted(std::mem::take(table));
        }
    }
    headers.sort_by(|a, b| a.0.cmp(&b.0));
    headers
}

/// A queue as RabbitMQ has it (an error when it does not exist).
async fn declare_passively(channel: &lapin::Channel, name: &str) -> lapin::Result<lapin::Queue> {
    let options = lapin::options::QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    channel
        .queue_declare(name.into(), options, Default::default())
        .await
}

/// (ready messages, consumers) of a queue, as RabbitMQ counts them.
async fn queue_counts(name: &str) -> (u32, u32) {
    let connection = lapin::Connection::connect(URL, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let queue = declare_passively(&channel, name).await.unwrap();
    let _ = connection.close(200, "counted".into()).await;
    (queue.message_count(), queue.consumer_count())
}

/// Deletes the test's queues and the direct exchange of the same name that routing to a queue
/// by name declares, so that no test leaves either behind on the broker.
async fn cleanup(broker: &AmqpBroker, queues: &[&str]) {
    for queue in queues {
        let _ = broker.delete_queue(queue).await;
        let _ = broker.delete_exchange(queue).await;
    }
}

/// Whether a queue or an exchange exists, by a passive declaration on a connection of its own.
async fn exists(kind: &str, name: &str) -> bool {
    let connection = lapin::Connection::connect(URL, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let found = match kind {
        "queue" => declare_passively(&channel, name).await.map(drop),
        _ => {
            channel
                .exchange_declare(
                    name.into(),
                    lapin::ExchangeKind::Direct,
                    lapin::options::ExchangeDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    Default::default(),
                )
                .await
        }
    };
    let _ = connection.close(200, "looked".into()).await;
    found.is_ok()
}

#[tokio::test]
async fn round_trip_keeps_headers_properties_and_body() {
    require_rabbitmq!();
    let broker = broker().await;
    let name = unique("roundtrip");
    let queue = Queue::new(&name);
    broker.declare(&queue).await.unwrap();
    // Redeclaring the same queue is fine.
    broker.declare(&queue).await.unwrap();

    let id = uuid::Uuid::new_v4().to_string();
    let mut task_headers = TaskHeaders::new("tasks.add", &id);
    task_headers.root_id = Some(id.clone());
    task_headers.argsrepr = Some("('héllo ☃',)".to_owned());
    task_headers.timelimit = (Some(10.0), Some(2.5));
    task_headers.extra = vec![
        ("big".into(), HeaderValue::Int(1 << 40)),
        ("negative".into(), HeaderValue::Int(-7)),
        (
            "nested".into(),
            HeaderValue::Table(vec![
                ("z".into(), HeaderValue::List(vec![HeaderValue::Bool(true)])),
                ("a".into(), HeaderValue::Null),
            ]),
        ),
    ];
    let sent = Message {
        headers: task_headers.to_table(),
        properties: Properties {
            correlation_id: Some(id.clone()),
            reply_to: Some("some-oid".to_owned()),
            content_type: "application/json".to_owned(),
            content_encoding: "utf-8".to_owned(),
            delivery_mode: 2,
            priority: Some(3),
            expiration: Some("60000".to_owned()),
        },
        body: "[[\"h\\u00e9llo\"], {}, null]".as_bytes().to_vec(),
    };
    broker.publish("", &name, &sent).await.unwrap();
    // Through the queue's own exchange too.
    broker
        .publish(&name, &name, &message("second"))
        .await
        .unwrap();

    let mut consumer = broker
        .consume(std::slice::from_ref(&queue), 10)
        .await
        .unwrap();
    let first = next(&mut consumer).await;
    assert_eq!(first.message.body, sent.body);
    assert_eq!(first.message.properties, sent.properties);
    assert_eq!(first.message.headers, sorted(sent.headers.clone()));
    assert_eq!(
        TaskHeaders::from_table(&first.message.headers)
            .unwrap()
            .argsrepr,
        task_headers.argsrepr
    );
    assert_eq!(
        (
            first.info.exchange.as_str(),
            first.info.routing_key.as_str()
        ),
        ("", name.as_str())
    );
    assert_eq!(first.info.priority, Some(3));
    assert!(!first.info.redelivered);
    first.acker.ack().await.unwrap();

    let second = next(&mut consumer).await;
    assert_eq!(body(&second), "second");
    assert_eq!(second.info.exchange, name);
    assert_eq!(second.message.properties.priority, None);
    assert_eq!(second.message.properties.correlation_id, None);
    second.acker.ack().await.unwrap();

    consumer.cancel().await;
    assert!(consumer.next().await.is_none());
    drop(consumer);
    cleanup(&broker, &[&name]).await;
}

#[tokio::test]
async fn priority_queues_deliver_higher_priorities_first() {
    require_rabbitmq!();
    let broker = broker().await;
    let name = unique("priority");
    let queue = Queue::new(&name).max_priority(10);
    broker.declare(&queue).await.unwrap();
    for (text, priority) in [("low", 1), ("high", 9), ("mid", 5)] {
        let mut message = message(text);
        message.properties.priority = Some(priority);
        broker.publish("", &name, &message).await.unwrap();
    }
    let mut consumer = broker
        .consume(std::slice::from_ref(&queue), 1)
        .await
        .unwrap();
    let mut order = Vec::new();
    for _ in 0..3 {
        let delivery = next(&mut consumer).await;
        order.push(body(&delivery));
        delivery.acker.ack().await.unwrap();
    }
    assert_eq!(order, ["high", "mid", "low"]);

    // A declaration that differs from the existing queue is refused (406), and the broker stays
    // usable afterwards.
    let error = broker.declare(&Queue::new(&name)).await.unwrap_err();
    assert_eq!(error.kind, BrokerErrorKind::Refused, "{error}");
    assert!(error.to_string().contains("PRECONDITION"), "{error}");
    broker.declare(&queue).await.unwrap();

    drop(consumer);
    cleanup(&broker, &[&name]).await;
}

#[tokio::test]
async fn rejected_messages_are_requeued_or_dropped() {
    require_rabbitmq!();
    let broker = broker().await;
    let name = unique("reject");
    let queue = Queue::new(&name);
    broker.declare(&queue).await.unwrap();
    broker.publish("", &name, &message("again")).await.unwrap();
    let mut consumer = broker
        .consume(std::slice::from_ref(&queue), 1)
        .await
        .unwrap();
    let first = next(&mut consumer).await;
    assert!(!first.info.redelivered);
    first.acker.reject(true).await.unwrap();
    let second = next(&mut consumer).await;
    assert_eq!(body(&second), "again");
    assert!(second.info.redelivered);
    second.acker.reject(false).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), consumer.next())
            .await
            .is_err(),
        "a message rejected without requeue is gone"
    );
    drop(consumer);
    assert_eq!(broker.purge(&name).await.unwrap(), 0);
    cleanup(&broker, &[&name]).await;
}

#[tokio::test]
async fn unacknowledged_messages_come_back_and_cancel_still_lets_running_tasks_ack() {
    require_rabbitmq!();
    let broker = broker().await;
    let name = unique("unacked");
    let queue = Queue::new(&name);
    broker.declare(&queue).await.unwrap();
    for text in ["running", "held", "prefetched"] {
        broker.publish("", &name, &message(text)).await.unwrap();
    }
    let mut consumer = broker
        .consume(std::slice::from_ref(&queue), 3)
        .await
        .unwrap();
    let running = next(&mut consumer).await;
    let held = next(&mut consumer).await;
    assert_eq!(
        (body(&running), body(&held)),
        ("running".into(), "held".into())
    );
    // "prefetched" reached this process but was never handed out.

    // The worker cancels on shutdown, then acknowledges the task that was running.
    consumer.cancel().await;
    assert!(consumer.next().await.is_none());
    running.acker.ack().await.unwrap();
    drop(consumer);
    // The rest was never acknowledged: once the last delivery is dropped, the channel closes
    // and the broker requeues both.
    drop(held);

    let mut again = broker
        .consume(std::slice::from_ref(&queue), 2)
        .await
        .unwrap();
    let mut back = Vec::new();
    for _ in 0..2 {
        let delivery = next(&mut again).await;
        assert!(delivery.info.redelivered);
        back.push(body(&delivery));
        delivery.acker.ack().await.unwrap();
    }
    back.sort();
    assert_eq!(back, ["held", "prefetched"]);
    drop(again);
    assert_eq!(broker.purge(&name).await.unwrap(), 0);
    cleanup(&broker, &[&name]).await;
}

/// Acknowledgements go out in batches; `flush` is what makes a worker's last ones reach the
/// broker before it stops. Here the consumer's runtime is dropped right after the flush, which
/// kills whatever had not been sent: any acknowledgement lost would bring its message back.
/// Every acknowledgement reaches the broker before the consumer goes, also when it consumes
/// two queues on its channel: their deliveries, buffered by lapin queue by queue, are handed
/// out in the order of their tags, which the acknowledgement window relies on (handed out queue
/// by queue in turn, acknowledgements were dropped and the messages came back).
#[tokio::test]
async fn flushed_acknowledgements_reach_the_broker_before_the_consumer_goes() {
    require_rabbitmq!();
    const COUNT: usize = 50;
    let broker = broker().await;
    let names = [unique("flush-a"), unique("flush-b")];
    let queues: Vec<Queue> = names.iter().map(Queue::new).collect();
    for (queue, name) in queues.iter().zip(&names) {
        broker.declare(queue).await.unwrap();
        for n in 0..COUNT {
            broker
                .publish("", name, &message(&n.to_string()))
                .await
                .unwrap();
        }
    }
    let consumed = queues.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let own = AmqpBroker::connect(URL).await.expect("connect to RabbitMQ");
            let mut consumer = own.consume(&consumed, 2 * COUNT as u16).await.unwrap();
            // Both queues' deliveries arrive and wait in lapin before any is taken.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut deliveries = Vec::new();
            for _ in 0..2 * COUNT {
                deliveries.push(next(&mut consumer).await);
            }
            for delivery in deliveries {
                delivery.acker.ack().await.unwrap();
            }
            consumer.flush().await;
        });
        // The runtime goes with every task of it; the connection closes.
    })
    .join()
    .unwrap();

    // Whatever was not acknowledged is back once RabbitMQ has seen the consumer go.
    for name in &names {
        let deadline = Instant::now() + WAIT;
        let (mut ready, mut consumers) = queue_counts(name).await;
        while consumers > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            (ready, consumers) = queue_counts(name).await;
        }
        assert_eq!(consumers, 0, "the consumer's connection did not close");
        assert_eq!(ready, 0, "acknowledged messages of {name} came back");
    }
    cleanup(&broker, &[&names[0], &names[1]]).await;
}

#[tokio::test]
async fn purge_counts_the_ready_messages() {
    require_rabbitmq!();
    let broker = broker().await;
    let name = unique("purge");
    broker.declare(&Queue::new(&name)).await.unwrap();
    for i in 0..3 {
        broker
            .publish("", &name, &message(&i.to_string()))
            .await
            .unwrap();
    }
    assert_eq!(broker.purge(&name).await.unwrap(), 3);
    assert_eq!(broker.purge(&name).await.unwrap(), 0);
    cleanup(&broker, &[&name]).await;
}

#[tokio::test]
async fn publishing_with_and_without_confirms() {
    require_rabbitmq!();
    let confirmed = Arc::new(broker().await);
    let unconfirmed = AmqpBroker::connect_with(URL, AmqpOptions::default().confirm_publish(false))
        .await
        .unwrap();
    let name = unique("confirms");
    let queue = Queue::new(&name);
    confirmed.declare(&queue).await.unwrap();

    // Many concurrent publishes share the pooled channels.
    let mut publishes = tokio::task::JoinSet::new();
    for i in 0..50 {
        let (broker, name) = (confirmed.clone(), name.clone());
        publishes.spawn(async move { broker.publish("", &name, &message(&format!("c{i}"))).await });
    }
    while let Some(published) = publishes.join_next().await {
        published.unwrap().unwrap();
    }
    for i in 0..5 {
        unconfirmed
            .publish("", &name, &message(&format!("u{i}")))
            .await
            .unwrap();
    }
    let mut consumer = confirmed
        .consume(std::slice::from_ref(&queue), 100)
        .await
        .unwrap();
    let mut seen = 0;
    while seen < 55 {
        next(&mut consumer).await.acker.ack().await.unwrap();
        seen += 1;
    }

    // With confirms, a message to a missing exchange is an error (404 closes the channel)...
    let error = confirmed
        .publish(&unique("no-such-exchange"), "x", &message("lost"))
        .await
        .unwrap_err();
    assert_eq!(error.kind, BrokerErrorKind::Refused, "{error}");
    // ...and the next publish goes through a fresh channel.
    confirmed
        .publish("", &name, &message("after"))
        .await
        .unwrap();
    let after = next(&mut consumer).await;
    assert_eq!(body(&after), "after");
    after.acker.ack().await.unwrap();

    // With confirms, a message no queue takes comes back and its publish fails (RabbitMQ would
    // drop it and confirm it all the same), and the channel goes on...
    let nowhere = unique("unbound-key");
    let error = confirmed
        .publish("amq.direct", &nowhere, &message("returned"))
        .await
        .unwrap_err();
    assert_eq!(error.kind, BrokerErrorKind::Refused, "{error}");
    assert!(error.to_string().contains("no queue took"), "{error}");
    confirmed
        .publish("", &name, &message("after return"))
        .await
        .unwrap();
    let after = next(&mut consumer).await;
    assert_eq!(body(&after), "after return");
    after.acker.ack().await.unwrap();
    // ...without them, it is gone as it is for Python Celery.
    unconfirmed
        .publish("amq.direct", &nowhere, &message("dropped"))
        .await
        .unwrap();

    drop(consumer);
    cleanup(&confirmed, &[&name]).await;
}

/// A broker with one pooled channel, so that every publish shares it with a refused one.
async fn single_channel_broker() -> Arc<AmqpBroker> {
    let options = AmqpOptions::default().pool_limit(1);
    Arc::new(AmqpBroker::connect_with(URL, options).await.unwrap())
}

/// Returned messages among many publishes in flight on one channel: lapin hands each to the
/// next confirm it completes, and a `multiple` ack completes several, so a return must not
/// fail a publish that was routed (the caller would send it again).
#[tokio::test]
async fn a_returned_message_fails_no_routed_publish_beside_it() {
    require_rabbitmq!();
    let broker = single_channel_broker().await;
    let name = unique("routed");
    broker.declare(&Queue::new(&name)).await.unwrap();
    let nowhere = unique("unbound-key");
    let mut publishes = tokio::task::JoinSet::new();
    const COUNT: usize = 300;
    for i in 0..COUNT {
        let broker = broker.clone();
        let (routed, key) = if i % 10 == 0 {
            (false, nowhere.clone())
        } else {
            (true, name.clone())
        };
        let mut sent = message(&format!("m{i}"));
        sent.properties.correlation_id = Some(format!("id-{i}"));
        publishes.spawn(async move {
            let exchange = if routed { "" } else { "amq.direct" };
            (routed, broker.publish(exchange, &key, &sent).await)
        });
    }
    let (mut routed_ok, mut returned) = (0, 0);
    while let Some(done) = publishes.join_next().await {
        match done.unwrap() {
            (true, Ok(())) => routed_ok += 1,
            (true, Err(error)) => panic!("a routed publish failed: {error}"),
            (false, Err(error)) => {
                assert!(error.to_string().contains("no queue took"), "{error}");
                returned += 1;
            }
            (false, Ok(())) => {}
        }
    }
    assert_eq!(routed_ok, COUNT - COUNT / 10);
    assert!(returned > 0, "no unroutable publish was reported");
    assert_eq!(queue_counts(&name).await.0 as usize, routed_ok);
    cleanup(&broker, &[&name]).await;
}

/// Deletes an exchange behind the back of the broker under test, on a connection of its own,
/// so that the broker still takes the exchange for known.
async fn delete_exchange(exchange: &str) {
    let properties = lapin::ConnectionProperties::default();
    let connection = lapin::Connection::connect(URL, properties).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let options = lapin::options::ExchangeDeleteOptions::default();
    channel
        .exchange_delete(exchange.into(), options)
        .await
        .unwrap();
    let _ = connection.close(200, "done".into()).await;
}

/// Publishes `per_round` messages at once, one of them (the middle one) to `odd_exchange`;
/// returns the results of the others and that of the odd one.
async fn publish_beside(
    broker: &Arc<AmqpBroker>,
    queue: &str,
    odd_exchange: &str,
    per_round: usize,
) -> (
    Vec<Result<(), celery_core::broker::BrokerError>>,
    Result<(), celery_core::broker::BrokerError>,
) {
    let mut publishes = tokio::task::JoinSet::new();
    for i in 0..per_round {
        let broker = broker.clone();
        let odd = i == per_round / 2;
        let (exchange, key) = if odd {
            (odd_exchange.to_owned(), "x".to_owned())
        } else {
            (String::new(), queue.to_owned())
        };
        publishes.spawn(async move {
            let sent = broker
                .publish(&exchange, &key, &message(&i.to_string()))
                .await;
            (odd, sent)
        });
    }
    let (mut others, mut odd_one) = (Vec::new(), None);
    while let Some(joined) = publishes.join_next().await {
        match joined.unwrap() {
            (true, sent) => odd_one = Some(sent),
            (false, sent) => others.push(sent),
        }
    }
    (others, odd_one.expect("the odd publish ran"))
}

/// A publish to a missing exchange is refused, and the publishes beside it on the same pooled
/// channel are not touched: the exchange is checked on the control channel first (and an
/// existing exchange of any type passes that check).
#[tokio::test]
async fn a_publish_to_a_missing_exchange_is_refused_and_leaves_the_others_alone() {
    require_rabbitmq!();
    let broker = single_channel_broker().await;
    let name = unique("missing-exchange-neighbour");
    let topic = unique("topic");
    broker
        .declare(&Queue::new(&name).exchange(&topic, "topic").routing_key("#"))
        .await
        .unwrap();
    let missing = unique("no-such-exchange");
    for _ in 0..5 {
        let (others, refused) = publish_beside(&broker, &name, &missing, 40).await;
        let error = refused.expect_err("a publish to a missing exchange fails");
        assert_eq!(error.kind, BrokerErrorKind::Refused, "{error}");
        assert!(error.to_string().contains(&missing), "{error}");
        for sent in others {
            sent.expect("a publish beside the refused one goes through");
        }
    }
    // A fresh broker (nothing remembered) publishes to the existing topic exchange.
    let fresh = AmqpBroker::connect(URL).await.unwrap();
    fresh
        .publish(&topic, "any.key", &message("topic"))
        .await
        .unwrap();
    assert_eq!(broker.purge(&name).await.unwrap(), 5 * 39 + 1);
    cleanup(&broker, &[&name]).await;
    delete_exchange(&topic).await;
}

/// An exchange deleted after it was checked: the publish to it closes the pooled channel, and
/// every other publish in flight on that channel is told of a channel error (which the
/// producer's retry sends again), not of a refusal; only the publish to it is refused.
#[tokio::test]
async fn a_refusal_makes_the_others_on_its_channel_channel_errors_not_refusals() {
    require_rabbitmq!();
    let broker = single_channel_broker().await;
    let name = unique("refused-neighbour");
    let doomed = unique("deleted-exchange");
    // Declared through another broker: one that declared it would declare it again after a
    // reconnection (RabbitMQ closes the whole connection when a publish reaches a channel it
    // has just closed, which happens under load), and the exchange would exist again.
    AmqpBroker::connect(URL)
        .await
        .unwrap()
        .declare(&Queue::new(&name).exchange(&doomed, "direct"))
        .await
        .unwrap();
    // Published to once: the broker knows the exchange exists and checks it no more.
    broker
        .publish(&doomed, &name, &message("checked"))
        .await
        .unwrap();
    delete_exchange(&doomed).await;
    let mut caught = 0;
    for _ in 0..5 {
        let (others, refused) = publish_beside(&broker, &name, &doomed, 40).await;
        let error = refused.expect_err("a publish to a deleted exchange fails");
        assert_eq!(error.kind, BrokerErrorKind::Refused, "{error}");
        for sent in others {
            if let Err(error) = sent {
                caught += 1;
                assert!(
                    error.kind.is_recoverable(),
                    "a publish to an existing queue failed as {:?}, not retryable: {error}",
                    error.kind
                );
            }
        }
    }
    assert!(
        caught > 0,
        "no publish was in flight beside the refused one"
    );
    cleanup(&broker, &[&name]).await;
}

#[tokio::test]
async fn consuming_a_missing_queue_is_refused() {
    require_rabbitmq!();
    let broker = broker().await;
    let error = match broker.consume(&[Queue::new(unique("missing"))], 1).await {
        Err(error) => error,
        Ok(_) => panic!("consuming a missing queue must fail"),
    };
    assert_eq!(error.kind, BrokerErrorKind::Refused, "{error}");
}

#[tokio::test]
async fn an_unreachable_broker_is_a_connection_error_quickly() {
    // Needs no RabbitMQ: nothing listens on port 1.
    let started = Instant::now();
    let broker =
        AmqpBroker::new("amqp://guest:secret@127.0.0.1:1//", AmqpOptions::default()).unwrap();
    assert_eq!(broker.url(), "amqp://guest:**@127.0.0.1:1//");
    let error = broker.publish("", "q", &message("x")).await.unwrap_err();
    assert_eq!(error.kind, BrokerErrorKind::Connection, "{error}");
    assert!(error.to_string().contains("127.0.0.1:1"), "{error}");
    assert!(!error.to_string().contains("secret"), "{error}");
    match AmqpBroker::connect("amqp://guest@127.0.0.1:1//").await {
        Err(Error::Broker(error)) => assert_eq!(error.kind, BrokerErrorKind::Connection),
        other => panic!("expected a connection error, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// A TCP proxy to RabbitMQ whose connections the test can cut.
struct Proxy {
    port: u16,
    sockets: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start() -> io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let sockets: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let registry = sockets.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(RABBITMQ) else {
                    continue;
                };
                let (Ok(client_read), Ok(server_read)) = (client.try_clone(), server.try_clone())
                else {
                    continue;
                };
                registry
                    .lock()
                    .unwrap()
                    .extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
                let (mut client_write, mut server_write) = (client, server);
                let (mut client_read, mut server_read) = (client_read, server_read);
                std::thread::spawn(move || io::copy(&mut client_read, &mut server_write));
                std::thread::spawn(move || io::copy(&mut server_read, &mut client_write));
            }
        });
        Ok(Proxy { port, sockets })
    }

    fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}//", self.port)
    }

    /// Drops every connection, as a network failure or a broker restart would.
    fn cut(&self) {
        for socket in self.sockets.lock().unwrap().drain(..) {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }
}

/// Publishes until it goes through (a new connection), allowing only recoverable errors.
async fn publish_until_recovered(broker: &AmqpBroker, exchange: &str, key: &str, body: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Err(error) = broker.publish(exchange, key, &message(body)).await {
        assert!(error.kind.is_recoverable(), "{error}");
        assert!(
            Instant::now() < deadline,
            "publishing never recovered: {error}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A broker reached through a proxy that can cut it, and a consumer of a new queue on it.
async fn consuming_through_a_proxy(what: &str) -> (Proxy, AmqpBroker, String, Box<dyn Consumer>) {
    let proxy = Proxy::start().unwrap();
    let through_proxy = AmqpBroker::connect(&proxy.url()).await.unwrap();
    let name = unique(what);
    let queue = Queue::new(&name);
    through_proxy.declare(&queue).await.unwrap();
    let consumer = through_proxy
        .consume(std::slice::from_ref(&queue), 5)
        .await
        .unwrap();
    (proxy, through_proxy, name, consumer)
}

#[tokio::test]
async fn a_lost_connection_is_reopened_for_publishers_and_consumers() {
    require_rabbitmq!();
    let direct = broker().await;
    let (proxy, through_proxy, name, mut consumer) = consuming_through_a_proxy("reconnect").await;
    through_proxy
        .publish("", &name, &message("before"))
        .await
        .unwrap();
    let before = next(&mut consumer).await;
    assert_eq!(body(&before), "before");
    before.acker.ack().await.unwrap();

    proxy.cut();

    // The consumer reports the loss, then consumes again.
    direct.publish("", &name, &message("after")).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut errors = 0;
    let after = loop {
        assert!(Instant::now() < deadline, "no delivery after reconnecting");
        match tokio::time::timeout(WAIT, consumer.next()).await {
            // The ack of "before" may have been lost with the connection: then it comes back,
            // marked redelivered (at-least-once), and is acknowledged again.
            Ok(Some(Ok(delivery))) if body(&delivery) == "before" && delivery.info.redelivered => {
                delivery.acker.ack().await.unwrap();
            }
            Ok(Some(Ok(delivery))) => break delivery,
            Ok(Some(Err(error))) => {
                assert!(error.kind.is_recoverable(), "{error}");
                errors += 1;
            }
            Ok(None) => panic!("the consumer ended"),
            Err(_) => panic!("the consumer neither delivered nor reported"),
        }
    };
    assert!(errors >= 1);
    assert_eq!(body(&after), "after");
    after.acker.ack().await.unwrap();

    // A publisher gets at most a recoverable error, then goes through a new connection.
    publish_until_recovered(&through_proxy, "", &name, "published").await;
    assert_eq!(body(&next(&mut consumer).await), "published");

    drop(consumer);
    cleanup(&direct, &[&name]).await;
}

/// A queue deleted while consumed (RabbitMQ cancels its consumer): the consumer reports it, then
/// consumes every queue again through a new session that declares them, as kombu recovers from
/// `ConsumerCancelled`; the other queue is not left behind, nor the deleted one unread.
#[tokio::test]
async fn a_consumer_the_broker_cancels_consumes_its_queues_again() {
    require_rabbitmq!();
    let direct = broker().await;
    let (kept, deleted) = (unique("cancel-kept"), unique("cancel-deleted"));
    let queues = [Queue::new(&kept), Queue::new(&deleted)];
    for queue in &queues {
        direct.declare(queue).await.unwrap();
    }
    let consuming = broker().await;
    let mut consumer = consuming.consume(&queues, 5).await.unwrap();
    direct.delete_queue(&deleted).await.unwrap();
    let error = tokio::time::timeout(WAIT, consumer.next())
        .await
        .expect("the cancellation is reported")
        .expect("the consumer goes on")
        .expect_err("an error, not a delivery");
    assert!(error.kind.is_recoverable(), "{error}");
    assert!(error.to_string().contains(&deleted), "{error}");
    // A new client declares and publishes; both queues are consumed again.
    let client = broker().await;
    for (queue, text) in [(&deleted, "to the deleted one"), (&kept, "to the kept one")] {
        client.declare(&Queue::new(queue)).await.unwrap();
        client.publish("", queue, &message(text)).await.unwrap();
    }
    let mut bodies = Vec::new();
    for _ in 0..2 {
        let delivery = next(&mut consumer).await;
        bodies.push(body(&delivery));
        delivery.acker.ack().await.unwrap();
    }
    bodies.sort();
    assert_eq!(bodies, ["to the deleted one", "to the kept one"]);
    drop(consumer);
    cleanup(&direct, &[&kept, &deleted]).await;
}

/// The worker's loop drops the `next()` future whenever another event comes first: the
/// reconnection goes on regardless, instead of its backoff starting over each time.
#[tokio::test]
async fn a_reconnection_goes_on_while_next_is_dropped_again_and_again() {
    require_rabbitmq!();
    let direct = broker().await;
    let (proxy, _through_proxy, name, mut consumer) =
        consuming_through_a_proxy("reconnect-dropped").await;
    proxy.cut();
    let lost = tokio::time::timeout(WAIT, consumer.next())
        .await
        .expect("the loss is reported")
        .expect("the consumer goes on");
    assert!(lost.is_err(), "the loss comes first");
    direct.publish("", &name, &message("after")).await.unwrap();
    // Polled for 50 ms at a time, far less than the backoff and a connection take together
    // once a few attempts have failed (here the first one succeeds, after 0.25 s).
    let deadline = Instant::now() + Duration::from_secs(20);
    let delivery = loop {
        assert!(Instant::now() < deadline, "never reconnected");
        match tokio::time::timeout(Duration::from_millis(50), consumer.next()).await {
            Err(_) => continue,
            Ok(Some(Ok(delivery))) => break delivery,
            Ok(Some(Err(error))) => assert!(error.kind.is_recoverable(), "{error}"),
            Ok(None) => panic!("the consumer ended"),
        }
    };
    assert_eq!(body(&delivery), "after");
    delivery.acker.ack().await.unwrap();
    drop(consumer);
    cleanup(&direct, &[&name]).await;
}

/// A broker reached through a proxy that can cut it, which declared a new queue bound to an
/// exchange of its own and published one message to it (so it knows the exchange exists).
async fn published_through_a_proxy(what: &str) -> (Proxy, AmqpBroker, Queue) {
    let proxy = Proxy::start().unwrap();
    let through_proxy = AmqpBroker::connect(&proxy.url()).await.unwrap();
    let bound = Queue::new(unique(what)).exchange(unique(&format!("{what}-exchange")), "direct");
    through_proxy.declare(&bound).await.unwrap();
    through_proxy
        .publish(&bound.exchange, &bound.routing_key, &message("before"))
        .await
        .unwrap();
    (proxy, through_proxy, bound)
}

/// A broker that lost its definitions while the connection was down (restarted without them):
/// the queues declared for publishing are declared again on the new connection before any
/// publish goes through it, so the first message after reconnecting is not dropped as
/// unroutable.
#[tokio::test]
async fn queues_declared_for_publishing_are_declared_again_after_reconnecting() {
    require_rabbitmq!();
    let direct = broker().await;
    let (proxy, through_proxy, bound) = published_through_a_proxy("redeclared").await;
    let name = bound.name.clone();

    // The broker loses the queue and its exchange, and the connection drops.
    direct.delete_queue(&name).await.unwrap();
    delete_exchange(&bound.exchange).await;
    proxy.cut();

    publish_until_recovered(&through_proxy, &bound.exchange, &bound.routing_key, "after").await;
    let mut consumer = direct
        .consume(std::slice::from_ref(&Queue::new(&name)), 5)
        .await
        .expect("the queue exists again");
    let after = next(&mut consumer).await;
    assert_eq!(body(&after), "after");
    after.acker.ack().await.unwrap();
    drop(consumer);
    cleanup(&direct, &[&name]).await;
    delete_exchange(&bound.exchange).await;
}

/// What the broker deletes stays deleted: a new connection does not declare a deleted queue
/// again, and a publish to a deleted exchange is refused instead of taken as known.
#[tokio::test]
async fn deleted_queues_and_exchanges_are_not_declared_again_after_reconnecting() {
    require_rabbitmq!();
    let (proxy, through_proxy, bound) = published_through_a_proxy("deleted").await;
    let name = bound.name.clone();

    assert_eq!(through_proxy.delete_queue(&name).await.unwrap(), 1);
    through_proxy
        .delete_exchange(&bound.exchange)
        .await
        .unwrap();
    assert!(!exists("queue", &name).await, "the queue is deleted");
    assert!(
        !exists("exchange", &bound.exchange).await,
        "the exchange is deleted"
    );
    let refused = through_proxy
        .publish(&bound.exchange, &bound.routing_key, &message("after"))
        .await
        .expect_err("a publish to a deleted exchange is refused");
    assert_eq!(refused.kind, BrokerErrorKind::Refused, "{refused}");

    // A new connection declares again only what was not deleted.
    let witness = unique("witness");
    let direct = broker().await;
    direct.declare(&Queue::new(&witness)).await.unwrap();
    proxy.cut();
    publish_until_recovered(&through_proxy, "", &witness, "reconnected").await;
    assert!(!exists("queue", &name).await, "the deleted queue came back");
    assert!(
        !exists("exchange", &bound.exchange).await,
        "the deleted exchange came back"
    );
    cleanup(&direct, &[&witness]).await;
}

fn state(status: &str, result: Value) -> ResultMeta {
    ResultMeta::new(String::new(), State::from(status), result)
}

/// A result that came before the client listened is what its first look finds (Celery reads
/// the reply queue with `basic.get` when asked for a state), not PENDING while a consumer
/// starts; what comes later arrives through the consumer.
#[tokio::test]
async fn an_rpc_client_first_look_finds_a_result_that_came_before() {
    require_rabbitmq!();
    let client = RpcBackend::new(URL).unwrap();
    let oid = unique("oid-early");
    client.bind_client(&oid, &celery_core::backend::ResultCodec::default());
    client.prepare_client().await.unwrap();
    let worker = RpcBackend::new(URL).unwrap();
    let (first, second) = (unique("first"), unique("second"));
    for (task_id, status) in [
        (&first, "STARTED"),
        (&first, "SUCCESS"),
        (&second, "STARTED"),
    ] {
        let mut meta = state(status, json!(7));
        meta.task_id = task_id.clone();
        worker.store(&meta, Some(&oid)).await.unwrap();
    }
    let found = client.get(&first).await.unwrap().expect("found at once");
    assert_eq!((found.status, found.result), (State::Success, json!(7)));
    assert_eq!(
        client.get(&second).await.unwrap().unwrap().status,
        State::Started
    );
    let mut meta = state("SUCCESS", json!(8));
    meta.task_id = second.clone();
    worker.store(&meta, Some(&oid)).await.unwrap();
    let mut updates = client.subscribe(&second).await.unwrap();
    let mut latest = updates.recv().await.unwrap();
    while latest.status != State::Success {
        latest = tokio::time::timeout(WAIT, updates.recv())
            .await
            .expect("a state in time")
            .unwrap();
    }
    assert_eq!(latest.result, json!(8));
    drop(client);
    cleanup(&broker().await, &[&oid]).await;
}

#[tokio::test]
async fn rpc_results_reach_the_client_in_order() {
    require_rabbitmq!();
    let client = RpcBackend::new(URL).unwrap();
    let oid = unique("oid");
    client.bind_client(&oid, &celery_core::backend::ResultCodec::default());
    assert_eq!(client.reply_queue(), oid);
    client.prepare_client().await.unwrap();
    let worker = RpcBackend::new(URL).unwrap();

    let task_id = uuid::Uuid::new_v4().to_string();
    assert!(client.get(&task_id).await.unwrap().is_none());
    let mut updates = client.subscribe(&task_id).await.unwrap();
    for (status, result) in [
        ("PROGRESS", json!({"progress": 50})),
        ("PROGRESS", json!({"progress": 90})),
        ("SUCCESS", json!(4)),
    ] {
        let mut meta = state(status, result);
        meta.task_id = task_id.clone();
        worker.store(&meta, Some(&oid)).await.unwrap();
    }
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let meta = tokio::time::timeout(WAIT, updates.recv())
            .await
            .expect("a state in time")
            .expect("the backend goes on");
        seen.push((meta.status.to_string(), meta.result));
    }
    assert_eq!(
        seen,
        [
            ("PROGRESS".to_owned(), json!({"progress": 50})),
            ("PROGRESS".to_owned(), json!({"progress": 90})),
            ("SUCCESS".to_owned(), json!(4)),
        ]
    );
    let latest = client.get(&task_id).await.unwrap().unwrap();
    assert_eq!(latest.status, State::Success);

    // A state that arrived before anyone subscribed is the first thing a subscriber sees.
    let early = uuid::Uuid::new_v4().to_string();
    let mut meta = state(
        "FAILURE",
        json!({"exc_type": "ValueError", "exc_message": ["boom"], "exc_module": "builtins"}),
    );
    meta.task_id = early.clone();
    worker.store(&meta, Some(&oid)).await.unwrap();
    let deadline = Instant::now() + WAIT;
    while client.get(&early).await.unwrap().is_none() {
        assert!(Instant::now() < deadline, "the result never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut late = client.subscribe(&early).await.unwrap();
    assert_eq!(late.recv().await.unwrap().status, State::Failure);

    // Without a reply_to there is nowhere to send a result: skipped, not an error.
    worker
        .store(&state("SUCCESS", json!(1)), None)
        .await
        .unwrap();

    client.forget(&task_id).await.unwrap();
    assert!(client.get(&task_id).await.unwrap().is_none());
    cleanup(&broker().await, &[&oid]).await;
}

struct Add;

impl Task for Add {
    const NAME: &'static str = "tests.amqp.add";
    type Output = i64;
    const OPTIONS: TaskOptions = TaskOptions::DEFAULT;
    const PARAMS: &'static [&'static str] = &["x", "y"];

    fn run(mut invocation: Invocation) -> Result<celery_core::task::TaskFuture, TaskError> {
        let mut args = invocation.bind(Self::PARAMS)?;
        let x: i64 = args.take(0)?;
        let y: i64 = args.take(1)?;
        Ok(Box::pin(async move { Ok(json!(x + y)) }))
    }
}

struct Fail;

impl Task for Fail {
    const NAME: &'static str = "tests.amqp.fail";
    type Output = ();
    const OPTIONS: TaskOptions = TaskOptions::DEFAULT;
    const PARAMS: &'static [&'static str] = &[];

    fn run(_invocation: Invocation) -> Result<celery_core::task::TaskFuture, TaskError> {
        Ok(Box::pin(async {
            Err(TaskError::new("ValueError", "boom"))
        }))
    }
}

/// Through the app, a task sent to a missing exchange fails and the tasks sent beside it all
/// arrive, once each; and concurrent first publishes to a new queue wait for its declaration
/// (sent before it, RabbitMQ would drop them as unroutable).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_sharing_a_channel_with_a_refused_one_all_arrive() {
    require_rabbitmq!();
    let app = Celery::builder("t")
        .broker_url(URL)
        .configure(|config| config.broker_pool_limit = 1)
        .build()
        .unwrap();
    let queue = unique("refused-neighbours");
    let missing = unique("no-such-exchange");
    let (rounds, per_round) = (5, 40);
    for _ in 0..rounds {
        let mut sends = Vec::new();
        for i in 0..=per_round {
            let options = if i == per_round / 2 {
                CallOptions::new().exchange(&missing).routing_key("x")
            } else {
                CallOptions::new().queue(&queue)
            };
            let app = app.clone();
            sends.push(tokio::spawn(async move {
                let sent = app
                    .send_task(Add::NAME, vec![json!(1), json!(1)], Map::new(), options)
                    .await;
                (i == per_round / 2, sent.map(|_| ()))
            }));
        }
        for send in sends {
            match send.await.unwrap() {
                (true, sent) => {
                    let error = sent.expect_err("a task to a missing exchange is not sent");
                    assert!(error.to_string().contains(&missing), "{error}");
                }
                (false, sent) => sent.expect("a task to an existing queue is sent"),
            }
        }
    }
    let broker = broker().await;
    let mut consumer = broker
        .consume(std::slice::from_ref(&Queue::new(&queue)), 500)
        .await
        .unwrap();
    let (mut arrived, mut ids) = (0, std::collections::HashSet::new());
    while let Ok(Some(delivery)) =
        tokio::time::timeout(Duration::from_secs(1), consumer.next()).await
    {
        let delivery = delivery.unwrap();
        let headers = TaskHeaders::from_table(&delivery.message.headers).unwrap();
        ids.insert(headers.id);
        arrived += 1;
        delivery.acker.ack().await.unwrap();
    }
    assert_eq!(ids.len(), rounds * per_round);
    assert_eq!(arrived, rounds * per_round);
    drop(consumer);
    cleanup(&broker, &[&queue]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_on_rabbitmq_with_rpc_results_runs_tasks() {
    require_rabbitmq!();
    let app = Celery::builder("t")
        .broker_url(URL)
        .result_backend("rpc://")
        .build()
        .unwrap();
    app.register(Add);
    app.register(Fail);
    let queue = unique("app");
    let worker = app
        .worker()
        .queues([queue.clone()])
        .concurrency(2)
        .start()
        .await
        .unwrap();

    let result = app
        .send_task(
            Add::NAME,
            vec![json!(2)],
            Map::from_iter([("y".to_owned(), json!(2))]),
            CallOptions::new().queue(&queue),
        )
        .await
        .unwrap();
    let sum: Value = result.get().timeout(WAIT).await.unwrap();
    assert_eq!(sum, json!(4));
    assert_eq!(result.state().await.unwrap(), State::Success);

    // A task no queue takes fails, instead of being dropped by RabbitMQ.
    let unrouted = app
        .send_task(
            Add::NAME,
            vec![json!(2), json!(2)],
            Map::new(),
            CallOptions::new()
                .exchange("amq.direct")
                .routing_key(unique("unbound-key")),
        )
        .await
        .expect_err("no queue took it");
    assert!(
        matches!(unrouted, Error::Operational { .. })
            && unrouted.to_string().contains("no queue took"),
        "{unrouted:?}"
    );

    // A header nested deeper than a reader passes on is refused at once, not sent.
    let mut deep = json!(1);
    for _ in 0..200 {
        deep = json!([deep]);
    }
    let refused = app
        .send_task(
            Add::NAME,
            vec![json!(2), json!(2)],
            Map::new(),
            CallOptions::new().queue(&queue).header("deep", deep),
        )
        .await
        .expect_err("too deep to send");
    assert!(
        matches!(refused, Error::Operational { .. }) && refused.to_string().contains("deeper"),
        "{refused:?}"
    );

    let failed = app
        .send_task(
            Fail::NAME,
            Vec::new(),
            Map::new(),
            CallOptions::new().queue(&queue),
        )
        .await
        .unwrap();
    match failed.get().timeout(WAIT).await {
        Err(Error::TaskFailed { exception, .. }) => {
            assert_eq!(exception.exc_type, "ValueError");
            assert_eq!(exception.message(), "boom");
        }
        other => panic!("expected the task's failure, got {other:?}"),
    }

    tokio::time::timeout(WAIT, worker.shutdown())
        .await
        .expect("the worker stops");
    cleanup(&broker().await, &[&queue, app.oid()]).await;
}

#[tokio::test]
async fn bad_credentials_and_unknown_vhosts_are_refused_not_retried() {
    require_rabbitmq!();
    for url in [
        "amqp://guest:wrong-password@127.0.0.1:5672//",
        "amqp://guest:guest@127.0.0.1:5672/celery-rs-no-such-vhost",
    ] {
        match AmqpBroker::connect(url).await {
            Err(Error::Broker(error)) => {
                assert_eq!(error.kind, BrokerErrorKind::Refused, "{error}");
                assert!(!error.to_string().contains("wrong-password"), "{error}");
            }
            other => panic!("{url}: expected a refusal, got {other:?}"),
        }
    }
}
