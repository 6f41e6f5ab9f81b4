//! Errors: what the Calling API returns ([`Error`]), what a task fails with ([`TaskError`]) and the
//! exception shape Celery stores and sends ([`ExceptionInfo`]).

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An error raised by the Calling API, a broker, a backend or a worker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Celery's `OperationalError`: the broker could not take the message, after the retries of
    /// the retry policy.
    #[error("OperationalError: cannot publish to broker {broker}: {reason}")]
    Operational { broker: String, reason: String },
    /// The broker failed; see [`BrokerError`](crate::broker::BrokerError).
    #[error(transparent)]
    Broker(#[from] crate::broker::BrokerError),
    /// The result backend failed. `recoverable`: it could not be reached, and trying again
    /// later may succeed (the worker retries storing a result then); otherwise it refused.
    #[error("result backend {backend}: {reason}")]
    Backend {
        backend: String,
        reason: String,
        recoverable: bool,
    },
    /// A value could not be encoded into a message.
    #[error("cannot encode {what}: {reason}")]
    Encode { what: String, reason: String },
    /// A message or a stored result could not be decoded.
    #[error("cannot decode {what}: {reason}")]
    Decode { what: String, reason: String },
    /// A serializer or compression name that nobody registered.
    #[error("unknown {kind} {name:?} (known: {known})")]
    UnknownCodec {
        kind: &'static str,
        name: String,
        known: String,
    },
    /// A content type that `accept_content` does not allow.
    #[error("ContentDisallowed: refusing to decode content of type {0} (accept_content does not list it)")]
    ContentDisallowed(String),
    /// A decompressed body larger than the configured limit.
    #[error("message body too large: more than {limit} bytes once decompressed")]
    BodyTooLarge { limit: usize },
    /// The task failed; `get()` propagates its exception.
    #[error("task {task_id} failed: {exception}")]
    TaskFailed {
        task_id: String,
        exception: Box<ExceptionInfo>,
        traceback: Option<String>,
    },
    /// The task was revoked (for example it expired before it ran).
    #[error("task {task_id} was revoked: {exception}")]
    TaskRevoked {
        task_id: String,
        exception: Box<ExceptionInfo>,
    },
    /// `get()` gave up waiting.
    #[error("TimeoutError: the operation timed out after {seconds} s waiting for task {task_id}")]
    Timeout { task_id: String, seconds: f64 },
    /// `get()` on a task sent with `ignore_result`, whose result is stored nowhere, and whose
    /// result type has no "nothing" value (Celery's `get()` returns `None` at once; a `()` or
    /// `Option` result type gets that here too).
    #[error("task {task_id} was sent with ignore_result: no result is stored, there is nothing to wait for")]
    ResultIgnored { task_id: String },
    /// `get()` within a task (Celery's `RuntimeError`): see
    /// [`Get::disable_sync_subtasks`](crate::result::Get::disable_sync_subtasks).
    #[error("RuntimeError: never call get() within a task (waiting for task {task_id}): a worker whose slots all wait on other tasks waits for ever; chain the tasks, or use .disable_sync_subtasks(false)")]
    GetWithinTask { task_id: String },
    /// `delay`/`apply_async` without an explicit app, and no app was made current.
    #[error("no current app: call `app.set_current()` once, or use the `*_with(&app)` forms")]
    NoCurrentApp,
    /// A setting or URL that cannot be used.
    #[error("configuration error: {0}")]
    Config(String),
}

