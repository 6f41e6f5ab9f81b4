//! Procedural macros of the `celery` crate.
//!
//! `#[task]` turns a function into a Celery task: the function stays as written, and a module of
//! the same name beside it holds the task type and its Calling API (`s`, `si`, `partial`, `delay`,
//! `apply_async`). Use it through the `celery` crate, whose runtime the generated code calls.

mod attr;
mod check;
mod ctxt;
mod expand;
mod model;

use proc_macro::TokenStream;

/// Declares a Celery task.
///
/// ```ignore
/// #[celery::task(name = "tasks.add", queue = "math")]
/// pub async fn add(x: i32, y: i32) -> i32 {
///     x + y
/// }
///
/// let direct = add(2, 2).await;          // an ordinary call, in this process
/// let sent = add::delay(2, 2).await?;    // a message to a worker
/// let callback = add::partial(16);       // `add(<parent's result>, 16)`
/// ```
///
/// A plain (non-`async`) function runs on tokio's blocking pool. A function whose return type is
/// named `Result` is fallible: its `Err` becomes the task's exception. A `Result` under another
/// name (an alias) needs `fallible`; without it, it does not compile. `fallible = false` makes a
/// `Result` the task's value (`{"Ok": ...}` or `{"Err": ...}`), never its exception.
///
/// A task is a module-level item: inside a function body it does not compile.
///
/// Options, all optional: `name`, `bind` (the first parameter receives the `TaskContext`),
/// `errback` (the first three parameters receive the failed task's `Request`, `ExceptionInfo` and
/// traceback), `fallible` (the return type is a `Result` under another name, or with `= false`
/// a `Result` that is a value), `serializer`,
/// `compression`, `ignore_result`, `queue`, `routing_key`, `priority`, `expires`, `max_retries`,
/// `default_retry_delay`, `acks_late`, `time_limit`, `soft_time_limit` (sent in the message for
/// Python workers; a Rust worker does not act on it), `track_started`, and `crate = "path"` to
/// name the `celery` crate under another path.
///
/// Lint attributes on the function (`#[allow(non_snake_case)]`) apply to the generated module too;
/// `#[deprecated]` applies to its Calling API and `Task`.
#[proc_macro_attribute]
pub fn task(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::task(args.into(), item.into()).into()
}
