//! An `async fn` task stays an ordinary function, and gains a module of the same name.
#![deny(warnings)]

use celery::prelude::*;

/// Adds two numbers.
#[task]
pub async fn add(x: i32, y: i32) -> i32 {
    x + y
}

#[tokio::main]
async fn main() {
    assert_eq!(add(2, 2).await, 4);
    assert_eq!(add::NAME, "add");
    let _registered: add::Task = add::Task;
    let _output: add::Output = 4_i32;
    let _signature: Signature<i32> = add::s(2, 2);
}