impl Error {
    pub(crate) fn encode(what: impl Into<String>, reason: impl fmt::Display) -> Self {
        Error::Encode {
            what: what.into(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn decode(what: impl Into<String>, reason: impl fmt::Display) -> Self {
        Error::Decode {
            what: what.into(),
            reason: reason.to_string(),
        }
    }

    /// The exception of a failed or revoked task, as Celery stored it.
    pub fn exception(&self) -> Option<&ExceptionInfo> {
        match self {
            Error::TaskFailed { exception, .. } | Error::TaskRevoked { exception, .. } => {
                Some(exception)
            }
            _ => None,
        }
    }
}

/// An exception as Celery serializes it: `{"exc_type", "exc_message", "exc_module"}`.
///
/// `exc_message` is the exception's args list (`["boom"]` for `ValueError("boom")`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExceptionInfo {
    pub exc_type: String,
    #[serde(default = "empty_args")]
    pub exc_message: Value,
    #[serde(default)]
    pub exc_module: Option<String>,
}

fn empty_args() -> Value {
    Value::Array(Vec::new())
}

impl ExceptionInfo {
    /// An exception of Python's `builtins` module, e.g. `ExceptionInfo::builtin("ValueError", "boom")`.
    pub fn builtin(exc_type: &str, message: impl Into<String>) -> Self {
        Self::new(exc_type, "builtins", message)
    }

    /// An exception of `celery.exceptions`, e.g. `NotRegistered` or `TaskRevokedError`.
    pub fn celery(exc_type: &str, message: impl Into<String>) -> Self {
        Self::new(exc_type, "celery.exceptions", message)
    }

    pub fn new(exc_type: &str, exc_module: &str, message: impl Into<String>) -> Self {
        ExceptionInfo {
            exc_type: exc_type.to_owned(),
            exc_message: Value::Array(vec![Value::String(message.into())]),
            exc_module: Some(exc_module.to_owned()),
        }
    }

    /// The exception's message: its args joined, as Python's `str(exc)` shows them.
    pub fn message(&self) -> String {
        match &self.exc_message {
            Value::Array(args) if args.len() == 1 => display_arg(&args[0]),
            Value::Array(args) => args.iter().map(display_arg).collect::<Vec<_>>().join(", "),
            other => display_arg(other),
        }
    }
}

fn display_arg(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl fmt::Display for ExceptionInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.exc_type, self.message())
    }
}

/// Why a task did not return a value: an exception, or a request to run again later.
///
/// A task returning `Result<T, E>` fails with `E` turned into a `TaskError`: any
/// `std::error::Error + Send + Sync` converts with its type name as `exc_type` and its message
/// (followed by its sources) as `exc_message`, so Python sees e.g.
/// `ParseIntError('invalid digit found in string')`. An error whose type is erased
/// (`Box<dyn Error>`, `anyhow::Error`) becomes Python's `Exception`; see [`TaskError::from_dyn_error`].
#[derive(Debug, Clone)]
pub struct TaskError {
    pub(crate) kind: Box<TaskErrorKind>,
}

#[derive(Debug, Clone)]
pub(crate) enum TaskErrorKind {
    Exception {
        info: ExceptionInfo,
        traceback: Option<String>,
    },
    Retry(crate::task::RetryRequest),
}

impl TaskError {
    /// A failure with an explicit exception type and message, e.g. `TaskError::new("ValueError", "boom")`.
    /// Names of Python's built-in exceptions get module `builtins`, so Python clients re-raise them as such.
    pub fn new(exc_type: &str, message: impl Into<String>) -> Self {
        let module = if is_python_builtin(exc_type) {
            "builtins"
        } else {
            "celery.exceptions"
        };
        Self::from_exception(ExceptionInfo::new(exc_type, module, message))
    }

    /// A failure with Celery's exception shape as it is.
    pub fn from_exception(info: ExceptionInfo) -> Self {
        TaskError {
            kind: Box::new(TaskErrorKind::Exception {
                info,
                traceback: None,
            }),
        }
    }

    /// A failure whose message is `message` and whose type is Python's generic `Exception`.
    pub fn msg(message: impl fmt::Display) -> Self {
        Self::new("Exception", message.to_string())
    }

