//! Celery's message protocol v2: the broker-neutral [`Message`] every broker carries, the task
//! headers, and the body `[args, kwargs, embed]`.
//!
//! Brokers move [`Message`]s, which hold encoded bytes and a header table exactly as they travel
//! on the wire; [`TaskMessage`] is the decoded form the worker executes.

use std::borrow::Cow;

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::Error;
use crate::signature::RawSignature;

mod datetime;
mod saferepr;
pub use datetime::{format_datetime, parse_datetime};
pub use saferepr::{args_repr, kwargs_repr};

/// A value of an AMQP header table (the types py-amqp reads back faithfully).
#[derive(Debug, Clone, PartialEq)]
pub enum HeaderValue {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<HeaderValue>),
    Table(Headers),
}

/// A header's name. Celery's own names are static strings ([`header_name`]): a task message
/// carries up to twenty headers, and a string allocated for each name on every message sent
/// and received was a good part of the client's and the worker's work per task.
pub type HeaderName = Cow<'static, str>;

/// An ordered header table.
pub type Headers = Vec<(HeaderName, HeaderValue)>;

/// A header name as read off the wire: one of Celery's names without allocating, any other
/// copied.
pub fn header_name(name: &str) -> HeaderName {
    match celery_header(name) {
        Some(known) => Cow::Borrowed(known),
        None => Cow::Owned(name.to_owned()),
    }
}

/// The static name, when `name` is one of the headers Celery's protocol v2 defines.
fn celery_header(name: &str) -> Option<&'static str> {
    KNOWN_HEADERS
        .iter()
        .chain(STAMPING_HEADERS)
        .find(|known| **known == name)
        .copied()
}

/// The value of a header (its first occurrence) in a table.
pub fn find_header<'a>(table: &'a Headers, name: &str) -> Option<&'a HeaderValue> {
    table
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value)
}

impl HeaderValue {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            HeaderValue::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            HeaderValue::Int(i) => Some(*i),
            HeaderValue::Float(f) if f.fract() == 0.0 => Some(*f as i64),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            HeaderValue::Int(i) => Some(*i as f64),
            HeaderValue::Float(f) => Some(*f),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, HeaderValue::Null)
    }

    /// Whole numbers as integers, as Python writes `time_limit=10`.
    fn opt_number(value: Option<f64>) -> HeaderValue {
        match value {
            None => HeaderValue::Null,
            Some(n) if n.fract() == 0.0 && n.abs() < 2f64.powi(53) => HeaderValue::Int(n as i64),
            Some(n) => HeaderValue::Float(n),
        }
    }
}

impl From<&Value> for HeaderValue {
    fn from(value: &Value) -> Self {
        match value {
            Value::Null => HeaderValue::Null,
            Value::Bool(b) => HeaderValue::Bool(*b),
            Value::Number(n) => n.as_i64().map_or_else(
                || HeaderValue::Float(n.as_f64().unwrap_or(0.0)),
                HeaderValue::Int,
            ),
            Value::String(s) => HeaderValue::Str(s.clone()),
            Value::Array(items) => HeaderValue::List(items.iter().map(HeaderValue::from).collect()),
            Value::Object(map) => HeaderValue::Table(
                map.iter()
                    .map(|(k, v)| (header_name(k), v.into()))
                    .collect(),
            ),
        }
    }
}

impl From<&HeaderValue> for Value {
    fn from(value: &HeaderValue) -> Self {
        match value {
            HeaderValue::Null => Value::Null,
            HeaderValue::Bool(b) => Value::Bool(*b),
            HeaderValue::Int(i) => Value::from(*i),
            HeaderValue::Float(f) => {
                serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
            }
            HeaderValue::Str(s) => Value::String(s.clone()),
            HeaderValue::List(items) => Value::Array(items.iter().map(Value::from).collect()),
            HeaderValue::Table(table) => Value::Object(
                table
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.into()))
                    .collect(),
            ),
        }
    }
}

/// AMQP basic properties of a message.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Properties {
    pub correlation_id: Option<String>,
    pub reply_to: Option<String>,
    pub content_type: String,
    pub content_encoding: String,
    /// 2 = persistent, 1 = transient.
    pub delivery_mode: u8,
    pub priority: Option<u8>,
    /// Per-message TTL in milliseconds, as a decimal string.
    pub expiration: Option<String>,
}

/// A message as brokers carry it: header table, properties, encoded (maybe compressed) body.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub headers: Headers,
    pub properties: Properties,
    pub body: Vec<u8>,
}

impl Message {
    pub fn header(&self, name: &str) -> Option<&HeaderValue> {
        find_header(&self.headers, name)
    }
}

