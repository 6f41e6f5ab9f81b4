#!/usr/bin/env python3
"""Capture the exact wire messages Python Celery sends, as JSON fixtures.

Run with the venv's python (see ensure_venv.sh), with RabbitMQ on
127.0.0.1:5672 (guest/guest):

    $(tests/python/ensure_venv.sh | tail -n1) tests/python/capture_fixtures.py

Task messages: each case publishes with Celery into a uniquely named queue
(routing via ``queue=``), which is declared first with the very flags Celery
uses, then read back with py-amqp ``basic_get`` and deleted (queue and its
exchange).  Nothing consumes these queues, so there is no ack race.

Result messages: a real ``celery worker -P solo`` runs in the background on
its own unique queue; tasks are sent with ``reply_to=<our own reply queue>``
and whatever the worker publishes there is read back with ``basic_get``.

Every fixture records the body (UTF-8 text when it is, and base64), all
basic properties, the headers in wire order, the Python type of each header
value as py-amqp decoded it, and the raw AMQP field-type letters, decoded
from the raw content-header frame.
"""

import argparse
import base64
import datetime
import decimal
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DEFAULT_OUT = os.path.join(REPO, "tests", "fixtures", "python")
sys.path.insert(0, HERE)

import amqp  # noqa: E402
import celery  # noqa: E402
import kombu  # noqa: E402
from amqp.serialization import GenericContent  # noqa: E402
from celery import chain, group  # noqa: E402
from kombu import Exchange, Queue  # noqa: E402

import fixture_tasks as ft  # noqa: E402

AMQP_HOST = os.environ.get("FIXTURE_AMQP_HOST", "127.0.0.1:5672")
AMQP_USER = os.environ.get("FIXTURE_AMQP_USER", "guest")
AMQP_PASSWORD = os.environ.get("FIXTURE_AMQP_PASSWORD", "guest")
AMQP_VHOST = os.environ.get("FIXTURE_AMQP_VHOST", "/")

RUN = uuid.uuid4().hex[:8]


def tid(n):
    """Fixed, stable task ids."""
    return "a1b2c3d4-0000-4000-8000-%012d" % n


# ---------------------------------------------------------------------------
# Keep the raw content-header property bytes of every message py-amqp reads,
# so that the AMQP field types of the header table can be recovered.

_orig_load_properties = GenericContent._load_properties


def _load_properties_keep_raw(self, class_id, buf, offset):
    end = _orig_load_properties(self, class_id, buf, offset)
    self.__dict__["_raw_properties"] = bytes(buf[offset:end])
    return end


GenericContent._load_properties = _load_properties_keep_raw

_FIXED = {"s": 2, "b": 1, "B": 1, "U": 2, "u": 2, "I": 4, "i": 4, "L": 8,
          "l": 8, "f": 4, "d": 8, "D": 5, "t": 1, "T": 8, "V": 0}


def _typed_item(buf, off):
    """Return (type descriptor, new offset) for one AMQP field value.

    Scalars are their type letter; arrays are {"A": [...]}, tables are
    {"F": {key: ...}} (wire order).
    """
    t = chr(buf[off])
    off += 1
    if t in ("S", "x"):
        (n,) = struct.unpack_from(">I", buf, off)
        return t, off + 4 + n
    if t == "F":
        return _typed_table(buf, off)
    if t == "A":
        (n,) = struct.unpack_from(">I", buf, off)
        off += 4
        end = off + n
        items = []
        while off < end:
            d, off = _typed_item(buf, off)
            items.append(d)
        return {"A": items}, off
    if t in _FIXED:
        return t, off + _FIXED[t]
    raise ValueError("unknown AMQP field type %r" % t)


def _typed_table(buf, off):
    (n,) = struct.unpack_from(">I", buf, off)
    off += 4
    end = off + n
    out = {}
    while off < end:
        klen = buf[off]
        key = buf[off + 1:off + 1 + klen].decode("utf-8")
        off += 1 + klen
        out[key], off = _typed_item(buf, off)
    return {"F": out}, off


