//! Reading: a stack machine that knows only the opcodes of plain data.

use std::collections::HashMap;

use serde_json::{Map, Number, Value};

use super::{op, refused, HIGHEST_PROTOCOL, PLAIN_DATA};
use crate::serializer::{kombu, python_float_repr, MAX_NESTING as MAX_DEPTH};

/// Decodes a pickle of plain data.
pub(super) fn loads(bytes: &[u8]) -> Result<Value, String> {
    Machine::new(bytes).run()
}

type NodeId = usize;

/// A value under construction; containers refer to other nodes so that the memo shares them
/// the way Python's objects are shared.
enum Node {
    Scalar(Value),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<NodeId>),
    Tuple(Vec<NodeId>),
    Dict(Vec<(NodeId, NodeId)>),
}

impl Node {
    fn kind(&self) -> &'static str {
        match self {
            Node::Scalar(Value::Null) => "None",
            Node::Scalar(Value::Bool(_)) => "bool",
            Node::Scalar(Value::Number(n)) if n.is_f64() => "float",
            Node::Scalar(_) => "int",
            Node::Str(_) => "str",
            Node::Bytes(_) => "bytes",
            Node::List(_) => "list",
            Node::Tuple(_) => "tuple",
            Node::Dict(_) => "dict",
        }
    }
}

/// The few callables Python's pickler itself uses for bytes, evaluated here as data.
#[derive(Clone, Copy, PartialEq)]
enum Known {
    /// `_codecs.encode(text, "latin1")`: bytes at protocol 2.
    CodecsEncode,
    /// `bytes()`: empty bytes at protocol 2.
    Bytes,
    /// `bytearray(data)`: a bytearray at protocols 2 to 4.
    Bytearray,
}

