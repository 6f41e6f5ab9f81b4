//! `#[task(fallible = false)]`: a `Result` is the task's value, stored as `{"Ok": ...}` or
//! `{"Err": ...}`; the task does not fail with it.
#![deny(warnings)]
#![allow(clippy::result_large_err)]

use celery::__private::{Invocation, Task, Value};
use celery::prelude::*;

#[task(fallible = false)]
pub fn checked_sqrt(x: f64) -> Result<f64, String> {
    if x >= 0.0 {
        Ok(x.sqrt())
    } else {
        Err(format!("{x} is negative"))
    }
}

async fn run<T: Task>(args: Vec<Value>) -> Result<Value, TaskError> {
    let context = TaskContext::eager(Request { task: T::NAME.into(), ..Request::default() });
    T::run(Invocation::new(context, args, Default::default()))?.await
}

#[tokio::main]
async fn main() {
    let _: checked_sqrt::Output = Ok::<f64, String>(1.0);
    let _: Signature<Result<f64, String>> = checked_sqrt::s(4.0);
    assert_eq!(
        run::<checked_sqrt::Task>(vec![4.0.into()]).await.unwrap(),
        serde_json::json!({"Ok": 2.0})
    );
    assert_eq!(
        run::<checked_sqrt::Task>(vec![(-1.0).into()]).await.unwrap(),
        serde_json::json!({"Err": "-1 is negative"})
    );
}
