"""The backoff on failed metadata updates (stream/kafka/supervision.py), against a port where no broker listens.

The loop below does what aiokafka's producer sender does while a partition has no leader: ask for
a metadata update, wait for it, ask again. Unpatched, an unreachable broker makes each update fail
at once and the loop spins (thousands of rounds a second); patched, it backs off.
"""

from __future__ import annotations

import asyncio
import time

from aiokafka.client import AIOKafkaClient
from aiokafka.cluster import BrokerMetadata

from streamrec.stream.kafka.supervision import MAX_METADATA_BACKOFF_S, back_off_failed_metadata_updates
from tests.integration.conftest import free_port


async def rounds_in(seconds: float) -> int:
    """Metadata update rounds a sender-like loop gets through in ``seconds`` with its one broker gone."""
    port = free_port()  # nothing listens there: every connection is refused at once
    client = AIOKafkaClient(bootstrap_servers=f"127.0.0.1:{port}")
    client.cluster._brokers = {1: BrokerMetadata(1, "127.0.0.1", port, None)}  # known, then gone
    synchronizer = asyncio.ensure_future(client._md_synchronizer())
    rounds, deadline = 0, time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            assert await client.force_metadata_update() is False
            rounds += 1
    finally:
        synchronizer.cancel()
        await client.close()
    return rounds


def test_failed_metadata_updates_back_off_exponentially_up_to_a_second(monkeypatch):
    monkeypatch.setattr(AIOKafkaClient, "_metadata_update", AIOKafkaClient._metadata_update)  # undone after
    assert asyncio.run(rounds_in(1.0)) > 50  # aiokafka as it is: spins (if this fails, aiokafka fixed it)
    back_off_failed_metadata_updates()
    back_off_failed_metadata_updates()  # idempotent: a second call does not stack another delay
    # rounds end after 0.1, 0.3, 0.7, 1.5 s (doubling), then every MAX_METADATA_BACKOFF_S: 5 rounds in 2.5 s
    assert MAX_METADATA_BACKOFF_S == 1.0 and 3 <= asyncio.run(rounds_in(2.5)) <= 6
