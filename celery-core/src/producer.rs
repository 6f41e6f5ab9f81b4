//! Publishing task messages: routing, encoding to protocol v2 and the publish retry policy
//! (Celery's `app.amqp.send_task_message` and kombu's `Producer`).

use std::future::Future;

use chrono::Utc;

use crate::app::Celery;
use crate::error::Error;
use crate::protocol::{args_repr, kwargs_repr, Body, Embed, Message, Properties, TaskHeaders};
use crate::routing::{Route, TaskRoute};
use crate::signature::RawSignature;
use crate::task::{TaskContext, TaskOptions};

/// A publisher bound to an app. It is cheap to clone and to hold across many calls.
#[derive(Clone)]
pub struct Producer {
    app: Celery,
}

/// A task message the broker took.
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    pub id: String,
    /// Sent with `ignore_result`: no worker stores its states.
    pub ignore_result: bool,
}

/// A task message ready to publish, and where it goes.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub id: String,
    pub route: Route,
    pub message: Message,
    /// Sent without `ignore_result`: the result backend gets ready for the result first (the
    /// rpc client declares its reply queue), as Celery's `backend.on_task_call`.
    pub wants_result: bool,
    /// How long each publish attempt may take (`CallOptions::timeout`).
    pub timeout: Option<std::time::Duration>,
}

impl Producer {
    pub(crate) fn new(app: Celery) -> Self {
        Producer { app }
    }

    /// Sends a typed signature through this publisher (Celery's `apply_async(producer=…)`).
    ///
    /// The message is built at once, in this call; the future only publishes it. (A future
    /// holding the signature until its first poll would be kilobytes larger, and a program
    /// sending many tasks at once moves and keeps every one of them.)
    pub fn apply_async<R, K: crate::signature::Applicable>(
        &self,
        signature: crate::signature::Signature<R, K>,
    ) -> impl Future<Output = Result<crate::result::AsyncResult<R>, Error>> + Send {
        let sent = signature
            .into_parts()
            .map(|(raw, defaults)| self.send(raw, &defaults));
        let app = self.app.clone();
        async move {
            let sent = sent?.await?;
            Ok(crate::result::AsyncResult::of_sent(sent, app))
        }
    }