/// Which headers a task message carries.
///
/// Python Celery writes all of protocol v2's headers, most of them null or zero for a plain
/// call. Celery's worker reads every header but `id` and `task` with a default for when it is
/// missing, and for most of them that default is the same null or zero: a task's request reads
/// the same with them or without.
/// RabbitMQ parses every header of every message it takes in, and a table of 19 headers costs
/// it more than one of 10 (see the README's "Performance"). What differs on a Celery worker is
/// only what looks at the request's raw dict rather than its fields: `vars(request)` and
/// `request_dict` list fewer keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderSet {
    /// Only the headers whose value differs from what a task's request reads when the header
    /// is missing: `shadow`, `eta`, `expires`, `group`, `group_index`, `parent_id` and
    /// `stamped_headers` when null, `retries` and `replaced_task_nesting` when zero, the others
    /// when null.
    Lean,
    /// Every header, null or default included, byte for byte what Python Celery sends.
    Full,
}

/// The typed task headers of protocol v2, in Celery's order.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskHeaders {
    pub lang: String,
    pub task: String,
    pub id: String,
    pub shadow: Option<String>,
    pub eta: Option<DateTime<FixedOffset>>,
    pub expires: Option<DateTime<FixedOffset>>,
    pub group: Option<String>,
    pub group_index: Option<i64>,
    pub retries: u32,
    /// `[hard, soft]` time limits in seconds.
    pub timelimit: (Option<f64>, Option<f64>),
    pub root_id: Option<String>,
    pub parent_id: Option<String>,
    pub argsrepr: Option<String>,
    pub kwargsrepr: Option<String>,
    pub origin: Option<String>,
    /// `None` when the message does not say (no header, or null): the task's own setting then
    /// decides, as in Celery 5.7, where the message's explicit value wins over the task's.
    pub ignore_result: Option<bool>,
    pub replaced_task_nesting: i64,
    /// The compression scheme's MIME type, when the body is compressed.
    pub compression: Option<String>,
    /// Headers this crate does not interpret: a call's own (Celery's `headers` option), which
    /// a worker gives the task as its request's `headers` and sends again with a retry.
    pub extra: Headers,
}

const KNOWN_HEADERS: &[&str] = &[
    "lang",
    "task",
    "id",
    "shadow",
    "eta",
    "expires",
    "group",
    "group_index",
    "retries",
    "timelimit",
    "root_id",
    "parent_id",
    "argsrepr",
    "kwargsrepr",
    "origin",
    "ignore_result",
    "replaced_task_nesting",
    "compression",
];

/// Celery's stamping headers, which this crate sends empty and does not read.
const STAMPING_HEADERS: &[&str] = &["stamped_headers", "stamps"];

/// The attributes of a Python task's request (Celery's `Context`) that are not protocol headers:
/// a Python worker fills the request from the message's headers, so a header under one of these
/// names would change them (`is_eager` makes a retry run in-process), and Celery's
/// `_get_custom_headers` leaves them out of `request.headers`.
const REQUEST_ATTRIBUTES: &[&str] = &[
    "args",
    "callbacks",
    "called_directly",
    "chain",
    "children",
    "chord",
    "correlation_id",
    "delivery_info",
    "errbacks",
    "headers",
    "hostname",
    "is_eager",
    "kwargs",
    "logfile",
    "loglevel",
    "properties",
    "reply_to",
    "soft_time_limit",
    "taskset",
    "time_limit",
    "utc",
];

/// The header that stands in for a header table nested too deep to read safely: the AMQP
/// broker's reader drops the table's nested entries before lapin sees them (lapin reads them by
/// recursion, with no depth limit) and says why here. A worker refuses such a message as
/// undecodable.
pub const UNREADABLE_HEADERS: &str = "x-celery-rs-unreadable-headers";

/// RabbitMQ's dead-lettering headers. Celery drops them from a retried message
/// (`X_DEATH_HEADERS`), so that RabbitMQ does not take the retry for a dead-letter cycle.
pub const X_DEATH_HEADERS: &[&str] = &[
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
];

/// Whether a header name is Celery's own: one its protocol v2 sets, or an attribute of a
/// Python task's request. A call's own headers may not take these names, and a worker does not
/// count them among the request's `headers`.
pub fn is_reserved_header(name: &str) -> bool {
    KNOWN_HEADERS.contains(&name)
        || STAMPING_HEADERS.contains(&name)
        || REQUEST_ATTRIBUTES.contains(&name)
}

