"""Refreshed user and item embeddings to the compacted output topic.

After each training step the learner reports whose parameters moved; those entities become
*pending*, each with the Kafka timestamp of the oldest event that has changed it since it was last
published. :meth:`EmbeddingPublisher.flush` (after every step, and on a timer for what the rate
limit held back) computes their current vectors under the model lock, drops those that moved less
than the threshold since their last record (:class:`streamrec.models.embeddings.ChangeTracker`), takes
tokens from the rate limit (:class:`streamrec.models.rate_limit.TokenBucket`) and sends the rest, oldest
first. Entities that expire from the vocabulary get a tombstone, so compaction removes them.

Every record carries the header ``streamrec.source_ts_ms`` (the pending event's timestamp); the
embeddings topic uses broker append time, so ``record.timestamp - source_ts_ms`` is the
event-to-embedding latency a consumer observes. The publisher keeps the same figure for ``/model``.

A user's vector needs the user's recent history, read from the local ``user_state`` table; users
whose state lives on another worker are published by that worker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from streamrec.models.embeddings import ChangeTracker, EmbeddingRecord
from streamrec.models.rate_limit import TokenBucket
from streamrec.stream.metrics import LATENCY_BOUNDS_S, Histogram
from streamrec.stream.worker.learner import GuardedModel
from streamrec.stream.worker.user_state import history_items

log = logging.getLogger(__name__)
SOURCE_TS_HEADER = "streamrec.source_ts_ms"
Send = Callable[..., Awaitable[asyncio.Future[Any]]]  # returns the delivery future


@dataclass
class LatencyWindow:
    """The last ``size`` latencies in seconds, for p50/p99 on ``/model`` (Prometheus gets a histogram)."""

    size: int = 20_000
    values: list[float] = field(default_factory=list)
    count: int = 0
    histogram: Histogram = field(default_factory=lambda: Histogram(LATENCY_BOUNDS_S))  # since start, for Prometheus

    def add(self, seconds: float) -> None:
        self.histogram.observe(seconds)
        self.count += 1
        if len(self.values) >= self.size:
            self.values[self.count % self.size] = seconds
        else:
            self.values.append(seconds)

    def quantiles(self) -> dict[str, float | None]:
        if not self.values:
            return {"p50": None, "p99": None}
        p50, p99 = np.quantile(np.asarray(self.values), [0.5, 0.99])
        return {"p50": float(p50), "p99": float(p99)}


@dataclass
class PublisherStats:
    published_users: int = 0
    published_items: int = 0
    unchanged: int = 0  # pending entities whose vector moved less than the threshold
    tombstones: int = 0
    snapshots: int = 0
    latency: LatencyWindow = field(default_factory=LatencyWindow)

    def as_dict(self) -> dict[str, Any]:
        return {
            "published_users": self.published_users,
            "published_items": self.published_items,
            "unchanged": self.unchanged,
            "tombstones": self.tombstones,
            "snapshots": self.snapshots,
            "event_to_embedding_s": self.latency.quantiles() | {"n": self.latency.count},
        }


class EmbeddingPublisher:
    def __init__(
        self,
        guarded: GuardedModel,
        send: Send,
        user_state: Any,
        *,
        threshold: float,
        max_per_s: float,
        encoding: Literal["json", "binary"] = "json",
    ) -> None:
        self.guarded = guarded
        self.send = send
        self.user_state = user_state
        self.encoding = encoding
        self.tracker = ChangeTracker(threshold)
        self.bucket = TokenBucket(max_per_s, burst=max_per_s)
        self.pending: dict[str, int] = {}  # "user:<id>" / "item:<id>" -> oldest source ts (ms), oldest first
        self.stats = PublisherStats()
        self._flushing = asyncio.Lock()

    # --- what changed ------------------------------------------------------------------------------
    def note(self, users: dict[str, int], items: Iterable[str], items_source_ts_ms: int) -> None:
        """Mark entities as pending; ``users`` maps a user to the timestamp of its oldest new event."""
        for user_id, ts in users.items():
            self.pending.setdefault(f"user:{user_id}", ts)
        for item_id in items:
            self.pending.setdefault(f"item:{item_id}", items_source_ts_ms)

    async def retire(self, users: Iterable[str], items: Iterable[str]) -> None:
        """Tombstone ids the vocabulary expired, so compaction removes them, and forget them here."""
        keys = [f"user:{u}" for u in users] + [f"item:{i}" for i in items]
        for key in keys:
            self.pending.pop(key, None)
            self.tracker.forget(key)
            await self.send(key=key.encode(), value=None)
        self.stats.tombstones += len(keys)

    # --- sending -----------------------------------------------------------------------------------
    async def flush(self) -> int:
        """Publish pending entities that moved, as far as the rate limit allows; the rest stay pending."""
        if not self.pending:
            return 0
        async with self._flushing:
            granted = self.bucket.take(len(self.pending), time.monotonic())
            if granted == 0:
                return 0
            keys = list(self.pending)[:granted]
            sources = [self.pending.pop(key) for key in keys]
            records = await self._records(keys, sources, only_changed=True)
            await self._send_all(records)
            return len(records)

    async def snapshot(self, batch: int = 2000) -> int:
        """Publish every known item and every local user now, moved or not (rate limit included)."""
        async with self.guarded.lock:
            item_keys = [f"item:{i}" for i in self.guarded.model.items.ids()]
        user_keys = [f"user:{u}" for u, state in self.user_state.items() if state]
        keys = item_keys + user_keys
        now_ms = int(time.time() * 1000)
        sent = 0
        async with self._flushing:
            for start in range(0, len(keys), batch):
                chunk = keys[start : start + batch]
                needed = len(chunk)
                while needed:
                    needed -= self.bucket.take(needed, time.monotonic())
                    if needed:
                        await asyncio.sleep(min(1.0, needed / self.bucket.rate_per_s))
                for key in chunk:
                    self.pending.pop(key, None)
                records = await self._records(chunk, [now_ms] * len(chunk), only_changed=False)
                await self._send_all(records)
                sent += len(records)
        self.stats.snapshots += 1
        return sent

    async def _records(
        self, keys: list[str], sources: list[int], only_changed: bool
    ) -> list[tuple[EmbeddingRecord, int]]:
        users = [(k[5:], s) for k, s in zip(keys, sources, strict=True) if k.startswith("user:")]
        items = [(k[5:], s) for k, s in zip(keys, sources, strict=True) if k.startswith("item:")]
        histories = {}
        for user_id, _ in users:
            state = self.user_state.get(user_id)
            if state is not None:
                histories[user_id] = history_items(state)
        users = [(u, s) for u, s in users if u in histories]
        async with self.guarded.lock:
            model = self.guarded.model
            known_items = [(i, s) for i, s in items if i in model.items]
            user_vectors = model.user_embeddings([u for u, _ in users], [histories[u] for u, _ in users])
            item_vectors = model.item_embeddings([i for i, _ in known_items])
            version = model.version
        now_ms = int(time.time() * 1000)
        records: list[tuple[EmbeddingRecord, int]] = []
        for kind, entries, vectors in (("user", users, user_vectors), ("item", known_items, item_vectors)):
            if not entries:
                continue
            matrix = vectors.numpy()
            keys_of_kind = [f"{kind}:{entity}" for entity, _ in entries]
            picked = self.tracker.changed(keys_of_kind, matrix) if only_changed else range(len(entries))
            self.stats.unchanged += len(entries) - len(picked)
            for index in picked:
                entity, source = entries[index]
                records.append((EmbeddingRecord(kind, entity, matrix[index], version, now_ms), source))  # type: ignore[arg-type]
        return records

    async def _send_all(self, records: list[tuple[EmbeddingRecord, int]]) -> None:
        for record, source_ts in records:
            key = record.key.decode()
            self.tracker.mark_published(key, record.vector)
            delivery = await self.send(
                key=record.key,
                value=record.encode(self.encoding),
                headers=[(SOURCE_TS_HEADER, str(source_ts).encode())],
            )
            delivery.add_done_callback(self._delivered(source_ts))
            if record.kind == "user":
                self.stats.published_users += 1
            else:
                self.stats.published_items += 1

    def _delivered(self, source_ts_ms: int) -> Callable[[Any], None]:
        def record_latency(_: Any) -> None:
            self.stats.latency.add(max(0.0, time.time() - source_ts_ms / 1000.0))

        return record_latency