    /// Routes, encodes and publishes a signature; returns the task id and whether its result
    /// is ignored. The message is built in this call, the future publishes it.
    ///
    /// `task_options` are the task's attributes; [`TaskOptions::UNKNOWN`] for a task known only
    /// by name, whose registration in the app (if any) is then used.
    pub fn send(
        &self,
        mut signature: RawSignature,
        task_options: &TaskOptions,
    ) -> impl Future<Output = Result<Sent, Error>> + Send + 'static {
        let retry = signature.options.retry;
        let policy = signature.options.retry_policy.take();
        // Read here, in the sending task's body (the future may be polled elsewhere).
        let parent = TaskContext::running();
        let add_to_parent = signature.options.add_to_parent.unwrap_or(true);
        let outgoing = self.outgoing_from(signature, task_options, parent.as_ref());
        let producer = self.clone();
        async move {
            let outgoing = outgoing?;
            producer.publish(&outgoing, retry, policy).await?;
            if let Some(parent) = parent.filter(|_| add_to_parent) {
                parent.add_child(&outgoing.id);
            }
            Ok(Sent {
                id: outgoing.id,
                ignore_result: !outgoing.wants_result,
            })
        }
    }

    /// The message [`send`](Producer::send) publishes for a signature: the call's options, then
    /// the task's attributes, then (for a known task) the app's task settings, then
    /// `task_routes`, as Celery's `apply_async` and router take them. Called from a task a
    /// worker runs, the message is that task's child, as Celery's `send_task` makes it
    /// (`parent_id`, `root_id` and, with `task_inherit_parent_priority`, its priority), unless
    /// the call gives both ids.
    pub fn outgoing(
        &self,
        signature: RawSignature,
        task_options: &TaskOptions,
    ) -> Result<Outgoing, Error> {
        self.outgoing_from(signature, task_options, TaskContext::running().as_ref())
    }

    fn outgoing_from(
        &self,
        mut signature: RawSignature,
        task_options: &TaskOptions,
        parent: Option<&TaskContext>,
    ) -> Result<Outgoing, Error> {
        let registered;
        let task_options = match task_options.known {
            true => task_options,
            false => {
                registered = self.app.task(&signature.task).map(|task| task.options);
                registered.as_ref().unwrap_or(task_options)
            }
        };
        task_options.write_into(&mut signature.options);
        let config = self.app.config();
        task_options.write_app_defaults_into(&mut signature.options, config);
        self.apply_task_routes(&mut signature);
        // As Celery's `send_task`: the running task is looked at only when the call leaves its
        // parent or root id unset (an empty one is unset, as `not root_id`); a call giving both
        // takes nothing from it, its priority included.
        let unset = |id: &Option<String>| id.as_deref().is_none_or(str::is_empty);
        let options = &mut signature.options;
        if let Some(parent) = parent
            .map(TaskContext::request)
            .filter(|_| unset(&options.root_id) || unset(&options.parent_id))
        {
            if unset(&options.root_id) {
                options.root_id = Some(parent.root_or_own_id().to_owned());
            }
            if unset(&options.parent_id) {
                options.parent_id = Some(parent.id.clone());
            }
            if config.task_inherit_parent_priority && options.priority.is_none() {
                options.priority = parent.delivery_info.priority;
            }
        }
        self.encode(signature)
    }

    /// Celery's router: the route of `task_routes` for the task (by exact name, else the first
    /// matching glob) fills in whatever the
    /// call's options and the task's attributes left unset, key by key (Celery's
    /// `lpmerge(route, options)`): a call giving only a routing key still goes to the route's
    /// queue.
    fn apply_task_routes(&self, signature: &mut RawSignature) {
        let routes = &self.app.config().task_routes;
        let Some(route) = TaskRoute::find(routes, &signature.task) else {
            return;
        };
        let options = &mut signature.options;
        fn fill<T: Clone>(slot: &mut Option<T>, from_route: &Option<T>) {
            if slot.is_none() {
                slot.clone_from(from_route);
            }
        }
        fill(&mut options.queue, &route.queue);
        fill(&mut options.exchange, &route.exchange);
        fill(&mut options.routing_key, &route.routing_key);
        fill(&mut options.priority, &route.priority);
    }

    /// Builds the protocol v2 message for a signature whose options are final (see
    /// [`outgoing`](Producer::outgoing) for the task's and the app's defaults).
    pub fn encode(&self, signature: RawSignature) -> Result<Outgoing, Error> {
        let app = &self.app;
        let config = app.config();
        let RawSignature {
            task,
            args,
            kwargs,
            options,
            ..
        } = signature;
        // As Celery's `task_id or uuid()`: an empty id is none.
        let id = options
            .task_id
            .clone()
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let now = Utc::now();
        // As Celery's `as_task_v2`: a countdown other than 0 wins over an eta, and a countdown of
        // 0 is no countdown at all (no eta header: a worker runs it at once instead of through
        // its timer).
        let eta = match options.countdown {
            Some(seconds) if seconds != 0.0 => {
                Some(crate::calling::seconds_after(now, seconds, "countdown")?)
            }
            _ => options.eta,
        };
        let expires = options
            .expires
            .map(|expires| expires.resolve(now))
            .transpose()?;
        for (what, at) in [("eta", eta), ("expires", expires)] {
            if at.is_some_and(|at| !crate::calling::python_can_hold(&at)) {
                return Err(Error::Encode {
                    what: what.to_owned(),
                    reason: "a date past Python's year 9999 (or before year 1) no worker can read"
                        .to_owned(),
                });
            }
        }
        let queue_name = options
            .queue
            .as_deref()
            .unwrap_or(&config.task_default_queue);
        if queue_name.is_empty() {
            // RabbitMQ would name the queue itself and the message would be routed nowhere.
            return Err(Error::Config(format!(
                "task {task}: the queue name is empty"
            )));
        }
        let queue = app.queue(queue_name);
        let route = Route::resolve(
            queue,
            options.exchange.as_deref(),
            options.routing_key.as_deref(),
        );

        let serializer = app.serializers().get(
            options
                .serializer
                .as_deref()
                .unwrap_or(&config.task_serializer),
        )?;
        let compression = options
            .compression
            .as_deref()
            .or(config.task_compression.as_deref())
            .map(|name| app.compressions().get(name))
            .transpose()?;

        let mut headers = TaskHeaders::new(task, id.clone());
        headers.shadow = options.shadow.clone();
        headers.retries = options.retries.unwrap_or(0);
        headers.eta = eta;
        headers.expires = expires;
        headers.group = options.group_id.clone();
        headers.group_index = options.group_index;
        headers.timelimit = (options.time_limit, options.soft_time_limit);
        // An empty id is none, as Celery's `root_id or task_id`.
        headers.root_id = Some(
            options
                .root_id
                .clone()
                .filter(|root| !root.is_empty())
                .unwrap_or_else(|| id.clone()),
        );
        headers.parent_id = options
            .parent_id
            .clone()
            .filter(|parent| !parent.is_empty());
        headers.argsrepr = Some(args_repr(&args));
        headers.kwargsrepr = Some(kwargs_repr(&kwargs));
        headers.origin = Some(app.origin().to_owned());
        // Unset (a task this app does not know, called without it): null, and the worker's
        // task decides, as with Celery's `send_task`.
        headers.ignore_result = options.ignore_result;
        headers.extra = custom_headers(&options.headers)?;
        let ignore_result = options.ignore_result == Some(true);
        let timeout = options
            .timeout
            .map(
                |seconds| match std::time::Duration::try_from_secs_f64(seconds) {
                    Ok(timeout) if !timeout.is_zero() => Ok(timeout),
                    _ => Err(Error::Encode {
                        what: "the publish timeout".to_owned(),
                        reason: format!("{seconds} is not a positive number of seconds"),
                    }),
                },
            )
            .transpose()?;

        let non_empty =
            |signatures: Vec<RawSignature>| (!signatures.is_empty()).then_some(signatures);
        let body = Body {
            args,
            kwargs,
            embed: Embed {
                callbacks: non_empty(options.link),
                errbacks: non_empty(options.link_error),
                chain: non_empty(options.chain),
                chord: None,
            },
        };
        // JSON writes the body as it is; other serializers take it as a `Value`.
        let encoded = match serializer.encode_body(&body) {
            Some(encoded) => encoded,
            None => {
                let value =
                    serde_json::to_value(&body).map_err(|e| Error::encode("task body", e))?;
                serializer.encode(&value)
            }
        };
        let mut payload =
            encoded.map_err(|e| Error::encode(format!("task body as {}", serializer.name()), e))?;
        if let Some(compression) = &compression {
            payload = compression
                .compress(&payload)
                .map_err(|e| Error::encode(format!("task body with {}", compression.name()), e))?;
            headers.compression = Some(compression.content_type().to_owned());
        }

        let expiration = expires.map(|at| {
            (at.timestamp_millis() - now.timestamp_millis())
                .max(0)
                .to_string()
        });
        let message = Message {
            headers: headers.into_table_with(config.task_message_headers),
            properties: Properties {
                correlation_id: Some(id.clone()),
                reply_to: Some(
                    options
                        .reply_to
                        .clone()
                        .unwrap_or_else(|| app.oid().to_owned()),
                ),
                content_type: serializer.content_type().to_owned(),
                content_encoding: serializer.content_encoding().to_owned(),
                delivery_mode: options.delivery_mode.unwrap_or(2),
                priority: options.priority,
                expiration,
            },
            body: payload,
        };
        Ok(Outgoing {
            id,
            route,
            message,
            wants_result: !ignore_result,
            timeout,
        })
    }

    /// Publishes with the retry policy (the call's keys over the app's); at the end, Celery's `OperationalError` naming the broker.
    pub async fn publish(
        &self,
        outgoing: &Outgoing,
        retry: Option<bool>,
        policy: Option<crate::calling::PartialRetryPolicy>,
    ) -> Result<(), Error> {
        let config = self.app.config();
        let broker = self.app.broker();
        let retry = retry.unwrap_or(config.task_publish_retry);
        // The call's keys over the app's, as Celery's `dict(default_policy, **retry_policy)`.
        let policy = match &policy {
            Some(call) => config.task_publish_retry_policy.merged(call),
            None => config.task_publish_retry_policy.clone(),
        };
        let queue = &outgoing.route.queue;
        let mut retries = 0u32;
        loop {
            let attempt = async {
                // Within the retry, as Celery declares the reply queue with `retry=True`.
                if outgoing.wants_result {
                    self.app
                        .backend()
                        .prepare_client()
                        .await
                        .map_err(backend_not_ready)?;
                }
                self.app.declare_once(queue).await?;
                broker
                    .publish(
                        &outgoing.route.exchange,
                        &outgoing.route.routing_key,
                        &outgoing.message,
                    )
                    .await
            };
            // Without a timeout the attempt is awaited as it is; with one, the timer is boxed,
            // so that the common publish's future stays as small as it was.
            let attempted = match outgoing.timeout {
                None => attempt.await,
                Some(limit) => Box::pin(tokio::time::timeout(limit, attempt))
                    .await
                    .unwrap_or_else(|_| {
                        Err(crate::broker::BrokerError::new(
                            crate::broker::BrokerErrorKind::Timeout,
                            format!("the broker did not take the message within {limit:?}"),
                        ))
                    }),
            };
            let error = match attempted {
                Ok(()) => return Ok(()),
                Err(error) => error,
            };
            let may_retry = retry
                && policy.retries(error.kind)
                && policy.max_retries.is_none_or(|max| retries < max);
            if !may_retry {
                let after = if retries == 0 {
                    String::new()
                } else {
                    format!(" (after {retries} retries)")
                };
                return Err(Error::Operational {
                    broker: broker.url().to_owned(),
                    reason: format!("{error}{after}"),
                });
            }
            let wait = policy.interval(retries);
            tracing::warn!(broker = broker.url(), %error, retry = retries + 1, wait_s = wait.as_secs_f64(), "publish failed, retrying");
            tokio::time::sleep(wait).await;
            retries += 1;
        }
    }
}