impl Known {
    fn named(module: &str, name: &str) -> Option<Known> {
        match (module, name) {
            ("_codecs", "encode") => Some(Known::CodecsEncode),
            ("builtins" | "__builtin__", "bytes") => Some(Known::Bytes),
            ("builtins" | "__builtin__", "bytearray") => Some(Known::Bytearray),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Item {
    Node(NodeId),
    Mark,
    Callable(Known),
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    /// Where the opcode being run starts, for error messages.
    at: usize,
    nodes: Vec<Node>,
    stack: Vec<Item>,
    memo: HashMap<u64, Item>,
    /// What the decoded value may cost beyond the input: one per value, one per byte of text
    /// copied (by REDUCE, or as each reference to a shared string becomes a value of its own).
    /// A pickle of shared references would otherwise expand without bound.
    budget: usize,
}

impl<'a> Machine<'a> {
    fn new(data: &'a [u8]) -> Self {
        Machine {
            data,
            pos: 0,
            at: 0,
            nodes: Vec::new(),
            stack: Vec::new(),
            memo: HashMap::new(),
            budget: 16 * data.len() + 65_536,
        }
    }

    fn spend(budget: &mut usize, cost: usize) -> Result<(), String> {
        *budget = budget.checked_sub(cost).ok_or_else(|| {
            "pickle: shared references expand it beyond the size of its input".to_owned()
        })?;
        Ok(())
    }

    fn run(mut self) -> Result<Value, String> {
        loop {
            self.at = self.pos;
            let opcode = self.byte()?;
            if opcode == op::STOP {
                let top = self.pop()?;
                let id = self.node_of(top)?;
                let mut budget = self.budget;
                return self.to_value(id, 0, &mut budget);
            }
            self.step(opcode)?;
        }
    }

    fn step(&mut self, opcode: u8) -> Result<(), String> {
        match opcode {
            op::PROTO => {
                let version = self.byte()?;
                if version > HIGHEST_PROTOCOL {
                    return Err(self.error(format!("unsupported pickle protocol {version}")));
                }
            }
            op::FRAME => {
                self.take(8)?;
            }
            op::MARK => self.stack.push(Item::Mark),
            op::POP => {
                self.pop()?;
            }
            op::POP_MARK => {
                self.pop_mark()?;
            }
            op::DUP => {
                let top = *self.stack.last().ok_or_else(|| self.underflow())?;
                self.stack.push(top);
            }
            op::NONE => self.push(Node::Scalar(Value::Null)),
            op::NEWTRUE => self.push(Node::Scalar(Value::Bool(true))),
            op::NEWFALSE => self.push(Node::Scalar(Value::Bool(false))),
            op::BININT1 => {
                let v = self.byte()?;
                self.push_int(i128::from(v))?;
            }
            op::BININT2 => {
                let v = u16::from_le_bytes(self.array()?);
                self.push_int(i128::from(v))?;
            }
            op::BININT => {
                let v = i32::from_le_bytes(self.array()?);
                self.push_int(i128::from(v))?;
            }
            op::LONG1 => {
                let n = usize::from(self.byte()?);
                let bytes = self.take(n)?;
                let v = self.decode_long(bytes)?;
                self.push_int(v)?;
            }
            op::LONG4 => {
                let n = self.len4()?;
                let bytes = self.take(n)?;
                let v = self.decode_long(bytes)?;
                self.push_int(v)?;
            }
            op::INT => {
                let line = self.text_line()?;
                match line {
                    "01" => self.push(Node::Scalar(Value::Bool(true))),
                    "00" => self.push(Node::Scalar(Value::Bool(false))),
                    _ => {
                        let v = self.parse_int(line)?;
                        self.push_int(v)?;
                    }
                }
            }
            op::LONG => {
                let line = self.text_line()?;
                let v = self.parse_int(line.strip_suffix('L').unwrap_or(line))?;
                self.push_int(v)?;
            }
            op::BINFLOAT => {
                let v = f64::from_be_bytes(self.array()?);
                self.push_float(v)?;
            }
            op::FLOAT => {
                let line = self.text_line()?;
                let v = line
                    .parse::<f64>()
                    .map_err(|_| self.error(format!("invalid float {line:?}")))?;
                self.push_float(v)?;
            }
            op::SHORT_BINUNICODE => {
                let n = usize::from(self.byte()?);
                self.push_utf8(n)?;
            }
            op::BINUNICODE => {
                let n = self.len4()?;
                self.push_utf8(n)?;
            }
            op::BINUNICODE8 => {
                let n = self.len8()?;
                self.push_utf8(n)?;
            }
            op::UNICODE => {
                let line = self.line()?;
                let text = raw_unicode_escape(line).map_err(|e| self.error(e))?;
                self.push(Node::Str(text));
            }
            op::SHORT_BINSTRING => {
                let n = usize::from(self.byte()?);
                let bytes = self.take(n)?;
                self.push_ascii(bytes.to_vec())?;
            }
            op::BINSTRING => {
                let n = i32::from_le_bytes(self.array()?);
                let n = usize::try_from(n).map_err(|_| self.error("negative BINSTRING size"))?;
                let bytes = self.take(n)?;
                self.push_ascii(bytes.to_vec())?;
            }
            op::STRING => {
                let line = self.line()?;
                let bytes = python2_string_literal(line).map_err(|e| self.error(e))?;
                self.push_ascii(bytes)?;
            }
            op::SHORT_BINBYTES => {
                let n = usize::from(self.byte()?);
                let bytes = self.take(n)?.to_vec();
                self.push(Node::Bytes(bytes));
            }
            op::BINBYTES => {
                let n = self.len4()?;
                let bytes = self.take(n)?.to_vec();
                self.push(Node::Bytes(bytes));
            }
            op::BINBYTES8 | op::BYTEARRAY8 => {
                let n = self.len8()?;
                let bytes = self.take(n)?.to_vec();
                self.push(Node::Bytes(bytes));
            }
            op::EMPTY_LIST => self.push(Node::List(Vec::new())),
            op::EMPTY_DICT => self.push(Node::Dict(Vec::new())),
            op::EMPTY_TUPLE => self.push(Node::Tuple(Vec::new())),
            op::LIST => {
                let items = self.pop_mark_nodes()?;
                self.push(Node::List(items));
            }
            op::TUPLE => {
                let items = self.pop_mark_nodes()?;
                self.push(Node::Tuple(items));
            }
            op::TUPLE1 | op::TUPLE2 | op::TUPLE3 => {
                let n = usize::from(opcode - op::TUPLE1 + 1);
                if self.stack.len() < n {
                    return Err(self.underflow());
                }
                let items = self.stack.split_off(self.stack.len() - n);
                let items = items
                    .into_iter()
                    .map(|item| self.node_of(item))
                    .collect::<Result<_, _>>()?;
                self.push(Node::Tuple(items));
            }
            op::DICT => {
                let items = self.pop_mark_nodes()?;
                let pairs = self.pairs(items)?;
                self.push(Node::Dict(pairs));
            }
            op::APPEND => {
                let item = self.pop()?;
                let item = self.node_of(item)?;
                self.list_mut()?.push(item);
            }
            op::APPENDS => {
                let items = self.pop_mark_nodes()?;
                self.list_mut()?.extend(items);
            }
            op::SETITEM => {
                let value = self.pop()?;
                let key = self.pop()?;
                let pair = (self.node_of(key)?, self.node_of(value)?);
                self.dict_mut()?.push(pair);
            }
            op::SETITEMS => {
                let items = self.pop_mark_nodes()?;
                let pairs = self.pairs(items)?;
                self.dict_mut()?.extend(pairs);
            }
            op::PUT => {
                let index = self.parse_index()?;
                self.memoize(index)?;
            }
            op::BINPUT => {
                let index = u64::from(self.byte()?);
                self.memoize(index)?;
            }
            op::LONG_BINPUT => {
                let index = u64::from(u32::from_le_bytes(self.array()?));
                self.memoize(index)?;
            }
            op::MEMOIZE => {
                let index = self.memo.len() as u64;
                self.memoize(index)?;
            }
            op::GET => {
                let index = self.parse_index()?;
                self.recall(index)?;
            }
            op::BINGET => {
                let index = u64::from(self.byte()?);
                self.recall(index)?;
            }
            op::LONG_BINGET => {
                let index = u64::from(u32::from_le_bytes(self.array()?));
                self.recall(index)?;
            }
            op::GLOBAL => {
                let module = self.text_line()?.to_owned();
                let name = self.text_line()?.to_owned();
                self.global("GLOBAL", &module, &name)?;
            }
            op::STACK_GLOBAL => {
                let name = self.pop()?;
                let module = self.pop()?;
                let (module, name) = (self.global_part(module), self.global_part(name));
                self.global("STACK_GLOBAL", &module, &name)?;
            }
            op::REDUCE => self.reduce()?,
            other => {
                return Err(match refused(other) {
                    Some((name, what)) => {
                        self.error(format!("refusing opcode {name} ({what}): {PLAIN_DATA}"))
                    }
                    None => self.error(format!("invalid pickle opcode 0x{other:02x}")),
                })
            }
        }
        Ok(())
    }

    fn global(&mut self, opcode: &str, module: &str, name: &str) -> Result<(), String> {
        match Known::named(module, name) {
            Some(known) => {
                self.stack.push(Item::Callable(known));
                Ok(())
            }
            None => Err(self.error(format!(
                "refusing to load the global `{module}.{name}` (opcode {opcode}): {PLAIN_DATA}"
            ))),
        }
    }

    /// A STACK_GLOBAL operand, for the error message.
    fn global_part(&self, item: Item) -> String {
        match item {
            Item::Node(id) => match &self.nodes[id] {
                Node::Str(text) => text.clone(),
                other => format!("<{}>", other.kind()),
            },
            _ => "<?>".to_owned(),
        }
    }

    /// REDUCE, for the known callables only; anything else was refused when it was loaded.
    fn reduce(&mut self) -> Result<(), String> {
        let args = self.pop()?;
        let callable = self.pop()?;
        let Item::Callable(known) = callable else {
            return Err(self.error(format!(
                "refusing opcode REDUCE (calls an object): {PLAIN_DATA}"
            )));
        };
        let args = match args {
            Item::Node(id) => match &self.nodes[id] {
                Node::Tuple(items) => items.clone(),
                _ => return Err(self.error("REDUCE arguments are not a tuple")),
            },
            _ => return Err(self.error("REDUCE arguments are not a tuple")),
        };
        let args: Vec<&Node> = args.iter().map(|&id| &self.nodes[id]).collect();
        let bytes = match (known, args.as_slice()) {
            (Known::CodecsEncode, [Node::Str(text), Node::Str(encoding)])
                if matches!(encoding.as_str(), "latin1" | "latin-1") =>
            {
                text.chars()
                    .map(|c| u8::try_from(u32::from(c)))
                    .collect::<Result<Vec<u8>, _>>()
                    .map_err(|_| self.error("a latin1 text has a character above U+00FF"))?
            }
            (Known::Bytes | Known::Bytearray, []) => Vec::new(),
            (Known::Bytearray, [Node::Bytes(bytes)]) => bytes.clone(),
            _ => {
                return Err(self.error(format!(
                    "refusing opcode REDUCE with arguments other than Python's own pickler \
                     writes for bytes: {PLAIN_DATA}"
                )))
            }
        };
        Self::spend(&mut self.budget, bytes.len()).map_err(|e| self.error(e))?;
        self.push(Node::Bytes(bytes));
        Ok(())
    }

    // --- the stack

    fn push(&mut self, node: Node) {
        self.nodes.push(node);
        self.stack.push(Item::Node(self.nodes.len() - 1));
    }

    fn push_int(&mut self, v: i128) -> Result<(), String> {
        let number = if let Ok(v) = i64::try_from(v) {
            Number::from(v)
        } else if let Ok(v) = u64::try_from(v) {
            Number::from(v)
        } else {
            return Err(self.error(format!("the integer {v} does not fit in 64 bits")));
        };
        self.push(Node::Scalar(Value::Number(number)));
        Ok(())
    }

    fn push_float(&mut self, v: f64) -> Result<(), String> {
        let number = Number::from_f64(v)
            .ok_or_else(|| self.error(format!("the float {v} has no JSON form")))?;
        self.push(Node::Scalar(Value::Number(number)));
        Ok(())
    }

    fn push_utf8(&mut self, n: usize) -> Result<(), String> {
        let bytes = self.take(n)?;
        let text = std::str::from_utf8(bytes)
            .map_err(|_| self.error("a str is not valid UTF-8"))?
            .to_owned();
        self.push(Node::Str(text));
        Ok(())
    }

    /// A Python 2 `str`, which Python 3 reads as ASCII text by default.
    fn push_ascii(&mut self, bytes: Vec<u8>) -> Result<(), String> {
        if !bytes.is_ascii() {
            return Err(self.error("a Python 2 str is not ASCII"));
        }
        let text = String::from_utf8(bytes).expect("ASCII is UTF-8");
        self.push(Node::Str(text));
        Ok(())
    }

    fn pop(&mut self) -> Result<Item, String> {
        self.stack.pop().ok_or_else(|| self.underflow())
    }

    /// The items above the topmost mark, removing them and the mark.
    fn pop_mark(&mut self) -> Result<Vec<Item>, String> {
        let mark = self
            .stack
            .iter()
            .rposition(|item| *item == Item::Mark)
            .ok_or_else(|| self.error("no MARK on the stack"))?;
        let items = self.stack.split_off(mark + 1);
        self.stack.pop();
        Ok(items)
    }

    fn pop_mark_nodes(&mut self) -> Result<Vec<NodeId>, String> {
        let items = self.pop_mark()?;
        items.into_iter().map(|item| self.node_of(item)).collect()
    }

    fn node_of(&self, item: Item) -> Result<NodeId, String> {
        match item {
            Item::Node(id) => Ok(id),
            Item::Mark => Err(self.error("a MARK where a value was expected")),
            Item::Callable(_) => {
                Err(self.error(format!("a global where a value was expected: {PLAIN_DATA}")))
            }
        }
    }

    fn pairs(&self, items: Vec<NodeId>) -> Result<Vec<(NodeId, NodeId)>, String> {
        if items.len() % 2 != 0 {
            return Err(self.error("a dict with a key but no value"));
        }
        Ok(items.chunks(2).map(|pair| (pair[0], pair[1])).collect())
    }

    fn top_node(&mut self) -> Result<&mut Node, String> {
        match self.stack.last() {
            Some(Item::Node(id)) => Ok(&mut self.nodes[*id]),
            Some(_) => Err(self.error("no value on the stack")),
            None => Err(self.underflow()),
        }
    }

    fn list_mut(&mut self) -> Result<&mut Vec<NodeId>, String> {
        let at = self.at;
        match self.top_node()? {
            Node::List(items) => Ok(items),
            other => Err(format!(
                "pickle: cannot append to a {} (at byte {at})",
                other.kind()
            )),
        }
    }

    fn dict_mut(&mut self) -> Result<&mut Vec<(NodeId, NodeId)>, String> {
        let at = self.at;
        match self.top_node()? {
            Node::Dict(pairs) => Ok(pairs),
            other => Err(format!(
                "pickle: cannot set an item of a {} (at byte {at})",
                other.kind()
            )),
        }
    }

    fn memoize(&mut self, index: u64) -> Result<(), String> {
        let top = *self.stack.last().ok_or_else(|| self.underflow())?;
        if top == Item::Mark {
            return Err(self.error("cannot memoize a MARK"));
        }
        self.memo.insert(index, top);
        Ok(())
    }

    fn recall(&mut self, index: u64) -> Result<(), String> {
        let item = *self
            .memo
            .get(&index)
            .ok_or_else(|| self.error(format!("memo entry {index} is not defined")))?;
        self.stack.push(item);
        Ok(())
    }

    // --- the input

    fn error(&self, reason: impl std::fmt::Display) -> String {
        format!("pickle: {reason} (at byte {})", self.at)
    }

    fn underflow(&self) -> String {
        self.error("stack underflow")
    }

    fn byte(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.data.len())
            .ok_or_else(|| self.error("truncated pickle"))?;
        let bytes = &self.data[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }

    fn len4(&mut self) -> Result<usize, String> {
        Ok(u32::from_le_bytes(self.array()?) as usize)
    }

    fn len8(&mut self) -> Result<usize, String> {
        let n = u64::from_le_bytes(self.array()?);
        usize::try_from(n).map_err(|_| self.error("truncated pickle"))
    }

    /// The bytes up to the next newline, which is consumed.
    fn line(&mut self) -> Result<&'a [u8], String> {
        let rest = &self.data[self.pos..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| self.error("truncated pickle: no end of line"))?;
        self.pos += end + 1;
        Ok(&rest[..end])
    }

    fn text_line(&mut self) -> Result<&'a str, String> {
        let line = self.line()?;
        std::str::from_utf8(line).map_err(|_| self.error("a text operand is not UTF-8"))
    }

    fn parse_int(&self, text: &str) -> Result<i128, String> {
        text.parse::<i128>()
            .map_err(|_| self.error(format!("invalid or too large integer {text:?}")))
    }

    fn parse_index(&mut self) -> Result<u64, String> {
        let line = self.text_line()?;
        line.parse::<u64>()
            .map_err(|_| self.error(format!("invalid memo index {line:?}")))
    }

    /// A little-endian two's complement integer (LONG1, LONG4).
    fn decode_long(&self, bytes: &[u8]) -> Result<i128, String> {
        if bytes.len() > 16 {
            return Err(self.error("an integer does not fit in 64 bits"));
        }
        let negative = bytes.last().is_some_and(|&b| b & 0x80 != 0);
        let mut buffer = [if negative { 0xff } else { 0 }; 16];
        buffer[..bytes.len()].copy_from_slice(bytes);
        Ok(i128::from_le_bytes(buffer))
    }

    // --- the result

    fn to_value(&self, id: NodeId, depth: usize, budget: &mut usize) -> Result<Value, String> {
        if depth > MAX_DEPTH {
            return Err(format!(
                "pickle: nested more than {MAX_DEPTH} levels deep, or a container holds itself"
            ));
        }
        let copied = match &self.nodes[id] {
            Node::Str(text) => text.len(),
            Node::Bytes(bytes) => bytes.len(),
            _ => 0,
        };
        Self::spend(budget, 1 + copied)?;
        Ok(match &self.nodes[id] {
            Node::Scalar(value) => value.clone(),
            Node::Str(text) => Value::String(text.clone()),
            Node::Bytes(bytes) => kombu::bytes_value(bytes),
            Node::List(items) | Node::Tuple(items) => Value::Array(
                items
                    .iter()
                    .map(|&item| self.to_value(item, depth + 1, budget))
                    .collect::<Result<_, _>>()?,
            ),
            Node::Dict(pairs) => {
                let mut map = Map::with_capacity(pairs.len());
                for &(key, value) in pairs {
                    let key = self.json_key(key)?;
                    Self::spend(budget, key.len())?;
                    map.insert(key, self.to_value(value, depth + 1, budget)?);
                }
                Value::Object(map)
            }
        })
    }

    /// A dict key as `json.dumps` writes it.
    fn json_key(&self, id: NodeId) -> Result<String, String> {
        Ok(match &self.nodes[id] {
            Node::Str(text) => text.clone(),
            Node::Scalar(Value::Null) => "null".to_owned(),
            Node::Scalar(Value::Bool(b)) => b.to_string(),
            Node::Scalar(Value::Number(n)) => match n.as_f64() {
                Some(f) if n.is_f64() => python_float_repr(f),
                _ => n.to_string(),
            },
            other => {
                return Err(format!(
                    "pickle: a dict key of type {} has no JSON form",
                    other.kind()
                ))
            }
        })
    }
}

/// Python's `raw-unicode-escape` (the UNICODE opcode): `\u` escapes of 4 hex digits and `\U`
/// escapes of 8, every other byte a Latin-1 character.
fn raw_unicode_escape(bytes: &[u8]) -> Result<String, String> {
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escape = match bytes.get(i..i + 2) {
            Some(b"\\u") => Some(4),
            Some(b"\\U") => Some(8),
            _ => None,
        };
        if let Some(digits) = escape {
            let hex = bytes
                .get(i + 2..i + 2 + digits)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .ok_or("a truncated \\u escape in a UNICODE operand")?;
            out.push(char::from_u32(hex).ok_or("an invalid character in a UNICODE operand")?);
            i += 2 + digits;
        } else {
            out.push(char::from(bytes[i]));
            i += 1;
        }
    }
    Ok(out)
}

/// The operand of STRING: a quoted Python 2 string literal.
fn python2_string_literal(line: &[u8]) -> Result<Vec<u8>, String> {
    let body = match line {
        [b'\'', body @ .., b'\''] | [b'"', body @ .., b'"'] => body,
        _ => return Err("a STRING operand is not quoted".to_owned()),
    };
    let mut out = Vec::with_capacity(body.len());
    let mut bytes = body.iter().copied();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        let escaped = bytes.next().ok_or("a STRING operand ends in a backslash")?;
        out.push(match escaped {
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'0' => 0,
            b'\\' | b'\'' | b'"' => escaped,
            b'x' => {
                let hex = [bytes.next(), bytes.next()];
                let [Some(hi), Some(lo)] = hex else {
                    return Err("a truncated \\x escape in a STRING operand".to_owned());
                };
                std::str::from_utf8(&[hi, lo])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or("an invalid \\x escape in a STRING operand")?
            }
            other => {
                return Err(format!(
                    "an unsupported escape \\{} in a STRING operand",
                    char::from(other)
                ))
            }
        });
    }
    Ok(out)
}