def header_table_from_raw(raw):
    """(amqp types by key, raw header table bytes) from raw basic properties."""
    (flags,) = struct.unpack_from(">H", raw, 0)
    off = 2
    if flags & 0x8000:  # content_type (shortstr)
        off += 1 + raw[off]
    if flags & 0x4000:  # content_encoding (shortstr)
        off += 1 + raw[off]
    if not flags & 0x2000:
        return None, None
    start = off
    desc, end = _typed_table(raw, off)
    return desc["F"], raw[start:end]


# ---------------------------------------------------------------------------

PROPERTY_ORDER = [  # AMQP 0-9-1 basic property order (minus headers)
    "content_type", "content_encoding", "delivery_mode", "priority",
    "correlation_id", "reply_to", "expiration", "message_id", "timestamp",
    "type", "user_id", "app_id", "cluster_id",
]


def py_type(v):
    if v is None:
        return "None"
    if isinstance(v, bool):
        return "bool"
    for t, name in ((int, "int"), (float, "float"), (str, "str"),
                    (bytes, "bytes"), (list, "list"), (dict, "dict"),
                    (decimal.Decimal, "Decimal"),
                    (datetime.datetime, "datetime")):
        if isinstance(v, t):
            return name
    return type(v).__name__


def jsonable(v):
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, bytes):
        return {"__bytes_base64__": base64.b64encode(v).decode()}
    if isinstance(v, decimal.Decimal):
        return str(v)
    if isinstance(v, datetime.datetime):
        return v.isoformat()
    return v


def message_record(case, msg, note=None):
    props = dict(msg.properties)
    raw = msg.__dict__.get("_raw_properties")
    headers = props.pop("application_headers", None)
    amqp_types, raw_table = header_table_from_raw(raw) if raw else (None, None)
    body = msg.body if msg.body is not None else b""
    if isinstance(body, str):  # channel with auto_decode on
        body = body.encode(props.get("content_encoding") or "utf-8")
    body = bytes(body)
    try:
        body_text = body.decode("utf-8")
    except UnicodeDecodeError:
        body_text = None
    body_json = None
    if (body_text is not None
            and props.get("content_type") == "application/json"
            and not (headers or {}).get("compression")):
        body_json = json.loads(body_text)
    properties = {k: props[k] for k in PROPERTY_ORDER if k in props}
    properties.update({k: v for k, v in props.items() if k not in properties})
    di = msg.delivery_info or {}
    rec = {
        "case": case,
        "properties": jsonable(properties),
        "headers": jsonable(headers),
        "header_order": list(headers) if headers is not None else None,
        "header_types": ({k: py_type(v) for k, v in headers.items()}
                         if headers is not None else None),
        "header_amqp_types": amqp_types,
        "content_type": props.get("content_type"),
        "content_encoding": props.get("content_encoding"),
        "body_text": body_text,
        "body_base64": base64.b64encode(body).decode(),
        "body_json": body_json,
        "delivery_info": {
            "exchange": di.get("exchange"),
            "routing_key": di.get("routing_key"),
            "redelivered": di.get("redelivered"),
        },
        "headers_raw_base64": (base64.b64encode(raw_table).decode()
                               if raw_table is not None else None),
        "properties_raw_base64": (base64.b64encode(raw).decode()
                                  if raw is not None else None),
    }
    if note:
        rec["note"] = note
    return rec


def write_fixture(out_dir, filename, rec):
    path = os.path.join(out_dir, filename)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(rec, f, indent=2, ensure_ascii=False)
        f.write("\n")
    print("  wrote %s" % os.path.relpath(path, REPO))
    return filename


# ---------------------------------------------------------------------------

def raw_connection():
    conn = amqp.Connection(host=AMQP_HOST, userid=AMQP_USER,
                           password=AMQP_PASSWORD, virtual_host=AMQP_VHOST,
                           connect_timeout=10)
    conn.connect()
    return conn


