//! Keeps header tables nested too deep for lapin away from it.
//!
//! lapin reads every frame on its I/O thread with amq-protocol's parser, which reads a field
//! table or array inside another by recursion, with no depth limit. RabbitMQ passes on any
//! header table that fits its frame size (128 KiB: about 26,000 arrays one inside the other),
//! and a few thousand levels overflow the I/O thread's stack: the process aborts before this
//! crate sees the message, and the message, never acknowledged, aborts the next worker too.
//!
//! So the connection's socket is read through [`NestingGuard`], which follows the frames as they
//! arrive and looks at each content header (the frame that carries a message's properties)
//! before lapin does, without recursion. From a header table nested deeper than
//! [`MAX_HEADER_NESTING`], the entries that go too deep are dropped and [`UNREADABLE_HEADERS`]
//! added, whose text says why (`id`, `task`, RabbitMQ's `x-death`, … survive); the worker
//! then refuses the message as any undecodable one (a FAILURE stored under its id, rejected,
//! dead-lettered when the queue has a dead-letter exchange). Every other frame passes
//! unchanged.
//!
//! The guard sits in the socket that lapin's runtime kit connects: [`GuardedTokio`] is lapin's
//! own tokio kit with the TCP stream wrapped.

use std::future::Future;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_rs::traits::{Executor, Reactor, RuntimeKit};
use async_rs::util::Task;
use async_rs::Tokio;
use futures_core::Stream;
use futures_io::{AsyncRead, AsyncWrite};

use crate::protocol::UNREADABLE_HEADERS;

/// The deepest header table passed to lapin: as deep as a body may nest
/// (`serializer::MAX_NESTING`); Celery's own headers nest three levels at most.
pub(crate) const MAX_HEADER_NESTING: usize = crate::serializer::MAX_NESTING;

const FRAME_HEADER_LEN: usize = 7;
const CONTENT_HEADER_FRAME: u8 = 2;
const FRAME_END: u8 = 0xCE;
const BASIC_CLASS: u16 = 60;
/// A content header frame larger than this is passed on unread. RabbitMQ takes no frame over
/// its `frame_max` (128 KiB by default), so none this large comes from it; and lapin would
/// wait for all of it as well.
const MAX_INSPECTED_FRAME: usize = 64 << 20;

/// lapin's tokio runtime kit, connecting through a [`NestingGuard`]. (This crate speaks plain
/// `amqp://` only: a TLS socket would carry records, not frames, for the guard to read.)
#[derive(Clone, Debug)]
pub(crate) struct GuardedTokio {
    tokio: Tokio,
}

impl GuardedTokio {
    /// Bound to the current tokio runtime, as lapin's default kit is.
    pub(crate) fn current() -> Self {
        GuardedTokio {
            tokio: Tokio::current(),
        }
    }
}

impl RuntimeKit for GuardedTokio {}

impl Executor for GuardedTokio {
    type Task<T: Send + 'static> = <Tokio as Executor>::Task<T>;

    fn block_on<T, F: Future<Output = T>>(&self, f: F) -> T {
        self.tokio.block_on(f)
    }

    fn spawn<T: Send + 'static, F: Future<Output = T> + Send + 'static>(
        &self,
        f: F,
    ) -> Task<Self::Task<T>> {
        self.tokio.spawn(f)
    }

    fn spawn_blocking<T: Send + 'static, F: FnOnce() -> T + Send + 'static>(
        &self,
        f: F,
    ) -> Task<Self::Task<T>> {
        self.tokio.spawn_blocking(f)
    }
}

impl Reactor for GuardedTokio {
    type TcpStream = NestingGuard<<Tokio as Reactor>::TcpStream>;
    type Sleep = <Tokio as Reactor>::Sleep;

    fn register<H: Read + Write + AsFd + AsRawFd + Send + 'static>(
        &self,
        socket: H,
    ) -> io::Result<impl AsyncRead + AsyncWrite + Send + Unpin + 'static> {
        self.tokio.register(socket)
    }

    fn sleep(&self, dur: Duration) -> Self::Sleep {
        self.tokio.sleep(dur)
    }

    fn interval(&self, dur: Duration) -> impl Stream<Item = Instant> + Send + 'static {
        self.tokio.interval(dur)
    }

    fn tcp_connect_addr(
        &self,
        addr: SocketAddr,
    ) -> impl Future<Output = io::Result<Self::TcpStream>> + Send + 'static {
        let connecting = self.tokio.tcp_connect_addr(addr);
        async move { Ok(NestingGuard::new(connecting.await?)) }
    }
}

