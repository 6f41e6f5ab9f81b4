//! Compression of message bodies (Celery's `compression` option and `task_compression` setting).
//!
//! The `compression` header names the scheme by MIME type; receivers also accept the short names.
//! Decompression is bounded so that a compression bomb is refused rather than allocated.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::{Arc, RwLock};

use crate::error::Error;

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
    TooLarge,
    Corrupt(String),
}

/// Reads at most `limit` bytes from a decoder and reports whether more were left.
pub fn read_bounded(mut reader: impl Read, limit: usize) -> Result<Vec<u8>, DecompressError> {
    let mut out = Vec::new();
    let read = reader
        .by_ref()
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| DecompressError::Corrupt(e.to_string()))?;
    if read > limit {
        return Err(DecompressError::TooLarge);
    }
    Ok(out)
}

/// kombu's "gzip"/"zlib": zlib-format data (`78 9c …`) under `application/x-gzip`.
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

    #[test]
    fn zlib_writes_zlib_format_and_round_trips() {
        let data = b"[[2, 2], {}, null]".repeat(10);
        let packed = Zlib.compress(&data).unwrap();
        assert_eq!(&packed[..2], &[0x78, 0x9c]);
        assert_eq!(Zlib.decompress(&packed, 1 << 20).unwrap(), data);
    }

    #[test]
    fn a_bomb_is_refused_not_allocated() {
        let packed = Zlib.compress(&vec![0u8; 10 << 20]).unwrap();
        assert!(matches!(
            Zlib.decompress(&packed, 1 << 20),
            Err(DecompressError::TooLarge)
        ));
        assert!(matches!(
            Zlib.decompress(b"not zlib", 100),
            Err(DecompressError::Corrupt(_))
        ));
    }

    #[test]
    fn names_aliases_and_mime_types_resolve() {
        let registry = CompressionRegistry::default();
        for name in ["zlib", "gzip", "application/x-gzip"] {
            assert_eq!(registry.get(name).unwrap().name(), "zlib");
        }
        assert!(registry
            .get("snappy")
            .err()
            .unwrap()
            .to_string()
            .contains("unknown compression"));
    }
}