    /// A failure from an error whose type is erased (`Box<dyn Error>`, `anyhow::Error`): Python's
    /// generic `Exception`, with the error's message followed by its sources.
    pub fn from_dyn_error(error: &(dyn std::error::Error + 'static)) -> Self {
        Self::from_exception(ExceptionInfo::builtin(
            "Exception",
            message_with_sources(error),
        ))
    }

    /// Attaches a traceback text, shown by Celery's `AsyncResult.traceback`.
    pub fn with_traceback(mut self, text: impl Into<String>) -> Self {
        if let TaskErrorKind::Exception { traceback, .. } = self.kind.as_mut() {
            *traceback = Some(text.into());
        }
        self
    }

    /// The exception, unless this is a retry request.
    pub fn exception(&self) -> Option<&ExceptionInfo> {
        match self.kind.as_ref() {
            TaskErrorKind::Exception { info, .. } => Some(info),
            TaskErrorKind::Retry(_) => None,
        }
    }

    pub fn is_retry(&self) -> bool {
        matches!(*self.kind, TaskErrorKind::Retry(_))
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind.as_ref() {
            TaskErrorKind::Exception { info, .. } => info.fmt(f),
            TaskErrorKind::Retry(retry) => write!(f, "Retry in {}s", retry.countdown),
        }
    }
}

/// Like `anyhow::Error`, `TaskError` is not itself a `std::error::Error`, which lets every error
/// type convert into it with `?`.
impl<E: std::error::Error + Send + Sync + 'static> From<E> for TaskError {
    fn from(error: E) -> Self {
        let (module, name) = split_type_name(std::any::type_name::<E>());
        TaskError::from_exception(ExceptionInfo::new(
            name,
            module,
            message_with_sources(&error),
        ))
    }
}

/// `error: its source: the source's source`, as `anyhow` prints a chain with `{:#}`.
fn message_with_sources(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// Splits `my_crate::errors::ParseError<T>` into (`my_crate.errors`, `ParseError`): the module in
/// Python's dotted form, so that a Python client builds an exception class of that name.
fn split_type_name(full: &str) -> (&str, &str) {
    let without_generics = full.split('<').next().unwrap_or(full);
    match without_generics.rfind("::") {
        Some(at) => (&without_generics[..at], &without_generics[at + 2..]),
        None => ("builtins", without_generics),
    }
}

fn is_python_builtin(exc_type: &str) -> bool {
    const BUILTINS: &[&str] = &[
        "Exception",
        "ValueError",
        "TypeError",
        "KeyError",
        "IndexError",
        "RuntimeError",
        "ZeroDivisionError",
        "ArithmeticError",
        "AttributeError",
        "LookupError",
        "NotImplementedError",
        "OSError",
        "IOError",
        "TimeoutError",
        "ConnectionError",
        "PermissionError",
        "FileNotFoundError",
        "OverflowError",
        "AssertionError",
        "MemoryError",
    ];
    BUILTINS.contains(&exc_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("bad input {0}")]
    struct BadInput(u32);

    #[test]
    fn std_errors_become_exceptions_named_after_their_type() {
        let err: TaskError = BadInput(7).into();
        let info = err.exception().unwrap();
        assert_eq!(info.exc_type, "BadInput");
        assert_eq!(
            info.exc_module.as_deref(),
            Some("celery_core::error::tests")
        );
        assert_eq!(info.exc_message, serde_json::json!(["bad input 7"]));
    }

    #[derive(Debug, thiserror::Error)]
    #[error("cannot save")]
    struct Save(#[source] BadInput);

    #[test]
    fn erased_errors_are_python_exceptions_with_their_sources() {
        let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(Save(BadInput(7)));
        let err = TaskError::from_dyn_error(&*boxed);
        let info = err.exception().unwrap();
        assert_eq!(info.exc_type, "Exception");
        assert_eq!(info.exc_module.as_deref(), Some("builtins"));
        assert_eq!(info.message(), "cannot save: bad input 7");
        let typed: TaskError = Save(BadInput(7)).into();
        assert_eq!(
            typed.exception().unwrap().message(),
            "cannot save: bad input 7"
        );
    }

    #[test]
    fn python_builtin_names_keep_the_builtins_module() {
        let err = TaskError::new("ValueError", "boom");
        let json = serde_json::to_value(err.exception().unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"exc_type": "ValueError", "exc_message": ["boom"], "exc_module": "builtins"})
        );
    }

    #[test]
    fn message_joins_the_exception_args() {
        let info: ExceptionInfo = serde_json::from_value(
            serde_json::json!({"exc_type": "KeyError", "exc_message": ["a", 2]}),
        )
        .unwrap();
        assert_eq!(info.message(), "a, 2");
        assert_eq!(info.to_string(), "KeyError: a, 2");
    }
}
