"""How the workers' Kafka clients behave while the broker is away.

Faust and aiokafka reconnect by themselves when a broker comes back (``tests/integration/test_faults.py``
stops and kills one under a running worker). One thing goes wrong while it is away: aiokafka's
producer spins. When the broker shuts down cleanly its partitions lose their leader, and the
producer's sender loop, holding a batch for a partition without a leader, asks for a metadata
update and waits for it; a metadata update that cannot reach any broker fails at once (connection
refused), so the loop asks again at once: about two thousand attempts a second, most of a core, and
two ERROR lines per attempt in the log (a gigabyte an hour), for as long as the outage lasts. The
other loops (fetcher, group coordinator, sends to a known leader) already wait ``retry_backoff_ms``.

:func:`back_off_failed_metadata_updates` makes a failed metadata update wait before it reports
failure, doubling from ``retry_backoff_ms`` (100 ms) up to :data:`MAX_METADATA_BACKOFF_S` while the
failures last, and back to nothing on the first success: every loop that waits for the update
(the sender among them) then retries at most a few times a second. This is the Java client's
``reconnect.backoff.ms`` / ``reconnect.backoff.max.ms`` behaviour, which aiokafka does not have.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from aiokafka.client import AIOKafkaClient

MAX_METADATA_BACKOFF_S = 1.0  # the Java client's reconnect.backoff.max.ms


def back_off_failed_metadata_updates() -> None:
    """Patch :class:`aiokafka.client.AIOKafkaClient` once per process (idempotent)."""
    original = AIOKafkaClient._metadata_update
    if getattr(original, "_streamrec_backoff", False):
        return

    @functools.wraps(original)
    async def _metadata_update(self: AIOKafkaClient, cluster_metadata: Any, topics: Any) -> bool:
        updated = await original(self, cluster_metadata, topics)
        failures = 0 if updated else getattr(self, "_streamrec_md_failures", 0) + 1
        self._streamrec_md_failures = failures  # type: ignore[attr-defined]
        if failures:
            await asyncio.sleep(min(self._retry_backoff * 2 ** min(failures - 1, 10), MAX_METADATA_BACKOFF_S))
        return updated

    _metadata_update._streamrec_backoff = True  # type: ignore[attr-defined]
    AIOKafkaClient._metadata_update = _metadata_update  # type: ignore[method-assign]
