//! Canvas: chains and groups of signatures (Celery's `chain(...)`, `group(...)`).

use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::app::Celery;
use crate::error::Error;
use crate::result::AsyncResult;
use crate::signature::{Applicable, Callback, RawSignature, Signature};
use crate::task::TaskOptions;

/// Tasks run one after another, each receiving the previous result; typed by the last task's
/// result. Build it with [`chain!`](crate::chain).
#[must_use = "a chain does nothing until it is sent with `apply_async`"]
pub struct Chain<R> {
    first: Result<(RawSignature, TaskOptions), Error>,
    rest: Vec<Result<RawSignature, Error>>,
    marker: PhantomData<fn() -> R>,
}

/// Composes a chain checked at compile time: each step after the first must accept the
/// previous step's result (a `partial`) or ignore it (an `si`).
///
/// ```ignore
/// let result = chain![add::s(2, 2), add::partial(16), mul::partial(3)].apply_async().await?;
/// assert_eq!(result.get().await?, 60);
/// ```
#[macro_export]
macro_rules! chain {
    ($first:expr $(, $next:expr)* $(,)?) => {
        $crate::canvas::Chain::new($first)$(.then($next))*
    };
}

impl<R> Chain<R> {
    /// A chain starting with a signature that can be sent as it is.
    pub fn new<K: Applicable>(first: Signature<R, K>) -> Self {
        Chain {
            first: first.into_parts(),
            rest: Vec::new(),
            marker: PhantomData,
        }
    }

    /// Appends a step that takes (or ignores) this chain's result.
    pub fn then<C: Callback<R>>(self, next: C) -> Chain<C::Output> {
        let mut rest = self.rest;
        rest.push(next.into_raw());
        Chain {
            first: self.first,
            rest,
            marker: PhantomData,
        }
    }

    /// Sends the chain through the current app; the result is the last task's.
    pub async fn apply_async(self) -> Result<AsyncResult<R>, Error> {
        let app = Celery::current().ok_or(Error::NoCurrentApp)?;
        self.apply_async_with(&app).await
    }

    /// Sends the chain through the given app.
    pub async fn apply_async_with(self, app: &Celery) -> Result<AsyncResult<R>, Error> {
        let (mut first, defaults) = self.first?;
        let mut rest = self.rest.into_iter().collect::<Result<Vec<_>, _>>()?;
        // Every step's id is fixed now, as Celery's freeze does, so the last one is known. Later
        // steps are sent by workers; their results still go to this client's reply queue.
        let mut ids = vec![fix_id(&mut first.options.task_id)];
        for step in &mut rest {
            ids.push(fix_id(&mut step.options.task_id));
            step.options
                .reply_to
                .get_or_insert_with(|| app.oid().to_owned());
        }
        rest.reverse();
        first.options.chain = rest;
        app.producer().send(first, &defaults).await?;
        // The last step's result, with the steps before it as its parents (Celery's chain result):
        // `get()` raises an earlier step's failure or revocation, which the last step may never
        // hear of (a revoked step sends nothing on).
        let last = ids.pop().unwrap_or_default();
        Ok(AsyncResult::new(last, app.clone()).with_parents(ids))
    }
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A step's id, fixed now: its own, or a new one when it has none (an empty one is none, as
/// Celery's `task_id or uuid()`).
fn fix_id(id: &mut Option<String>) -> String {
    id.take_if(|id| id.is_empty());
    id.get_or_insert_with(new_id).clone()
}

/// Signatures run in parallel; typed by their common result type.
#[must_use = "a group does nothing until it is sent with `apply_async`"]
pub struct Group<R> {
    members: Vec<Result<(RawSignature, TaskOptions), Error>>,
    marker: PhantomData<fn() -> R>,
}

/// A group of signatures (Celery's `group(add.s(2, 2), add.s(4, 4))`).
pub fn group<R, K: Applicable>(signatures: impl IntoIterator<Item = Signature<R, K>>) -> Group<R> {
    Group {
        members: signatures.into_iter().map(Signature::into_parts).collect(),
        marker: PhantomData,
    }
}

impl<R> Group<R> {
    pub async fn apply_async(self) -> Result<GroupResult<R>, Error> {
        let app = Celery::current().ok_or(Error::NoCurrentApp)?;
        self.apply_async_with(&app).await
    }

