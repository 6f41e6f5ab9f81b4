//! Result backends: where workers store task states and clients read them
//! (Celery's `result_backend` setting).

use tokio::sync::mpsc;

use crate::error::Error;
use crate::result::ResultMeta;
use crate::BoxFuture;

pub mod disabled;
pub mod memory;
pub mod rpc;

pub use disabled::DisabledBackend;
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
        meta: &'a ResultMeta,
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
    fn bind_client(&self, _oid: &str, _codec: &ResultCodec) {}

    /// Gets ready for the results of the messages the app publishes (the rpc backend declares
    /// its reply queue); called before each publish, it is cheap once ready.
    fn prepare_client(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async { Ok(()) })
    }
}

/// Whether a task already has its result: a ready state (SUCCESS, FAILURE, REVOKED) is not
/// replaced by a later one.
fn is_final(latest: Option<&ResultMeta>) -> bool {
    latest.is_some_and(|meta| meta.status.is_ready())
}

/// Opens the backend a URL names: `memory://[name]`, or `rpc://`, which reaches the broker at
/// `broker_url` (an `amqp://` one, connecting with `options`, the broker's settings) and
/// publishes results through `broker`, the app's broker for that URL, when given.
pub fn from_url(
    url: &str,
    broker_url: &str,
    options: crate::broker::amqp::AmqpOptions,
    broker: Option<&std::sync::Arc<dyn crate::broker::Broker>>,
) -> Result<std::sync::Arc<dyn ResultBackend>, Error> {
    match url.split_once("://").map(|(scheme, _)| scheme) {
        Some("memory") | Some("cache+memory") => Ok(MemoryBackend::shared(url)),
        Some("disabled") => Ok(std::sync::Arc::new(DisabledBackend)),
        Some("rpc") => {
            let backend = RpcBackend::with_options(broker_url, options)?;
            Ok(std::sync::Arc::new(match broker {
                Some(broker) => backend.publishing_through(broker.clone()),
                None => backend,
            }))
        }
        _ => Err(Error::Config(format!(
            "unsupported result backend URL {url:?} (supported: memory://, rpc://, disabled://)"
        ))),
    }
}

/// How result messages are written and which are read: Celery's `result_serializer`,
/// `result_compression` and `result_accept_content`, for backends that carry results as
/// messages.
#[derive(Clone)]
pub struct ResultCodec {
    pub serializers: crate::serializer::SerializerRegistry,
    pub compressions: crate::compression::CompressionRegistry,
    pub serializer: String,
    pub compression: Option<String>,
    /// Serializer names or content types accepted in results.
    pub accept: Vec<String>,
    /// A decompressed result body larger than this is refused.
    pub max_body: usize,
}

impl Default for ResultCodec {
    fn default() -> Self {
        ResultCodec {
            serializers: Default::default(),
            compressions: Default::default(),
            serializer: "json".to_owned(),
            compression: None,
            accept: vec!["json".to_owned()],
            max_body: 64 * 1024 * 1024,
        }
    }
}

/// An encoded result: the body and what to write in the message about it.
pub struct EncodedResult {
    pub body: Vec<u8>,
    pub content_type: String,
    pub content_encoding: String,
    /// The `compression` header, when compressed.
    pub compression: Option<String>,
}

impl ResultCodec {
    pub fn encode(&self, meta: &ResultMeta) -> Result<EncodedResult, Error> {
        let serializer = self.serializers.get(&self.serializer)?;
        let value = serde_json::to_value(meta).map_err(|e| Error::encode("task result", e))?;
        let mut body = serializer
            .encode(&value)
            .map_err(|e| Error::encode("task result", e))?;
        let mut compression = None;
        if let Some(name) = &self.compression {
            let scheme = self.compressions.get(name)?;
            body = scheme
                .compress(&body)
                .map_err(|e| Error::encode("task result", e))?;
            compression = Some(scheme.content_type().to_owned());
        }
        Ok(EncodedResult {
            body,
            content_type: serializer.content_type().to_owned(),
            content_encoding: serializer.content_encoding().to_owned(),
            compression,
        })
    }

    /// Reads a result body; a content type not accepted is refused before decoding.
    pub fn decode(
        &self,
        content_type: &str,
        compression: Option<&str>,
        body: &[u8],
    ) -> Result<serde_json::Value, Error> {
        let content_type = if content_type.is_empty() {
            "application/json"
        } else {
            content_type
        };
        let serializer = self.serializers.get(content_type)?;
        if !self.serializers.accepts(&self.accept, serializer.as_ref()) {
            return Err(Error::ContentDisallowed(content_type.to_owned()));
        }
        let decompressed;
        let body = match compression {
            None if body.len() > self.max_body => {
                return Err(Error::BodyTooLarge {
                    limit: self.max_body,
                })
            }
            None => body,
            Some(name) => {
                let scheme = self.compressions.get(name)?;
                decompressed = scheme
                    .decompress(body, self.max_body)
                    .map_err(|e| match e {
                        crate::compression::DecompressError::TooLarge => Error::BodyTooLarge {
                            limit: self.max_body,
                        },
                        other => Error::decode("result body", other),
                    })?;
                &decompressed
            }
        };
        serializer
            .decode(body)
            .map_err(|e| Error::decode(format!("result body as {}", serializer.name()), e))
    }
}