/// The place of a header in `KNOWN_HEADERS`, found when compiling (`const { slot("eta") }`):
/// the worker reads a table per message, and looking each name up cost more than reading it.
const fn slot(name: &str) -> usize {
    let mut slot = 0;
    while slot < KNOWN_HEADERS.len() {
        let known = KNOWN_HEADERS[slot].as_bytes();
        let wanted = name.as_bytes();
        if known.len() == wanted.len() {
            let mut at = 0;
            while at < known.len() && known[at] == wanted[at] {
                at += 1;
            }
            if at == known.len() {
                return slot;
            }
        }
        slot += 1;
    }
    panic!("not one of KNOWN_HEADERS")
}

impl TaskHeaders {
    /// Headers for a new task message with Celery's defaults.
    pub fn new(task: impl Into<String>, id: impl Into<String>) -> Self {
        TaskHeaders {
            lang: "py".to_owned(),
            task: task.into(),
            id: id.into(),
            shadow: None,
            eta: None,
            expires: None,
            group: None,
            group_index: None,
            retries: 0,
            timelimit: (None, None),
            root_id: None,
            parent_id: None,
            argsrepr: None,
            kwargsrepr: None,
            origin: None,
            // Celery always writes it (false unless asked).
            ignore_result: Some(false),
            replaced_task_nesting: 0,
            compression: None,
            extra: Vec::new(),
        }
    }

    /// The header table in Celery's order.
    pub fn to_table(&self) -> Headers {
        self.clone().into_table()
    }

    /// The header table in Celery's order, taking the values instead of copying them: every
    /// header, as Python Celery writes it.
    pub fn into_table(self) -> Headers {
        self.into_table_with(HeaderSet::Full)
    }

