//! No result backend (Celery's `DisabledBackend`): what an app on a real broker has when it was
//! given no `result_backend`. Workers store nothing; a client asking for a result gets an error
//! saying so at once, instead of waiting for a state nobody will store.

use super::{ResultBackend, ResultReceiver};
use crate::error::Error;
use crate::result::ResultMeta;
use crate::BoxFuture;

/// Stores nothing, and refuses to read.
#[derive(Debug, Default)]
pub struct DisabledBackend;

impl DisabledBackend {
    fn refusal() -> Error {
        Error::Config(
            "no result backend is configured: set result_backend (rpc:// receives results \
             through the broker)"
                .to_owned(),
        )
    }
}

impl ResultBackend for DisabledBackend {
    fn url(&self) -> &str {
        "disabled://"
    }

    fn store<'a>(
        &'a self,
        _meta: &'a ResultMeta,
        _reply_to: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async { Ok(()) })
    }

    fn get<'a>(&'a self, _task_id: &'a str) -> BoxFuture<'a, Result<Option<ResultMeta>, Error>> {
        Box::pin(async { Err(Self::refusal()) })
    }

    fn subscribe<'a>(&'a self, _task_id: &'a str) -> BoxFuture<'a, Result<ResultReceiver, Error>> {
        Box::pin(async { Err(Self::refusal()) })
    }

    fn forget<'a>(&'a self, _task_id: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::State;

    #[tokio::test]
    async fn stores_nothing_and_says_so_when_read() {
        let backend = DisabledBackend;
        let meta = ResultMeta::new("a".into(), State::Success, serde_json::json!(4));
        backend.store(&meta, Some("reply")).await.unwrap();
        for error in [
            backend.get("a").await.unwrap_err(),
            backend.subscribe("a").await.unwrap_err(),
        ] {
            assert!(
                error
                    .to_string()
                    .contains("no result backend is configured"),
                "{error}"
            );
        }
    }
}
