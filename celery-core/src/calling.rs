//! The options of Celery's Calling API (`apply_async(..., countdown=…, queue=…, link=…)`).
//!
//! [`CallOptions`] is what a user writes; [`ApplyOptions`] is the same set as it travels inside
//! a signature's `options` on the wire, with Celery's key names.

use std::marker::PhantomData;
use std::time::Duration;

use chrono::{DateTime, FixedOffset, TimeZone, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::broker::BrokerErrorKind;
use crate::protocol::{format_datetime, parse_datetime};
use crate::signature::{Callback, ErrorCallback, RawSignature};

/// A number of seconds, from an integer, a float or a [`Duration`].
pub trait IntoSeconds {
    fn into_seconds(self) -> f64;
}

macro_rules! seconds_from_number {
    ($($t:ty),*) => {$(
        impl IntoSeconds for $t {
            fn into_seconds(self) -> f64 {
                self as f64
            }
        }
    )*};
}
seconds_from_number!(i32, u32, i64, u64, usize, f32, f64);

impl IntoSeconds for Duration {
    fn into_seconds(self) -> f64 {
        self.as_secs_f64()
    }
}

/// When a task expires: seconds after it is sent, or a point in time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Expires {
    After(f64),
    At(DateTime<FixedOffset>),
}

impl Expires {
    /// The absolute expiry time for a message sent at `now`.
    pub fn resolve(self, now: DateTime<Utc>) -> Result<DateTime<FixedOffset>, crate::Error> {
        match self {
            Expires::After(seconds) => seconds_after(now, seconds, "expires"),
            Expires::At(at) => Ok(at),
        }
    }
}

/// `now` plus `seconds` (of a countdown, an expiry): an error, naming `what`, when that is no
/// time a date can hold (NaN, infinite, or past the year 262,143), where Python's `timedelta`
/// raises `OverflowError` or `ValueError`.
pub fn seconds_after(
    now: DateTime<Utc>,
    seconds: f64,
    what: &str,
) -> Result<DateTime<FixedOffset>, crate::Error> {
    let micros = seconds * 1e6;
    let later = (micros.is_finite() && micros.abs() < i64::MAX as f64)
        .then(|| chrono::Duration::microseconds(micros as i64))
        .and_then(|delta| now.checked_add_signed(delta))
        .map(|at| at.fixed_offset());
    later
        .filter(python_can_hold)
        .ok_or_else(|| crate::Error::Encode {
            what: what.to_owned(),
            reason: format!("{seconds} seconds from now is not a date"),
        })
}

/// Whether Python's `datetime` holds this time (years 1 to 9999): a message naming a later ETA
/// or expiry could be read by no worker, Python's or this crate's.
pub(crate) fn python_can_hold(at: &DateTime<FixedOffset>) -> bool {
    (1..=9999).contains(&chrono::Datelike::year(at))
}

impl<T: IntoSeconds> From<T> for Expires {
    fn from(seconds: T) -> Self {
        Expires::After(seconds.into_seconds())
    }
}

impl<Tz: TimeZone> From<DateTime<Tz>> for Expires {
    fn from(at: DateTime<Tz>) -> Self {
        Expires::At(at.fixed_offset())
    }
}

impl Serialize for Expires {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Expires::After(seconds) => serializer.serialize_f64(*seconds),
            Expires::At(at) => serializer.serialize_str(&format_datetime(*at)),
        }
    }
}

/// How publishing retries when the broker fails (Celery's `retry_policy`).
///
/// The defaults are Celery's code defaults: 3 retries, the first at once, each next one 0.2 s
/// later than the previous, never more than 1 s apart.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// `None` retries forever.
    pub max_retries: Option<u32>,
    pub interval_start: f64,
    pub interval_step: f64,
    pub interval_max: f64,
    /// Broker errors retried besides the connection and channel errors, which are always
    /// retried (kombu's `Connection.ensure(retry_errors=…)`); `Nack` and `Refused` can be
    /// added here.
    pub retry_errors: Option<Vec<BrokerErrorKind>>,
}

