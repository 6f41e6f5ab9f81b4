//! The in-memory result backend (`memory://`): results live in this process.
//!
//! Backends with the same URL in one process are the same backend, so an app's client and worker
//! share results the way they would through a server.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::mpsc;

use super::{ResultBackend, ResultReceiver};
use crate::error::Error;
use crate::result::ResultMeta;
use crate::BoxFuture;

#[derive(Default)]
struct Entry {
    latest: Option<ResultMeta>,
    subscribers: Vec<mpsc::UnboundedSender<ResultMeta>>,
}

/// Results kept in memory.
pub struct MemoryBackend {
    url: String,
    entries: Mutex<HashMap<String, Entry>>,
}

impl MemoryBackend {
    pub fn new(url: impl Into<String>) -> Self {
        MemoryBackend {
            url: url.into(),
            entries: Mutex::default(),
        }
    }

    /// The process-wide backend for this URL.
    pub fn shared(url: &str) -> Arc<dyn ResultBackend> {
        static BACKENDS: OnceLock<Mutex<HashMap<String, Arc<MemoryBackend>>>> = OnceLock::new();
        let mut backends = BACKENDS
            .get_or_init(Mutex::default)
            .lock()
            .expect("memory backends poisoned");
        backends
            .entry(url.to_owned())
            .or_insert_with(|| Arc::new(MemoryBackend::new(url)))
            .clone()
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().expect("memory backend poisoned")
    }
}

impl ResultBackend for MemoryBackend {
    fn url(&self) -> &str {
        &self.url
    }

    fn store<'a>(
        &'a self,
        meta: &'a ResultMeta,
        _reply_to: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), Error>> {
        let mut entries = self.entries();
        let entry = entries.entry(meta.task_id.clone()).or_default();
        // The first ready state is final: a task run twice (an `acks_late` message delivered
        // again) does not replace its result (Celery's backends keep a SUCCESS likewise).
        if super::is_final(entry.latest.as_ref()) {
            return Box::pin(async { Ok(()) });
        }
        entry
            .subscribers
            .retain(|subscriber| subscriber.send(meta.clone()).is_ok());
        entry.latest = Some(meta.clone());
        Box::pin(async { Ok(()) })
    }

    fn get<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<Option<ResultMeta>, Error>> {
        let latest = self
            .entries()
            .get(task_id)
            .and_then(|entry| entry.latest.clone());
        Box::pin(async move { Ok(latest) })
    }

    fn subscribe<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<ResultReceiver, Error>> {
        let (sender, receiver) = mpsc::unbounded_channel();
        let mut entries = self.entries();
        let entry = entries.entry(task_id.to_owned()).or_default();
        // Waits that gave up (a `get()` timed out) leave closed senders behind.
        entry
            .subscribers
            .retain(|subscriber| !subscriber.is_closed());
        if let Some(latest) = &entry.latest {
            let _ = sender.send(latest.clone());
        }
        entry.subscribers.push(sender);
        Box::pin(async move { Ok(receiver) })
    }

    fn forget<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        self.entries().remove(task_id);
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::State;
    use serde_json::{json, Value};

    #[tokio::test]
    async fn subscribers_see_the_current_state_then_every_change_in_order() {
        let backend = MemoryBackend::new("memory://t");
        backend
            .store(
                &ResultMeta::new("a".into(), State::Started, json!(null)),
                None,
            )
            .await
            .unwrap();
        let mut updates = backend.subscribe("a").await.unwrap();
        for progress in [50, 90] {
            backend
                .store(
                    &ResultMeta::new("a".into(), "PROGRESS".into(), json!({"progress": progress})),
                    None,
                )
                .await
                .unwrap();
        }
        backend
            .store(&ResultMeta::new("a".into(), State::Success, json!(4)), None)
            .await
            .unwrap();
        let seen: Vec<String> = std::iter::from_fn(|| updates.try_recv().ok())
            .map(|m| m.status.to_string())
            .collect();
        assert_eq!(seen, ["STARTED", "PROGRESS", "PROGRESS", "SUCCESS"]);
        assert_eq!(backend.get("a").await.unwrap().unwrap().result, json!(4));
        backend.forget("a").await.unwrap();
        assert!(backend.get("a").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn the_first_result_of_a_task_run_twice_is_kept() {
        let backend = MemoryBackend::new("memory://twice");
        let store = |state: State, result: Value| {
            let backend = &backend;
            async move {
                let meta = ResultMeta::new("a".into(), state, result);
                backend.store(&meta, None).await.unwrap();
            }
        };
        store(State::Success, json!(4)).await;
        store(State::Started, json!(null)).await;
        store(State::Failure, json!({"exc_type": "ValueError"})).await;
        let kept = backend.get("a").await.unwrap().unwrap();
        assert_eq!((kept.status, kept.result), (State::Success, json!(4)));
    }

    #[test]
    fn same_url_same_backend() {
        let a = MemoryBackend::shared("memory://same");
        let b = MemoryBackend::shared("memory://same");
        assert!(Arc::ptr_eq(&a, &b));
    }
}