/// A socket read frame by frame, content headers nested too deep rewritten (module docs).
///
/// Bytes read from the socket wait in `buffer[..filled]`: `[start..ready]` has been looked at
/// and is lapin's to read, `[ready..filled]` not yet. Frames other than content headers are
/// passed on as their bytes come (`passing` counts what is left of the current one, and when
/// nothing waits they are read straight into lapin's buffer); a content header is held until
/// it is whole. The buffer keeps its size (it grows only for a frame larger than it), so
/// that a read does not clear memory first.
pub(crate) struct NestingGuard<S> {
    inner: S,
    /// False once the stream turned out not to be frames (the server's protocol header).
    inspect: bool,
    buffer: Vec<u8>,
    start: usize,
    ready: usize,
    filled: usize,
    passing: usize,
}

/// The guard's buffer to begin with, and the least room it reads into.
const BUFFER_SIZE: usize = 64 * 1024;

impl<S> NestingGuard<S> {
    pub(crate) fn new(inner: S) -> Self {
        NestingGuard {
            inner,
            inspect: true,
            buffer: Vec::new(),
            start: 0,
            ready: 0,
            filled: 0,
            passing: 0,
        }
    }

    /// Moves `ready` over every frame (or part of one) that can be handed on.
    fn look(&mut self) {
        loop {
            if self.passing > 0 {
                let available = (self.filled - self.ready).min(self.passing);
                self.ready += available;
                self.passing -= available;
                if self.passing > 0 {
                    return;
                }
            }
            let pending = &self.buffer[self.ready..self.filled];
            if !self.inspect || pending.first() == Some(&b'A') {
                // The server's protocol header (it refused our version), not frames.
                self.inspect = false;
                self.ready = self.filled;
                return;
            }
            if pending.len() < FRAME_HEADER_LEN {
                return;
            }
            let size = u32::from_be_bytes([pending[3], pending[4], pending[5], pending[6]]);
            let total = (size as usize).saturating_add(FRAME_HEADER_LEN + 1);
            if pending[0] != CONTENT_HEADER_FRAME || total > MAX_INSPECTED_FRAME {
                self.passing = total;
                continue;
            }
            if pending.len() < total {
                return;
            }
            let end = self.ready + total;
            match guarded_content_header(&self.buffer[self.ready..end]) {
                None => self.ready = end,
                Some(rewritten) => {
                    // Rare (a message built to harm): a new buffer is simplest.
                    let mut rebuilt = Vec::with_capacity(self.buffer.len() + rewritten.len());
                    rebuilt.extend_from_slice(&self.buffer[..self.ready]);
                    rebuilt.extend_from_slice(&rewritten);
                    rebuilt.extend_from_slice(&self.buffer[end..self.filled]);
                    self.ready += rewritten.len();
                    self.filled = rebuilt.len();
                    rebuilt.resize(self.buffer.len().max(self.filled + BUFFER_SIZE), 0);
                    self.buffer = rebuilt;
                }
            }
        }
    }

