"""Declares a queue the way a Celery 5.7 app with the given settings declares it before its
worker consumes it or its client publishes to it (tests/queue_settings.rs), and prints what was
declared as JSON: the queue's name, its arguments and its exchange's name and type.

    python declare_queue.py QUEUE SETTINGS_JSON

SETTINGS_JSON is a dict of Celery settings; its "task_queues", if any, is a list of dicts with
"name" and optionally "exchange", "exchange_type", "routing_key" and "queue_arguments", made
into kombu Queues.
"""

import json
import sys

from celery import Celery
from kombu import Exchange, Queue

from interop_tasks import BROKER_URL


def kombu_queue(spec):
    name = spec["name"]
    exchange = Exchange(spec.get("exchange", name), spec.get("exchange_type", "direct"))
    return Queue(
        name,
        exchange,
        routing_key=spec.get("routing_key", name),
        queue_arguments=spec.get("queue_arguments"),
    )


name = sys.argv[1]
settings = json.loads(sys.argv[2])
if "task_queues" in settings:
    settings["task_queues"] = [kombu_queue(spec) for spec in settings["task_queues"]]

app = Celery("declare_queue", broker=BROKER_URL)
app.conf.update(settings)

# What the worker's consumer and the publisher declare: the app's queue by that name (the
# default one, a configured one or one created for the name).
queue = app.amqp.queues[name]
with app.connection_for_write() as connection:
    queue(connection.default_channel).declare()

print(json.dumps({
    "name": queue.name,
    "queue_arguments": queue.queue_arguments,
    "exchange": queue.exchange.name,
    "exchange_type": queue.exchange.type,
    "routing_key": queue.routing_key,
}))