/// The dict Celery's `task_publish_retry_policy` holds (a map also through a format that writes
/// structs by position).
impl Serialize for RetryPolicy {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(4))?;
        map.serialize_entry("max_retries", &self.max_retries)?;
        map.serialize_entry("interval_start", &self.interval_start)?;
        map.serialize_entry("interval_step", &self.interval_step)?;
        map.serialize_entry("interval_max", &self.interval_max)?;
        map.end()
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: Some(3),
            interval_start: 0.0,
            interval_step: 0.2,
            interval_max: 1.0,
            retry_errors: None,
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (0-based), as kombu's `retry_over_time` counts:
    /// `interval_start`, then `interval_step` more each time while it stays within
    /// `interval_max + interval_start`, then the last of those again.
    pub fn interval(&self, retry: u32) -> Duration {
        let (start, step) = (self.interval_start, self.interval_step);
        let stop = self.interval_max + start;
        let mut seconds = start + step * f64::from(retry);
        if seconds > stop && step > 0.0 {
            seconds = start + step * ((stop - start) / step).floor().max(0.0);
        }
        let seconds = seconds.max(0.0);
        // An infinite `interval_max` waits for ever rather than panicking.
        Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX)
    }

    /// Whether an error of this kind should be retried: connection and channel errors always,
    /// others when `retry_errors` names them.
    pub fn retries(&self, kind: BrokerErrorKind) -> bool {
        kind.is_recoverable()
            || self
                .retry_errors
                .as_ref()
                .is_some_and(|kinds| kinds.contains(&kind))
    }

    /// This policy with the keys a call's policy gives replaced, as Celery's
    /// `dict(default_policy, **retry_policy)` merges a call's `retry_policy` into the app's
    /// `task_publish_retry_policy`.
    pub fn merged(&self, call: &PartialRetryPolicy) -> RetryPolicy {
        RetryPolicy {
            max_retries: call.max_retries.unwrap_or(self.max_retries),
            interval_start: call.interval_start.unwrap_or(self.interval_start),
            interval_step: call.interval_step.unwrap_or(self.interval_step),
            interval_max: call.interval_max.unwrap_or(self.interval_max),
            retry_errors: call
                .retry_errors
                .clone()
                .or_else(|| self.retry_errors.clone()),
        }
    }
}

/// A call's `retry_policy`: the keys it gives replace those of the app's
/// `task_publish_retry_policy`, the others stay the app's (Celery's
/// `dict(default_policy, **retry_policy)`). A whole [`RetryPolicy`] gives every key, and
/// `retry_errors` when it is `Some`.
///
/// ```
/// use celery_core::calling::{CallOptions, PartialRetryPolicy};
///
/// // Five retries, waiting as the app's policy says.
/// let options: CallOptions = CallOptions::new().retry_policy(PartialRetryPolicy::new().max_retries(Some(5)));
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PartialRetryPolicy {
    /// `Some(None)` retries forever.
    pub max_retries: Option<Option<u32>>,
    pub interval_start: Option<f64>,
    pub interval_step: Option<f64>,
    pub interval_max: Option<f64>,
    /// Not sent in a signature's options (a Python worker would need exception classes).
    pub retry_errors: Option<Vec<BrokerErrorKind>>,
}

impl PartialRetryPolicy {
    /// No key given: the app's policy as it is.
    pub fn new() -> Self {
        Self::default()
    }

    /// `None` retries forever.
    pub fn max_retries(mut self, max_retries: Option<u32>) -> Self {
        self.max_retries = Some(max_retries);
        self
    }

    pub fn interval_start(mut self, seconds: f64) -> Self {
        self.interval_start = Some(seconds);
        self
    }

    pub fn interval_step(mut self, seconds: f64) -> Self {
        self.interval_step = Some(seconds);
        self
    }

    pub fn interval_max(mut self, seconds: f64) -> Self {
        self.interval_max = Some(seconds);
        self
    }

    /// Broker errors retried besides the connection and channel errors (see
    /// [`RetryPolicy::retry_errors`]).
    pub fn retry_errors(mut self, kinds: Vec<BrokerErrorKind>) -> Self {
        self.retry_errors = Some(kinds);
        self
    }