    /// Room to read into: what was handed on is dropped from the front, and the buffer grows
    /// when a frame held whole fills it.
    fn make_room(&mut self) {
        if self.start > 0 {
            self.buffer.copy_within(self.start..self.filled, 0);
            self.ready -= self.start;
            self.filled -= self.start;
            self.start = 0;
        }
        if self.buffer.len() - self.filled < BUFFER_SIZE / 4 {
            let size = (self.buffer.len() * 2).max(BUFFER_SIZE);
            self.buffer.resize(size, 0);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for NestingGuard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        loop {
            if this.start < this.ready {
                let n = out.len().min(this.ready - this.start);
                out[..n].copy_from_slice(&this.buffer[this.start..this.start + n]);
                this.start += n;
                if this.start == this.filled {
                    this.start = 0;
                    this.ready = 0;
                    this.filled = 0;
                }
                return Poll::Ready(Ok(n));
            }
            let empty = this.filled == 0;
            if empty && (!this.inspect || this.passing > 0) {
                // Nothing held, and the next bytes need no look (the rest of a frame, a body
                // usually): straight into lapin's buffer.
                let want = if this.inspect {
                    out.len().min(this.passing)
                } else {
                    out.len()
                };
                let read =
                    std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, &mut out[..want]))?;
                if this.inspect {
                    this.passing -= read;
                }
                return Poll::Ready(Ok(read));
            }
            this.make_room();
            let room = &mut this.buffer[this.filled..];
            let read = std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, room))?;
            if read == 0 {
                // The end of the stream: whatever was held goes on, for lapin to judge.
                if this.ready == this.filled {
                    return Poll::Ready(Ok(0));
                }
                this.ready = this.filled;
                continue;
            }
            this.filled += read;
            this.look();
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for NestingGuard<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// A whole content header frame: `None` to pass it on as it is, or the frame with its header
/// table rewritten when the table nests deeper than [`MAX_HEADER_NESTING`].
///
/// Anything that does not read as a basic content header is passed on: lapin refuses a
/// malformed frame with a connection error, which costs nothing but a reconnection.
fn guarded_content_header(frame: &[u8]) -> Option<Vec<u8>> {
    if frame.last() != Some(&FRAME_END) {
        return None;
    }
    let payload = &frame[FRAME_HEADER_LEN..frame.len() - 1];
    let mut reader = Reader::new(payload);
    if reader.u16()? != BASIC_CLASS {
        return None;
    }
    reader.skip(2 + 8)?; // weight, body size
    let mut flags = reader.u16()?;
    let first_flags = flags;
    while flags & 1 == 1 {
        flags = reader.u16()?;
    }
    // The basic class's properties, from the high bit: content-type, content-encoding, headers.
    if first_flags & (1 << 13) == 0 {
        return None;
    }
    // content-type, content-encoding: short strings.
    for bit in [15, 14] {
        if first_flags & (1 << bit) != 0 {
            let length = reader.u8()?;
            reader.skip(usize::from(length))?;
        }
    }
    let table_start = reader.at;
    let table = reader.prefixed()?;
    let table_end = reader.at;
    // Each level inside the table costs at least 5 bytes (a type and a length): a table this
    // short cannot go too deep, and Celery's headers (a few hundred bytes) are not walked.
    if table.len() < 5 * MAX_HEADER_NESTING {
        return None;
    }
    match nesting(table, true, MAX_HEADER_NESTING) {
        Nesting::Within | Nesting::Unreadable => None,
        Nesting::Deeper => {
            let mut rewritten = Vec::with_capacity(frame.len());
            rewritten.extend_from_slice(&frame[..FRAME_HEADER_LEN]);
            rewritten.extend_from_slice(&payload[..table_start]);
            let entries = entries_within(table);
            rewritten.extend_from_slice(&(entries.len() as u32).to_be_bytes());
            rewritten.extend_from_slice(&entries);
            rewritten.extend_from_slice(&payload[table_end..]);
            rewritten.push(FRAME_END);
            let size = (rewritten.len() - FRAME_HEADER_LEN - 1) as u32;
            rewritten[3..FRAME_HEADER_LEN].copy_from_slice(&size.to_be_bytes());
            Some(rewritten)
        }
    }
}

/// The table's entries that nest within [`MAX_HEADER_NESTING`] (the table itself is the first
/// level), then [`UNREADABLE_HEADERS`] saying why the others are gone.
fn entries_within(table: &[u8]) -> Vec<u8> {
    let mut entries = Vec::new();
    let mut reader = Reader::new(table);
    while reader.at < table.len() {
        let entry_start = reader.at;
        let Some(key_length) = reader.u8() else { break };
        if reader.skip(usize::from(key_length)).is_none() {
            break;
        }
        let Some(kind) = reader.u8() else { break };
        if matches!(kind, b'A' | b'F') {
            let Some(inner) = reader.prefixed() else {
                break;
            };
            if nesting(inner, kind == b'F', MAX_HEADER_NESTING - 1) != Nesting::Within {
                continue;
            }
        } else if reader.value(kind).is_none() {
            break;
        }
        entries.extend_from_slice(&table[entry_start..reader.at]);
    }
    let reason = format!(
        "header table nested deeper than {MAX_HEADER_NESTING} levels: its nested entries were \
         dropped before the AMQP client read them"
    );
    entries.push(UNREADABLE_HEADERS.len() as u8);
    entries.extend_from_slice(UNREADABLE_HEADERS.as_bytes());
    entries.push(b'S');
    entries.extend_from_slice(&(reason.len() as u32).to_be_bytes());
    entries.extend_from_slice(reason.as_bytes());
    entries
}

#[derive(Debug, PartialEq, Eq)]
enum Nesting {
    Within,
    Deeper,
    /// Not a field table as amq-protocol reads one: lapin will say so.
    Unreadable,
}