    /// The header table in Celery's order, with [`HeaderSet::Lean`] leaving out each header
    /// whose value is what a Celery task's request reads when the header is missing.
    pub fn into_table_with(self, set: HeaderSet) -> Headers {
        let full = set == HeaderSet::Full;
        let mut table = Headers::with_capacity(if full { 20 } else { 10 });
        // Each optional header goes in when it has a value, or when every header is wanted
        // (then as null, or as Celery's default).
        let mut put =
            |name: &'static str, value: Option<HeaderValue>, default: HeaderValue| match value {
                Some(value) => table.push((name.into(), value)),
                None if full => table.push((name.into(), default)),
                None => {}
            };
        put("lang", Some(HeaderValue::Str(self.lang)), HeaderValue::Null);
        put("task", Some(HeaderValue::Str(self.task)), HeaderValue::Null);
        put("id", Some(HeaderValue::Str(self.id)), HeaderValue::Null);
        put(
            "shadow",
            self.shadow.map(HeaderValue::Str),
            HeaderValue::Null,
        );
        let date = |at: DateTime<FixedOffset>| HeaderValue::Str(format_datetime(at));
        put("eta", self.eta.map(date), HeaderValue::Null);
        put("expires", self.expires.map(date), HeaderValue::Null);
        put("group", self.group.map(HeaderValue::Str), HeaderValue::Null);
        put(
            "group_index",
            self.group_index.map(HeaderValue::Int),
            HeaderValue::Null,
        );
        put(
            "retries",
            (self.retries != 0).then(|| HeaderValue::Int(i64::from(self.retries))),
            HeaderValue::Int(0),
        );
        // Written even when there is no limit: a Celery task's `request.timelimit` is then
        // `[None, None]`, and would be `None` without the header.
        let limits = HeaderValue::List(vec![
            HeaderValue::opt_number(self.timelimit.0),
            HeaderValue::opt_number(self.timelimit.1),
        ]);
        put("timelimit", Some(limits), HeaderValue::Null);
        put(
            "root_id",
            self.root_id.map(HeaderValue::Str),
            HeaderValue::Null,
        );
        put(
            "parent_id",
            self.parent_id.map(HeaderValue::Str),
            HeaderValue::Null,
        );
        put(
            "argsrepr",
            self.argsrepr.map(HeaderValue::Str),
            HeaderValue::Null,
        );
        put(
            "kwargsrepr",
            self.kwargsrepr.map(HeaderValue::Str),
            HeaderValue::Null,
        );
        put(
            "origin",
            self.origin.map(HeaderValue::Str),
            HeaderValue::Null,
        );
        // Only a missing value goes: an explicit `false` overrides the task's own setting.
        put(
            "ignore_result",
            self.ignore_result.map(HeaderValue::Bool),
            HeaderValue::Null,
        );
        put(
            "replaced_task_nesting",
            (self.replaced_task_nesting != 0)
                .then_some(HeaderValue::Int(self.replaced_task_nesting)),
            HeaderValue::Int(0),
        );
        put("stamped_headers", None, HeaderValue::Null);
        // Written empty, as `timelimit`: `request.stamps` is `{}`, and would be `None`.
        put(
            "stamps",
            Some(HeaderValue::Table(Vec::new())),
            HeaderValue::Null,
        );
        if let Some(compression) = self.compression {
            table.push(("compression".into(), HeaderValue::Str(compression)));
        }
        table.extend(self.extra);
        table
    }

    /// Reads the headers of a received message. Only `task` and `id` are required (a 5.x worker
    /// accepts `lang`, `task`, `id` alone); a malformed optional header is an error, not ignored,
    /// so that a bad ETA never runs a task early.
    pub fn from_table(table: &Headers) -> Result<Self, Error> {
        Self::from_owned_table(table.clone()).map_err(|(error, _)| error)
    }

    /// [`from_table`](Self::from_table), moving the strings out of the table instead of
    /// copying them (a worker reads one table per message). On an error the table comes back
    /// as it was, for whatever the caller can still read of it (the id, for the FAILURE).
    pub fn from_owned_table(table: Headers) -> Result<Self, (Error, Headers)> {
        // One pass over the table: where each known header first occurs, by its place in
        // `KNOWN_HEADERS`.
        let mut first: [Option<usize>; KNOWN_HEADERS.len()] = [None; KNOWN_HEADERS.len()];
        // And the other way round, for the entries of a usual table: the slot of the header at
        // each place, when it is a known header's first occurrence.
        let mut slot_at: [Option<u8>; 32] = [None; 32];
        for (index, (key, value)) in table.iter().enumerate() {
            if let Some(slot) = KNOWN_HEADERS.iter().position(|known| known == key) {
                if first[slot].is_none() {
                    first[slot] = Some(index);
                    if let Some(at) = slot_at.get_mut(index) {
                        *at = Some(slot as u8);
                    }
                }
            } else if key == UNREADABLE_HEADERS {
                // Looked for among the unknown names only: the known ones are most of a table.
                let reason = value
                    .as_str()
                    .unwrap_or("header table unreadable")
                    .to_owned();
                return Err((Error::decode("task message headers", reason), table));
            }
        }
        let read = match ReadHeaders::check(&table, &first) {
            Ok(read) => read,
            Err(error) => return Err((error, table)),
        };
        // Everything is valid: the strings move out, the headers this crate does not
        // interpret are kept aside, repeated and stamping ones dropped.
        let mut strings: [Option<String>; KNOWN_HEADERS.len()] = Default::default();
        let mut extra = Vec::new();
        for (index, (key, value)) in table.into_iter().enumerate() {
            let slot = match slot_at.get(index) {
                Some(slot) => slot.map(usize::from),
                None => first.iter().position(|at| *at == Some(index)),
            };
            match slot {
                Some(slot) => {
                    if let HeaderValue::Str(text) = value {
                        strings[slot] = Some(text);
                    }
                }
                None if celery_header(&key).is_some() => {}
                None => extra.push((key, value)),
            }
        }
        let mut take = |slot: usize| strings[slot].take();
        Ok(TaskHeaders {
            lang: take(const { slot("lang") }).unwrap_or_else(|| "py".to_owned()),
            task: take(const { slot("task") }).unwrap_or_default(),
            id: take(const { slot("id") }).unwrap_or_default(),
            shadow: take(const { slot("shadow") }),
            eta: read.eta,
            expires: read.expires,
            group: take(const { slot("group") }),
            group_index: read.group_index,
            retries: read.retries,
            timelimit: read.timelimit,
            root_id: take(const { slot("root_id") }),
            parent_id: take(const { slot("parent_id") }),
            argsrepr: take(const { slot("argsrepr") }),
            kwargsrepr: take(const { slot("kwargsrepr") }),
            origin: take(const { slot("origin") }),
            ignore_result: read.ignore_result,
            replaced_task_nesting: read.replaced_task_nesting,
            compression: take(const { slot("compression") }),
            extra,
        })
    }
}

/// The task headers that are not strings, read and checked; the string ones checked only.
struct ReadHeaders {
    eta: Option<DateTime<FixedOffset>>,
    expires: Option<DateTime<FixedOffset>>,
    group_index: Option<i64>,
    retries: u32,
    timelimit: (Option<f64>, Option<f64>),
    ignore_result: Option<bool>,
    replaced_task_nesting: i64,
}

