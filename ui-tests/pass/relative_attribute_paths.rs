//! Paths in `serializer = ...`, `compression = ...` and `crate = "..."` mean what they mean beside
//! the function, as parameter types do: `super::` is the module around the task's module.
#![deny(warnings)]

use celery::__private::Task;

mod codecs {
    use serde_json::Value;

    pub struct Plain;

    impl celery::serializer::Serializer for Plain {
        fn name(&self) -> &str {
            "plain"
        }
        fn content_type(&self) -> &str {
            "application/x-plain"
        }
        fn content_encoding(&self) -> &str {
            "utf-8"
        }
        fn encode(&self, value: &Value) -> Result<Vec<u8>, String> {
            serde_json::to_vec(value).map_err(|e| e.to_string())
        }
        fn decode(&self, bytes: &[u8]) -> Result<Value, String> {
            serde_json::from_slice(bytes).map_err(|e| e.to_string())
        }
    }

    impl celery::serializer::NamedSerializer for Plain {
        const NAME: &'static str = "plain";
    }

    pub struct Identity;

    impl celery::compression::Compression for Identity {
        fn name(&self) -> &str {
            "identity"
        }
        fn content_type(&self) -> &str {
            "application/x-identity"
        }
        fn compress(&self, body: &[u8]) -> Result<Vec<u8>, String> {
            Ok(body.to_vec())
        }
        fn decompress(
            &self,
            body: &[u8],
            _limit: usize,
        ) -> Result<Vec<u8>, celery::compression::DecompressError> {
            Ok(body.to_vec())
        }
    }

    impl celery::compression::NamedCompression for Identity {
        const NAME: &'static str = "identity";
    }
}

mod rt {
    pub use celery as runtime;
}

mod tasks {
    #[celery::task(
        crate = "super::rt::runtime",
        serializer = super::codecs::Plain,
        compression = self::super::codecs::Identity
    )]
    pub async fn echo(x: i32) -> i32 {
        x
    }
}

fn main() {
    let options = <tasks::echo::Task as Task>::OPTIONS;
    assert_eq!(options.serializer, Some("plain"));
    assert_eq!(options.compression, Some("identity"));
    let _: celery::Signature<i32> = tasks::echo::s(1);
}