/// How deep the contents of a field table (or array) nest, counting the container itself as the
/// first level; read with a stack of where each open table or array ends.
fn nesting(container: &[u8], is_table: bool, limit: usize) -> Nesting {
    // (end, whether it is a table: its entries have names)
    let mut open: Vec<(usize, bool)> = vec![(container.len(), is_table)];
    let mut reader = Reader::new(container);
    while let Some(&(end, is_table)) = open.last() {
        if reader.at == end {
            open.pop();
            continue;
        }
        if reader.at > end {
            return Nesting::Unreadable;
        }
        if is_table {
            let Some(key_length) = reader.u8() else {
                return Nesting::Unreadable;
            };
            if reader.skip(usize::from(key_length)).is_none() {
                return Nesting::Unreadable;
            }
        }
        let Some(kind) = reader.u8() else {
            return Nesting::Unreadable;
        };
        if matches!(kind, b'A' | b'F') {
            let Some(length) = reader.u32() else {
                return Nesting::Unreadable;
            };
            let Some(inner_end) = reader.at.checked_add(length as usize).filter(|e| *e <= end)
            else {
                return Nesting::Unreadable;
            };
            if open.len() >= limit {
                return Nesting::Deeper;
            }
            open.push((inner_end, kind == b'F'));
        } else if reader.value(kind).is_none() {
            return Nesting::Unreadable;
        }
    }
    Nesting::Within
}

