//! A task's `Err` becomes its exception whatever kind of error it holds: a `std::error::Error`
//! (named after its type), a boxed `dyn Error` with or without `Send`/`Sync`, a type that only
//! converts into `Box<dyn Error + Send + Sync>` (as `anyhow::Error` does), or a `TaskError`
//! built with `?`; a `Result` under another name is declared with `fallible`.
#![deny(warnings)]
#![allow(clippy::result_large_err)]

use std::error::Error;
use std::fmt;

use celery::__private::{Invocation, Task, Value};
use celery::prelude::*;

#[derive(Debug)]
pub struct Disk;

impl fmt::Display for Disk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("disk full")
    }
}

impl Error for Disk {}

#[derive(Debug)]
pub struct Save(Disk);

impl fmt::Display for Save {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("cannot save")
    }
}

impl Error for Save {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.0)
    }
}

/// Like `anyhow::Error`: not an `Error` itself, but it converts into a boxed one.
pub struct Opaque(&'static str);

impl From<Opaque> for Box<dyn Error + Send + Sync> {
    fn from(opaque: Opaque) -> Self {
        opaque.0.into()
    }
}

#[task]
pub async fn typed() -> Result<i32, Save> {
    Err(Save(Disk))
}

#[task]
pub async fn boxed() -> Result<i32, Box<dyn Error + Send + Sync>> {
    Err(Box::new(Save(Disk)))
}

#[task]
pub async fn boxed_send() -> Result<i32, Box<dyn Error + Send>> {
    Err(Box::new(Save(Disk)))
}

/// A plain function's error need not be `Send`: it becomes the exception on the blocking pool.
#[task]
pub fn boxed_local() -> Result<i32, Box<dyn Error>> {
    Err(Box::new(Save(Disk)))
}

#[task]
pub async fn opaque() -> Result<i32, Opaque> {
    Err(Opaque("no luck"))
}

#[task]
pub async fn question_mark(text: String) -> Result<i32, TaskError> {
    Ok(text.parse::<i32>()?)
}

pub type Outcome<T> = Result<T, Save>;

#[task(fallible)]
pub async fn aliased(fail: bool) -> Outcome<u8> {
    if fail {
        Err(Save(Disk))
    } else {
        Ok(7)
    }
}

async fn run<T: Task>(args: Vec<Value>) -> Result<Value, TaskError> {
    let context = TaskContext::eager(Request { task: T::NAME.into(), ..Request::default() });
    T::run(Invocation::new(context, args, Default::default()))?.await
}

async fn exception<T: Task>(args: Vec<Value>) -> (String, String, String) {
    let error = run::<T>(args).await.unwrap_err();
    let info = error.exception().unwrap();
    (info.exc_type.clone(), info.exc_module.clone().unwrap(), info.message())
}

fn expected(exc_type: &str, module: &str, message: &str) -> (String, String, String) {
    (exc_type.into(), module.into(), message.into())
}

#[tokio::main]
async fn main() {
    let chained = "cannot save: disk full";
    let this_crate = module_path!();
    assert_eq!(exception::<typed::Task>(vec![]).await, expected("Save", this_crate, chained));
    assert_eq!(exception::<boxed::Task>(vec![]).await, expected("Exception", "builtins", chained));
    assert_eq!(exception::<boxed_send::Task>(vec![]).await, expected("Exception", "builtins", chained));
    assert_eq!(exception::<boxed_local::Task>(vec![]).await, expected("Exception", "builtins", chained));
    assert_eq!(exception::<opaque::Task>(vec![]).await, expected("Exception", "builtins", "no luck"));
    let (exc_type, _, _) = exception::<question_mark::Task>(vec!["x".into()]).await;
    assert_eq!(exc_type, "ParseIntError");
    assert_eq!(run::<question_mark::Task>(vec!["4".into()]).await.unwrap(), Value::from(4));

    let _: aliased::Output = 7_u8;
    assert_eq!(run::<aliased::Task>(vec![false.into()]).await.unwrap(), Value::from(7));
    assert_eq!(exception::<aliased::Task>(vec![true.into()]).await, expected("Save", this_crate, chained));
}