def get_messages(ch, queue, count, timeout=15.0):
    """basic_get `count` messages from `queue` (no_ack), polling."""
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        msg = ch.basic_get(queue=queue, no_ack=True)
        if msg is not None:
            got.append(msg)
            continue
        if time.monotonic() > deadline:
            raise TimeoutError("got %d/%d messages from %s"
                               % (len(got), count, queue))
        time.sleep(0.05)
    return got


def declare_like_celery(app, queue):
    """Declare `queue` (a name or kombu Queue) exactly as Celery would."""
    if isinstance(queue, str):
        queue = app.amqp.queues[queue]  # create_missing: Queue(q, Exchange(q), q)
    with app.connection_for_write() as conn:
        queue.bind(conn.default_channel).declare()
    return queue


def delete_queue(ch, name, exchange=None):
    ch.queue_delete(name)
    if exchange:
        ch.exchange_delete(exchange)


def qname(case):
    return "celery-fixture-%s-%s" % (case.replace("_", "-"), RUN)


# Each case: (case name, files, publish function(queue) -> None).
# `files` names the fixture file for each message expected, in order.

def case_add(q):
    ft.add.apply_async((2, 2), task_id=tid(1), queue=q)


def case_kwargs(q):
    ft.add.apply_async(kwargs={"x": 2, "y": 3}, task_id=tid(2), queue=q)


def case_countdown_expires(q):
    ft.add.apply_async((2, 2), task_id=tid(3), queue=q,
                       countdown=3, expires=60)


def case_link(q):
    ft.add.apply_async((2, 2), task_id=tid(4), queue=q,
                       link=ft.add.s(16), link_error=ft.on_error.s())


def case_chain(q):
    c = chain(ft.add.s(2, 2).set(task_id=tid(5)),
              ft.add.s(16).set(task_id=tid(6)),
              ft.mul.s(3).set(task_id=tid(7)))
    c.apply_async(queue=q)


def case_group(q):
    g = group(ft.add.s(1, 2).set(task_id=tid(9)),
              ft.add.s(3, 4).set(task_id=tid(10)))
    g.apply_async(task_id=tid(8), queue=q)  # task_id = the group id


def case_priority(q):
    ft.add.apply_async((2, 2), task_id=tid(11), queue=q, priority=5)


def case_non_ascii(q):
    ft.echo.apply_async(("héllo ☃",), {"k": "ü"}, task_id=tid(12), queue=q)


def case_shadow_timelimit(q):
    ft.add.apply_async((2, 2), task_id=tid(13), queue=q,
                       shadow="add-shadow-name", time_limit=10,
                       soft_time_limit=5)


def case_special_types(q):
    ft.echo.apply_async(
        (datetime.datetime(2026, 1, 2, 3, 4, 5, 678901,
                           tzinfo=datetime.timezone.utc),
         datetime.datetime(2026, 1, 2, 3, 4, 5),
         datetime.date(2026, 1, 2),
         datetime.time(3, 4, 5),
         decimal.Decimal("1.50"),
         uuid.UUID("12345678-1234-5678-1234-567812345678"),
         b"\x00\x01binary",
         1.5, 2 ** 40, True, None),
        task_id=tid(14), queue=q)


def case_gzip(q):
    ft.add.apply_async((2, 2), task_id=tid(15), queue=q, compression="gzip")


def case_ignore_result(q):
    ft.add.apply_async((2, 2), task_id=tid(16), queue=q, ignore_result=True)


PRIORITY_QUEUE_MAX = 10

