"""Deletes the queues given on the command line (the interop tests' own), and the direct
exchange of the same name that Celery declared for each, ignoring missing ones."""

import sys

from kombu import Connection

from interop_tasks import BROKER_URL


def attempt(connection, what, name):
    # A refused call closes its channel: one channel each.
    channel = connection.channel()
    try:
        getattr(channel, what)(name)
    except Exception as error:  # noqa: BLE001 - a missing queue or exchange is fine
        print("could not %s %s: %s" % (what, name, error), file=sys.stderr)
    finally:
        channel.close()


with Connection(BROKER_URL) as connection:
    for name in sys.argv[1:]:
        attempt(connection, "queue_delete", name)
        attempt(connection, "exchange_delete", name)
