//! Results through rpc:// on RabbitMQ: `result_serializer` and `result_compression` choose how
//! a worker writes them, and `result_accept_content` which ones a client reads.

mod common;

use std::time::Duration;

use celery::prelude::*;
use common::RABBITMQ_URL;

#[task(name = "results.add")]
async fn add(x: i64, y: i64) -> i64 {
    x + y
}

fn app(queue: &str, configure: impl FnOnce(&mut celery::Config)) -> Celery {
    Celery::builder("results")
        .broker_url(RABBITMQ_URL)
        .result_backend("rpc://")
        .task_default_queue(queue)
        .configure(configure)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_serializer_compression_and_accept_content() {
    if !common::rabbitmq("result_serializer_compression_and_accept_content") {
        return;
    }
    let queue = common::unique_name("results");
    let worker_app = app(&queue, |c| {
        c.result_serializer = "msgpack".into();
        c.result_compression = Some("zstd".into());
    });
    worker_app.register(add::Task);
    let worker = worker_app.worker().start().await.unwrap();

    let accepting = app(&queue, |c| {
        c.result_accept_content = Some(vec!["json".into(), "msgpack".into()])
    });
    let result = add::s(2, 3).apply_async_with(&accepting).await.unwrap();
    assert_eq!(
        result.get().timeout(Duration::from_secs(20)).await.unwrap(),
        5
    );

    let json_only = app(&queue, |_| {});
    let refused = add::s(1, 1).apply_async_with(&json_only).await.unwrap();
    let error = refused
        .get()
        .timeout(Duration::from_secs(20))
        .await
        .unwrap_err();
    let exception = error
        .exception()
        .expect("a refused result reaches the caller as a failure");
    assert_eq!(exception.exc_type, "ContentDisallowed");
    assert!(
        exception.message().contains("application/x-msgpack"),
        "{exception}"
    );

    worker.shutdown().await;
    let broker = celery::broker::AmqpBroker::connect(RABBITMQ_URL)
        .await
        .unwrap();
    common::delete_queue_and_exchange(&broker, &queue).await;
}

/// Celery declares the reply queue before every call that wants a result. This client declares
/// it when it starts reading results, and its consumer declares it again when RabbitMQ cancels
/// it: a reply queue deleted under a client still gets the results of the calls made after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_reply_queue_is_declared_again_by_the_next_call() {
    if !common::rabbitmq("a_deleted_reply_queue_is_declared_again_by_the_next_call") {
        return;
    }
    let queue = common::unique_name("results-redeclare");
    let worker_app = app(&queue, |_| {});
    worker_app.register(add::Task);
    let worker = worker_app.worker().start().await.unwrap();
    let client = app(&queue, |_| {});
    let wait = Duration::from_secs(20);
    let first = add::s(1, 2).apply_async_with(&client).await.unwrap();
    assert_eq!(first.get().timeout(wait).await.unwrap(), 3);

    let broker = celery::broker::AmqpBroker::connect(RABBITMQ_URL)
        .await
        .unwrap();
    broker.delete_queue(client.oid()).await.unwrap();
    // RabbitMQ cancels the client's consumer of the deleted queue, which declares it again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = add::s(2, 3).apply_async_with(&client).await.unwrap();
    // The result is sent before anyone asks for it: it must find the queue there.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let result = second.get().timeout(Duration::from_secs(5)).await;
    assert_eq!(result.unwrap(), 5);

    worker.shutdown().await;
    drop(client);
    common::delete_queue_and_exchange(&broker, &queue).await;
}
