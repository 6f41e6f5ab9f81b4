//! A plain `fn` task runs on tokio's blocking pool when a worker calls it.
#![deny(warnings)]

use celery::__private::{Invocation, Task, Value};
use celery::prelude::*;

#[task]
fn mul(x: i64, y: i64) -> i64 {
    std::thread::sleep(std::time::Duration::from_millis(1));
    x * y
}

#[tokio::main]
async fn main() {
    assert_eq!(mul(6, 7), 42);
    let context = TaskContext::eager(Request { task: "mul".into(), ..Request::default() });
    let args = vec![Value::from(6), Value::from(7)];
    let invocation = Invocation::new(context, args, Default::default());
    let result = <mul::Task as Task>::run(invocation).unwrap().await.unwrap();
    assert_eq!(result, Value::from(42));
}
