//! Signatures: a task call that can be passed around, linked and composed (Celery's `add.s(2, 2)`).
//!
//! [`Signature<R, K>`] is typed by the task's result `R` and a kind `K` that says how it takes
//! arguments: [`Complete`] (`add::s(2, 2)`), [`Immutable`] (`add::si(2, 2)`, ignores a parent's
//! result), [`Partial<In>`] (`add::partial(16)`, its first argument of type `In` is the parent's
//! result), [`Errback`] (a `#[task(errback)]`) or [`Untyped`] (by name, checked by the receiver).

use std::future::Future;
use std::marker::PhantomData;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::app::Celery;
use crate::calling::{ApplyOptions, CallOptions};
use crate::error::Error;
use crate::result::AsyncResult;
use crate::task::{Task, TaskOptions};

/// A signature as it travels in a message:
/// `{"task", "args", "kwargs", "options", "subtask_type", "immutable"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawSignature {
    pub task: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub args: Vec<Value>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub kwargs: Map<String, Value>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub options: ApplyOptions,
    #[serde(default)]
    pub subtask_type: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub immutable: bool,
    /// Keys this crate does not interpret (e.g. Python's `chord_size`), kept as received.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn null_as_default<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(
    deserializer: D,
) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

impl RawSignature {
    pub fn new(task: impl Into<String>) -> Self {
        RawSignature {
            task: task.into(),
            args: Vec::new(),
            kwargs: Map::new(),
            options: ApplyOptions::default(),
            subtask_type: None,
            immutable: false,
            extra: Map::new(),
        }
    }

    /// The arguments a callback is applied with: the parent's result first, unless immutable.
    pub fn args_with_parent_result(&self, result: &Value) -> Vec<Value> {
        if self.immutable {
            self.args.clone()
        } else {
            std::iter::once(result.clone())
                .chain(self.args.iter().cloned())
                .collect()
        }
    }
}

/// A kind of signature: how it takes its arguments.
pub trait Kind {
    const IMMUTABLE: bool;
}

/// All arguments given (`add::s(2, 2)`).
pub struct Complete;
/// All arguments given, and a parent's result is not prepended (`add::si(2, 2)`).
pub struct Immutable;
/// Missing its first argument, of type `In`, which the parent's result fills (`add::partial(16)`).
pub struct Partial<In>(PhantomData<fn(In)>);
/// A `#[task(errback)]` whose `(request, exc, traceback)` the worker fills.
pub struct Errback;
/// Made by name (`signature("tasks.add", ...)`): its arguments are checked by whoever runs it.
pub struct Untyped;

impl Kind for Complete {
    const IMMUTABLE: bool = false;
}
impl Kind for Immutable {
    const IMMUTABLE: bool = true;
}
impl<In> Kind for Partial<In> {
    const IMMUTABLE: bool = false;
}
impl Kind for Errback {
    const IMMUTABLE: bool = false;
}
impl Kind for Untyped {
    const IMMUTABLE: bool = false;
}

/// Kinds that can be sent as they are (`delay`, `apply_async`, members of a group).
///
/// A `Partial` is not one: its first argument is the previous task's result, so it only makes
/// sense as a callback or a later step of a chain.
#[diagnostic::on_unimplemented(
    message = "a `{Self}` signature cannot be sent on its own, start a chain, or be a member of a group",
    label = "this signature waits for another task",
    note = "a signature made with `task::partial(...)` receives its first argument from the result of the task before it: use it as a `link` callback or a later step of a `chain!`",
    note = "an errback's signature (`#[task(errback)]`) goes to `CallOptions::link_error`",
    note = "to send a task on its own, give every argument: `task::s(...)` or `task::si(...)`"
)]
pub trait Applicable: Kind {}
impl Applicable for Complete {}
impl Applicable for Immutable {}
impl Applicable for Untyped {}

