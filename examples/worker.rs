//! A worker binary with the quickstart's tasks, driven by Celery's command line:
//!
//! ```sh
//! cargo run --example worker -- worker -Q celery -c 4 -l info
//! cargo run --example worker -- call tasks.add --args '[2, 2]' --wait
//! cargo run --example worker -- result <task-id>
//! cargo run --example worker -- purge -Q celery -f
//! ```
//!
//! Broker and backend come from `CELERY_BROKER_URL` / `CELERY_RESULT_BACKEND` (or `--broker`,
//! `--result-backend`); the defaults are the embedded in-memory ones.

#[path = "shared/tasks.rs"]
mod tasks;

use std::process::ExitCode;

use celery::Celery;

#[tokio::main]
async fn main() -> ExitCode {
    // The pickle codec is data-only: it never imports or calls anything, so accepting it is safe.
    let builder = Celery::builder("worker").accept_content(["json", "msgpack", "yaml", "pickle"]);
    celery::cli::run(builder, tasks::register).await
}