    /// The keys a signature's `retry_policy` dict holds; one of a type Celery could not use is
    /// left to the app's policy.
    fn from_wire(value: &Value) -> Option<Self> {
        let map = value.as_object()?;
        let number = |key: &str| map.get(key).and_then(Value::as_f64);
        Some(PartialRetryPolicy {
            max_retries: match map.get("max_retries") {
                Some(Value::Null) => Some(None),
                // As kombu compares `retries >= max_retries`: a negative limit allows none, a
                // fraction rounds up (2.5 allows retries 0, 1 and 2), and more than a u32 counts is
                // no limit.
                Some(v) => v
                    .as_f64()
                    .filter(|n| n.is_finite())
                    .map(|n| Some(n.ceil().clamp(0.0, f64::from(u32::MAX)) as u32)),
                None => None,
            },
            interval_start: number("interval_start"),
            interval_step: number("interval_step"),
            interval_max: number("interval_max"),
            retry_errors: None,
        })
    }
}

impl From<RetryPolicy> for PartialRetryPolicy {
    fn from(policy: RetryPolicy) -> Self {
        PartialRetryPolicy {
            max_retries: Some(policy.max_retries),
            interval_start: Some(policy.interval_start),
            interval_step: Some(policy.interval_step),
            interval_max: Some(policy.interval_max),
            // Not a key of Celery's policy dict unless given: `None` leaves the app's, as a
            // call's dict without `retry_errors` does.
            retry_errors: policy.retry_errors,
        }
    }
}

/// The dict Celery sends, with the keys given only, also through a format that writes structs
/// by position (a held ETA message keeps its request as positional MessagePack), since it is
/// read back by name.
impl Serialize for PartialRetryPolicy {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        if let Some(max_retries) = &self.max_retries {
            map.serialize_entry("max_retries", max_retries)?;
        }
        for (key, value) in [
            ("interval_start", self.interval_start),
            ("interval_step", self.interval_step),
            ("interval_max", self.interval_max),
        ] {
            if let Some(value) = value {
                map.serialize_entry(key, &value)?;
            }
        }
        map.end()
    }
}

/// The options of `apply_async`, under Celery's names, as stored in a signature's `options`.
///
/// Options this crate does not interpret are kept in `extra`, so a signature that came from
/// Python keeps them when it is sent on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ApplyOptions {
    /// Not lenient: a frozen step's id is what its caller waits on, so one of another type is
    /// an error rather than replaced by a new id nobody knows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_seconds"
    )]
    pub countdown: Option<f64>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_datetime",
        deserialize_with = "lenient_datetime"
    )]
    pub eta: Option<DateTime<FixedOffset>>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_expires"
    )]
    pub expires: Option<Expires>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_name"
    )]
    pub queue: Option<String>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_name"
    )]
    pub exchange: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub routing_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub priority: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub serializer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub compression: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub ignore_result: Option<bool>,
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "one_or_many"
    )]
    pub link: Vec<RawSignature>,
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "one_or_many"
    )]
    pub link_error: Vec<RawSignature>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub retry: Option<bool>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_policy"
    )]
    pub retry_policy: Option<PartialRetryPolicy>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub shadow: Option<String>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_seconds"
    )]
    pub time_limit: Option<f64>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_seconds"
    )]
    pub soft_time_limit: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub parent_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub root_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub group_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub group_index: Option<i64>,
    /// 2 (persistent, the default) or 1 (transient: lost if the broker restarts).
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_delivery_mode"
    )]
    pub delivery_mode: Option<u8>,
    /// The queue results go to (the rpc backend's reply queue); default: this app's.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub reply_to: Option<String>,
    /// The retry count of the message (set when a task retries).
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub retries: Option<u32>,
    /// The chain steps still to run after this task, last step first (protocol order).
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "one_or_many"
    )]
    pub chain: Vec<RawSignature>,
    /// Seconds each publish attempt may take, confirm included (Celery's `timeout` and
    /// `confirm_timeout`).
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_seconds"
    )]
    pub timeout: Option<f64>,
    /// Headers of the message besides Celery's own (Celery's `headers` option): a worker gives
    /// them to the task as its request's `headers`.
    #[serde(
        skip_serializing_if = "Map::is_empty",
        deserialize_with = "lenient_map"
    )]
    pub headers: Map<String, Value>,
    /// Whether a task sent from a running task's body is listed among its children (Celery's
    /// `add_to_parent`, default true). Not sent: it concerns the sending task only.
    #[serde(skip)]
    pub add_to_parent: Option<bool>,
    /// Options this crate does not interpret, kept as received and sent on. A key that has a
    /// field above belongs in that field: one in both is written twice.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ApplyOptions {
    /// Celery's `Signature._merge` of call options into a signature's own
    /// (`sig.apply_async(**options)`): an option `other` sets replaces the signature's, lists and
    /// dicts whole (`link`, `link_error`, `chain`, `headers`; `Signature::link` is the one that
    /// appends), except the options Celery keeps immutable once set: `group_id`,
    /// `stamped_headers` and the stamps that names (moving a member to another group would
    /// leave its group waiting for it).
    pub fn merge(&mut self, other: ApplyOptions) {
        macro_rules! take {
            ($($field:ident),*) => {$( if other.$field.is_some() { self.$field = other.$field; } )*};
        }
        take!(
            task_id,
            countdown,
            eta,
            expires,
            queue,
            exchange,
            routing_key,
            priority,
            serializer,
            compression,
            ignore_result,
            retry,
            retry_policy,
            shadow,
            time_limit,
            soft_time_limit,
            parent_id,
            root_id,
            group_index,
            retries,
            reply_to,
            delivery_mode,
            add_to_parent,
            timeout
        );
        if self.group_id.is_none() {
            self.group_id = other.group_id;
        }
        macro_rules! replace_if_set {
            ($($field:ident),*) => {$( if !other.$field.is_empty() { self.$field = other.$field; } )*};
        }
        replace_if_set!(link, link_error, chain, headers);
        let stamped = self.extra.get(STAMPED_HEADERS).cloned();
        let immutable = |key: &str| {
            key == STAMPED_HEADERS
                || stamped
                    .as_ref()
                    .and_then(Value::as_array)
                    .is_some_and(|names| names.iter().any(|name| name == key))
        };
        for (key, value) in other.extra {
            if !(self.extra.contains_key(&key) && immutable(&key)) {
                self.extra.insert(key, value);
            }
        }
    }
}