/// A signature that can follow a task returning `P`: as a `link` callback or as the next step of
/// a chain.
#[diagnostic::on_unimplemented(
    message = "this callback cannot take the previous task's result of type `{P}`",
    label = "its first argument does not accept `{P}`",
    note = "a callback made with `task::partial(...)` receives the previous task's result as its first argument, so that argument must have type `{P}`",
    note = "use `task::si(...)` for a callback that ignores the previous result"
)]
pub trait Callback<P> {
    /// The result of the callback's task.
    type Output;
    fn into_raw(self) -> Result<RawSignature, Error>;
}

impl<P, R> Callback<P> for Signature<R, Partial<P>> {
    type Output = R;
    fn into_raw(self) -> Result<RawSignature, Error> {
        self.into_wire()
    }
}

impl<P, R> Callback<P> for Signature<R, Immutable> {
    type Output = R;
    fn into_raw(self) -> Result<RawSignature, Error> {
        self.into_wire()
    }
}

impl<P, R> Callback<P> for Signature<R, Untyped> {
    type Output = R;
    fn into_raw(self) -> Result<RawSignature, Error> {
        self.into_wire()
    }
}

/// A signature that can be a `link_error` errback.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be an errback",
    label = "not an errback signature",
    note = "an errback is a `#[task(errback)]` taking (request, exc, traceback), a task whose first argument is the failed task's id (`task::partial(...)` with a `String` first parameter), or an immutable signature (`task::si(...)`)"
)]
pub trait ErrorCallback {
    fn into_raw(self) -> Result<RawSignature, Error>;
}

impl<R> ErrorCallback for Signature<R, Errback> {
    fn into_raw(self) -> Result<RawSignature, Error> {
        self.into_wire()
    }
}
impl<R> ErrorCallback for Signature<R, Partial<String>> {
    fn into_raw(self) -> Result<RawSignature, Error> {
        self.into_wire()
    }
}
impl<R> ErrorCallback for Signature<R, Immutable> {
    fn into_raw(self) -> Result<RawSignature, Error> {
        self.into_wire()
    }
}
impl<R> ErrorCallback for Signature<R, Untyped> {
    fn into_raw(self) -> Result<RawSignature, Error> {
        self.into_wire()
    }
}

/// Arguments being encoded for a signature; an encoding error is kept and reported when the
/// signature is sent.
#[derive(Debug, Default)]
pub struct ArgList {
    values: Vec<Value>,
    error: Option<Error>,
}

impl ArgList {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push<T: Serialize + ?Sized>(mut self, value: &T) -> Self {
        match crate::serializer::to_value(value) {
            Ok(value) => self.values.push(value),
            Err(error) => {
                let position = self.values.len();
                self.error = self
                    .error
                    .or(Some(Error::encode(format!("argument {position}"), error)));
                self.values.push(Value::Null);
            }
        }
        self
    }
}

/// A typed task call: the task's name, its arguments and options.
#[must_use = "a signature does nothing until it is sent (`delay`, `apply_async`) or linked"]
pub struct Signature<R, K = Complete> {
    raw: RawSignature,
    defaults: TaskOptions,
    error: Option<Error>,
    marker: PhantomData<fn() -> (R, K)>,
}

impl<R, K> Clone for Signature<R, K> {
    fn clone(&self) -> Self {
        Signature {
            raw: self.raw.clone(),
            defaults: self.defaults,
            error: self.error.as_ref().map(|e| Error::encode("signature", e)),
            marker: PhantomData,
        }
    }
}

impl<R, K> std::fmt::Debug for Signature<R, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.raw.fmt(f)
    }
}

/// A signature for a task known only by name (Celery's `signature('tasks.add', args=(2, 2))`).
pub fn signature(
    name: impl Into<String>,
    args: Vec<Value>,
    kwargs: Map<String, Value>,
) -> Signature<Value, Untyped> {
    let mut raw = RawSignature::new(name);
    raw.args = args;
    raw.kwargs = kwargs;
    Signature::from_raw(raw)
}

