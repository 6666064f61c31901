"""The Kafka side of item-parameter sync between stream workers (the maths is in models/parameter_sync.py).

Every ``param_sync_interval_s`` a worker publishes its cumulative contribution to each item its
training moved, keyed ``<worker>/<item>``, on the compacted ``item-parameters`` topic. Every worker
also reads the whole topic, outside the consumer group (each needs every partition, not a share),
from the beginning at start-up and then as it grows, and merges the other workers' totals into its
model under the model lock. The training step itself never waits for Kafka: publishing is a timer,
reading is a task.

A send that fails is kept and sent again with the next round (a newer total for the same item
replaces it), so a broker outage delays convergence but loses no contribution.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka.errors import KafkaError

from streamrec.models.parameter_sync import ItemContribution
from streamrec.stream.kafka.admin import start_client, topic_partitions
from streamrec.stream.kafka.security import new_consumer
from streamrec.stream.settings import Settings
from streamrec.stream.worker.learner import Learner

log = logging.getLogger(__name__)
Send = Callable[[bytes, bytes], Awaitable[Any]]


class ItemParameterExchange:
    """Publishes this worker's item contributions and merges everybody else's into the model."""

    def __init__(self, settings: Settings, learner: Learner, send: Send) -> None:
        assert learner.sync is not None, "the learner was built without parameter sync"
        self.settings = settings
        self.learner = learner
        self.sync = learner.sync
        self.send = send
        self.unsent: dict[str, ItemContribution] = {}  # item -> newest contribution whose send failed
        self.send_errors = 0
        self.bad_records = 0
        self.read = 0  # records read from the topic (own included)
        self.lag = 0  # records on the topic this worker has not read yet (at the last poll)
        self._reader: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    # --- publishing --------------------------------------------------------------------------------
    async def publish(self) -> int:
        """Send the contributions of the items moved since the last round; returns how many were sent."""
        guarded = self.learner.guarded
        async with guarded.lock:
            fresh = self.sync.collect(guarded.model)
        batch = {**self.unsent, **{c.item_id: c for c in fresh}}
        self.unsent = {}
        if not batch:
            return 0
        sent = 0
        futures = []
        for contribution in batch.values():
            try:
                futures.append((contribution, await self.send(contribution.key, contribution.encode())))
            except KafkaError as error:
                self._failed(contribution, error)
        for contribution, future in futures:
            try:
                await future
                sent += 1
            except KafkaError as error:
                self._failed(contribution, error)
        return sent

    def _failed(self, contribution: ItemContribution, error: Exception) -> None:
        if not self.unsent:
            log.warning("item-parameter publish failed (%s); retrying with the next round", error)
        self.send_errors += 1
        newer = self.unsent.get(contribution.item_id)
        if newer is None or newer.seq < contribution.seq:
            self.unsent[contribution.item_id] = contribution

    # --- reading -----------------------------------------------------------------------------------
    def start(self) -> None:
        self._reader = asyncio.ensure_future(self._read_forever())

    async def stop(self) -> None:
        self._stopping.set()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, KafkaError):
                await self._reader

    async def _read_forever(self) -> None:
        """Read the topic from the start, then follow it; reconnects after broker errors."""
        while not self._stopping.is_set():
            consumer = new_consumer(
                self.settings, enable_auto_commit=False, group_id=None, auto_offset_reset="earliest"
            )
            try:
                await start_client(consumer, self.settings)
                topic = self.settings.topic_item_parameters
                partitions = await topic_partitions(consumer, topic)
                if not partitions:
                    raise KafkaError(f"topic {topic} has no partitions yet")
                consumer.assign(partitions)
                await consumer.seek_to_beginning(*partitions)
                while not self._stopping.is_set():
                    batches = await consumer.getmany(timeout_ms=500, max_records=5000)
                    records = [r for rs in batches.values() for r in rs]
                    if records:
                        await self._merge(records)
                    ends = await consumer.end_offsets(partitions)
                    lag = 0
                    for tp in partitions:
                        lag += max(0, ends[tp] - await consumer.position(tp))
                    self.lag = lag
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - the reader must outlive any one failure; it is logged
                log.warning("item-parameter reader: %r; reconnecting in 2 s", error)
                await asyncio.sleep(2.0)
            finally:
                with contextlib.suppress(KafkaError, OSError):
                    await consumer.stop()

    async def _merge(self, records: list[Any]) -> None:
        contributions = []
        for record in records:
            self.read += 1
            if record.value is None or record.key is None:
                continue  # a tombstone: nothing to add
            try:
                contributions.append(ItemContribution.decode(record.key, record.value))
            except (ValueError, UnicodeDecodeError) as error:
                self.bad_records += 1
                if self.bad_records == 1:
                    log.warning("ignoring a record on %s: %s", self.settings.topic_item_parameters, error)
        if not contributions:
            return
        guarded = self.learner.guarded
        async with guarded.lock:
            self.sync.merge(guarded.model, contributions, now_s=self.learner.latest_event_s)

    def report(self) -> dict[str, Any]:
        s = self.sync.stats
        return {
            "worker_id": self.sync.worker_id,
            "published": s.published,
            "applied": s.applied,
            "stale": s.stale,
            "own_ignored": s.own_ignored,
            "wrong_width": s.wrong_width,
            "contributors": sorted(s.contributors),
            "read": self.read,
            "lag": self.lag,
            "unsent": len(self.unsent),
            "send_errors": self.send_errors,
            "bad_records": self.bad_records,
        }
