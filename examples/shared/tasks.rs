//! The quickstart's tasks, shared by `quickstart` and the `worker` binary.

use std::time::Duration;

use celery::prelude::*;
use serde_json::json;

/// Adds two numbers.
#[task(name = "tasks.add")]
pub async fn add(x: i32, y: i32) -> i32 {
    x + y
}

/// Multiplies two numbers; a plain `fn` runs on the blocking pool.
#[task(name = "tasks.mul")]
pub fn mul(x: i32, y: i32) -> i32 {
    x * y
}

/// Reports progress while it works (`bind` gives it its context).
#[task(name = "tasks.long_job", bind)]
pub async fn long_job(ctx: TaskContext, steps: u32) -> Result<String, TaskError> {
    for progress in [50, 90] {
        ctx.update_state("PROGRESS", json!({ "progress": progress }))
            .await
            .map_err(TaskError::msg)?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(format!("done in {steps} steps"))
}

/// Fails like Python's `ValueError`.
#[task(name = "tasks.divide")]
pub async fn divide(x: i32, y: i32) -> Result<i32, TaskError> {
    if y == 0 {
        return Err(TaskError::new("ValueError", "division by zero"));
    }
    Ok(x / y)
}

/// An errback: receives the failed task's request, its exception and traceback.
#[task(name = "tasks.on_error", errback)]
pub async fn on_error(request: Request, exc: ExceptionInfo, _traceback: Option<String>) {
    println!("  errback: task {} raised {exc}", request.id);
}

/// Registers every task of this module.
pub fn register(app: &Celery) {
    app.register(add::Task)
        .register(mul::Task)
        .register(long_job::Task)
        .register(divide::Task)
        .register(on_error::Task);
}
