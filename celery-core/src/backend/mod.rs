//! Result backends: where workers store task states and clients read them
//! (Celery's `result_backend` setting).

use tokio::sync::mpsc;

use crate::error::Error;
use crate::result::ResultMeta;
use crate::BoxFuture;

pub mod memory;
pub mod rpc;

pub use memory::MemoryBackend;
pub use rpc::RpcBackend;

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

    /// Tells the backend the id of the app using it, the `reply_to` of the app's messages: the
    /// rpc backend receives results on a queue of that name.
    fn bind_client(&self, _oid: &str) {}

    /// Gets ready for the results of the messages the app publishes (the rpc backend declares
    /// its reply queue); called before each publish, it is cheap once ready.
    fn prepare_client(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async { Ok(()) })
    }
}

/// Opens the backend a URL names: `memory://[name]`, or `rpc://`, which reaches the broker at
/// `broker_url` (an `amqp://` one).
pub fn from_url(url: &str, broker_url: &str) -> Result<std::sync::Arc<dyn ResultBackend>, Error> {
    match url.split_once("://").map(|(scheme, _)| scheme) {
        Some("memory") | Some("cache+memory") => Ok(MemoryBackend::shared(url)),
        Some("rpc") => Ok(std::sync::Arc::new(RpcBackend::new(broker_url)?)),
        _ => Err(Error::Config(format!(
            "unsupported result backend URL {url:?} (supported: memory://, rpc://)"
        ))),
    }
}