impl ReadHeaders {
    fn check(table: &Headers, first: &[Option<usize>; KNOWN_HEADERS.len()]) -> Result<Self, Error> {
        // A null header is an absent one.
        let get = |slot: usize| {
            first[slot]
                .map(|index| &table[index].1)
                .filter(|value| !value.is_null())
        };
        let wrong = |name: &str, what: &str, value: &HeaderValue| {
            Error::decode(
                "message headers",
                format!("header {name:?} must be {what}, got {value:?}"),
            )
        };
        let optional_str = |slot: usize| -> Result<Option<&str>, Error> {
            match get(slot) {
                None => Ok(None),
                Some(HeaderValue::Str(s)) => Ok(Some(s)),
                Some(other) => Err(wrong(KNOWN_HEADERS[slot], "a string", other)),
            }
        };
        for slot in [const { slot("task") }, const { slot("id") }] {
            let name = KNOWN_HEADERS[slot];
            match get(slot) {
                Some(HeaderValue::Str(s)) if !s.is_empty() => {}
                Some(other) => return Err(wrong(name, "a string", other)),
                None => {
                    return Err(Error::decode(
                        "message headers",
                        format!("missing header {name:?}"),
                    ))
                }
            }
        }
        for slot in [
            const { slot("lang") },
            const { slot("shadow") },
            const { slot("group") },
            const { slot("root_id") },
            const { slot("parent_id") },
            const { slot("argsrepr") },
            const { slot("kwargsrepr") },
            const { slot("origin") },
            const { slot("compression") },
        ] {
            optional_str(slot)?;
        }
        let optional_datetime = |slot: usize| -> Result<Option<DateTime<FixedOffset>>, Error> {
            let name = KNOWN_HEADERS[slot];
            optional_str(slot)?
                .map(|text| {
                    parse_datetime(text).ok_or_else(|| {
                        Error::decode(
                            "message headers",
                            format!("header {name:?} is not an ISO-8601 datetime: {text:?}"),
                        )
                    })
                })
                .transpose()
        };
        let optional_int = |slot: usize| -> Result<Option<i64>, Error> {
            match get(slot) {
                None => Ok(None),
                Some(value) => value
                    .as_i64()
                    .map(Some)
                    .ok_or_else(|| wrong(KNOWN_HEADERS[slot], "an integer", value)),
            }
        };
        let timelimit = match get(const { slot("timelimit") }) {
            None => (None, None),
            Some(HeaderValue::List(items)) if items.len() == 2 => {
                (items[0].as_f64(), items[1].as_f64())
            }
            Some(other) => {
                return Err(Error::decode(
                    "message headers",
                    format!("header \"timelimit\" must be [hard, soft], got {other:?}"),
                ))
            }
        };
        let retries = optional_int(const { slot("retries") })?.unwrap_or(0);
        Ok(ReadHeaders {
            eta: optional_datetime(const { slot("eta") })?,
            expires: optional_datetime(const { slot("expires") })?,
            group_index: optional_int(const { slot("group_index") })?,
            retries: u32::try_from(retries).map_err(|_| {
                Error::decode(
                    "message headers",
                    format!("header \"retries\" out of range: {retries}"),
                )
            })?,
            timelimit,
            ignore_result: match get(const { slot("ignore_result") }) {
                Some(HeaderValue::Bool(ignore)) => Some(*ignore),
                Some(HeaderValue::Int(ignore)) => Some(*ignore != 0),
                _ => None,
            },
            replaced_task_nesting: optional_int(const { slot("replaced_task_nesting") })?
                .unwrap_or(0),
        })
    }
}

/// The fourth part of the body: the workflow embedded in a task message.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Embed {
    #[serde(default)]
    pub callbacks: Option<Vec<RawSignature>>,
    #[serde(default)]
    pub errbacks: Option<Vec<RawSignature>>,
    /// The remaining chain steps, last step first: the worker pops the end.
    #[serde(default)]
    pub chain: Option<Vec<RawSignature>>,
    #[serde(default)]
    pub chord: Option<Value>,
}

impl Embed {
    pub fn is_empty(&self) -> bool {
        self.callbacks.as_ref().is_none_or(Vec::is_empty)
            && self.errbacks.as_ref().is_none_or(Vec::is_empty)
            && self.chain.as_ref().is_none_or(Vec::is_empty)
            && self.chord.is_none()
    }
}

/// The decoded body: `[args, kwargs, embed]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Body {
    pub args: Vec<Value>,
    pub kwargs: Map<String, Value>,
    pub embed: Embed,
}

impl Serialize for Body {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut parts = serializer.serialize_tuple(3)?;
        parts.serialize_element(&self.args)?;
        parts.serialize_element(&self.kwargs)?;
        parts.serialize_element(&self.embed)?;
        parts.end()
    }
}

