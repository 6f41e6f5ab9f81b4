//! Reading: PyYAML's `safe_load` over saphyr's event parser.

use std::collections::HashMap;

use base64::Engine as _;
use saphyr_parser::{Event, Parser, ScalarStyle, Tag};
use serde_json::{Map, Value};

use super::resolve::{float_value, int_value, timestamp_value};
use crate::serializer::{kombu, python_float_repr, MAX_NESTING as MAX_DEPTH};

const CORE: &str = "tag:yaml.org,2002:";

/// Decodes a YAML document as `safe_load` does.
pub(super) fn load(text: &str) -> Result<Value, String> {
    Loader::new(text).load()
}

struct Loader<'a> {
    parser: Parser<'a, saphyr_parser::StrInput<'a>>,
    /// Finished anchored nodes, with what each costs and how deep it nests.
    anchors: HashMap<usize, (Value, Weight)>,
    /// What the document may still cost before it counts as a bomb: one per value, plus the
    /// bytes of text each alias (and each anchored copy) repeats.
    budget: usize,
}

/// What repeating a value costs, and how many levels it nests below itself.
#[derive(Clone, Copy)]
struct Weight {
    cost: usize,
    height: usize,
}

impl Weight {
    /// Walks a finished value; it nests no deeper than the limit, so the walk is bounded.
    fn of(value: &Value) -> Weight {
        match value {
            Value::String(text) => Weight {
                cost: 1 + text.len(),
                height: 0,
            },
            Value::Array(items) => Self::of_children(items.iter().map(|item| (0, item))),
            Value::Object(map) => {
                Self::of_children(map.iter().map(|(key, item)| (key.len(), item)))
            }
            _ => Weight { cost: 1, height: 0 },
        }
    }

    fn of_children<'v>(children: impl Iterator<Item = (usize, &'v Value)>) -> Weight {
        children.fold(Weight { cost: 1, height: 1 }, |total, (key, child)| {
            let child = Self::of(child);
            Weight {
                cost: total.cost.saturating_add(key).saturating_add(child.cost),
                height: total.height.max(child.height + 1),
            }
        })
    }
}

/// A node's value, or the `<<` merge key.
enum Resolved {
    Value(Value),
    Merge,
}

impl<'a> Loader<'a> {
    fn new(text: &'a str) -> Self {
        Loader {
            parser: Parser::new_from_str(text),
            anchors: HashMap::new(),
            budget: 16 * text.len() + 65_536,
        }
    }

