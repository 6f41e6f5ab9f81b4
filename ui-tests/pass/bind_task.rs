//! A `bind` task receives its `TaskContext` first; messages carry only the other parameters.
#![deny(warnings)]
// celery-core's `TaskError` is large enough for clippy to flag functions returning it.
#![allow(clippy::result_large_err)]

use celery::__private::{Invocation, Task, Value};
use celery::prelude::*;

#[task(bind)]
pub async fn whoami(ctx: TaskContext, greeting: String) -> String {
    format!("{greeting} from {}", ctx.id())
}

#[task(bind = true, max_retries = 5)]
pub fn flaky(ctx: TaskContext) -> Result<u32, TaskError> {
    Ok(ctx.retries())
}

#[tokio::main]
async fn main() {
    assert_eq!(<whoami::Task as Task>::PARAMS, ["greeting"]);
    assert!(<flaky::Task as Task>::PARAMS.is_empty());
    let _: Signature<String> = whoami::s("hello".to_string());
    let _: Signature<u32> = flaky::s();

    let request = Request { id: "abc".into(), task: "whoami".into(), ..Request::default() };
    let invocation =
        Invocation::new(TaskContext::eager(request), vec!["hello".into()], Default::default());
    let result = <whoami::Task as Task>::run(invocation).unwrap().await.unwrap();
    assert_eq!(result, Value::from("hello from abc"));
}