impl Body {
    /// Reads `[args, kwargs, embed]` from a decoded value; `embed` may be null or absent.
    pub fn from_value(value: Value) -> Result<Self, Error> {
        let Value::Array(mut parts) = value else {
            return Err(Error::decode(
                "task body",
                "expected a list [args, kwargs, embed]",
            ));
        };
        if parts.len() < 2 || parts.len() > 3 {
            return Err(Error::decode(
                "task body",
                format!(
                    "expected [args, kwargs, embed], got a list of {}",
                    parts.len()
                ),
            ));
        }
        let embed = if parts.len() == 3 {
            parts.pop().unwrap_or(Value::Null)
        } else {
            Value::Null
        };
        let kwargs = match parts.pop() {
            Some(Value::Object(map)) => map,
            Some(Value::Null) => Map::new(),
            other => {
                return Err(Error::decode(
                    "task body",
                    format!("kwargs must be a mapping, got {other:?}"),
                ))
            }
        };
        let args = match parts.pop() {
            Some(Value::Array(items)) => items,
            Some(Value::Null) => Vec::new(),
            other => {
                return Err(Error::decode(
                    "task body",
                    format!("args must be a list, got {other:?}"),
                ))
            }
        };
        let embed = if embed.is_null() {
            Embed::default()
        } else {
            serde_json::from_value(embed).map_err(|e| Error::decode("task body embed", e))?
        };
        Ok(Body {
            args,
            kwargs,
            embed,
        })
    }
}

/// Reads a body straight from a serde format, with no [`Value`] of the whole in between; it
/// accepts exactly what [`Body::from_value`] accepts (a list of two or three, null args, kwargs
/// or embed counting as empty). Its errors are serde's; the worker reads a body it refuses again
/// through [`Body::from_value`], whose errors say what is wrong in Celery's terms.
impl<'de> Deserialize<'de> for Body {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BodyVisitor;

        impl<'de> serde::de::Visitor<'de> for BodyVisitor {
            type Value = Body;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a task body [args, kwargs, embed]")
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut parts: A,
            ) -> Result<Body, A::Error> {
                use serde::de::Error as _;
                let args: Option<Vec<Value>> = parts
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(0, &self))?;
                let kwargs: Option<Map<String, Value>> = parts
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(1, &self))?;
                let embed: Option<Embed> = parts.next_element()?.flatten();
                if parts.next_element::<serde::de::IgnoredAny>()?.is_some() {
                    return Err(A::Error::invalid_length(4, &self));
                }
                Ok(Body {
                    args: args.unwrap_or_default(),
                    kwargs: kwargs.unwrap_or_default(),
                    embed: embed.unwrap_or_default(),
                })
            }
        }

        deserializer.deserialize_seq(BodyVisitor)
    }
}

/// A decoded task message, ready for the worker.
#[derive(Debug, Clone)]
pub struct TaskMessage {
    pub headers: TaskHeaders,
    pub properties: Properties,
    pub body: Body,
}

/// `None`, `True`, `False` or a number as Python writes them (`repr()` and `saferepr` alike);
/// false for any other value, which is left to the caller.
pub(crate) fn python_scalar_repr(value: &Value, out: &mut String) -> bool {
    match value {
        Value::Null => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        Value::Number(n) => match n.as_f64().filter(|_| n.is_f64()) {
            Some(float) => out.push_str(&crate::serializer::python_float_repr(float)),
            None => {
                let _ = std::fmt::Write::write_fmt(out, format_args!("{n}"));
            }
        },
        _ => return false,
    }
    true
}

/// Python's `repr()` of a value. (`argsrepr` and `kwargsrepr` are Celery's `saferepr`, which
/// differs: see [`args_repr`].)
pub fn python_repr(value: &Value, out: &mut String) {
    if python_scalar_repr(value, out) {
        return;
    }
    match value {
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
        Value::String(s) => {
            let quote = if s.contains('\'') && !s.contains('"') {
                '"'
            } else {
                '\''
            };
            out.push(quote);
            for ch in s.chars() {
                match ch {
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    c if c == quote => {
                        out.push('\\');
                        out.push(c);
                    }
                    c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                        out.push_str(&format!("\\x{:02x}", c as u32))
                    }
                    c => out.push(c),
                }
            }
            out.push(quote);
        }
        Value::Array(items) => {
            out.push('[');
            repr_items(items.iter(), out);
            out.push(']');
        }
        Value::Object(map) => python_dict_repr(map, out),
    }
}

/// Python's `repr()` of a tuple of these values: `(1,)` for one.
pub(crate) fn python_tuple_repr(items: &[Value], out: &mut String) {
    out.push('(');
    repr_items(items.iter(), out);
    if items.len() == 1 {
        out.push(',');
    }
    out.push(')');
}

fn repr_items<'a>(items: impl Iterator<Item = &'a Value>, out: &mut String) {
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        python_repr(item, out);
    }
}

