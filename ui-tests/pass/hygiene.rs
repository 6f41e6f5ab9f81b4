//! Parameter names and types that collide with the generated code's own names still work.
#![deny(warnings)]

use celery::__private::{Invocation, Task as _, Value};
use celery::prelude::*;
use serde::{Deserialize, Serialize};

/// A user type named like the generated `Output` alias.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Output(pub i32);

/// A user type named like the generated `Task` struct.
#[derive(Debug, Serialize, Deserialize)]
pub struct Task {
    pub id: i32,
}

mod types {
    #[derive(Debug, serde::Serialize, serde::Deserialize)]
    pub struct Nested(pub i32);
}

#[task]
pub async fn collide(args: i32, invocation: Task, options: self::types::Nested, s: Vec<Output>) -> Output {
    Output(args + invocation.id + options.0 + s.len() as i32)
}

#[task]
pub fn r#type(r#fn: i32) -> i32 {
    r#fn
}

#[tokio::main]
async fn main() {
    let _ = collide::s(1, Task { id: 2 }, types::Nested(3), vec![Output(0)]);
    drop(collide::apply_async((1, Task { id: 2 }, types::Nested(3), vec![]), CallOptions::new()));
    let _: collide::Output = Output(6);
    assert_eq!(r#type::NAME, "type");
    assert_eq!(<r#type::Task as celery::__private::Task>::PARAMS, ["fn"]);

    let context = TaskContext::eager(Request { task: "collide".into(), ..Request::default() });
    let args = vec![1.into(), serde_json::json!({"id": 2}), 3.into(), Value::Array(vec![])];
    let result = <collide::Task>::run(Invocation::new(context, args, Default::default())).unwrap().await;
    assert_eq!(result.unwrap(), Value::from(6));
}