    /// Sends every member with the group's id and its index. Sent from a task a worker runs,
    /// the group is one of that task's children (Celery's `group.apply_async` adds the
    /// `GroupResult`, its members not on their own).
    pub async fn apply_async_with(self, app: &Celery) -> Result<GroupResult<R>, Error> {
        let group_id = new_id();
        let producer = app.producer();
        let parent = crate::task::TaskContext::running();
        let mut results = Vec::with_capacity(self.members.len());
        for (index, member) in self.members.into_iter().enumerate() {
            let (mut signature, defaults) = member?;
            signature.options.add_to_parent = Some(false);
            // As Celery's `freeze`: a member that has a group id keeps it.
            signature
                .options
                .group_id
                .get_or_insert_with(|| group_id.clone());
            signature.options.group_index = Some(index as i64);
            let sent = producer.send(signature, &defaults).await?;
            results.push(AsyncResult::of_sent(sent, app.clone()));
        }
        if let Some(parent) = parent {
            let ids: Vec<String> = results.iter().map(|r| r.id().to_owned()).collect();
            parent.add_group_child(&group_id, &ids);
        }
        Ok(GroupResult {
            id: group_id,
            results,
        })
    }
}

/// The results of a group, in the group's order.
pub struct GroupResult<R> {
    id: String,
    results: Vec<AsyncResult<R>>,
}

impl<R> GroupResult<R> {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn results(&self) -> &[AsyncResult<R>] {
        &self.results
    }

    /// Waits for every result: `group_result.get().await` gives them in order.
    pub fn get(&self) -> GroupGet<'_, R> {
        GroupGet {
            group: self,
            timeout: None,
            disable_sync_subtasks: true,
        }
    }

    /// How many members have succeeded (Celery's `completed_count`: a failed or revoked member
    /// is finished, not completed).
    pub async fn completed_count(&self) -> Result<usize, Error> {
        let mut done = 0;
        for result in &self.results {
            done += usize::from(result.successful().await?);
        }
        Ok(done)
    }
}

/// A wait for all results of a group; `.await` it.
#[must_use = "a `get()` does nothing until it is awaited"]
pub struct GroupGet<'a, R> {
    group: &'a GroupResult<R>,
    timeout: Option<Duration>,
    disable_sync_subtasks: bool,
}

impl<R> GroupGet<'_, R> {
    /// Gives up after this long in all.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Lets a task wait for the group: see [`Get::disable_sync_subtasks`](crate::result::Get::disable_sync_subtasks).
    pub fn disable_sync_subtasks(mut self, disable: bool) -> Self {
        self.disable_sync_subtasks = disable;
        self
    }
}

impl<'a, R: DeserializeOwned + Send + 'a> IntoFuture for GroupGet<'a, R> {
    type Output = Result<Vec<R>, Error>;
    type IntoFuture = std::pin::Pin<Box<dyn Future<Output = Self::Output> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            // A timeout too long for a deadline (`Duration::MAX`) is no deadline.
            let deadline = self
                .timeout
                .and_then(|t| tokio::time::Instant::now().checked_add(t));
            // Every member is waited on at once, and the first to fail (or be revoked) is raised
            // as soon as it does, whichever member it is, as Celery's `join_native` does: a
            // failure behind a member still running is not hidden until that one is done.
            let mut waits = futures_util::stream::FuturesUnordered::new();
            for (index, result) in self.group.results.iter().enumerate() {
                let get = result
                    .get()
                    .disable_sync_subtasks(self.disable_sync_subtasks);
                waits.push(async move { (index, get.await) });
            }
            let mut values: Vec<Option<R>> = Vec::new();
            values.resize_with(self.group.results.len(), || None);
            let join = async {
                while let Some((index, value)) = futures_util::StreamExt::next(&mut waits).await {
                    values[index] = Some(value?);
                }
                Ok::<_, Error>(())
            };
            match deadline {
                None => join.await?,
                Some(deadline) => match tokio::time::timeout_at(deadline, join).await {
                    Ok(joined) => joined?,
                    Err(_) => {
                        // Named after a member still waited on, as a member's own timeout is.
                        let waiting = values.iter().position(Option::is_none).unwrap_or(0);
                        return Err(Error::Timeout {
                            task_id: self.group.results[waiting].id().to_owned(),
                            seconds: self.timeout.unwrap_or_default().as_secs_f64(),
                        });
                    }
                },
            }
            Ok(values.into_iter().flatten().collect())
        })
    }
}
