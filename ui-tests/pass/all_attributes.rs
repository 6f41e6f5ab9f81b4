//! Every option at once, written as each kind of value allows.
#![deny(warnings)]

use celery::__private::{Task, TaskOptions};
use celery::prelude::*;

#[task(
    name = "tasks.everything",
    serializer = "application/json",
    compression = "GZIP",
    ignore_result,
    queue = "math",
    routing_key = "math.everything",
    priority = 9,
    expires = 60,
    max_retries = 7,
    default_retry_delay = 1.5,
    acks_late = true,
    time_limit = 30,
    soft_time_limit = 29.5,
    track_started = false,
    crate = "::celery"
)]
pub async fn everything(x: u8) -> u8 {
    x
}

const _: () = assert!(!<everything::Task as Task>::IS_ERRBACK);

fn main() {
    assert_eq!(
        <everything::Task as Task>::OPTIONS,
        TaskOptions {
            serializer: Some("json"),
            compression: Some("gzip"),
            ignore_result: Some(true),
            queue: Some("math"),
            routing_key: Some("math.everything"),
            priority: Some(9),
            expires: Some(60.0),
            max_retries: Some(7),
            default_retry_delay: Some(1.5),
            acks_late: Some(true),
            time_limit: Some(30.0),
            soft_time_limit: Some(29.5),
            track_started: Some(false),
            known: true,
        }
    );
    assert_eq!(everything::NAME, "tasks.everything");
}
