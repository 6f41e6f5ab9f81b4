//! Result backends: where workers store task states and clients read them
//! (Celery's `result_backend` setting).

use tokio::sync::mpsc;

use crate::error::Error;
use crate::result::ResultMeta;
use crate::BoxFuture;

pub mod memory;

pub use memory::MemoryBackend;

/// The states of one task, in the order they were stored; the first item is the state stored
/// before subscribing, if any.
pub type ResultReceiver = mpsc::UnboundedReceiver<ResultMeta>;

/// A result backend.
pub trait ResultBackend: Send + Sync + 'static {
    /// The backend's URL, without its password: it names the backend in errors.
    fn url(&self) -> &str;

    /// Stores a task's state. `reply_to` is the caller's reply queue (the rpc backend sends the
    /// state there).
    fn store<'a>(
        &'a self,
        meta: ResultMeta,
        reply_to: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), Error>>;

    /// The latest state stored for a task.
    fn get<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<Option<ResultMeta>, Error>>;

    /// Every state of a task from now on, starting with the current one.
    fn subscribe<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<ResultReceiver, Error>>;

    /// Drops what is stored for a task (Celery's `forget`).
    fn forget<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<(), Error>>;
}

/// Opens the backend a URL names: `memory://[name]`.
pub fn from_url(url: &str) -> Result<std::sync::Arc<dyn ResultBackend>, Error> {
    match url.split_once("://").map(|(scheme, _)| scheme) {
        Some("memory") | Some("cache+memory") => Ok(MemoryBackend::shared(url)),
        _ => Err(Error::Config(format!(
            "unsupported result backend URL {url:?} (supported: memory://)"
        ))),
    }
}
