//! Compression of message bodies (Celery's `compression` option and `task_compression` setting).
//!
//! The `compression` header names the scheme by MIME type; receivers also accept the short names
//! (kombu's aliases):
//!
//! | name | aliases | `compression` header |
//! |---|---|---|
//! | `zlib` | `gzip` | `application/x-gzip` (zlib data, not a gzip file) |
//! | `bzip2` | `bzip`, `bz2` | `application/x-bz2` |
//! | `lzma` | `xz` | `application/x-lzma` (the xz format) |
//! | `brotli` | | `application/x-brotli` |
//! | `zstd` | `zstandard` | `application/zstd` |
//!
//! Decompression is bounded so that a compression bomb is refused rather than allocated.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::{Arc, RwLock};

use crate::error::Error;

/// The name of a user's compression type, so that `#[task(compression = MyScheme)]` can use it:
/// the macro reads the name at compile time, and the app must have it registered at run time.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a compression type",
    label = "not a compression",
    note = "name a built-in compression as a string (\"gzip\", \"bzip2\", \"lzma\", \"brotli\", \"zstd\"), or implement `celery::compression::NamedCompression` for your `Compression` type"
)]
pub trait NamedCompression: Compression {
    /// The name it is registered under; the same as [`Compression::name`].
    const NAME: &'static str;
}

/// A compression scheme that can be registered by name.
pub trait Compression: Send + Sync + 'static {
    /// The short name used in settings and options (`"zlib"`).
    fn name(&self) -> &str;
    /// Other names accepted for it (`"gzip"` for zlib).
    fn aliases(&self) -> &[&str] {
        &[]
    }
    /// The MIME type written in the `compression` header.
    fn content_type(&self) -> &str;
    fn compress(&self, body: &[u8]) -> Result<Vec<u8>, String>;
    /// Decompresses, failing once the output would exceed `limit` bytes.
    fn decompress(&self, body: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError>;
}

/// Why a body could not be decompressed.
#[derive(Debug)]
pub enum DecompressError {
    /// The output would exceed the limit.
    TooLarge,
    /// The body is not valid data of the scheme.
    Corrupt(String),
}

impl std::fmt::Display for DecompressError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecompressError::TooLarge => {
                f.write_str("the decompressed body exceeds the size limit")
            }
            DecompressError::Corrupt(reason) => write!(f, "corrupt compressed body: {reason}"),
        }
    }
}

impl std::error::Error for DecompressError {}

/// Reads at most `limit` bytes from a decoder and reports whether more were left.
///
/// Read a chunk at a time, the output never holds more room than `limit`: `read_to_end`
/// doubled it, so a body 1 byte past a 64 MiB limit took 128 MiB before it was refused.
pub fn read_bounded(mut reader: impl Read, limit: usize) -> Result<Vec<u8>, DecompressError> {
    // Small at first (most bodies are), larger while reads fill it.
    const LARGEST_CHUNK: usize = 64 * 1024;
    let corrupt = |e: std::io::Error| DecompressError::Corrupt(e.to_string());
    let mut out = Vec::new();
    let mut chunk = vec![0; 1024];
    loop {
        let read = match reader.read(&mut chunk) {
            Ok(0) => return Ok(out),
            Ok(read) => read,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(corrupt(e)),
        };
        if read == chunk.len() && chunk.len() < LARGEST_CHUNK {
            chunk.resize(chunk.len() * 2, 0);
        }
        if read > limit - out.len() {
            return Err(DecompressError::TooLarge);
        }
        if out.capacity() - out.len() < read {
            let wanted = (out.capacity() * 2).max(out.len() + read).min(limit);
            out.reserve_exact(wanted - out.len());
        }
        out.extend_from_slice(&chunk[..read]);
    }
}

/// kombu's "gzip"/"zlib": zlib-format data (`78 9c …`, Python's `zlib.compress`) under
/// `application/x-gzip`.
pub struct Zlib;

