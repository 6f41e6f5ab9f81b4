"""Deletes the queues given on the command line (the interop tests' own), ignoring missing ones."""

import sys

from kombu import Connection

from interop_tasks import BROKER_URL

with Connection(BROKER_URL) as connection:
    for name in sys.argv[1:]:
        channel = connection.channel()
        try:
            channel.queue_delete(name)
        except Exception as error:  # noqa: BLE001 - a missing queue is fine
            print("could not delete %s: %s" % (name, error), file=sys.stderr)
        finally:
            channel.close()
