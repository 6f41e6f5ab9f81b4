//! Results: task states, the stored result record, and [`AsyncResult`] to wait for a result.

use std::fmt;
use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::app::Celery;
use crate::error::{Error, ExceptionInfo};

/// A task state. Custom states (`"PROGRESS"`) are stored as they are named.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum State {
    Pending,
    Received,
    Started,
    Success,
    Failure,
    Revoked,
    Rejected,
    Retry,
    Ignored,
    Custom(String),
}

impl State {
    pub fn as_str(&self) -> &str {
        match self {
            State::Pending => "PENDING",
            State::Received => "RECEIVED",
            State::Started => "STARTED",
            State::Success => "SUCCESS",
            State::Failure => "FAILURE",
            State::Revoked => "REVOKED",
            State::Rejected => "REJECTED",
            State::Retry => "RETRY",
            State::Ignored => "IGNORED",
            State::Custom(name) => name,
        }
    }

    /// SUCCESS, FAILURE and REVOKED: the task will not change state again.
    pub fn is_ready(&self) -> bool {
        matches!(self, State::Success | State::Failure | State::Revoked)
    }

    /// FAILURE and REVOKED: Celery's `PROPAGATE_STATES`, raised by `get()`.
    pub fn propagates(&self) -> bool {
        matches!(self, State::Failure | State::Revoked)
    }

    /// States whose `result` holds an exception.
    pub fn is_exception(&self) -> bool {
        matches!(self, State::Failure | State::Revoked | State::Retry)
    }
}

impl From<&str> for State {
    fn from(name: &str) -> Self {
        match name {
            "PENDING" => State::Pending,
            "RECEIVED" => State::Received,
            "STARTED" => State::Started,
            "SUCCESS" => State::Success,
            "FAILURE" => State::Failure,
            "REVOKED" => State::Revoked,
            "REJECTED" => State::Rejected,
            "RETRY" => State::Retry,
            "IGNORED" => State::Ignored,
            other => State::Custom(other.to_owned()),
        }
    }
}

impl From<String> for State {
    fn from(name: String) -> Self {
        State::from(name.as_str())
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for State {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for State {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(State::from(String::deserialize(deserializer)?))
    }
}

/// The record a backend stores for a task, with Celery's keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultMeta {
    pub status: State,
    #[serde(default)]
    pub result: Value,
    #[serde(default)]
    pub traceback: Option<String>,
    #[serde(default)]
    pub children: Vec<Value>,
    #[serde(default)]
    pub date_done: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    /// `result_extended` fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kwargs: Option<serde_json::Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    pub task_id: String,
}

/// A task among a result's `children`, as Celery's `AsyncResult.as_tuple()` writes it.
pub(crate) fn child_entry(id: &str) -> Value {
    serde_json::json!([[id, null], null])
}

/// A group among a result's `children`: one entry, as Celery's `GroupResult.as_tuple()`.
pub(crate) fn group_child_entry(group_id: &str, member_ids: &[String]) -> Value {
    let members: Vec<Value> = member_ids.iter().map(|id| child_entry(id)).collect();
    serde_json::json!([[group_id, null], members])
}

impl ResultMeta {
    /// Adds what Celery's `_get_result_meta` takes from the task's request: its group and
    /// parent, and with `result_extended` its name, arguments, worker, retries and queue.
    pub(crate) fn describe(&mut self, request: &crate::task::Request, extended: bool) {
        self.group_id.clone_from(&request.group);
        self.parent_id.clone_from(&request.parent_id);
        if extended {
            self.name = Some(request.task.clone());
            self.args = Some(request.args.clone());
            self.kwargs = Some(request.kwargs.clone());
            self.worker.clone_from(&request.hostname);
            self.retries = Some(request.retries);
            self.queue = Some(request.delivery_info.routing_key.clone());
        }
    }