impl Compression for Zlib {
    fn name(&self) -> &str {
        "zlib"
    }
    fn aliases(&self) -> &[&str] {
        &["gzip"]
    }
    fn content_type(&self) -> &str {
        "application/x-gzip"
    }
    fn compress(&self, body: &[u8]) -> Result<Vec<u8>, String> {
        let mut encoder =
            flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(body).map_err(|e| e.to_string())?;
        encoder.finish().map_err(|e| e.to_string())
    }
    fn decompress(&self, body: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
        read_bounded(flate2::read::ZlibDecoder::new(body), limit)
    }
}

/// kombu's "bzip2": Python's `bz2.compress` (level 9) under `application/x-bz2`; concatenated
/// streams are read as one, as `bz2.decompress` does.
pub struct Bzip2;

impl Compression for Bzip2 {
    fn name(&self) -> &str {
        "bzip2"
    }
    fn aliases(&self) -> &[&str] {
        &["bzip", "bz2"]
    }
    fn content_type(&self) -> &str {
        "application/x-bz2"
    }
    fn compress(&self, body: &[u8]) -> Result<Vec<u8>, String> {
        let mut encoder = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::best());
        encoder.write_all(body).map_err(|e| e.to_string())?;
        encoder.finish().map_err(|e| e.to_string())
    }
    fn decompress(&self, body: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
        read_bounded(bzip2::read::MultiBzDecoder::new(body), limit)
    }
}

/// kombu's "lzma": Python's `lzma.compress` — the xz format, preset 6, CRC64 check — under
/// `application/x-lzma`. Like `lzma.decompress`, it reads concatenated xz streams and the legacy
/// `.lzma` format too.
pub struct Lzma;

/// The dictionary memory an lzma body may ask for: enough for `xz -9` (64 MiB), so that a
/// header claiming a huge dictionary is refused rather than allocated.
const LZMA_MEMORY_LIMIT_KIB: u32 = 96 * 1024;

const XZ_MAGIC: &[u8] = b"\xfd7zXZ\x00";

impl Compression for Lzma {
    fn name(&self) -> &str {
        "lzma"
    }
    fn aliases(&self) -> &[&str] {
        &["xz"]
    }
    fn content_type(&self) -> &str {
        "application/x-lzma"
    }
    fn compress(&self, body: &[u8]) -> Result<Vec<u8>, String> {
        let options = lzma_rust2::XzOptions::with_preset(6);
        let mut encoder =
            lzma_rust2::XzWriter::new(Vec::new(), options).map_err(|e| e.to_string())?;
        encoder.write_all(body).map_err(|e| e.to_string())?;
        encoder.finish().map_err(|e| e.to_string())
    }
    fn decompress(&self, body: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
        if body.starts_with(XZ_MAGIC) {
            let reader = lzma_rust2::XzReader::new_mem_limit(body, true, LZMA_MEMORY_LIMIT_KIB);
            read_bounded(reader, limit)
        } else {
            let reader = lzma_rust2::LzmaReader::new_mem_limit(body, LZMA_MEMORY_LIMIT_KIB, None)
                .map_err(|e| DecompressError::Corrupt(e.to_string()))?;
            read_bounded(reader, limit)
        }
    }
}

/// kombu's "brotli": the `brotli` package's `compress` defaults (quality 11, window 22) under
/// `application/x-brotli`.
pub struct Brotli;

impl Compression for Brotli {
    fn name(&self) -> &str {
        "brotli"
    }
    fn content_type(&self) -> &str {
        "application/x-brotli"
    }
    fn compress(&self, body: &[u8]) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        {
            let mut encoder = brotli::CompressorWriter::new(&mut out, 4096, 11, 22);
            encoder.write_all(body).map_err(|e| e.to_string())?;
            encoder.flush().map_err(|e| e.to_string())?;
        }
        Ok(out)
    }
    fn decompress(&self, body: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
        // The large-window extension (windows up to 1 GiB; the stream's first 7 bits are
        // 0010001) is on in the Rust decoder, which fills a whole window before it hands out
        // a byte: 66 bytes took 192 MiB, 813 bytes 1.5 GiB, whatever the limit. Python's
        // brotli neither writes nor, by default, reads such streams.
        if body.first().is_some_and(|first| first & 0x7f == 0x11) {
            return Err(DecompressError::Corrupt(
                "large-window brotli streams are not accepted".to_owned(),
            ));
        }
        read_bounded(brotli::Decompressor::new(body, 4096), limit)
    }
}