/// Celery's option naming the stamps of a signature (kept in `extra`: this crate does not stamp).
const STAMPED_HEADERS: &str = "stamped_headers";

fn ser_datetime<S: Serializer>(
    value: &Option<DateTime<FixedOffset>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(at) => serializer.serialize_str(&format_datetime(*at)),
        None => serializer.serialize_none(),
    }
}

/// Options written by other clients may hold values of unexpected types; those are ignored
/// rather than making the whole signature unreadable.
fn lenient<'de, D: Deserializer<'de>, T: serde::de::DeserializeOwned>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    let value = Value::deserialize(deserializer)?;
    Ok(serde_json::from_value(value).ok())
}

fn lenient_map<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Map<String, Value>, D::Error> {
    Ok(match Value::deserialize(deserializer)? {
        Value::Object(map) => map,
        _ => Map::new(),
    })
}

fn lenient_seconds<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<f64>, D::Error> {
    Ok(Value::deserialize(deserializer)?.as_f64())
}

/// A queue may be given as a name or as kombu's queue dict (`{"name": …}`).
fn lenient_name<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(deserializer)? {
        Value::String(name) => Some(name),
        Value::Object(map) => map.get("name").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    })
}

/// A datetime as an ISO string or kombu's `{"__type__": "datetime", "__value__": …}`.
fn datetime_from_value(value: &Value) -> Option<DateTime<FixedOffset>> {
    match value {
        Value::String(text) => parse_datetime(text),
        Value::Object(map) if map.get("__type__").and_then(Value::as_str) == Some("datetime") => {
            map.get("__value__")
                .and_then(Value::as_str)
                .and_then(parse_datetime)
        }
        _ => None,
    }
}

fn lenient_datetime<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<DateTime<FixedOffset>>, D::Error> {
    Ok(datetime_from_value(&Value::deserialize(deserializer)?))
}