/// Python's `repr()` of a dict with these entries.
pub(crate) fn python_dict_repr(map: &Map<String, Value>, out: &mut String) {
    out.push('{');
    for (i, (key, value)) in map.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        python_repr(&Value::String(key.clone()), out);
        out.push_str(": ");
        python_repr(value, out);
    }
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_that_does_not_read_comes_back_as_it_was() {
        let mut table = TaskHeaders::new("tasks.add", "id-1").into_table();
        for (name, value) in &mut table {
            if name == "eta" {
                *value = HeaderValue::Str("next tuesday".to_owned());
            }
        }
        let (error, back) = TaskHeaders::from_owned_table(table.clone()).unwrap_err();
        assert!(error.to_string().contains("\"eta\""), "{error}");
        assert_eq!(back, table);
    }

    #[test]
    fn headers_the_amqp_reader_could_not_pass_on_whole_are_refused_with_its_reason() {
        let mut table = TaskHeaders::new("tasks.add", "id-1").into_table();
        let reason = "header table nested deeper than 128 levels";
        table.push((UNREADABLE_HEADERS.into(), HeaderValue::Str(reason.into())));
        let (error, back) = TaskHeaders::from_owned_table(table.clone()).unwrap_err();
        assert!(error.to_string().contains(reason), "{error}");
        assert_eq!(back, table, "the id stays readable, for the FAILURE");
    }

    #[test]
    fn ignore_result_is_read_as_the_message_says_or_left_to_the_task() {
        let with = |value: Option<HeaderValue>| {
            let mut table = TaskHeaders::new("tasks.add", "id-1").into_table();
            table.retain(|(name, _)| name != "ignore_result");
            if let Some(value) = value {
                table.push(("ignore_result".into(), value));
            }
            TaskHeaders::from_table(&table).unwrap().ignore_result
        };
        assert_eq!(with(Some(HeaderValue::Bool(true))), Some(true));
        assert_eq!(with(Some(HeaderValue::Bool(false))), Some(false));
        assert_eq!(with(Some(HeaderValue::Null)), None);
        assert_eq!(with(None), None, "no header: the task's setting decides");
        assert_eq!(
            TaskHeaders::new("tasks.add", "id-1").ignore_result,
            Some(false),
            "written as Celery writes it"
        );
    }

    #[test]
    fn celery_header_names_are_read_without_allocating() {
        assert!(matches!(header_name("root_id"), Cow::Borrowed("root_id")));
        assert!(matches!(header_name("stamps"), Cow::Borrowed("stamps")));
        assert!(matches!(header_name("x-custom"), Cow::Owned(name) if name == "x-custom"));
        let table = TaskHeaders::new("tasks.add", "1").into_table();
        assert!(table
            .iter()
            .all(|(name, _)| matches!(name, Cow::Borrowed(_))));
    }
    use serde_json::json;

    #[test]
    fn headers_round_trip_through_the_table() {
        let mut headers = TaskHeaders::new("tasks.add", "id-1");
        headers.eta = parse_datetime("2026-11-23T19:56:16.003182+00:00");
        headers.timelimit = (Some(10.0), None);
        headers.retries = 2;
        headers
            .extra
            .push(("custom".into(), HeaderValue::Str("kept".into())));
        let back = TaskHeaders::from_table(&headers.to_table()).unwrap();
        assert_eq!(back, headers);
    }

    #[test]
    fn a_lean_table_leaves_out_only_what_a_worker_would_assume() {
        let names = |table: &Headers| table.iter().map(|(k, _)| k.to_string()).collect::<Vec<_>>();
        let plain = TaskHeaders::new("tasks.add", "id-1");
        let full = plain.clone().into_table_with(HeaderSet::Full);
        assert_eq!(full.len(), 19);
        assert_eq!(full, plain.to_table());
        let lean = plain.clone().into_table_with(HeaderSet::Lean);
        // `ignore_result` stays (an explicit false overrides the task's own setting), and so do
        // the empty `timelimit` and `stamps` (a request reads them as they are, not as `None`).
        assert_eq!(
            names(&lean),
            ["lang", "task", "id", "timelimit", "ignore_result", "stamps"]
        );
        // What the full table has beyond the lean one is only nulls and zeros...
        for (name, value) in &full {
            if !lean.iter().any(|(kept, _)| kept == name) {
                let is_default = matches!(value, HeaderValue::Null | HeaderValue::Int(0));
                assert!(is_default, "{name} = {value:?} left out");
            }
        }
        // ...and both read back as the same headers.
        assert_eq!(TaskHeaders::from_table(&lean).unwrap(), plain);

        // Every header with a value of its own is written, in Celery's order.
        let mut set = plain.clone();
        set.shadow = Some("shadow".into());
        set.eta = parse_datetime("2026-11-23T19:56:16.003182+00:00");
        set.expires = parse_datetime("2026-11-24T19:56:16.003182+00:00");
        set.group = Some("g".into());
        set.group_index = Some(0);
        set.retries = 1;
        set.timelimit = (None, Some(5.0));
        set.root_id = Some("r".into());
        set.parent_id = Some("p".into());
        set.argsrepr = Some("(1,)".into());
        set.kwargsrepr = Some("{}".into());
        set.origin = Some("o".into());
        set.ignore_result = None;
        set.replaced_task_nesting = 1;
        set.compression = Some("application/x-gzip".into());
        let lean = set.clone().into_table_with(HeaderSet::Lean);
        let mut expected = names(&set.to_table());
        expected.retain(|name| !["ignore_result", "stamped_headers"].contains(&name.as_str()));
        assert_eq!(names(&lean), expected);
        assert_eq!(TaskHeaders::from_table(&lean).unwrap(), set);
    }

    #[test]
    fn minimal_headers_are_enough() {
        let table = vec![
            ("lang".into(), HeaderValue::Str("py".into())),
            ("task".into(), HeaderValue::Str("t".into())),
            ("id".into(), HeaderValue::Str("x".into())),
        ];
        let headers = TaskHeaders::from_table(&table).unwrap();
        assert_eq!(headers.task, "t");
        assert_eq!(headers.retries, 0);
    }

    #[test]
    fn null_headers_are_absent_the_first_of_a_name_counts_and_unknown_ones_are_kept_in_order() {
        let table = vec![
            ("zz-custom".into(), HeaderValue::Int(1)),
            ("task".into(), HeaderValue::Str("t".into())),
            ("id".into(), HeaderValue::Str("x".into())),
            ("shadow".into(), HeaderValue::Null),
            ("shadow".into(), HeaderValue::Str("second".into())),
            ("retries".into(), HeaderValue::Int(3)),
            ("retries".into(), HeaderValue::Int(9)),
            ("stamped_headers".into(), HeaderValue::Null),
            ("stamps".into(), HeaderValue::Table(Vec::new())),
            ("a-custom".into(), HeaderValue::Str("b".into())),
        ];
        let headers = TaskHeaders::from_table(&table).unwrap();
        assert_eq!(headers.shadow, None);
        assert_eq!(headers.retries, 3);
        assert_eq!(headers.lang, "py");
        assert_eq!(
            headers.extra,
            vec![
                ("zz-custom".into(), HeaderValue::Int(1)),
                ("a-custom".into(), HeaderValue::Str("b".into())),
            ]
        );
    }

    #[test]
    fn missing_or_malformed_headers_are_errors() {
        let no_task = vec![("id".into(), HeaderValue::Str("x".into()))];
        assert!(TaskHeaders::from_table(&no_task)
            .unwrap_err()
            .to_string()
            .contains("missing header \"task\""));
        let bad_eta = vec![
            ("task".into(), HeaderValue::Str("t".into())),
            ("id".into(), HeaderValue::Str("x".into())),
            ("eta".into(), HeaderValue::Str("tomorrow".into())),
        ];
        assert!(TaskHeaders::from_table(&bad_eta)
            .unwrap_err()
            .to_string()
            .contains("ISO-8601"));
    }

    #[test]
    fn body_accepts_null_embed_and_rejects_wrong_shapes() {
        let body = Body::from_value(json!([[1, 2], {"a": 1}, null])).unwrap();
        assert_eq!(body.args, vec![json!(1), json!(2)]);
        assert!(body.embed.is_empty());
        assert!(Body::from_value(json!({"args": []})).is_err());
        assert!(Body::from_value(json!([1, {}, null])).is_err());
        assert!(Body::from_value(json!([[], [], null])).is_err());
    }

    #[test]
    fn a_body_read_directly_is_the_body_read_through_a_value() {
        for text in [
            r#"[[1, 2], {"a": 1}, null]"#,
            r#"[null, null]"#,
            r#"[[], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]"#,
            r#"[[], {}, {"callbacks": [{"task": "t", "args": [], "kwargs": {}, "options": {}, "subtask_type": null, "immutable": false}], "other": 1}]"#,
        ] {
            let through_value = Body::from_value(serde_json::from_str(text).unwrap()).unwrap();
            let direct: Body = serde_json::from_str(text).unwrap();
            assert_eq!(direct, through_value, "{text}");
        }
        for refused in [
            r#"{"args": []}"#,
            r#"[1, {}, null]"#,
            r#"[[], [], null]"#,
            r#"[[]]"#,
            r#"[[], {}, null, 4]"#,
            r#"[[], {}, {"callbacks": 3}]"#,
        ] {
            assert!(Body::from_value(serde_json::from_str(refused).unwrap()).is_err());
            assert!(serde_json::from_str::<Body>(refused).is_err(), "{refused}");
        }
    }
}