/// kombu's "zstd": `compression.zstd` (`backports.zstd` before Python 3.14) at its default level 3,
/// under `application/zstd`; concatenated frames are read as one.
pub struct Zstd;

impl Compression for Zstd {
    fn name(&self) -> &str {
        "zstd"
    }
    fn aliases(&self) -> &[&str] {
        &["zstandard"]
    }
    fn content_type(&self) -> &str {
        "application/zstd"
    }
    fn compress(&self, body: &[u8]) -> Result<Vec<u8>, String> {
        zstd::bulk::compress(body, 3).map_err(|e| e.to_string())
    }
    fn decompress(&self, body: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
        let corrupt = |e: std::io::Error| DecompressError::Corrupt(e.to_string());
        let mut decoder = zstd::stream::read::Decoder::with_buffer(body).map_err(corrupt)?;
        // libzstd allocates the window a frame's header asks for (up to 128 MiB by default)
        // before reading any data: a 10-byte body could take 128 MiB. A window larger than the
        // size limit is never needed (kombu compresses whole bodies, and the window then fits
        // the body), so a frame asking for more is refused, as too large.
        decoder
            .window_log_max(zstd_window_log(limit))
            .map_err(corrupt)?;
        read_bounded(decoder, limit).map_err(|error| match error {
            // libzstd's ZSTD_error_frameParameter_windowTooLarge.
            DecompressError::Corrupt(why) if why.contains("too much memory") => {
                DecompressError::TooLarge
            }
            other => other,
        })
    }
}

/// The smallest zstd window (as a power of two) that holds `limit` bytes, within what libzstd
/// allows by default (2^10 to 2^27).
fn zstd_window_log(limit: usize) -> u32 {
    let bits = usize::BITS - limit.saturating_sub(1).leading_zeros();
    bits.clamp(10, 27)
}

/// The compression schemes an app knows.
#[derive(Clone)]
pub struct CompressionRegistry {
    schemes: Arc<RwLock<Vec<Arc<dyn Compression>>>>,
    index: Arc<RwLock<HashMap<String, usize>>>,
}

impl Default for CompressionRegistry {
    fn default() -> Self {
        let registry = CompressionRegistry {
            schemes: Arc::default(),
            index: Arc::default(),
        };
        registry.register(Zlib);
        registry.register(Bzip2);
        registry.register(Lzma);
        registry.register(Brotli);
        registry.register(Zstd);
        registry
    }
}

impl CompressionRegistry {
    /// Adds a scheme under its name, aliases and MIME type.
    pub fn register(&self, scheme: impl Compression) {
        let scheme: Arc<dyn Compression> = Arc::new(scheme);
        let mut schemes = self.schemes.write().expect("compression registry poisoned");
        let mut index = self.index.write().expect("compression registry poisoned");
        let position = schemes.len();
        for name in std::iter::once(scheme.name())
            .chain(scheme.aliases().iter().copied())
            .chain([scheme.content_type()])
        {
            index.insert(name.to_owned(), position);
        }
        schemes.push(scheme);
    }