    fn next(&mut self) -> Result<Event<'a>, String> {
        match self.parser.next_event() {
            Some(Ok((event, _))) => Ok(event),
            Some(Err(error)) => Err(format!("yaml: {error}")),
            None => Err("yaml: unexpected end of the stream".to_owned()),
        }
    }

    /// `safe_load`: one document (or none: `None`).
    fn load(mut self) -> Result<Value, String> {
        let mut value = Value::Null;
        let mut documents = 0;
        loop {
            match self.next()? {
                Event::StreamStart | Event::Nothing => {}
                Event::StreamEnd => return Ok(value),
                Event::DocumentStart(_) => {
                    documents += 1;
                    if documents > 1 {
                        return Err(
                            "yaml: expected a single document in the stream, found more".to_owned()
                        );
                    }
                    let event = self.next()?;
                    value = self.value(event, 0)?;
                }
                Event::DocumentEnd => {}
                other => return Err(format!("yaml: unexpected {other:?}")),
            }
        }
    }

    fn value(&mut self, event: Event<'a>, depth: usize) -> Result<Value, String> {
        match self.node(event, depth)? {
            Resolved::Value(value) => Ok(value),
            Resolved::Merge => Err("yaml: a merge key `<<` outside a mapping key".to_owned()),
        }
    }

    fn node(&mut self, event: Event<'a>, depth: usize) -> Result<Resolved, String> {
        if depth > MAX_DEPTH {
            return Err(format!("yaml: nested more than {MAX_DEPTH} levels deep"));
        }
        let (anchor, resolved) = match event {
            Event::Alias(id) => {
                let (value, weight) = self.anchors.get(&id).ok_or_else(|| {
                    "yaml: an alias to an undefined or unfinished anchor (recursive \
                     structures are not supported)"
                        .to_owned()
                })?;
                // An alias repeats its anchor's nesting where it stands.
                if depth + weight.height > MAX_DEPTH {
                    return Err(format!("yaml: nested more than {MAX_DEPTH} levels deep"));
                }
                self.budget = self.budget.checked_sub(weight.cost).ok_or_else(|| {
                    "yaml: aliases expand it beyond the size of its input".to_owned()
                })?;
                return Ok(Resolved::Value(value.clone()));
            }
            Event::Scalar(text, style, anchor, tag) => {
                (anchor, scalar(&text, style, tag.as_deref())?)
            }
            Event::SequenceStart(anchor, tag) => {
                let kind = collection_tag(tag.as_deref(), "seq")?;
                let mut items = Vec::new();
                loop {
                    match self.next()? {
                        Event::SequenceEnd => break,
                        event => items.push(self.value(event, depth + 1)?),
                    }
                }
                let value = match kind {
                    "seq" => Value::Array(items),
                    _ => pairs(items, kind)?,
                };
                (anchor, Resolved::Value(value))
            }
            Event::MappingStart(anchor, tag) => {
                let value = match collection_tag(tag.as_deref(), "map")? {
                    "set" => self.set(depth)?,
                    _ => self.mapping(depth)?,
                };
                (anchor, Resolved::Value(value))
            }
            other => return Err(format!("yaml: unexpected {other:?}")),
        };
        self.budget = self
            .budget
            .checked_sub(1)
            .ok_or_else(|| "yaml: aliases expand it beyond the size of its input".to_owned())?;
        if anchor != 0 {
            if let Resolved::Value(value) = &resolved {
                // The anchored copy counts too: nested anchors each keep one.
                let weight = Weight::of(value);
                self.budget = self.budget.checked_sub(weight.cost).ok_or_else(|| {
                    "yaml: aliases expand it beyond the size of its input".to_owned()
                })?;
                self.anchors.insert(anchor, (value.clone(), weight));
            }
        }
        Ok(resolved)
    }

    /// `!!set`, which PyYAML's `safe_dump` writes for a Python set (a mapping of members to
    /// null): its members as a list, in order, as a Rust `HashSet`/`BTreeSet`/`Vec` reads it.
    fn set(&mut self, depth: usize) -> Result<Value, String> {
        let mut members = Vec::new();
        loop {
            let member = match self.next()? {
                Event::MappingEnd => break,
                event => self.value(event, depth + 1)?,
            };
            let event = self.next()?;
            if self.value(event, depth + 1)? != Value::Null {
                return Err("yaml: a !!set maps each member to null".to_owned());
            }
            members.push(member);
        }
        Ok(Value::Array(members))
    }

    /// A mapping, with PyYAML's merge keys: merged entries first, the mapping's own win.
    fn mapping(&mut self, depth: usize) -> Result<Value, String> {
        let mut merged = Vec::new();
        let mut own = Vec::new();
        loop {
            let key = match self.next()? {
                Event::MappingEnd => break,
                event => self.node(event, depth + 1)?,
            };
            let event = self.next()?;
            let value = self.value(event, depth + 1)?;
            match key {
                Resolved::Merge => merged.extend(merge_entries(value)?),
                Resolved::Value(key) => own.push((json_key(key)?, value)),
            }
        }
        let mut map = Map::with_capacity(merged.len() + own.len());
        map.extend(merged.into_iter().chain(own));
        Ok(Value::Object(map))
    }
}

/// The entries a `<<` brings in: one mapping's, or a list of mappings' with the first winning.
fn merge_entries(value: Value) -> Result<Vec<(String, Value)>, String> {
    let expected = || "yaml: a merge key `<<` takes a mapping or a list of mappings".to_owned();
    match value {
        Value::Object(map) => Ok(map.into_iter().collect()),
        Value::Array(items) => {
            let mut entries = Vec::new();
            for item in items.into_iter().rev() {
                let Value::Object(map) = item else {
                    return Err(expected());
                };
                entries.extend(map);
            }
            Ok(entries)
        }
        _ => Err(expected()),
    }
}

/// `!!omap` and `!!pairs`: a list of one-entry mappings, read as `[key, value]` pairs.
fn pairs(items: Vec<Value>, kind: &str) -> Result<Value, String> {
    items
        .into_iter()
        .map(|item| match item {
            Value::Object(map) if map.len() == 1 => {
                let (key, value) = map.into_iter().next().expect("one entry");
                Ok(Value::Array(vec![Value::String(key), value]))
            }
            _ => Err(format!("yaml: !!{kind} takes a list of one-entry mappings")),
        })
        .collect::<Result<_, _>>()
        .map(Value::Array)
}

