"""The Python side of the interop tests (tests/interop.rs): the same task names as the Rust
side, run by a real Celery 5.7 worker, and used by interop_client.py to call the Rust worker.

Environment: CELERY_BROKER_URL, INTEROP_DIR (where record/on_error append lines),
INTEROP_QUEUE (the queue this app's worker consumes and its client sends to),
INTEROP_PRIORITY_QUEUE (declared with x-max-priority 10).
"""

import json
import os
import time

from celery import Celery
from celery.app.task import get_actual_ignore_result
from kombu import Exchange, Queue

BROKER_URL = os.environ.get("CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
QUEUE = os.environ.get("INTEROP_QUEUE", "celery")
PRIORITY_QUEUE = os.environ.get("INTEROP_PRIORITY_QUEUE", QUEUE + ".prio")
RECORDS = os.path.join(os.environ.get("INTEROP_DIR", "."), "records")

app = Celery("interop", broker=BROKER_URL, backend="rpc://")
app.conf.update(
    task_default_queue=QUEUE,
    task_queues=[
        Queue(QUEUE, Exchange(QUEUE), routing_key=QUEUE),
        Queue(QUEUE + ".named", Exchange(QUEUE + ".named"), routing_key=QUEUE + ".named"),
        Queue(PRIORITY_QUEUE, Exchange(PRIORITY_QUEUE), routing_key=PRIORITY_QUEUE,
              queue_arguments={"x-max-priority": 10}),
    ],
    accept_content=["json", "msgpack", "yaml", "pickle"],
    result_accept_content=["json", "msgpack", "yaml", "pickle"],
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


def record_line(line):
    with open(RECORDS, "a") as records:
        records.write(line + "\n")


@app.task(name="tasks.add")
def add(x, y):
    return x + y


@app.task(name="tasks.mul")
def mul(x, y):
    return x * y


@app.task(name="tasks.fail")
def fail(message):
    raise ValueError(message)


@app.task(name="tasks.progress", bind=True)
def progress(self, steps):
    # A state sent before the client's get() subscribes is not replayed (in Python Celery
    # either: only the latest is kept): give a loaded machine time to subscribe first (0.3 s
    # was once too little in CI, with three interop tests starting Python workers at once).
    time.sleep(1.0)
    for step in steps:
        self.update_state(state="PROGRESS", meta={"progress": step})
        time.sleep(0.05)
    return "done"


@app.task(name="tasks.record")
def record(value, tag):
    record_line("%s:%s" % (tag, json.dumps(value)))
    return value


@app.task(name="tasks.on_error")
def on_error(request, exc, traceback):
    record_line("errback:%s:%s" % (request.id, type(exc).__name__))


@app.task(name="tasks.request_header", bind=True)
def request_header(self, name):
    # Celery gives a task every header of its message as an attribute of its request.
    return getattr(self.request, name, None)


@app.task(name="tasks.request_fields", bind=True)
def request_fields(self):
    # What a task reads of its message's headers through its request, where a missing header
    # reads as the Context class's default. The id and the reply queue differ by call and app.
    request = self.request
    names = ["root_id", "parent_id", "group", "group_index", "shadow", "eta", "expires",
             "retries", "timelimit", "time_limit", "soft_time_limit", "origin",
             "replaced_task_nesting", "stamped_headers", "stamps", "lang", "argsrepr",
             "kwargsrepr", "headers", "callbacks", "errbacks", "chain", "chord"]
    fields = {name: request.get(name) for name in names}
    fields["root_id"] = "own id" if request.root_id == request.id else request.root_id
    fields["ignore_result"] = get_actual_ignore_result(self, request)
    options = request.as_execution_options()
    del options["task_id"], options["reply_to"]
    options["root_id"] = fields["root_id"]
    fields["execution_options"] = options
    return fields


@app.task(name="tasks.echo")
def echo(value):
    return value