fn lenient_expires<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Expires>, D::Error> {
    let value = Value::deserialize(deserializer)?;
    Ok(value
        .as_f64()
        .map(Expires::After)
        .or_else(|| datetime_from_value(&value).map(Expires::At)))
}

/// A delivery mode as a number or kombu's name for it.
fn lenient_delivery_mode<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u8>, D::Error> {
    Ok(match Value::deserialize(deserializer)? {
        Value::Number(n) => n.as_u64().and_then(|n| u8::try_from(n).ok()),
        Value::String(name) if name == "persistent" => Some(2),
        Value::String(name) if name == "transient" => Some(1),
        _ => None,
    })
}

fn lenient_policy<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<PartialRetryPolicy>, D::Error> {
    Ok(PartialRetryPolicy::from_wire(&Value::deserialize(
        deserializer,
    )?))
}

/// A signature or a list of them (Celery's `maybe_list`). One that does not read is an error,
/// not left out: a callback, errback or chain step dropped would never run and nobody would
/// know.
fn one_or_many<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<RawSignature>, D::Error> {
    use serde::de::Error as _;
    let read = |item: Value| {
        serde_json::from_value(item).map_err(|error| {
            D::Error::custom(format_args!(
                "a callback, errback or chain step is not a signature: {error}"
            ))
        })
    };
    match Value::deserialize(deserializer)? {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items.into_iter().map(read).collect(),
        single => Ok(vec![read(single)?]),
    }
}

/// Options for one call of `apply_async`, typed by the result `R` of the task they apply to, so
/// that a `link` callback that cannot take `R` does not compile.
///
/// ```ignore
/// add::apply_async((2, 2), CallOptions::new().countdown(3).link(add::partial(16))).await?;
/// ```
#[must_use]
pub struct CallOptions<R = Value> {
    pub(crate) options: ApplyOptions,
    pub(crate) error: Option<crate::error::Error>,
    marker: PhantomData<fn(R)>,
}

impl<R> Default for CallOptions<R> {
    fn default() -> Self {
        CallOptions {
            options: ApplyOptions::default(),
            error: None,
            marker: PhantomData,
        }
    }
}

impl<R> std::fmt::Debug for CallOptions<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.options.fmt(f)
    }
}

impl<R> CallOptions<R> {
    pub fn new() -> Self {
        Self::default()
    }

    /// The options as they go on the wire.
    pub fn as_apply_options(&self) -> &ApplyOptions {
        &self.options
    }

    /// Run no earlier than this many seconds from now.
    pub fn countdown(mut self, seconds: impl IntoSeconds) -> Self {
        self.options.countdown = Some(seconds.into_seconds());
        self
    }

    /// Run no earlier than this time (timezone-aware).
    pub fn eta<Tz: TimeZone>(mut self, at: DateTime<Tz>) -> Self {
        self.options.eta = Some(at.fixed_offset());
        self
    }

    /// Seconds after sending, or a datetime, after which the task is revoked instead of run.
    pub fn expires(mut self, expires: impl Into<Expires>) -> Self {
        self.options.expires = Some(expires.into());
        self
    }

    /// A callback receiving this task's result as its first argument (call again for a list).
    pub fn link<C: Callback<R>>(mut self, callback: C) -> Self {
        match callback.into_raw() {
            Ok(raw) => self.options.link.push(raw),
            Err(error) => self.error = self.error.or(Some(error)),
        }
        self
    }

    /// An errback run when this task fails (call again for a list).
    pub fn link_error<E: ErrorCallback>(mut self, errback: E) -> Self {
        match errback.into_raw() {
            Ok(raw) => self.options.link_error.push(raw),
            Err(error) => self.error = self.error.or(Some(error)),
        }
        self
    }

