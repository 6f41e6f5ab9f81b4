//! A task returning a `Result` is fallible: its output is the `Ok` type, and its error becomes
//! the task's exception.
#![deny(warnings)]
// celery-core's `TaskError` is large enough for clippy to flag functions returning it.
#![allow(clippy::result_large_err)]

use std::fmt;

use celery::__private::{Invocation, Task, Value};
use celery::prelude::*;

#[derive(Debug)]
pub struct DivisionByZero;

impl fmt::Display for DivisionByZero {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("division by zero")
    }
}

impl std::error::Error for DivisionByZero {}

#[task]
pub async fn div(x: i32, y: i32) -> Result<i32, DivisionByZero> {
    x.checked_div(y).ok_or(DivisionByZero)
}

#[task]
pub fn parse(text: String) -> std::result::Result<u16, TaskError> {
    text.parse().map_err(|_| TaskError::new("ValueError", format!("not a number: {text}")))
}

#[task]
pub async fn read_len(path: String) -> std::io::Result<u64> {
    Ok(std::fs::metadata(path)?.len())
}

async fn run<T: Task>(args: Vec<Value>) -> Result<Value, TaskError> {
    let context = TaskContext::eager(Request { task: T::NAME.into(), ..Request::default() });
    T::run(Invocation::new(context, args, Default::default()))?.await
}

#[tokio::main]
async fn main() {
    let _: div::Output = 1_i32;
    let _: parse::Output = 1_u16;
    let _: read_len::Output = 1_u64;
    assert_eq!(run::<div::Task>(vec![7.into(), 2.into()]).await.unwrap(), Value::from(3));
    assert!(run::<div::Task>(vec![7.into(), 0.into()]).await.is_err());
    assert_eq!(run::<parse::Task>(vec!["80".into()]).await.unwrap(), Value::from(80));
    assert!(run::<parse::Task>(vec!["x".into()]).await.is_err());
    assert!(run::<read_len::Task>(vec!["/no/such/file".into()]).await.is_err());
}
