"""Calls the Rust worker from Python Celery 5.7, one scenario per run, and prints one JSON
object with what Python saw. Used by tests/interop.rs.

    python interop_client.py SCENARIO
"""

import datetime
import json
import sys
import time

from celery import chain, group, signature
from celery.exceptions import TaskRevokedError

from interop_tasks import PRIORITY_QUEUE, QUEUE, app

TIMEOUT = 20
SERIALIZERS = ["json", "msgpack", "yaml", "pickle"]
COMPRESSIONS = ["none", "gzip", "bzip2", "lzma", "brotli", "zstd"]


def sig(name, *args, **options):
    return signature(name, args=args, app=app, options=dict({"queue": QUEUE}, **options))


def run(scenario):
    if scenario == "plain":
        return {"result": sig("tasks.add", 2, 2).apply_async().get(timeout=TIMEOUT)}
    if scenario == "kwargs":
        result = app.send_task("tasks.add", kwargs={"x": 2, "y": 3}, queue=QUEUE)
        return {"result": result.get(timeout=TIMEOUT)}
    if scenario == "link":
        result = sig("tasks.add", 2, 2).apply_async(link=sig("tasks.record", "link"))
        return {"result": result.get(timeout=TIMEOUT), "id": result.id}
    if scenario == "link_error":
        result = sig("tasks.fail", "boom").apply_async(link_error=sig("tasks.on_error"))
        try:
            result.get(timeout=TIMEOUT)
        except Exception:
            pass
        return {"id": result.id}
    if scenario == "countdown":
        started = time.monotonic()
        result = sig("tasks.add", 1, 1).apply_async(countdown=1)
        value = result.get(timeout=TIMEOUT)
        return {"result": value, "elapsed": time.monotonic() - started}
    if scenario == "eta":
        at = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=1)
        result = sig("tasks.add", 1, 2).apply_async(eta=at)
        value = result.get(timeout=TIMEOUT)
        return {"result": value, "late_enough": datetime.datetime.now(datetime.timezone.utc) >= at}
    if scenario == "expires":
        result = sig("tasks.record", 1, "expired").apply_async(countdown=1.5, expires=0.5)
        try:
            result.get(timeout=TIMEOUT)
            return {"state": result.state}
        except TaskRevokedError as exc:
            return {"state": result.state, "exc_type": type(exc).__name__}
    if scenario == "progress":
        seen = []
        result = sig("tasks.progress", [50, 90]).apply_async()
        value = result.get(timeout=TIMEOUT, on_message=lambda meta: seen.append(
            [meta["status"], (meta.get("result") or {}).get("progress") if meta["status"] == "PROGRESS" else None]))
        return {"result": value, "seen": seen}
    if scenario == "failure":
        result = sig("tasks.fail", "boom").apply_async()
        try:
            result.get(timeout=TIMEOUT)
            return {"state": result.state}
        except Exception as exc:
            return {"state": result.state, "exc_type": type(exc).__name__, "exc_args": list(exc.args)}
    if scenario == "group":
        result = group(sig("tasks.add", i, i) for i in [2, 4, 8, 16]).apply_async()
        return {"result": result.get(timeout=TIMEOUT)}
    if scenario == "chain":
        workflow = chain(sig("tasks.add", 2, 2), sig("tasks.add", 16), sig("tasks.mul", 3))
        return {"result": workflow.apply_async().get(timeout=TIMEOUT)}
    if scenario == "chain_failure":
        workflow = chain(sig("tasks.fail", "boom"), sig("tasks.add", 16), sig("tasks.mul", 3))
        try:
            workflow.apply_async().get(timeout=TIMEOUT)
            return {"state": "no error"}
        except Exception as exc:
            return {"exc_type": type(exc).__name__, "exc_args": list(exc.args)}
    if scenario == "link_group":
        members = group(sig("tasks.record", "link_group-a"), sig("tasks.record", "link_group-b"))
        result = sig("tasks.add", 2, 2).apply_async(link=members)
        value = result.get(timeout=TIMEOUT)
        # As a Python worker stores it: the group is one child, a GroupResult.
        children = [type(child).__name__ for child in (result.children or [])]
        return {"result": value, "children": children}
    if scenario == "chain_to_group":
        members = group(sig("tasks.record", "chain_to_group-a"), sig("tasks.record", "chain_to_group-b"))
        workflow = chain(sig("tasks.add", 3, 3), members)
        return {"result": workflow.apply_async().get(timeout=TIMEOUT)}
    if scenario == "named_queue":
        result = sig("tasks.add", 20, 22, queue=QUEUE + ".named").apply_async()
        return {"result": result.get(timeout=TIMEOUT)}
    if scenario == "headers":
        result = sig("tasks.request_header", "periodic_task_name").apply_async(
            headers={"periodic_task_name": "nightly"})
        return {"result": result.get(timeout=TIMEOUT)}
    if scenario == "priority":
        for priority in [1, 9, 5]:
            sig("tasks.record", priority, "prio", queue=PRIORITY_QUEUE, priority=priority).apply_async(ignore_result=True)
        return {"sent": 3}
    if scenario == "ignore_result":
        result = sig("tasks.record", 7, "ignored").apply_async(ignore_result=True)
        # A task queued after it has run by then (give it a moment more): a result stored by
        # mistake would have reached this process's reply queue, where `state` reads it.
        sig("tasks.add", 1, 1).apply_async().get(timeout=TIMEOUT)
        time.sleep(0.3)
        return {"id": result.id, "state": result.state}
    if scenario == "asked_of_a_quiet_task":
        # tasks.quiet is declared ignore_result on the Rust side. Sent by name with
        # ignore_result=False, the caller's choice wins (Celery 5.7); sent by name without it,
        # the header is null and the task's own setting decides.
        unasked = sig("tasks.quiet", 6).apply_async()
        asked = sig("tasks.quiet", 5).apply_async(ignore_result=False)
        value = asked.get(timeout=TIMEOUT)
        time.sleep(0.3)
        return {"result": value, "unasked_state": unasked.state}
    if scenario == "codec_matrix":
        value = json.loads(sys.argv[2])
        outcomes = {}
        for serializer in SERIALIZERS:
            for compression in COMPRESSIONS:
                options = {"serializer": serializer}
                if compression != "none":
                    options["compression"] = compression
                try:
                    result = sig("tasks.echo", value).apply_async(**options)
                    outcomes["%s/%s" % (serializer, compression)] = result.get(timeout=TIMEOUT)
                except Exception as exc:  # noqa: BLE001 - reported to the Rust test
                    outcomes["%s/%s" % (serializer, compression)] = "error: %r" % (exc,)
        return outcomes
    if scenario == "state":
        return {"state": app.AsyncResult(sys.argv[2]).state}
    raise SystemExit("unknown scenario %r" % scenario)


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1])))