    /// A record in `state` holding `result`; ready states get `date_done` now.
    pub fn new(task_id: String, status: State, result: Value) -> Self {
        let date_done = status
            .is_ready()
            .then(|| crate::protocol::format_datetime(chrono::Utc::now().fixed_offset()));
        ResultMeta {
            status,
            result,
            traceback: None,
            children: Vec::new(),
            date_done,
            group_id: None,
            parent_id: None,
            name: None,
            args: None,
            kwargs: None,
            worker: None,
            retries: None,
            queue: None,
            task_id,
        }
    }

    /// A FAILURE, REVOKED or RETRY record holding an exception.
    pub fn exception(
        task_id: String,
        status: State,
        exception: &ExceptionInfo,
        traceback: Option<String>,
    ) -> Self {
        let mut meta = Self::new(
            task_id,
            status,
            serde_json::to_value(exception).unwrap_or(Value::Null),
        );
        meta.traceback = traceback;
        meta
    }

    /// The exception stored in a FAILURE/REVOKED/RETRY record.
    pub fn exception_info(&self) -> Option<ExceptionInfo> {
        // A RETRY without an exception (Python's `self.retry()` alone) stores null: no
        // exception, as Celery reads it, rather than one made up from "null".
        if !self.status.is_exception() || self.result.is_null() {
            return None;
        }
        serde_json::from_value(self.result.clone())
            .ok()
            .or_else(|| Some(ExceptionInfo::builtin("Exception", self.result.to_string())))
    }
}

/// What `get().no_propagate()` returns: the result, or the exception as data.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskOutcome<R> {
    Success(R),
    Failure {
        exception: ExceptionInfo,
        traceback: Option<String>,
    },
    Revoked {
        exception: ExceptionInfo,
    },
}

/// The result of a sent task, typed by the task's return type (Celery's `AsyncResult`).
pub struct AsyncResult<R = Value> {
    id: String,
    app: Celery,
    /// Sent with `ignore_result` (Celery's `AsyncResult.ignored`): `get()` does not wait.
    ignored: bool,
    /// The ids of the tasks before this one in its chain, the first step first (Celery's
    /// `AsyncResult.parent`, followed to the root): `get()` raises their failure.
    parents: Arc<[String]>,
    marker: PhantomData<fn() -> R>,
}

impl<R> Clone for AsyncResult<R> {
    fn clone(&self) -> Self {
        AsyncResult {
            id: self.id.clone(),
            app: self.app.clone(),
            ignored: self.ignored,
            parents: self.parents.clone(),
            marker: PhantomData,
        }
    }
}

impl<R> fmt::Debug for AsyncResult<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<AsyncResult: {}>", self.id)
    }
}

impl<R> AsyncResult<R> {
    pub fn new(id: impl Into<String>, app: Celery) -> Self {
        AsyncResult {
            id: id.into(),
            app,
            ignored: false,
            parents: Arc::from([]),
            marker: PhantomData,
        }
    }

    /// The result of a task this app sent, which knows whether the task was sent with
    /// `ignore_result`.
    pub(crate) fn of_sent(sent: crate::producer::Sent, app: Celery) -> Self {
        AsyncResult {
            id: sent.id,
            app,
            ignored: sent.ignore_result,
            parents: Arc::from([]),
            marker: PhantomData,
        }
    }

    /// The last step of a chain whose earlier steps are `parents`, the first step first.
    pub(crate) fn with_parents(mut self, parents: Vec<String>) -> Self {
        self.parents = parents.into();
        self
    }

    /// The task before this one in its chain (Celery's `AsyncResult.parent`); `None` for a task
    /// sent on its own, or known by id only.
    pub fn parent(&self) -> Option<AsyncResult<Value>> {
        let (id, earlier) = self.parents.split_last()?;
        Some(AsyncResult {
            id: id.clone(),
            app: self.app.clone(),
            ignored: false,
            parents: earlier.into(),
            marker: PhantomData,
        })
    }

