"""Tiny Celery app used to capture wire fixtures (see capture_fixtures.py).

Run a worker from this directory with:

    celery -A fixture_tasks worker -P solo -c 1 -Q <queue>
"""

import os

from celery import Celery

BROKER_URL = os.environ.get(
    "FIXTURE_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//"
)

app = Celery("fixture_tasks", broker=BROKER_URL, backend="rpc://")
app.conf.update(
    # Defaults spelled out so the captured fixtures say what they depend on.
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    enable_utc=True,
    timezone="UTC",
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="tasks.add")
def add(x, y):
    return x + y


@app.task(name="tasks.mul")
def mul(x, y):
    return x * y


@app.task(name="tasks.echo")
def echo(*args, **kwargs):
    return [list(args), kwargs]


@app.task(name="tasks.on_error")
def on_error(request, exc, traceback):
    """New-style errback: (request, exc, traceback)."""
    return None


@app.task(name="tasks.fail")
def fail():
    raise ValueError("boom")


@app.task(name="tasks.progress", bind=True)
def progress(self):
    self.update_state(state="PROGRESS", meta={"progress": 50})
    return "done"


@app.task(name="tasks.retry_once", bind=True, max_retries=3)
def retry_once(self, retry_queue=None):
    """Retries once (optionally onto another queue), then succeeds."""
    if self.request.retries < 1:
        options = {"queue": retry_queue} if retry_queue else {}
        raise self.retry(countdown=1, **options)
    return "retried"
