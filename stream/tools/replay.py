"""Replay a dataset into Kafka as a live stream: the catalogue first, then interactions in time order.

Pacing is a pure function of the event's index and timestamp (:class:`Pacing`), so "as fast as
possible", "N events per second" and "the dataset's own clock sped up X times" are one code path
and are tested without a broker. Sends are pipelined (the producer batches them) with a bounded
number in flight, and every send is confirmed by the broker before the replay reports success.

A :class:`RunStamp` makes a replay *new events*: the same dataset sent again would repeat its event
ids, and the worker's event-id dedupe would drop it as duplicates. Stamped, every event id carries
the run's id and every time is moved forward, so a second run of the demo is the same users coming
back later (see :func:`shift_past`), not a re-send of the first.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from streamrec.stream.kafka.admin import start_client
from streamrec.stream.kafka.security import new_producer
from streamrec.stream.settings import Settings
from streamrec.stream.tools.datasets import Dataset
from streamrec.stream.worker.contract import MAX_ID_LENGTH
from streamrec.stream.worker.user_state import event_id_digest, partition_for_key

MAX_IN_FLIGHT = 20_000
DAY_MS = 86_400_000


def new_run_id(now: datetime | None = None) -> str:
    """A run id that sorts by start time and is unique per run: ``20261203-101502-3fa2``."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def stamped_id(event_id: Any, run_id: str) -> Any:
    """``event_id`` made unique to the run: ``<event_id>@<run_id>``.

    Only ids the contract accepts are stamped (strings, or integers, with a non-blank value within
    the length limit). Anything else is sent as it is, so the worker dead-letters it with its own
    reason: stamping must not turn an empty id into a valid one. An id that would outgrow the limit
    is replaced by its digest (the user state keeps only digests of ids anyway).
    """
    if isinstance(event_id, bool) or not isinstance(event_id, str | int):
        return event_id
    text = str(event_id).strip()
    if not text or len(text) > MAX_ID_LENGTH:
        return event_id
    stamped = f"{text}@{run_id}"
    return stamped if len(stamped) <= MAX_ID_LENGTH else f"{event_id_digest(text)}@{run_id}"


