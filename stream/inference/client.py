"""The stream worker's side of the inference topics: send requests, match results, expire the rest.

Augmentation must never hold up events. So every request has a deadline, the number awaited at
once is bounded (``inference_max_in_flight``; beyond it new requests are dropped and counted, not
queued), and a request that is not answered in time fails with :class:`RequestExpired`. When the
inference worker is down, requests simply expire and training goes on with real samples; when it
comes back, results flow again without anyone restarting anything.

Results are keyed by client id; each stream worker reads every partition of the results topic
(no consumer group: results are for whoever asked) from its end at start-up and keeps its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer

from streamrec.stream.inference.protocol import InferenceRequest, InferenceResult, InvalidRequest, new_id, now_ms
from streamrec.stream.kafka.admin import start_client, topic_partitions
from streamrec.stream.kafka.security import new_consumer
from streamrec.stream.metrics import LATENCY_BOUNDS_S, Histogram
from streamrec.stream.settings import Settings

log = logging.getLogger(__name__)
Send = Callable[[str, bytes, bytes], Awaitable[Any]]  # (topic, key, value)


class RequestExpired(TimeoutError):
    """No result before the request's deadline (inference worker down, slow, or the request was dropped)."""


class RequestDropped(RuntimeError):
    """Not sent: too many requests in flight already."""


class RequestFailed(RuntimeError):
    """The inference worker answered with an error."""


@dataclass
class ClientStats:
    sent: Counter[str] = field(default_factory=Counter)
    completed: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    expired: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    last_result_at: float | None = None
    latency_ms: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))
    # Request to answer, by kind, since start: for Prometheus.
    round_trip: dict[str, Histogram] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        ordered = sorted(self.latency_ms)

        def quantile(q: float) -> float | None:
            return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2) if ordered else None

        return {
            "sent": dict(self.sent),
            "completed": dict(self.completed),
            "failed": dict(self.failed),
            "expired": dict(self.expired),
            "dropped": dict(self.dropped),
            "last_result_at": self.last_result_at,
            "latency_ms_p50": quantile(0.5),
            "latency_ms_p99": quantile(0.99),
        }


class InferenceClient:
    def __init__(self, settings: Settings, send: Send) -> None:
        self.settings = settings
        self.send = send
        self.client_id = f"stream-{uuid.uuid4().hex[:12]}"
        self.stats = ClientStats()
        self._pending: dict[str, tuple[asyncio.Future[Any], str, float, int]] = {}  # id -> (future, kind, t0, deadline)
        self._consumer: AIOKafkaConsumer | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def available(self, within_s: float = 30.0) -> bool:
        """Whether results arrived recently: the augmentation report's 'degraded' flag is its negation."""
        last = self.stats.last_result_at
        return last is not None and time.time() - last < within_s

    async def start(self) -> None:
        s = self.settings
        consumer = new_consumer(s, enable_auto_commit=False)
        await start_client(consumer, s)
        partitions = await topic_partitions(consumer, s.topic_inference_results)
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        self._consumer = consumer
        self._tasks = [asyncio.ensure_future(self._read_results()), asyncio.ensure_future(self._expire_loop())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()
        for future, kind, _, _ in self._pending.values():
            if not future.done():
                future.set_exception(RequestExpired("the stream worker is stopping"))
                self.stats.expired[kind] += 1
        self._pending.clear()

    async def request(self, kind: str, payload: dict[str, Any], timeout_s: float | None = None) -> Any:
        """The result of one request; raises RequestDropped, RequestExpired or RequestFailed."""
        if len(self._pending) >= self.settings.inference_max_in_flight:
            self.stats.dropped[kind] += 1
            raise RequestDropped(f"{len(self._pending)} inference requests in flight")
        timeout = self.settings.inference_timeout_s if timeout_s is None else timeout_s
        deadline = now_ms() + int(timeout * 1000)
        request = InferenceRequest(new_id(), self.client_id, kind, payload, deadline)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request.id] = (future, kind, time.perf_counter(), deadline)
        self.stats.sent[kind] += 1
        try:
            # Keyed by request id, so requests spread over every partition and so over every
            # inference worker in the group; results come back keyed by client id.
            await self.send(self.settings.topic_inference_requests, request.id.encode(), request.encode())
        except Exception:
            self._pending.pop(request.id, None)
            self.stats.dropped[kind] += 1
            raise
        return await future

    async def request_many(
        self, kind: str, payloads: list[dict[str, Any]], timeout_s: float | None = None
    ) -> list[Any]:
        """Results in order; a request that expired, failed or was dropped gives ``None``."""
        results = await asyncio.gather(*(self.request(kind, p, timeout_s) for p in payloads), return_exceptions=True)
        return [None if isinstance(r, BaseException) else r for r in results]

    async def _read_results(self) -> None:
        assert self._consumer is not None
        while True:
            fetched = await self._consumer.getmany(timeout_ms=200)
            for records in fetched.values():
                for record in records:
                    if record.key != self.client_id.encode():
                        continue
                    try:
                        result = InferenceResult.decode(record.value or b"")
                    except InvalidRequest as error:
                        log.warning("ignored a malformed inference result: %s", error)
                        continue
                    self._resolve(result)

    def _resolve(self, result: InferenceResult) -> None:
        entry = self._pending.pop(result.id, None)
        if entry is None:
            return  # already expired, or a duplicate delivery
        future, kind, started, _ = entry
        self.stats.last_result_at = time.time()
        if future.done():
            return
        if result.ok:
            self.stats.completed[kind] += 1
            elapsed_s = time.perf_counter() - started
            self.stats.latency_ms.append(elapsed_s * 1000.0)
            self.stats.round_trip.setdefault(kind, Histogram(LATENCY_BOUNDS_S)).observe(elapsed_s)
            future.set_result(result.result)
        else:
            self.stats.failed[kind] += 1
            future.set_exception(RequestFailed(result.error or "failed"))

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            self.expire(now_ms())

    def expire(self, at_ms: int) -> int:
        late = [rid for rid, (_, _, _, deadline) in self._pending.items() if deadline <= at_ms]
        for rid in late:
            future, kind, _, _ = self._pending.pop(rid)
            self.stats.expired[kind] += 1
            if not future.done():
                future.set_exception(RequestExpired(f"{kind} request not answered in time"))
        return len(late)