/// The call's own headers for the header table. One named as a header Celery's protocol sets,
/// or as an attribute of a Python task's request, is refused: it would change what the message
/// means to a worker (Celery's `headers` option overwrites them silently).
fn custom_headers(
    headers: &serde_json::Map<String, serde_json::Value>,
) -> Result<crate::protocol::Headers, Error> {
    headers
        .iter()
        .map(|(name, value)| {
            if crate::protocol::is_reserved_header(name) {
                return Err(Error::Encode {
                    what: format!("header {name:?}"),
                    reason: "Celery's protocol or a Python task's request uses the name itself"
                        .to_owned(),
                });
            }
            Ok((crate::protocol::header_name(name), value.into()))
        })
        .collect()
}

/// A result backend that could not get ready for a result, as a broker error: retried by the
/// publish retry policy when the backend could not be reached.
fn backend_not_ready(error: Error) -> crate::broker::BrokerError {
    let kind = match &error {
        Error::Backend {
            recoverable: true, ..
        } => crate::broker::BrokerErrorKind::Connection,
        _ => crate::broker::BrokerErrorKind::Refused,
    };
    crate::broker::BrokerError::new(kind, error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::{DeliveryInfo, Request};

    /// Celery's `send_task` reads the running task (`current_worker_task`) only under `if not
    /// root_id or not parent_id`.
    #[test]
    fn a_call_giving_both_ids_takes_nothing_from_the_running_task() {
        let app = Celery::builder("inherit")
            .configure(|config| config.task_inherit_parent_priority = true)
            .build()
            .unwrap();
        let running = TaskContext::new(
            Request {
                id: "running".to_owned(),
                root_id: Some("running-root".to_owned()),
                delivery_info: DeliveryInfo {
                    priority: Some(7),
                    ..DeliveryInfo::default()
                },
                ..Request::default()
            },
            None,
            &TaskOptions::UNKNOWN,
        );
        let sent = |parent_id: Option<&str>, root_id: Option<&str>| {
            let mut signature = RawSignature::new("tasks.add");
            signature.options.parent_id = parent_id.map(str::to_owned);
            signature.options.root_id = root_id.map(str::to_owned);
            let outgoing = app
                .producer()
                .outgoing_from(signature, &TaskOptions::UNKNOWN, Some(&running))
                .unwrap();
            let headers = TaskHeaders::from_table(&outgoing.message.headers).unwrap();
            (
                headers.parent_id,
                headers.root_id.unwrap(),
                outgoing.message.properties.priority,
            )
        };
        let owned = |id: &str| Some(id.to_owned());
        assert_eq!(
            sent(Some("p"), Some("r")),
            (owned("p"), "r".to_owned(), None)
        );
        assert_eq!(
            sent(Some("p"), None),
            (owned("p"), "running-root".to_owned(), Some(7))
        );
        assert_eq!(
            sent(None, Some("r")),
            (owned("running"), "r".to_owned(), Some(7))
        );
        // Empty is unset, as Celery's `not parent_id`.
        assert_eq!(
            sent(Some(""), Some("r")),
            (owned("running"), "r".to_owned(), Some(7))
        );
    }
}