    /// Whether the task was sent with `ignore_result`: no state of it is stored, and `get()`
    /// returns at once (Celery's `AsyncResult.ignored`).
    pub fn ignored(&self) -> bool {
        self.ignored
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The stored record, if the backend has one.
    pub async fn info(&self) -> Result<Option<ResultMeta>, Error> {
        self.app.backend().get(&self.id).await
    }

    /// The task's state; PENDING when nothing is known yet.
    pub async fn state(&self) -> Result<State, Error> {
        Ok(self
            .info()
            .await?
            .map_or(State::Pending, |meta| meta.status))
    }

    /// Whether the task has finished (SUCCESS, FAILURE or REVOKED).
    pub async fn ready(&self) -> Result<bool, Error> {
        Ok(self.state().await?.is_ready())
    }

    pub async fn successful(&self) -> Result<bool, Error> {
        Ok(self.state().await? == State::Success)
    }

    pub async fn failed(&self) -> Result<bool, Error> {
        Ok(self.state().await? == State::Failure)
    }

    /// The tasks this one sent when it finished (its link callbacks and next chain step, the
    /// members of a group it sent), as listed in its stored result.
    pub async fn children(&self) -> Result<Vec<AsyncResult<Value>>, Error> {
        let children = self
            .info()
            .await?
            .map(|meta| meta.children)
            .unwrap_or_default();
        // Each child is Celery's result tuple: `[[id, parent], null]` for a task, and
        // `[[group_id, parent], [member tuples…]]` for a group, whose members are listed here.
        fn task_ids<'a>(child: &'a Value, ids: &mut Vec<&'a str>) {
            match child.get(1).and_then(Value::as_array) {
                Some(members) => members.iter().for_each(|member| task_ids(member, ids)),
                None => ids.extend(child.pointer("/0/0").and_then(Value::as_str)),
            }
        }
        let mut ids = Vec::new();
        for child in &children {
            task_ids(child, &mut ids);
        }
        Ok(ids
            .into_iter()
            .map(|id| AsyncResult::new(id, self.app.clone()))
            .collect())
    }

    /// The same result read as another type (`Value` for untyped access).
    pub fn cast<T>(self) -> AsyncResult<T> {
        AsyncResult {
            id: self.id,
            app: self.app,
            ignored: self.ignored,
            parents: self.parents,
            marker: PhantomData,
        }
    }

    /// Waits for the result: `result.get().await`, with `.timeout(…)`, `.on_message(…)` and
    /// `.no_propagate()` to adjust.
    pub fn get(&self) -> Get<'_, R> {
        Get {
            result: self,
            timeout: None,
            on_message: None,
            disable_sync_subtasks: true,
            follow_parents: true,
        }
    }
}

type OnMessage<'a> = Box<dyn FnMut(&ResultMeta) + Send + 'a>;

/// Celery's `assert_will_not_block`: `get()` within a task is refused unless asked for.
fn refuse_within_task(refuse: bool, waited_on: &str) -> Result<(), Error> {
    // A `get()` within a task holds one of the worker's slots while it waits on another task,
    // which may need that very slot.
    match refuse && crate::task::TaskContext::running().is_some() {
        true => Err(Error::GetWithinTask {
            task_id: waited_on.to_owned(),
        }),
        false => Ok(()),
    }
}

/// A wait for a result; `.await` it.
#[must_use = "a `get()` does nothing until it is awaited"]
pub struct Get<'a, R> {
    result: &'a AsyncResult<R>,
    timeout: Option<Duration>,
    on_message: Option<OnMessage<'a>>,
    disable_sync_subtasks: bool,
    follow_parents: bool,
}