impl<R, K: Kind> Signature<R, K> {
    /// Used by `#[task]`'s generated `s`, `si` and `partial`.
    #[doc(hidden)]
    pub fn __task<T: Task>(args: ArgList) -> Self {
        let mut raw = RawSignature::new(T::NAME);
        raw.args = args.values;
        raw.immutable = K::IMMUTABLE;
        Signature {
            raw,
            defaults: T::OPTIONS,
            error: args.error,
            marker: PhantomData,
        }
    }

    /// Wraps a wire signature; its result type is whatever the caller says it is. Its task is
    /// known by name only: sent, it takes the options of the task registered under that name
    /// in the app, if any.
    pub fn from_raw(raw: RawSignature) -> Self {
        Signature {
            raw,
            defaults: TaskOptions::UNKNOWN,
            error: None,
            marker: PhantomData,
        }
    }
}

impl<R> Signature<R, Untyped> {
    /// Adds a keyword argument (Celery's `kwargs`).
    ///
    /// Only a signature made by name has it: `task::s(...)`, `si` and `partial` give every
    /// parameter by position, so on a Rust worker a keyword argument would only clash with one
    /// ("got multiple values" or "unexpected keyword argument"). For a Python task that takes
    /// `**kwargs`, make the signature by name: `signature("tasks.x", args, kwargs)`, or
    /// `Signature::<R, Untyped>::from_raw(...)` to keep a typed result.
    pub fn kwarg(mut self, name: impl Into<String>, value: impl Serialize) -> Self {
        match crate::serializer::to_value(&value) {
            Ok(value) => {
                self.raw.kwargs.insert(name.into(), value);
            }
            Err(error) => {
                self.error = self
                    .error
                    .or(Some(Error::encode("keyword argument", error)))
            }
        }
        self
    }
}

impl<R, K> Signature<R, K> {
    pub fn name(&self) -> &str {
        &self.raw.task
    }

    pub fn raw(&self) -> &RawSignature {
        &self.raw
    }

    /// The options of the task's `#[task(...)]` attributes.
    pub fn task_options(&self) -> &TaskOptions {
        &self.defaults
    }

    /// Merges call options into the signature's own as Celery's `sig.apply_async(**options)`
    /// does ([`ApplyOptions::merge`]): what the call sets replaces the signature's, its
    /// `link` and `link_error` lists whole, except a `group_id` the signature has.
    pub fn with_options(mut self, options: CallOptions<R>) -> Self {
        if let Some(error) = options.error {
            self.error = self.error.or(Some(error));
        }
        self.raw.options.merge(options.options);
        self
    }

    /// Adds a callback to the signature's own, unless it has that one already (Celery's
    /// `sig.link(...)`).
    pub fn link<C: Callback<R>>(self, callback: C) -> Self {
        let options = CallOptions::new().link(callback);
        self.append_links(options, |options| &mut options.link)
    }

    /// Adds an errback to the signature's own, unless it has that one already (Celery's
    /// `sig.link_error(...)`).
    pub fn link_error<E: ErrorCallback>(self, errback: E) -> Self {
        let options = CallOptions::<R>::new().link_error(errback);
        self.append_links(options, |options| &mut options.link_error)
    }

    /// Celery's `append_to_list_option`: the new signatures go after the list's, skipping one
    /// already in it.
    fn append_links(
        mut self,
        mut added: CallOptions<R>,
        list: fn(&mut ApplyOptions) -> &mut Vec<RawSignature>,
    ) -> Self {
        if let Some(error) = added.error {
            self.error = self.error.or(Some(error));
        }
        let own = list(&mut self.raw.options);
        for signature in std::mem::take(list(&mut added.options)) {
            if !own.contains(&signature) {
                own.push(signature);
            }
        }
        self
    }

    /// The signature and its task defaults, or the error met while encoding its arguments.
    pub(crate) fn into_parts(self) -> Result<(RawSignature, TaskOptions), Error> {
        match self.error {
            Some(error) => Err(error),
            None => Ok((self.raw, self.defaults)),
        }
    }

