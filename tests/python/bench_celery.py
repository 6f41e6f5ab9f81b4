"""The Python Celery 5.7 side of `cargo run --release --example bench` (examples/bench.rs).

As a client:
    python bench_celery.py publish N   -> one JSON line {"start", "returned", "extra"} (epoch s)
    python bench_celery.py rtt N W     -> one JSON line {"p50_ms", "p99_ms", "n"} after W warm-ups
As a worker (started by the bench, cwd = this directory):
    python -m celery -A bench_celery worker -P prefork -c 2 -Q $BENCH_QUEUE ...
writes $BENCH_DIR/ready (epoch s, from `worker_ready`) and, once `tasks.noop` has run
$BENCH_TARGET times across the pool's processes, $BENCH_DIR/done (epoch s of the N-th task):
the drain is timed inside the worker, not by polling the broker.

Environment: BENCH_BROKER, BENCH_QUEUE, BENCH_TARGET, BENCH_DIR.
"""

import json
import multiprocessing
import os
import sys
import time

from celery import Celery
from celery.signals import worker_ready

BROKER_URL = os.environ.get("BENCH_BROKER", "amqp://guest:guest@127.0.0.1:5672//")
QUEUE = os.environ.get("BENCH_QUEUE", "bench")
TARGET = int(os.environ.get("BENCH_TARGET", "0"))
DIR = os.environ.get("BENCH_DIR", ".")

app = Celery("bench", broker=BROKER_URL, backend="rpc://")
app.conf.update(
    task_default_queue=QUEUE,
    worker_hijack_root_logger=False,
    worker_enable_remote_control=False,
    worker_send_task_events=False,
    broker_connection_retry_on_startup=True,
)

# Created in the worker's main process before the pool forks: shared by the prefork children.
DONE = multiprocessing.Value("q", 0)


def _write(name, value):
    path = os.path.join(DIR, name)
    with open(path + ".tmp", "w") as out:
        out.write(repr(value))
    os.replace(path + ".tmp", path)


@worker_ready.connect
def _ready(**_kwargs):
    _write("ready", time.time())


@app.task(name="tasks.noop", ignore_result=True)
def noop():
    if TARGET:
        with DONE.get_lock():
            DONE.value += 1
            count = DONE.value
        if count == TARGET:
            _write("done", time.time())


@app.task(name="tasks.add")
def add(x, y):
    return x + y


def publish(n):
    with app.producer_or_acquire() as producer:
        # One warm-up message declares the queue and opens the connection; the bench expects
        # n + extra messages in the queue.
        noop.apply_async(producer=producer)
        start = time.time()
        for _ in range(n):
            noop.apply_async(producer=producer)
        returned = time.time()
    print(json.dumps({"start": start, "returned": returned, "extra": 1}), flush=True)


def rtt(n, warmup):
    for _ in range(warmup):
        add.delay(1, 1).get(timeout=30)
    samples = []
    for _ in range(n):
        began = time.perf_counter()
        add.delay(1, 1).get(timeout=30)
        samples.append((time.perf_counter() - began) * 1000.0)
    samples.sort()

    def pick(q):
        return samples[min(len(samples) - 1, int(q * len(samples)))]

    print(json.dumps({"p50_ms": pick(0.5), "p99_ms": pick(0.99), "n": n}), flush=True)


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "publish":
        publish(int(sys.argv[2]))
    elif mode == "rtt":
        rtt(int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 50)
    else:
        sys.exit("unknown mode %r" % mode)
