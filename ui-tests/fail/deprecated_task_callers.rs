//! A deprecated task's Calling API is deprecated as the function is.
#![deny(deprecated)]

use celery::prelude::*;

#[deprecated(note = "use `add` instead")]
#[task]
pub async fn sum(x: i32, y: i32) -> i32 {
    x + y
}

#[tokio::main]
async fn main() {
    let _ = sum(1, 2).await;
    let _ = sum::s(1, 2);
    let _ = sum::delay(1, 2).await;
    let _ = sum::Task;
}