    /// The wire form to embed in another message. The task's attribute options that choose where
    /// and how it runs are written into its options, so that whichever worker sends it (a Python
    /// one too) routes and encodes it as this task asks.
    pub fn into_wire(self) -> Result<RawSignature, Error> {
        let (mut raw, defaults) = self.into_parts()?;
        defaults.write_into(&mut raw.options);
        Ok(raw)
    }
}

/// Sending builds the message at once, in the call; the future returned only publishes it, so
/// that it stays small (see [`Producer::apply_async`](crate::producer::Producer::apply_async)).
impl<R, K: Applicable> Signature<R, K> {
    /// Sends the task through the current app (Celery's `sig.delay()`).
    pub fn delay(self) -> impl Future<Output = Result<AsyncResult<R>, Error>> + Send {
        self.apply_async()
    }

    /// Sends the task with its options through the current app.
    pub fn apply_async(self) -> impl Future<Output = Result<AsyncResult<R>, Error>> + Send {
        let sent = Celery::current()
            .ok_or(Error::NoCurrentApp)
            .map(|app| self.apply_async_with(&app));
        async move { sent?.await }
    }

    /// Sends the task through the given app.
    pub fn apply_async_with(
        self,
        app: &Celery,
    ) -> impl Future<Output = Result<AsyncResult<R>, Error>> + Send {
        app.producer().apply_async(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wire_form_is_celerys_dict_and_keeps_unknown_keys() {
        let wire = json!({"task": "tasks.add", "args": [16], "kwargs": {}, "options": {}, "subtask_type": null,
                          "immutable": false, "chord_size": null});
        let raw: RawSignature = serde_json::from_value(wire.clone()).unwrap();
        assert_eq!(raw.args, vec![json!(16)]);
        assert_eq!(serde_json::to_value(&raw).unwrap(), wire);
    }

    /// Celery's `sig.link(cb)` appends unless `cb` is there already, and
    /// `sig.apply_async(link=[...])` replaces the list (`Signature._merge`).
    #[test]
    fn link_appends_once_and_call_options_replace_the_list() {
        let named = |name: &str| signature(name, Vec::new(), Map::new());
        let linked = named("tasks.t")
            .link(named("first"))
            .link(named("first"))
            .link(named("second"))
            .link_error(named("errback"))
            .link_error(named("errback"));
        let names = |list: &[RawSignature]| {
            list.iter()
                .map(|signature| signature.task.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&linked.raw().options.link), ["first", "second"]);
        assert_eq!(names(&linked.raw().options.link_error), ["errback"]);
        let called = linked.with_options(CallOptions::new().link(named("third")));
        assert_eq!(names(&called.raw().options.link), ["third"]);
        assert_eq!(names(&called.raw().options.link_error), ["errback"]);
    }

    #[test]
    fn null_args_and_kwargs_are_empty() {
        let raw: RawSignature = serde_json::from_value(
            json!({"task": "t", "args": null, "kwargs": null, "options": null}),
        )
        .unwrap();
        assert!(raw.args.is_empty() && raw.kwargs.is_empty());
    }

    #[test]
    fn parent_result_is_prepended_unless_immutable() {
        let mut raw = RawSignature::new("t");
        raw.args = vec![json!(16)];
        assert_eq!(
            raw.args_with_parent_result(&json!(4)),
            vec![json!(4), json!(16)]
        );
        raw.immutable = true;
        assert_eq!(raw.args_with_parent_result(&json!(4)), vec![json!(16)]);
    }

    #[test]
    fn an_argument_that_cannot_be_encoded_is_reported_when_sent() {
        let mut map = std::collections::HashMap::new();
        map.insert(vec![1u8], 1);
        let sig: Signature<Value, Untyped> =
            Signature::from_raw(RawSignature::new("t")).kwarg("m", &map);
        assert!(sig
            .into_wire()
            .unwrap_err()
            .to_string()
            .contains("cannot encode keyword argument"));
    }
}