def shift_past(newest_ms: int | None, first_ms: int | None, last_ms: int | None, now_ms: int) -> int:
    """How far a fresh run moves the dataset's clock (ms): whole days, enough for its first event to
    come after ``newest_ms`` (the newest event time already on the topics).

    Unmoved, a second run of the same data would be *late* in every user state that holds the first
    (its events older than what the state already has: trained on, never scored). Moved, it is
    the same users coming back later. Never into the future: the worker dead-letters events too far
    ahead of its clock, so the shift stops where the run's last event (``last_ms``) would pass
    ``now_ms``; some events may then be late, never rejected.
    """
    if newest_ms is None or first_ms is None or last_ms is None or newest_ms < first_ms:
        return 0
    wanted = ((newest_ms - first_ms) // DAY_MS + 1) * DAY_MS
    room = max(0, now_ms - last_ms) // DAY_MS * DAY_MS
    return min(wanted, room)


@dataclass(frozen=True)
class RunStamp:
    """What makes a replay a run of its own: ``@run_id`` on every event id, times moved by ``shift_ms``.

    Times below ``min_event_ms`` (which the worker rejects as too old) are not moved, so no event
    the worker would dead-letter unstamped becomes valid by the shift; nor are times that are not
    integers (a CSV cell that is not a time is sent as it is).
    """

    run_id: str
    shift_ms: int = 0
    min_event_ms: int = 0

    def apply(self, event: dict[str, Any]) -> dict[str, Any]:
        stamped = dict(event)
        if "event_id" in event:
            stamped["event_id"] = stamped_id(event["event_id"], self.run_id)
        ts = event.get("ts")
        if self.shift_ms and isinstance(ts, int) and not isinstance(ts, bool) and ts >= self.min_event_ms:
            stamped["ts"] = ts + self.shift_ms
        return stamped


@dataclass(frozen=True)
class Pacing:
    """When event ``i`` (with timestamp ``ts_ms``) is due, in seconds after the replay started.

    ``rate`` (events/s) and ``speedup`` (dataset time / wall time) are exclusive; neither means
    as fast as the producer goes.
    """

    rate: float | None = None
    speedup: float | None = None

    def __post_init__(self) -> None:
        if self.rate is not None and self.speedup is not None:
            raise ValueError("choose either a rate or a speed-up factor, not both")
        if (self.rate is not None and self.rate <= 0) or (self.speedup is not None and self.speedup <= 0):
            raise ValueError("rate and speed-up must be positive")

    def due_s(self, index: int, ts_ms: int, first_ts_ms: int) -> float:
        if self.rate is not None:
            return index / self.rate
        if self.speedup is not None:
            return max(0.0, (ts_ms - first_ts_ms) / 1000.0 / self.speedup)
        return 0.0


@dataclass
class ReplayReport:
    produced: Counter[str] = field(default_factory=Counter)
    catalogue: int = 0
    interactions: int = 0
    seconds: float = 0.0

    @property
    def events_per_s(self) -> float:
        return self.interactions / self.seconds if self.seconds else 0.0


def producer_for(settings: Settings, **overrides: Any) -> AIOKafkaProducer:
    """A producer for the configured cluster (its credentials included), tuned for throughput."""
    options: dict[str, Any] = {
        "acks": "all",
        "linger_ms": 5,
        "max_batch_size": 256 * 1024,
        "compression_type": None,
    }
    options.update(overrides)
    return new_producer(settings, **options)


def _ts_of(event: dict[str, Any]) -> int:
    ts = event.get("ts")
    return ts if isinstance(ts, int) else 0


async def replay(
    settings: Settings,
    dataset: Dataset,
    pacing: Pacing = Pacing(),
    *,
    limit: int | None = None,
    include_catalogue: bool = True,
    on_progress: Callable[[ReplayReport], None] | None = None,
    stamp: RunStamp | None = None,
) -> ReplayReport:
    """Send the catalogue, then the interactions in time order (``stamp``: as a run of their own)."""
    report = ReplayReport()
    producer = producer_for(settings)
    await start_client(producer, settings)
    in_flight: list[asyncio.Future[Any]] = []

    async def send(topic: str, key: Any, event: dict[str, Any]) -> None:
        key_bytes = None if key is None or key == "" else str(key).encode("utf-8")
        # Explicitly where the worker keeps the key's state (STREAMREC_PARTITIONER), not where aiokafka would.
        home = (
            None if key_bytes is None else partition_for_key(key_bytes, settings.topic_partitions, settings.partitioner)
        )
        in_flight.append(await producer.send(topic, orjson.dumps(event), key=key_bytes, partition=home))
        report.produced[topic] += 1
        if len(in_flight) >= MAX_IN_FLIGHT:
            await _drain(in_flight)

    started = time.monotonic()
    try:
        if include_catalogue:
            for item in dataset.catalogue:
                await send(settings.topic_catalogue, item.get("item_id"), item)
                report.catalogue += 1
            await _drain(in_flight)
        events: Iterable[dict[str, Any]] = dataset.interaction_events()
        first_ts: int | None = None
        clock = time.monotonic()
        last_progress = 0.0
        for index, event in enumerate(events):
            if limit is not None and index >= limit:
                break
            ts = _ts_of(event)
            first_ts = ts if first_ts is None else first_ts
            wait = clock + pacing.due_s(index, ts, first_ts) - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            topic = settings.topic_purchases if event.get("type") == "purchase" else settings.topic_clicks
            await send(topic, event.get("user_id"), event if stamp is None else stamp.apply(event))
            report.interactions += 1
            if on_progress and time.monotonic() - last_progress > 0.1:
                last_progress = time.monotonic()
                on_progress(report)
        await _drain(in_flight)
        await producer.flush()
    finally:
        report.seconds = time.monotonic() - started
        await producer.stop()
    if on_progress:
        on_progress(report)
    return report


async def _drain(in_flight: list[asyncio.Future[Any]]) -> None:
    """Wait until the broker has acknowledged every pending send (raises if one failed)."""
    if in_flight:
        await asyncio.gather(*in_flight)
        in_flight.clear()
