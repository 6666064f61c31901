"""Replay a dataset into Kafka as a live stream: the catalogue first, then interactions in time order.

Pacing is a pure function of the event's index and timestamp (:class:`Pacing`), so "as fast as
possible", "N events per second" and "the dataset's own clock sped up X times" are one code path
and are tested without a broker. Sends are pipelined (the producer batches them) with a bounded
number in flight, and every send is confirmed by the broker before the replay reports success.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from stream.datasets import Dataset
from stream.kafka_admin import start_client
from stream.kafka_security import new_producer
from stream.settings import Settings

MAX_IN_FLIGHT = 20_000


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
) -> ReplayReport:
    report = ReplayReport()
    producer = producer_for(settings)
    await start_client(producer, settings)
    in_flight: list[asyncio.Future[Any]] = []

    async def send(topic: str, key: Any, event: dict[str, Any]) -> None:
        key_bytes = None if key is None or key == "" else str(key).encode("utf-8")
        in_flight.append(await producer.send(topic, orjson.dumps(event), key=key_bytes))
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
            await send(topic, event.get("user_id"), event)
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