/// Big-endian reads over a byte slice; `None` past its end.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, at: 0 }
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let taken = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(taken)
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(drop)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A 32-bit length, then that many bytes.
    fn prefixed(&mut self) -> Option<&'a [u8]> {
        let length = self.u32()?;
        self.take(length as usize)
    }

    /// Skips a scalar value of this field type (amq-protocol's letters, RabbitMQ's flavour).
    fn value(&mut self, kind: u8) -> Option<()> {
        let fixed = match kind {
            b'V' => 0,
            b't' | b'b' | b'B' => 1,
            b's' | b'U' | b'u' => 2,
            b'I' | b'i' | b'f' => 4,
            b'D' => 5,
            b'l' | b'L' | b'd' | b'T' => 8,
            b'S' | b'x' => return self.prefixed().map(drop),
            _ => return None,
        };
        self.skip(fixed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::protocol::basic::{gen_properties, parse_properties, AMQPProperties};
    use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString};

    fn frame(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
        let mut bytes = vec![kind];
        bytes.extend_from_slice(&channel.to_be_bytes());
        bytes.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        bytes.extend_from_slice(payload);
        bytes.push(FRAME_END);
        bytes
    }

    /// A content header frame as lapin writes one, with these properties.
    fn content_header(properties: &AMQPProperties) -> Vec<u8> {
        let mut payload = Vec::new();
        payload.extend_from_slice(&BASIC_CLASS.to_be_bytes());
        payload.extend_from_slice(&0u16.to_be_bytes());
        payload.extend_from_slice(&42u64.to_be_bytes());
        let (written, _) = cookie_factory::gen(gen_properties(properties), Vec::new()).unwrap();
        payload.extend_from_slice(&written);
        frame(CONTENT_HEADER_FRAME, 1, &payload)
    }

    /// The properties of a content header frame, read by lapin's parser.
    fn read_properties(frame: &[u8]) -> AMQPProperties {
        assert_eq!(frame[0], CONTENT_HEADER_FRAME);
        let size = u32::from_be_bytes(frame[3..7].try_into().unwrap()) as usize;
        assert_eq!(frame.len(), FRAME_HEADER_LEN + size + 1, "frame size");
        assert_eq!(frame.last(), Some(&FRAME_END));
        let payload = &frame[FRAME_HEADER_LEN..frame.len() - 1];
        assert_eq!(u64::from_be_bytes(payload[4..12].try_into().unwrap()), 42);
        let (rest, properties) = parse_properties(&payload[12..]).unwrap();
        assert!(rest.is_empty());
        properties
    }

    fn properties(headers: FieldTable) -> AMQPProperties {
        AMQPProperties::default()
            .with_content_type("application/json".into())
            .with_content_encoding("utf-8".into())
            .with_headers(headers)
            .with_delivery_mode(2)
            .with_correlation_id("4b2a1c5e".into())
    }

    fn nested_arrays(depth: usize) -> AMQPValue {
        let mut value = AMQPValue::LongInt(7);
        for _ in 0..depth {
            value = AMQPValue::FieldArray(FieldArray::from(vec![value]));
        }
        value
    }

    fn task_headers(deep: AMQPValue) -> FieldTable {
        let mut headers = FieldTable::default();
        headers.insert("id".into(), AMQPValue::LongString(LongString::from("abc")));
        headers.insert("task".into(), AMQPValue::LongString(LongString::from("t")));
        headers.insert("retries".into(), AMQPValue::LongInt(2));
        let limits = vec![AMQPValue::Void, AMQPValue::Double(1.5)];
        headers.insert("timelimit".into(), AMQPValue::FieldArray(limits.into()));
        // As deep as a header may go: the table, then 127 arrays.
        headers.insert("edge".into(), nested_arrays(MAX_HEADER_NESTING - 1));
        headers.insert("deep".into(), deep);
        headers
    }

    /// A reader handing out its bytes in chunks of the given sizes, in turn.
    struct Chunked {
        bytes: Vec<u8>,
        at: usize,
        sizes: Vec<usize>,
        turn: usize,
    }

    impl AsyncRead for Chunked {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            out: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            let size = self.sizes[self.turn % self.sizes.len()];
            self.turn += 1;
            let n = size.min(out.len()).min(self.bytes.len() - self.at);
            out[..n].copy_from_slice(&self.bytes[self.at..self.at + n]);
            self.at += n;
            Poll::Ready(Ok(n))
        }
    }

    /// Everything read through a guard, with reads into buffers of `out` bytes.
    fn through_guard(bytes: &[u8], sizes: &[usize], out: usize) -> Vec<u8> {
        let chunked = Chunked {
            bytes: bytes.to_vec(),
            at: 0,
            sizes: sizes.to_vec(),
            turn: 0,
        };
        let mut guard = NestingGuard::new(chunked);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut read = Vec::new();
        let mut buffer = vec![0; out];
        loop {
            match Pin::new(&mut guard).poll_read(&mut cx, &mut buffer) {
                Poll::Ready(Ok(0)) => return read,
                Poll::Ready(Ok(n)) => read.extend_from_slice(&buffer[..n]),
                other => panic!("{other:?}"),
            }
        }
    }

    /// A delivery as RabbitMQ sends one (method, content header, body), and a heartbeat.
    fn delivery(headers: FieldTable) -> Vec<u8> {
        let mut bytes = frame(1, 1, &[0, 60, 0, 60, 1, 2, 3]);
        bytes.extend(content_header(&properties(headers)));
        bytes.extend(frame(3, 1, &[b'x'; 42]));
        bytes.extend(frame(8, 0, &[]));
        bytes
    }

    #[test]
    fn frames_pass_unchanged_however_they_are_split() {
        let mut stream = Vec::new();
        for depth in [0, 1, 5, MAX_HEADER_NESTING - 1] {
            stream.extend(delivery(task_headers(nested_arrays(depth))));
        }
        stream.extend(delivery(FieldTable::default()));
        for (sizes, out) in [
            (vec![1], 1),
            (vec![1, 2, 3, 5, 8, 13, 21], 7),
            (vec![4096], 4096),
            (vec![7, 1000, 3], 64),
            (vec![100_000], 131_072),
            (vec![9, 1], 3),
        ] {
            assert!(
                through_guard(&stream, &sizes, out) == stream,
                "chunks {sizes:?}, reads of {out}"
            );
        }
    }

    #[test]
    fn entries_nested_too_deep_are_dropped_and_the_reason_added() {
        let deep = delivery(task_headers(nested_arrays(MAX_HEADER_NESTING)));
        let read = through_guard(&deep, &[3, 500, 17], 100);
        let method = &read[..15];
        assert_eq!(method, &deep[..15], "the method frame is untouched");
        let header_size = u32::from_be_bytes(read[18..22].try_into().unwrap()) as usize;
        let header = &read[15..15 + FRAME_HEADER_LEN + header_size + 1];
        let properties = read_properties(header);
        assert_eq!(
            properties.content_type().as_ref().map(|s| s.as_str()),
            Some("application/json")
        );
        assert_eq!(
            properties.content_encoding().as_ref().map(|s| s.as_str()),
            Some("utf-8")
        );
        assert_eq!(*properties.delivery_mode(), Some(2));
        assert_eq!(
            properties.correlation_id().as_ref().map(|s| s.as_str()),
            Some("4b2a1c5e")
        );
        let headers = properties.headers().as_ref().unwrap();
        let keys: Vec<&str> = headers.inner().keys().map(|k| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "edge",
                "id",
                "retries",
                "task",
                "timelimit",
                UNREADABLE_HEADERS
            ]
        );
        assert_eq!(
            headers.inner()["edge"],
            nested_arrays(MAX_HEADER_NESTING - 1)
        );
        assert_eq!(
            headers.inner()["id"],
            AMQPValue::LongString(LongString::from("abc"))
        );
        assert_eq!(headers.inner()["retries"], AMQPValue::LongInt(2));
        let AMQPValue::LongString(reason) = &headers.inner()[UNREADABLE_HEADERS] else {
            panic!("{headers:?}");
        };
        assert!(
            String::from_utf8_lossy(reason.as_bytes()).contains("deeper than 128 levels"),
            "{reason:?}"
        );
        let rest = &read[15 + header.len()..];
        assert_eq!(rest, &deep[deep.len() - rest.len()..], "body and heartbeat");
    }

    /// The deepest table a 128 KiB frame holds (arrays inside arrays, 5 bytes a level), read on
    /// a thread with a 64 KiB stack: the guard does not recurse.
    #[test]
    fn the_deepest_table_a_frame_holds_is_read_without_recursion() {
        const DEPTH: usize = 26_000;
        // Built from the inside out, without recursion: 'A', length, then the next level.
        let mut value = vec![b'V'];
        for _ in 0..DEPTH {
            let mut outer = vec![b'A'];
            outer.extend_from_slice(&(value.len() as u32).to_be_bytes());
            outer.extend(value);
            value = outer;
        }
        let mut table = vec![4];
        table.extend_from_slice(b"deep");
        table.extend(value);
        let mut payload = Vec::new();
        payload.extend_from_slice(&BASIC_CLASS.to_be_bytes());
        payload.extend_from_slice(&0u16.to_be_bytes());
        payload.extend_from_slice(&42u64.to_be_bytes());
        payload.extend_from_slice(&(1u16 << 13).to_be_bytes());
        payload.extend_from_slice(&(table.len() as u32).to_be_bytes());
        payload.extend(table);
        let deep = frame(CONTENT_HEADER_FRAME, 1, &payload);
        assert!(deep.len() < 131_072);
        let read = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || through_guard(&deep, &[65_536], 65_536))
            .unwrap()
            .join()
            .expect("no stack overflow");
        let headers = read_properties(&read).headers().clone().unwrap();
        let keys: Vec<&str> = headers.inner().keys().map(|k| k.as_str()).collect();
        assert_eq!(keys, [UNREADABLE_HEADERS]);
    }

    #[test]
    fn nesting_is_counted_by_tables_and_arrays() {
        let table = |headers: FieldTable| {
            cookie_factory::gen(
                lapin::types::generation::gen_field_table(&headers),
                Vec::new(),
            )
            .unwrap()
            .0[4..]
                .to_vec()
        };
        let mut inner = FieldTable::default();
        inner.insert("k".into(), nested_arrays(2));
        let mut outer = FieldTable::default();
        outer.insert("t".into(), AMQPValue::FieldTable(inner));
        outer.insert("s".into(), AMQPValue::LongString(LongString::from("x")));
        let bytes = table(outer);
        // The table itself, a table in it, two arrays in that.
        assert_eq!(nesting(&bytes, true, 4), Nesting::Within);
        assert_eq!(nesting(&bytes, true, 3), Nesting::Deeper);
        assert_eq!(
            nesting(&bytes[..bytes.len() - 1], true, 4),
            Nesting::Unreadable
        );
        assert_eq!(nesting(&[1, b'k', b'?'], true, 4), Nesting::Unreadable);
        assert_eq!(nesting(&[], true, 1), Nesting::Within);
        // An array's values have no names.
        assert_eq!(nesting(&[b'I', 0, 0, 0, 1], false, 1), Nesting::Within);
        assert_eq!(nesting(&[b'A', 0, 0, 0, 0], false, 1), Nesting::Deeper);
    }

    #[test]
    fn what_is_not_a_frame_passes_as_it_is() {
        // The server's protocol header (a version it does not speak), then anything.
        let mut bytes = b"AMQP\x00\x00\x09\x01".to_vec();
        bytes.extend(delivery(task_headers(nested_arrays(
            MAX_HEADER_NESTING + 5,
        ))));
        assert!(through_guard(&bytes, &[5], 3) == bytes);
        // A content header cut short by the end of the stream.
        let cut = &delivery(task_headers(nested_arrays(MAX_HEADER_NESTING + 5)))[..40];
        assert_eq!(through_guard(cut, &[7], 16), cut);
    }
}