impl<'a, R: DeserializeOwned + Send + 'a> Get<'a, R> {
    /// Gives up with [`Error::Timeout`] after this long.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Calls `callback` with every state the task goes through (PROGRESS updates included).
    pub fn on_message(mut self, callback: impl FnMut(&ResultMeta) + Send + 'a) -> Self {
        self.on_message = Some(Box::new(callback));
        self
    }

    /// Celery's `disable_sync_subtasks=False`: lets a task wait for another task's result,
    /// which is refused by default ([`Error::GetWithinTask`]) since a worker whose slots are
    /// all taken by tasks waiting on others waits for ever.
    pub fn disable_sync_subtasks(mut self, disable: bool) -> Self {
        self.disable_sync_subtasks = disable;
        self
    }

    /// Celery's `follow_parents` (on by default): waiting on the last step of a chain, a
    /// failed or revoked earlier step is raised at once, as its own error. A step revoked (an
    /// expired one, say) leaves the steps after it without any state, so without this the wait
    /// would never end. Only when failures propagate, as in Celery: not with `no_propagate()`.
    pub fn follow_parents(mut self, follow: bool) -> Self {
        self.follow_parents = follow;
        self
    }

    /// Celery's `propagate=False`: a failure is returned as data instead of an error.
    pub fn no_propagate(mut self) -> GetOutcome<'a, R> {
        self.follow_parents = false;
        GetOutcome { get: self }
    }

    /// The task's ready record, or a parent's failed or revoked one when following parents.
    async fn wait_ready(mut self) -> Result<ResultMeta, Error> {
        refuse_within_task(self.disable_sync_subtasks, &self.result.id)?;
        let id = self.result.id.clone();
        let backend = self.result.app.backend();
        let mut updates = backend.subscribe(&id).await?;
        let mut parents = futures_util::stream::SelectAll::new();
        if self.follow_parents {
            for parent in self.result.parents.iter() {
                let receiver = backend.subscribe(parent).await?;
                parents.push(Box::pin(futures_util::stream::unfold(
                    receiver,
                    |mut receiver| async move { receiver.recv().await.map(|meta| (meta, receiver)) },
                )));
            }
        }
        let wait = async {
            loop {
                let meta = tokio::select! {
                    // Parents first, as Celery looks at them before the task itself: a failure
                    // stored for the whole chain is raised as the step's that failed.
                    biased;
                    // A parent that stops delivering is no longer followed (its stream ends);
                    // with none left, this branch is off.
                    Some(parent) = futures_util::StreamExt::next(&mut parents) => {
                        if parent.status.propagates() {
                            return Ok(parent);
                        }
                        continue;
                    }
                    meta = updates.recv() => meta,
                };
                let Some(meta) = meta else {
                    return Err(Error::Backend {
                        backend: backend.url().to_owned(),
                        reason: format!("stopped delivering the result of task {id}"),
                        recoverable: false,
                    });
                };
                if let Some(callback) = self.on_message.as_mut() {
                    callback(&meta);
                }
                if meta.status.is_ready() {
                    return Ok(meta);
                }
            }
        };
        match self.timeout {
            None => wait.await,
            Some(limit) => tokio::time::timeout(limit, wait).await.unwrap_or_else(|_| {
                Err(Error::Timeout {
                    task_id: id.clone(),
                    seconds: limit.as_secs_f64(),
                })
            }),
        }
    }
}

/// What `get()` gives for a task sent with `ignore_result`, at once: Python's `None` where the
/// result type has such a value (`()`, `Option`, `Value`), else [`Error::ResultIgnored`].
fn nothing_stored<R: DeserializeOwned>(task_id: &str) -> Result<R, Error> {
    serde_json::from_value(Value::Null).map_err(|_| Error::ResultIgnored {
        task_id: task_id.to_owned(),
    })
}

fn decode_success<R: DeserializeOwned>(meta: ResultMeta) -> Result<R, Error> {
    crate::serializer::kombu::from_value(meta.result)
        .map_err(|e| Error::decode(format!("the result of task {}", meta.task_id), e))
}

impl<'a, R: DeserializeOwned + Send + 'a> IntoFuture for Get<'a, R> {
    type Output = Result<R, Error>;
    type IntoFuture = std::pin::Pin<Box<dyn Future<Output = Self::Output> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            if self.result.ignored {
                return nothing_stored(&self.result.id);
            }
            let meta = self.wait_ready().await?;
            match meta.status {
                State::Success => decode_success(meta),
                State::Revoked => {
                    Err(Error::TaskRevoked {
                        exception: Box::new(meta.exception_info().unwrap_or_else(|| {
                            ExceptionInfo::celery("TaskRevokedError", "revoked")
                        })),
                        task_id: meta.task_id,
                    })
                }
                _ => Err(Error::TaskFailed {
                    exception: Box::new(
                        meta.exception_info()
                            .unwrap_or_else(|| ExceptionInfo::builtin("Exception", "failed")),
                    ),
                    traceback: meta.traceback,
                    task_id: meta.task_id,
                }),
            }
        })
    }
}