    /// Looks a scheme up by short name, alias or MIME type.
    pub fn get(&self, name: &str) -> Result<Arc<dyn Compression>, Error> {
        let index = self.index.read().expect("compression registry poisoned");
        let schemes = self.schemes.read().expect("compression registry poisoned");
        index.get(name).map(|&i| schemes[i].clone()).ok_or_else(|| {
            let mut known: Vec<_> = schemes.iter().map(|s| s.name().to_owned()).collect();
            known.sort();
            Error::UnknownCodec {
                kind: "compression",
                name: name.to_owned(),
                known: known.join(", "),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 10-byte zstd frame whose header asks for a 128 MiB window, then one byte (found by
    /// fuzzing: libzstd allocated the 128 MiB before reading the byte).
    const WIDE_WINDOW_FRAME: &[u8] = &[
        0x28, 0xb5, 0x2f, 0xfd, // magic
        0x00, // no content size, not a single segment
        0x88, // window descriptor: 2^27
        0x0b, 0x00, 0x00, // the last block, RLE, of 1 byte:
        b'x',
    ];

    #[test]
    fn large_window_brotli_streams_are_refused() {
        // Large window 30, an uncompressed metablock "x", the last (empty) one.
        let large = [0x11, 0x1e, 0x00, 0x00, 0x02, 0x78, 0x03];
        let error = Brotli.decompress(&large, 1 << 20).unwrap_err();
        assert!(error.to_string().contains("large-window"), "{error}");
        // The same with the largest standard window (24) reads.
        let standard = [0x0f, 0x00, 0x80, 0x78, 0x03];
        assert_eq!(Brotli.decompress(&standard, 1 << 20).unwrap(), b"x");
    }

    #[test]
    fn the_output_never_holds_more_room_than_the_limit() {
        const LIMIT: usize = 1_000_000;
        for scheme in schemes() {
            let body = scheme.compress(&vec![3u8; LIMIT]).unwrap();
            let out = scheme.decompress(&body, LIMIT).unwrap();
            assert_eq!(out.len(), LIMIT, "{}", scheme.name());
            assert!(
                out.capacity() <= LIMIT,
                "{}: room for {} bytes",
                scheme.name(),
                out.capacity()
            );
        }
    }

    #[test]
    fn zstd_frames_asking_for_a_window_past_the_limit_are_refused() {
        let error = Zstd.decompress(WIDE_WINDOW_FRAME, 64 * 1024).unwrap_err();
        assert!(matches!(error, DecompressError::TooLarge), "{error}");
        // With a limit as large as the window, it reads.
        assert_eq!(Zstd.decompress(WIDE_WINDOW_FRAME, 1 << 27).unwrap(), b"x");
        // What kombu sends fits: a whole body in one frame, its window no larger than it.
        let body = vec![7u8; 1 << 20];
        let compressed = Zstd.compress(&body).unwrap();
        assert_eq!(Zstd.decompress(&compressed, 1 << 20).unwrap(), body);
        assert_eq!(zstd_window_log(0), 10);
        assert_eq!(zstd_window_log(1 << 20), 20);
        assert_eq!(zstd_window_log((1 << 20) + 1), 21);
        assert_eq!(zstd_window_log(usize::MAX), 27);
    }

    fn schemes() -> Vec<Box<dyn Compression>> {
        vec![
            Box::new(Zlib),
            Box::new(Bzip2),
            Box::new(Lzma),
            Box::new(Brotli),
            Box::new(Zstd),
        ]
    }

    /// The leading bytes of each format a scheme here writes (zlib at three levels).
    const MAGICS: [&[u8]; 7] = [
        b"\x78\x01",
        b"\x78\x9c",
        b"\x78\xda",
        b"BZh",
        b"\xfd7zXZ\x00",
        b"\x28\xb5\x2f\xfd",
        b"\x1f\x8b", // gzip
    ];

    #[test]
    fn every_scheme_round_trips_and_writes_its_format() {
        let data = b"[[2, 2], {}, null]".repeat(100);
        for (scheme, magic) in schemes().iter().zip([
            Some(&b"\x78\x9c"[..]),
            Some(b"BZh9"),
            Some(b"\xfd7zXZ\x00\x00\x04"),
            // Brotli has no magic number: checked below.
            None,
            Some(b"\x28\xb5\x2f\xfd"),
        ]) {
            let packed = scheme.compress(&data).unwrap();
            match magic {
                Some(magic) => assert!(
                    packed.starts_with(magic),
                    "{}: {packed:02x?}",
                    scheme.name()
                ),
                None => {
                    assert!(
                        !MAGICS.iter().any(|magic| packed.starts_with(magic)),
                        "{}: another format: {packed:02x?}",
                        scheme.name()
                    );
                    // A brotli stream, read by the brotli decoder itself.
                    let mut unpacked = Vec::new();
                    brotli::BrotliDecompress(&mut &packed[..], &mut unpacked)
                        .unwrap_or_else(|e| panic!("{}: not brotli: {e}", scheme.name()));
                    assert_eq!(unpacked, data, "{}", scheme.name());
                }
            }
            assert!(packed.len() < data.len() / 4, "{}", scheme.name());
            assert_eq!(scheme.decompress(&packed, 1 << 20).unwrap(), data);
            assert_eq!(
                scheme
                    .decompress(&scheme.compress(b"").unwrap(), 16)
                    .unwrap(),
                b""
            );
        }
    }

    #[test]
    fn a_bomb_is_refused_not_allocated() {
        let zeros = vec![0u8; 4 << 20];
        for scheme in schemes() {
            let packed = scheme.compress(&zeros).unwrap();
            assert!(packed.len() < 64 << 10, "{}", scheme.name());
            assert!(
                matches!(
                    scheme.decompress(&packed, 1 << 20),
                    Err(DecompressError::TooLarge)
                ),
                "{}",
                scheme.name()
            );
            // Exactly at the limit is fine.
            assert_eq!(
                scheme.decompress(&packed, zeros.len()).unwrap().len(),
                zeros.len()
            );
        }
    }

    #[test]
    fn corrupt_and_truncated_bodies_are_errors() {
        let data = b"some body that is long enough to be worth compressing".repeat(20);
        for scheme in schemes() {
            let result = scheme.decompress(b"definitely not compressed data", 1 << 20);
            assert!(
                matches!(result, Err(DecompressError::Corrupt(_))),
                "{}: {result:?}",
                scheme.name()
            );
            let packed = scheme.compress(&data).unwrap();
            let truncated = &packed[..packed.len() - 4];
            let result = scheme.decompress(truncated, 1 << 20);
            assert!(
                matches!(result, Err(DecompressError::Corrupt(_))),
                "{} truncated: {result:?}",
                scheme.name()
            );
        }
    }

    #[test]
    fn lzma_reads_the_legacy_lzma_format_and_refuses_huge_dictionaries() {
        // lzma.compress(b"hello", format=lzma.FORMAT_ALONE)
        let alone = b"]\x00\x00\x80\x00\xff\xff\xff\xff\xff\xff\xff\xff\x004\x19I\xee\x8eh!\xff\xff\xff\xb9\xe0\x00\x00";
        assert_eq!(Lzma.decompress(alone, 100).unwrap(), b"hello");
        // The same header claiming a 4 GiB dictionary.
        let mut greedy = alone.to_vec();
        greedy[1..5].copy_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(
            Lzma.decompress(&greedy, 100),
            Err(DecompressError::Corrupt(_))
        ));
    }

    #[test]
    fn names_aliases_and_mime_types_resolve() {
        let registry = CompressionRegistry::default();
        for (names, canonical) in [
            (&["zlib", "gzip", "application/x-gzip"][..], "zlib"),
            (&["bzip2", "bzip", "bz2", "application/x-bz2"], "bzip2"),
            (&["lzma", "xz", "application/x-lzma"], "lzma"),
            (&["brotli", "application/x-brotli"], "brotli"),
            (&["zstd", "zstandard", "application/zstd"], "zstd"),
        ] {
            for name in names {
                assert_eq!(registry.get(name).unwrap().name(), canonical, "{name}");
            }
        }
        let err = registry.get("snappy").err().unwrap().to_string();
        assert_eq!(
            err,
            "unknown compression \"snappy\" (known: brotli, bzip2, lzma, zlib, zstd)"
        );
    }
}