    pub fn task_id(mut self, id: impl Into<String>) -> Self {
        self.options.task_id = Some(id.into());
        self
    }

    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.options.queue = Some(queue.into());
        self
    }

    pub fn exchange(mut self, exchange: impl Into<String>) -> Self {
        self.options.exchange = Some(exchange.into());
        self
    }

    pub fn routing_key(mut self, routing_key: impl Into<String>) -> Self {
        self.options.routing_key = Some(routing_key.into());
        self
    }

    /// 0–255; RabbitMQ honours it on queues declared with `x-max-priority`.
    pub fn priority(mut self, priority: u8) -> Self {
        self.options.priority = Some(priority);
        self
    }

    /// `false` sends the message transient (delivery mode 1): faster, but lost if the broker
    /// restarts before a worker takes it.
    pub fn persistent(mut self, persistent: bool) -> Self {
        self.options.delivery_mode = Some(if persistent { 2 } else { 1 });
        self
    }

    /// A serializer name (`json`, `msgpack`, … or a registered one).
    pub fn serializer(mut self, name: impl Into<String>) -> Self {
        self.options.serializer = Some(name.into());
        self
    }

    /// A compression name (`zlib`/`gzip`, … or a registered one).
    pub fn compression(mut self, name: impl Into<String>) -> Self {
        self.options.compression = Some(name.into());
        self
    }

    pub fn ignore_result(mut self, ignore: bool) -> Self {
        self.options.ignore_result = Some(ignore);
        self
    }

    /// Whether a failed publish is retried (by `retry_policy`); `false` fails at once.
    pub fn retry(mut self, retry: bool) -> Self {
        self.options.retry = Some(retry);
        self
    }

    /// The publish retry policy of this call: the keys it gives replace the app's
    /// `task_publish_retry_policy`'s (a [`PartialRetryPolicy`]), or all of them (a
    /// [`RetryPolicy`]), as Celery merges a call's `retry_policy` into the app's.
    pub fn retry_policy(mut self, policy: impl Into<PartialRetryPolicy>) -> Self {
        self.options.retry_policy = Some(policy.into());
        self
    }

    /// The name shown in logs instead of the task's name.
    pub fn shadow(mut self, name: impl Into<String>) -> Self {
        self.options.shadow = Some(name.into());
        self
    }

    pub fn time_limit(mut self, seconds: impl IntoSeconds) -> Self {
        self.options.time_limit = Some(seconds.into_seconds());
        self
    }

    /// Sent in the message for a Python worker, which raises `SoftTimeLimitExceeded` in the task;
    /// a Rust worker does not act on it (it enforces `time_limit` only).
    pub fn soft_time_limit(mut self, seconds: impl IntoSeconds) -> Self {
        self.options.soft_time_limit = Some(seconds.into_seconds());
        self
    }

    /// The task that sends this one: its `parent_id` and `root_id`. A task sent from a running
    /// task's body has them from that task unless given here.
    pub fn parent(mut self, parent_id: impl Into<String>, root_id: impl Into<String>) -> Self {
        self.options.parent_id = Some(parent_id.into());
        self.options.root_id = Some(root_id.into());
        self
    }

    /// How long each attempt to publish may take, the broker's confirm included (Celery's
    /// `timeout` and `confirm_timeout`): past it the attempt fails with a timeout, which the
    /// retry policy retries as kombu retries a socket timeout (the message may have reached the
    /// broker after all: at least once). By default an attempt waits as long as the connection
    /// lives.
    pub fn timeout(mut self, seconds: impl IntoSeconds) -> Self {
        self.options.timeout = Some(seconds.into_seconds());
        self
    }

    /// A header of the message besides Celery's own (Celery's `headers={…}`), e.g.
    /// `.header("periodic_task_name", "nightly")`; a worker gives it to the task as
    /// `ctx.request().headers`. A name Celery's protocol uses itself is refused when sending.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.options.headers.insert(name.into(), value.into());
        self
    }

    /// Sent from a running task's body, whether the task is listed among the `children` of that
    /// task's result (Celery's `add_to_parent`, default true).
    pub fn add_to_parent(mut self, add: bool) -> Self {
        self.options.add_to_parent = Some(add);
        self
    }

    /// Drops the result type, for options reused across tasks.
    pub fn untyped(self) -> CallOptions<Value> {
        CallOptions {
            options: self.options,
            error: self.error,
            marker: PhantomData,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn default_retry_policy_is_celerys_code() {
        let policy = RetryPolicy::default();
        let waits: Vec<f64> = (0..7).map(|i| policy.interval(i).as_secs_f64()).collect();
        assert_eq!(waits, vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.0]);
        assert_eq!(policy.max_retries, Some(3));
    }

    #[test]
    fn intervals_stop_growing_past_max_plus_start_as_kombu_counts() {
        let policy = RetryPolicy {
            interval_start: 1.0,
            interval_step: 1.0,
            interval_max: 2.0,
            ..RetryPolicy::default()
        };
        let waits: Vec<f64> = (0..5).map(|i| policy.interval(i).as_secs_f64()).collect();
        // kombu's fxrange(1, 2 + 1, 1, repeatlast=True): 1, 2, 3, 3, ...
        assert_eq!(waits, vec![1.0, 2.0, 3.0, 3.0, 3.0]);
        let uneven = RetryPolicy {
            interval_start: 0.0,
            interval_step: 0.3,
            interval_max: 1.0,
            ..RetryPolicy::default()
        };
        let waits: Vec<f64> = (0..6).map(|i| uneven.interval(i).as_secs_f64()).collect();
        // 0, 0.3, 0.6, 0.9, then 0.9 again (1.2 is past 1.0).
        assert!(
            (waits[5] - 0.9).abs() < 1e-9 && (waits[4] - 0.9).abs() < 1e-9,
            "{waits:?}"
        );
    }

    #[test]
    fn max_retries_from_the_wire_count_as_kombu_counts_them() {
        let read = |max: Value| {
            PartialRetryPolicy::from_wire(&json!({ "max_retries": max }))
                .unwrap()
                .max_retries
        };
        assert_eq!(read(json!(5)), Some(Some(5)));
        assert_eq!(read(json!(5.0)), Some(Some(5)));
        assert_eq!(
            read(json!(2.5)),
            Some(Some(3)),
            "retries 0, 1, 2 are below 2.5"
        );
        assert_eq!(read(json!(-1)), Some(Some(0)), "no retry at all");
        assert_eq!(read(json!(1e12)), Some(Some(u32::MAX)));
        assert_eq!(read(Value::Null), Some(None), "no limit");
        assert_eq!(read(json!("three")), None, "unreadable: the app's");
    }

    /// Celery's `send_task_message` publishes with `dict(default_policy, **retry_policy)`.
    #[test]
    fn a_calls_policy_replaces_only_the_keys_it_gives() {
        let app = RetryPolicy {
            max_retries: Some(10),
            interval_start: 2.0,
            interval_step: 0.5,
            interval_max: 3.0,
            retry_errors: Some(vec![BrokerErrorKind::Nack]),
        };
        let from_python: ApplyOptions =
            serde_json::from_value(json!({"retry_policy": {"max_retries": 1}})).unwrap();
        let call = from_python.retry_policy.unwrap();
        assert_eq!(
            app.merged(&call),
            RetryPolicy {
                max_retries: Some(1),
                ..app.clone()
            }
        );
        // Sent on, it is still the one key, for the app of whoever sends it.
        assert_eq!(
            serde_json::to_value(&call).unwrap(),
            json!({"max_retries": 1})
        );
        let forever = PartialRetryPolicy::new()
            .max_retries(None)
            .interval_step(0.0);
        assert_eq!(
            app.merged(&forever),
            RetryPolicy {
                max_retries: None,
                interval_step: 0.0,
                ..app.clone()
            }
        );
        // A whole policy gives every key; `retry_errors` only when it names some.
        let whole = PartialRetryPolicy::from(RetryPolicy::default());
        assert_eq!(
            app.merged(&whole),
            RetryPolicy {
                retry_errors: app.retry_errors.clone(),
                ..RetryPolicy::default()
            }
        );
        assert_eq!(app.merged(&PartialRetryPolicy::new()), app);
    }

    #[test]
    fn retry_errors_add_to_the_connection_and_channel_errors() {
        let default = RetryPolicy::default();
        let with_nacks = RetryPolicy {
            retry_errors: Some(vec![BrokerErrorKind::Nack]),
            ..RetryPolicy::default()
        };
        for kind in [BrokerErrorKind::Connection, BrokerErrorKind::Channel] {
            assert!(default.retries(kind), "{kind:?}");
            assert!(with_nacks.retries(kind), "{kind:?} still retried");
        }
        assert!(!default.retries(BrokerErrorKind::Nack));
        assert!(with_nacks.retries(BrokerErrorKind::Nack));
        for kind in [BrokerErrorKind::Refused, BrokerErrorKind::Closed] {
            assert!(!with_nacks.retries(kind), "{kind:?}");
        }
    }

    #[test]
    fn options_round_trip_with_celery_names_and_keep_unknown_keys() {
        let wire = json!({
            "task_id": "abc", "countdown": 3, "queue": {"name": "hi", "exchange": "hi"},
            "expires": "2026-01-01T00:00:00+00:00", "eta": {"__type__": "datetime", "__value__": "2026-01-01T00:00:00"},
            "link": {"task": "t", "args": [], "kwargs": {}, "options": {}, "subtask_type": null, "immutable": false},
            "priority": "not a number", "reply_to": "some-queue"
        });
        let options: ApplyOptions = serde_json::from_value(wire).unwrap();
        assert_eq!(options.task_id.as_deref(), Some("abc"));
        assert_eq!(options.countdown, Some(3.0));
        assert_eq!(options.queue.as_deref(), Some("hi"));
        assert_eq!(options.link.len(), 1);
        assert_eq!(options.priority, None);
        assert!(matches!(options.expires, Some(Expires::At(_))));
        assert_eq!(
            options.eta.map(format_datetime).as_deref(),
            Some("2026-01-01T00:00:00+00:00")
        );
        assert_eq!(options.reply_to.as_deref(), Some("some-queue"));
        let back = serde_json::to_value(&options).unwrap();
        assert_eq!(back["reply_to"], json!("some-queue"));
        assert_eq!(back["expires"], json!("2026-01-01T00:00:00+00:00"));
        assert!(back.get("retry").is_none());
    }

    /// What Celery 5.7's `Signature._merge(options=…)` gives for the same options: `queue`,
    /// `link` and `headers` replaced, `countdown` kept, the signature's own `group_id`,
    /// `stamped_headers` and stamp `s1` kept, a new key `s2` taken.
    #[test]
    fn merge_replaces_options_as_celerys_signature_merge() {
        let mut base: ApplyOptions = serde_json::from_value(json!({
            "queue": "a", "countdown": 1, "link": [RawSignature::new("first")],
            "headers": {"x": 1}, "group_id": "g1", "stamped_headers": ["s1"], "s1": "v"
        }))
        .unwrap();
        let call: ApplyOptions = serde_json::from_value(json!({
            "queue": "b", "link": [RawSignature::new("third")], "headers": {"y": 2},
            "group_id": "g2", "s1": "w", "s2": "z", "stamped_headers": []
        }))
        .unwrap();
        base.merge(call);
        let expected: ApplyOptions = serde_json::from_value(json!({
            "queue": "b", "countdown": 1, "link": [RawSignature::new("third")],
            "headers": {"y": 2}, "group_id": "g1", "stamped_headers": ["s1"], "s1": "v", "s2": "z"
        }))
        .unwrap();
        assert_eq!(base, expected);
        // A signature without a group takes the call's.
        let mut free = ApplyOptions::default();
        free.merge(ApplyOptions {
            group_id: Some("g2".into()),
            ..Default::default()
        });
        assert_eq!(free.group_id.as_deref(), Some("g2"));
    }

    #[test]
    fn expires_resolves_relative_to_now() {
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(
            format_datetime(Expires::from(10).resolve(now).unwrap()),
            "2026-01-01T00:00:10+00:00"
        );
        // Python's timedelta raises for these; here they are errors, not a panic.
        for seconds in [
            f64::NAN,
            f64::INFINITY,
            -f64::INFINITY,
            1e13,
            -1e13,
            u64::MAX as f64,
        ] {
            let error = Expires::After(seconds)
                .resolve(now)
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("expires") && error.contains("not a date"),
                "{error}"
            );
        }
        // Past Python's year 9999 (chrono would go on to 262,143): no worker could read it.
        let far = seconds_after(now, 2.5e11, "countdown").unwrap();
        assert_eq!(chrono::Datelike::year(&far), 9948);
        assert!(seconds_after(now, 7.9e12, "countdown").is_err());
        assert_eq!(
            Expires::from(Duration::from_millis(1500)),
            Expires::After(1.5)
        );
    }
}
