"""An agent that raises stops the worker process at once, so that its batch is read again.

Faust's answer to an exception in an agent is to log "Crashed" and start the agent again. For
this pipeline that loses data: the batch the agent held is acknowledged when its
``take_events`` generator is finalised (its ``finally`` acks every event of the batch), the next
commit moves past events that were never applied or trained, and the restarted agent does not
resume every partition. All three were seen in ``tests/integration/test_agent_crash.py``, which
is why the worker fails fast instead, as a Kafka Streams application does by default: it logs the
traceback and exits with :data:`EXIT_AGENT_CRASHED` before anything is acknowledged. What is
left is the ``kill -9`` case the delivery guarantees already cover (docs/delivery.md): a new
process (Kubernetes, compose's ``restart: unless-stopped``, systemd) reads from the committed
offsets and the learner rewinds to its checkpoint, so nothing is lost or applied twice.

Bad input is not an exception here: it is dead-lettered by the ingestion (stream/worker/ingest.py). An
exception is a bug or an infrastructure failure, and a worker that keeps failing on the same
record keeps restarting, visibly (the worker-down alert, the pod's restart count), without
losing it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

EXIT_AGENT_CRASHED = 70  # EX_SOFTWARE in sysexits.h: an internal error, not a usage error


def _flush_logs() -> None:
    for handler in logging.getLogger().handlers:
        handler.flush()


@contextmanager
def exit_on_error(agent: str, exit_process: Callable[[int], object] = os._exit) -> Iterator[None]:
    """Around an agent's loop: on an exception, log it and end the process before Faust acks the batch.

    ``os._exit`` and not ``sys.exit``: a clean shutdown would run Faust's final commit, which is
    what must not happen. Cancellation (shutdown, or Faust restarting agents on a rebalance) is
    not an error and passes through.
    """
    try:
        yield
    except Exception:
        log.critical(
            "agent %s raised; the worker exits with code %d without acknowledging its batch: restart it "
            "and it reads again from the committed offsets",
            agent, EXIT_AGENT_CRASHED, exc_info=True,
        )  # fmt: skip
        _flush_logs()
        exit_process(EXIT_AGENT_CRASHED)
        raise  # only reached when exit_process returns (tests)