CASES = [
    ("task_add_2_2", ["task_add_2_2.json"], case_add),
    ("task_add_kwargs", ["task_add_kwargs.json"], case_kwargs),
    ("task_countdown_expires", ["task_countdown_expires.json"],
     case_countdown_expires),
    ("task_link_link_error", ["task_link_link_error.json"], case_link),
    ("task_chain_first", ["task_chain_first.json"], case_chain),
    ("task_group", ["task_group_0.json", "task_group_1.json"], case_group),
    ("task_priority_5", ["task_priority_5.json"], case_priority),
    ("task_non_ascii", ["task_non_ascii.json"], case_non_ascii),
    ("task_shadow_timelimit", ["task_shadow_timelimit.json"],
     case_shadow_timelimit),
    ("task_special_types", ["task_special_types.json"], case_special_types),
    ("task_gzip", ["task_gzip.json"], case_gzip),
    ("task_ignore_result", ["task_ignore_result.json"], case_ignore_result),
]


def capture_task_messages(app, ch, out_dir):
    written = []
    for case, files, publish in CASES:
        print("case %s" % case)
        name = qname(case)
        if case == "task_priority_5":
            queue = Queue(name, Exchange(name, "direct"), routing_key=name,
                          max_priority=PRIORITY_QUEUE_MAX)
        else:
            queue = name
        queue = declare_like_celery(app, queue)
        try:
            publish(queue if case == "task_priority_5" else name)
            msgs = get_messages(ch, name, len(files))
            # Nothing else may be in the queue.
            extra = ch.basic_get(queue=name, no_ack=True)
            if extra is not None:
                raise RuntimeError("unexpected extra message in %s" % name)
        finally:
            delete_queue(ch, name, queue.exchange.name)
        for i, (fname, msg) in enumerate(zip(files, msgs)):
            c = case if len(files) == 1 else "%s[%d]" % (case, i)
            note = None
            if case == "task_priority_5":
                note = ("queue declared with x-max-priority=%d"
                        % PRIORITY_QUEUE_MAX)
            written.append(write_fixture(out_dir, fname,
                                         message_record(c, msg, note)))
    return written


# ---------------------------------------------------------------------------
# Result messages from a real worker.