/// A wait that returns failures as [`TaskOutcome`] data.
#[must_use = "a `get()` does nothing until it is awaited"]
pub struct GetOutcome<'a, R> {
    get: Get<'a, R>,
}

impl<'a, R: DeserializeOwned + Send + 'a> IntoFuture for GetOutcome<'a, R> {
    type Output = Result<TaskOutcome<R>, Error>;
    type IntoFuture = std::pin::Pin<Box<dyn Future<Output = Self::Output> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            if self.get.result.ignored {
                return nothing_stored(&self.get.result.id).map(TaskOutcome::Success);
            }
            let meta = self.get.wait_ready().await?;
            Ok(match meta.status {
                State::Success => TaskOutcome::Success(decode_success(meta)?),
                State::Revoked => TaskOutcome::Revoked {
                    exception: meta
                        .exception_info()
                        .unwrap_or_else(|| ExceptionInfo::celery("TaskRevokedError", "revoked")),
                },
                _ => TaskOutcome::Failure {
                    exception: meta
                        .exception_info()
                        .unwrap_or_else(|| ExceptionInfo::builtin("Exception", "failed")),
                    traceback: meta.traceback,
                },
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn children_lists_tasks_and_the_members_of_groups() {
        let app = Celery::builder("children")
            .result_backend("memory://children-test")
            .build()
            .unwrap();
        let mut meta = ResultMeta::new("parent".into(), State::Success, json!(1));
        meta.children = vec![
            json!([["callback", "parent"], null]),
            json!([
                ["group-id", "parent"],
                [[["m1", null], null], [["m2", null], null]]
            ]),
        ];
        app.backend().store(&meta, None).await.unwrap();
        let children = app.result::<i32>("parent").children().await.unwrap();
        let ids: Vec<&str> = children.iter().map(AsyncResult::id).collect();
        assert_eq!(ids, ["callback", "m1", "m2"]);
    }

    #[test]
    fn states_round_trip_including_custom_ones() {
        for name in [
            "PENDING", "SUCCESS", "FAILURE", "REVOKED", "RETRY", "PROGRESS",
        ] {
            let state: State = serde_json::from_value(json!(name)).unwrap();
            assert_eq!(serde_json::to_value(&state).unwrap(), json!(name));
        }
        assert!(State::Revoked.is_ready() && !State::Custom("PROGRESS".into()).is_ready());
    }

    #[test]
    fn meta_has_celerys_keys() {
        let meta = ResultMeta::new(
            "id1".into(),
            State::Custom("PROGRESS".into()),
            json!({"progress": 50}),
        );
        assert_eq!(
            serde_json::to_value(&meta).unwrap(),
            json!({"status": "PROGRESS", "result": {"progress": 50}, "traceback": null, "children": [], "date_done": null, "task_id": "id1"})
        );
        let done = ResultMeta::new("id1".into(), State::Success, json!(4));
        assert!(done.date_done.is_some());
    }

    #[test]
    fn exception_records_decode_from_python() {
        let meta: ResultMeta = serde_json::from_value(json!({
            "status": "FAILURE", "result": {"exc_type": "ValueError", "exc_message": ["boom"], "exc_module": "builtins"},
            "traceback": "Traceback ...", "children": [], "date_done": "2026-01-01T00:00:00+00:00", "task_id": "x"
        }))
        .unwrap();
        assert_eq!(
            meta.exception_info().unwrap(),
            ExceptionInfo::builtin("ValueError", "boom")
        );
        // Python's `self.retry()` without an exception stores RETRY with a null result.
        let retry = ResultMeta::new("x".into(), State::Retry, Value::Null);
        assert_eq!(retry.exception_info(), None);
    }
}