/// The kind a collection's tag asks for; only the plain kinds are accepted.
fn collection_tag(tag: Option<&Tag>, plain: &'static str) -> Result<&'static str, String> {
    let Some(tag) = tag else {
        return Ok(plain);
    };
    if is_non_specific(tag) {
        return Ok(plain);
    }
    match (plain, core_suffix(tag)) {
        ("seq", Some("seq")) | ("map", Some("map")) => Ok(plain),
        ("map", Some("set")) => Ok("set"),
        ("seq", Some("omap")) => Ok("omap"),
        ("seq", Some("pairs")) => Ok("pairs"),
        _ => Err(refused_tag(tag)),
    }
}

/// The tag `!`, which makes a scalar a string and leaves a collection as it is.
fn is_non_specific(tag: &Tag) -> bool {
    matches!(
        (tag.handle.as_str(), tag.suffix.as_str()),
        ("!", "") | ("", "!")
    )
}

fn core_suffix(tag: &Tag) -> Option<&str> {
    if tag.handle == CORE {
        Some(&tag.suffix)
    } else if tag.handle.is_empty() {
        tag.suffix.strip_prefix(CORE)
    } else {
        None
    }
}

fn refused_tag(tag: &Tag) -> String {
    let name = match core_suffix(tag) {
        Some(suffix) => format!("!!{suffix}"),
        None => format!("{}{}", tag.handle, tag.suffix),
    };
    format!(
        "yaml: refusing the tag {name}: like PyYAML's safe_load, the yaml serializer builds \
         plain data only (null, bool, int, float, str, binary, timestamp, seq, map)"
    )
}

fn scalar(text: &str, style: ScalarStyle, tag: Option<&Tag>) -> Result<Resolved, String> {
    let Some(tag) = tag else {
        return if style == ScalarStyle::Plain {
            resolve_plain(text)
        } else {
            Ok(Resolved::Value(Value::String(text.to_owned())))
        };
    };
    if is_non_specific(tag) {
        return Ok(Resolved::Value(Value::String(text.to_owned())));
    }
    let invalid = |kind: &str| format!("yaml: {text:?} is not a valid !!{kind}");
    let value = match core_suffix(tag) {
        Some("str") => Value::String(text.to_owned()),
        Some("null") => Value::Null,
        Some("bool") => Value::Bool(
            match text.to_ascii_lowercase().as_str() {
                "yes" | "true" | "on" => Some(true),
                "no" | "false" | "off" => Some(false),
                _ => None,
            }
            .ok_or_else(|| invalid("bool"))?,
        ),
        Some("int") => int_value(text).ok_or_else(|| invalid("int"))??,
        Some("float") => float_value(text).ok_or_else(|| invalid("float"))??,
        Some("timestamp") => timestamp_value(text).ok_or_else(|| invalid("timestamp"))??,
        Some("binary") => {
            let packed: String = text.chars().filter(|c| !c.is_whitespace()).collect();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(packed)
                .map_err(|e| format!("yaml: invalid !!binary: {e}"))?;
            kombu::bytes_value(&bytes)
        }
        Some("merge") => return Ok(Resolved::Merge),
        _ => return Err(refused_tag(tag)),
    };
    Ok(Resolved::Value(value))
}

/// PyYAML's implicit resolvers for plain scalars, in its order.
fn resolve_plain(text: &str) -> Result<Resolved, String> {
    let value = match text {
        "" | "~" | "null" | "Null" | "NULL" => Value::Null,
        "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => Value::Bool(true),
        "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            Value::Bool(false)
        }
        "<<" => return Ok(Resolved::Merge),
        _ => {
            if let Some(value) = float_value(text)
                .or_else(|| int_value(text))
                .or_else(|| timestamp_value(text))
            {
                value?
            } else {
                Value::String(text.to_owned())
            }
        }
    };
    Ok(Resolved::Value(value))
}

/// A mapping key as `json.dumps` writes it.
fn json_key(key: Value) -> Result<String, String> {
    Ok(match key {
        Value::String(text) => text,
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => python_float_repr(f),
            _ => n.to_string(),
        },
        other => {
            let kind = match kombu::special(&other) {
                Some((kind, _)) => kind.to_owned(),
                None if other.is_array() => "sequence".to_owned(),
                None => "mapping".to_owned(),
            };
            return Err(format!(
                "yaml: a mapping key of type {kind} has no JSON form"
            ));
        }
    })
}