def capture_result_messages(app, ch, out_dir, celery_python, worker_timeout):
    worker_q = qname("worker")
    reply_q = qname("reply")
    retry_q = qname("retry")
    written = []
    ch.queue_declare(reply_q, durable=False, auto_delete=False)
    retry_queue = declare_like_celery(app, retry_q)
    worker_queue = declare_like_celery(app, worker_q)
    logdir = tempfile.mkdtemp(prefix="celery-fixture-worker-")
    logpath = os.path.join(logdir, "worker.log")
    cmd = [celery_python, "-m", "celery", "-A", "fixture_tasks", "worker",
           "-P", "solo", "-c", "1", "-Q", worker_q,
           "-n", "fixture-%s@%%h" % RUN, "-l", "INFO",
           "--without-heartbeat", "--without-gossip", "--without-mingle"]
    env = dict(os.environ, PYTHONPATH=HERE + os.pathsep
               + os.environ.get("PYTHONPATH", ""))
    log = open(logpath, "w")
    proc = subprocess.Popen(cmd, cwd=HERE, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    print("worker pid %d (log %s)" % (proc.pid, logpath))
    try:
        opts = {"queue": worker_q, "reply_to": reply_q}
        ft.add.apply_async((2, 2), task_id=tid(101), **opts)
        ft.fail.apply_async(task_id=tid(102), **opts)
        ft.progress.apply_async(task_id=tid(103), **opts)
        ft.retry_once.apply_async(kwargs={"retry_queue": retry_q},
                                  task_id=tid(104), **opts)
        expected = 5  # SUCCESS, FAILURE, PROGRESS, SUCCESS(progress), RETRY
        try:
            msgs = get_messages(ch, reply_q, expected, timeout=worker_timeout)
        except TimeoutError:
            log.flush()
            with open(logpath) as f:
                sys.stderr.write(f.read()[-4000:])
            raise
        retried = get_messages(ch, retry_q, 1, timeout=10)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        for name, q in ((worker_q, worker_queue), (retry_q, retry_queue)):
            delete_queue(ch, name, q.exchange.name)
        delete_queue(ch, reply_q)
        shutil.rmtree(logdir, ignore_errors=True)

    by_key = {}
    for m in msgs:
        payload = json.loads(bytes(m.body).decode("utf-8"))
        by_key.setdefault((m.properties.get("correlation_id"),
                           payload.get("status")), m)
    wanted = [
        ((tid(101), "SUCCESS"), "result_success_add.json",
         "result_success"),
        ((tid(102), "FAILURE"), "result_failure_valueerror.json",
         "result_failure"),
        ((tid(103), "PROGRESS"), "result_progress.json", "result_progress"),
        ((tid(103), "SUCCESS"), "result_progress_final_success.json",
         "result_progress_final_success"),
        ((tid(104), "RETRY"), "result_retry.json", "result_retry"),
    ]
    for key, fname, case in wanted:
        if key not in by_key:
            raise RuntimeError("missing result message %r; got %r"
                               % (key, sorted(by_key)))
        written.append(write_fixture(out_dir, fname,
                                     message_record(case, by_key[key])))
    written.append(write_fixture(
        out_dir, "task_retry_republished.json",
        message_record("task_retry_republished", retried[0],
                       "message a worker publishes for self.retry(countdown=1,"
                       " queue=...) on the first attempt")))
    return written


# ---------------------------------------------------------------------------

def reply_queue_facts(app):
    b = app.backend.binding
    facts = {
        "backend": type(app.backend).__module__ + "."
        + type(app.backend).__name__,
        "name": "app.thread_oid (uuid, per app/thread)",
        "durable": b.durable,
        "auto_delete": b.auto_delete,
        "exclusive": b.exclusive,
        "expires_seconds": b.expires,
        "queue_arguments": jsonable(b.queue_arguments),
        "exchange": b.exchange.name,
        "routing_key_equals_name": b.routing_key == b.name,
        "result_delivery_mode": app.backend.delivery_mode,
        "result_persistent": app.backend.persistent,
    }
    # What the broker actually holds (the reply queue was declared by
    # on_task_call when the cases above were sent).
    live = None
    if shutil.which("rabbitmqctl"):
        try:
            out = subprocess.run(
                ["rabbitmqctl", "-q", "--formatter", "json", "list_queues",
                 "name", "durable", "auto_delete", "exclusive", "arguments"],
                capture_output=True, text=True, timeout=30, check=True)
            for q in json.loads(out.stdout or "[]"):
                if q.get("name") == b.name:
                    live = {k: q.get(k) for k in
                            ("durable", "auto_delete", "exclusive",
                             "arguments")}
        except Exception as e:  # rabbitmqctl is optional
            live = {"error": repr(e)}
    facts["broker_list_queues"] = live
    return facts


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--skip-worker", action="store_true",
                    help="do not start a worker / capture result messages")
    ap.add_argument("--worker-timeout", type=float, default=90.0)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    app = ft.app
    conn = raw_connection()
    ch = conn.channel()
    ch.auto_decode = False  # keep message bodies as the exact bytes
    written = []
    try:
        written += capture_task_messages(app, ch, args.out)
        facts = reply_queue_facts(app)
        if not args.skip_worker:
            written += capture_result_messages(app, ch, args.out,
                                               sys.executable,
                                               args.worker_timeout)
    finally:
        # Remove the client's own rpc reply queue (auto_delete never fires:
        # nothing consumed from it).
        try:
            ch.queue_delete(app.backend.binding.name)
        except Exception:
            pass
        conn.close()

    manifest = {
        "generated_by": "tests/python/capture_fixtures.py",
        "versions": {"celery": celery.__version__,
                     "kombu": kombu.__version__,
                     "amqp": amqp.__version__,
                     "python": sys.version.split()[0]},
        "rpc_reply_queue": facts,
        "fixtures": sorted(written),
    }
    write_fixture(args.out, "manifest.json", manifest)
    print("done: %d fixtures" % len(written))


if __name__ == "__main__":
    main()
