//! The Calling guide's examples on the embedded in-memory broker: no server needed.
//!
//! Run with `cargo run --example quickstart`.

#[path = "shared/tasks.rs"]
mod tasks;

use std::time::Instant;

use celery::prelude::*;
use tasks::{add, divide, long_job, mul, on_error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .with_max_level(tracing_subscriber::filter::LevelFilter::WARN)
        .with_ansi(false)
        .with_target(false)
        .without_time()
        .init();

    // An app on the embedded broker, made current so that `add::delay(...)` needs nothing else.
    let app = Celery::new("quickstart");
    app.set_current();
    tasks::register(&app);
    let worker = app.worker().concurrency(4).start().await?;

    println!("delay: add(2, 2)");
    let result = add::delay(2, 2).await?;
    println!("  -> {}", result.get().await?);

    println!("apply_async with link=add.s(16)");
    let options = CallOptions::new().link(add::partial(16));
    let parent = add::apply_async((2, 2), options).await?;
    println!("  parent -> {}", parent.get().await?);
    for child in parent.children().await? {
        println!("  callback -> {}", child.cast::<i32>().get().await?);
    }

    println!("countdown=3");
    let started = Instant::now();
    let delayed = add::apply_async((10, 10), CallOptions::new().countdown(3)).await?;
    println!(
        "  -> {} after {:.1} s",
        delayed.get().await?,
        started.elapsed().as_secs_f64()
    );

    println!("expires=0.5 with countdown=1: never runs");
    let expired = add::apply_async((1, 1), CallOptions::new().countdown(1).expires(0.5)).await?;
    match expired.get().await {
        Err(Error::TaskRevoked { exception, .. }) => {
            println!("  -> {} ({exception})", expired.state().await?)
        }
        other => println!("  unexpected: {other:?}"),
    }

    println!("on_message: progress from update_state");
    let job = long_job::delay(2).await?;
    let outcome = job
        .get()
        .on_message(|meta| match meta.status {
            State::Custom(ref name) if name == "PROGRESS" => {
                println!("  {name} {}", meta.result["progress"])
            }
            ref state => println!("  {state}"),
        })
        .await?;
    println!("  -> {outcome}");

    println!("link_error: a failure reaches its errback");
    let failing = divide::apply_async((1, 0), CallOptions::new().link_error(on_error::s())).await?;
    match failing.get().await {
        Err(error) => println!("  get() -> {error}"),
        Ok(value) => println!("  unexpected success {value}"),
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;

    println!("group(add.s(i, i) for i in [2, 4, 8, 16])");
    let numbers = group([2, 4, 8, 16].map(|i| add::s(i, i)))
        .apply_async()
        .await?;
    println!("  -> {:?}", numbers.get().await?);

    println!("chain: add.s(2, 2) | add.s(16) | mul.s(3)");
    let chained = chain![add::s(2, 2), add::partial(16), mul::partial(3)]
        .apply_async()
        .await?;
    println!("  -> {}", chained.get().await?);

    worker.shutdown().await;
    Ok(())
}
