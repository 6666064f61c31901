"""Dynamic batching for the inference worker: many small requests in, few large model calls out.

A transformer forward pass costs about the same for 1 or 64 short inputs on a GPU, so the worker
collects requests for a short while and runs them together. The batcher is the only place that
decides *when* the model runs and *on what*:

* **one kind per batch**: each request kind (``"embed"``, ``"yes_no"``, ``"generate"``) has its own
  handler, which takes a list of payloads and returns one result per payload;
* **dispatch rule**: a batch goes when ``max_batch`` requests of one kind and length bucket are
  waiting, or when the oldest request has waited ``max_wait_s`` (latency bound under light load);
* **length bucketing**: requests are grouped by ``length_of(kind, payload) // bucket_width``, so a
  20-token title is not padded to the length of a 500-token prompt. The oldest request's bucket
  always goes first once it is due, so a rare length never starves; when that bucket alone cannot
  fill the batch it is topped up from the nearest buckets of the same kind, because one model call
  with some padding is cheaper than several small ones;
* **backpressure**: at most ``max_queue`` requests are queued or in flight; beyond that
  :meth:`DynamicBatcher.submit` raises :class:`QueueFull` at once, so a stream consumer can drop
  the augmentation instead of stalling the stream;
* **deadlines**: a request whose deadline passes while queued fails with :class:`Expired` and never
  reaches the model: an answer that arrives after the caller gave up is wasted GPU time;
* **isolation**: handlers run in one worker thread, so the event loop keeps accepting requests
  while the model runs, and a handler exception fails only the requests of that batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

Handler = Callable[[list[Any]], list[Any]]


class QueueFull(RuntimeError):
    """``max_queue`` requests are already pending: drop this one (or retry later), do not wait."""


class Expired(TimeoutError):
    """The request's deadline passed before it was batched; the model never saw it."""


class BatcherStopped(RuntimeError):
    """The batcher is not running, or was stopped without draining while this request was pending."""


@dataclass
class BatcherStats:
    """Counters of a :class:`DynamicBatcher` since it was built.

    Every accepted request ends in exactly one of completed, expired, failed or cancelled, so
    ``submitted == completed + expired + failed + cancelled + queue_depth``. Rejected requests
    (:class:`QueueFull`) are not counted as submitted.
    """

    submitted: int = 0
    completed: int = 0
    expired: int = 0
    rejected: int = 0
    failed: int = 0
    cancelled: int = 0
    batches: int = 0
    batch_sizes: Counter[int] = field(default_factory=Counter)
    queue_depth: int = 0
    in_flight: int = 0
    latencies_s: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))

    @property
    def mean_batch_size(self) -> float:
        total = sum(self.batch_sizes.values())
        return sum(size * count for size, count in self.batch_sizes.items()) / total if total else 0.0

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready summary for a /stats endpoint (latencies as p50/p95/p99 in milliseconds)."""
        quantiles = self.latency_quantiles()
        return {
            "submitted": self.submitted,
            "completed": self.completed,
            "expired": self.expired,
            "rejected": self.rejected,
            "failed": self.failed,
            "cancelled": self.cancelled,
            "batches": self.batches,
            "batch_sizes": {str(size): n for size, n in sorted(self.batch_sizes.items())},
            "mean_batch_size": round(self.mean_batch_size, 3),
            "queue_depth": self.queue_depth,
            "in_flight": self.in_flight,
            "latency_ms": {f"p{round(q * 100)}": round(v * 1000.0, 3) for q, v in quantiles.items() if v == v},
        }

    def latency_quantiles(self, quantiles: tuple[float, ...] = (0.5, 0.95, 0.99)) -> dict[float, float]:
        """Submit-to-result latency quantiles (seconds) over the recent completed requests."""
        samples = sorted(self.latencies_s)
        if not samples:
            return {q: float("nan") for q in quantiles}
        return {q: samples[min(len(samples) - 1, int(q * len(samples)))] for q in quantiles}


@dataclass(eq=False, slots=True)
class _Request:
    kind: str
    payload: Any
    bucket: int
    deadline: float | None
    enqueued: float
    seq: int
    future: asyncio.Future
    queued: bool = True


class DynamicBatcher:
    """Collects requests per kind and length bucket and runs them as batches in one worker thread.

    Use it from one asyncio event loop::

        batcher = DynamicBatcher({"embed": lambda texts: list(encoder.embed(texts))}, max_batch=64)
        batcher.start()
        vector = await batcher.submit("embed", "Star Wars (1977)", deadline=time.monotonic() + 0.5)
        await batcher.stop()

    or as ``async with DynamicBatcher(...) as batcher:``, which drains on exit.
    """

    def __init__(
        self,
        handlers: Mapping[str, Handler],
        max_batch: int = 64,
        max_wait_s: float = 0.005,
        max_queue: int = 4096,
        length_of: Callable[[str, Any], int] | None = None,
        bucket_width: int = 16,
    ) -> None:
        if not handlers:
            raise ValueError("at least one handler is needed")
        if max_batch < 1 or max_queue < 1 or bucket_width < 1:
            raise ValueError("max_batch, max_queue and bucket_width must be >= 1")
        if max_wait_s < 0:
            raise ValueError("max_wait_s must be >= 0")
        self._handlers = dict(handlers)
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.length_of = length_of
        self.bucket_width = bucket_width
        self._stats = BatcherStats()
        self._groups: dict[tuple[str, int], deque[_Request]] = {}
        self._deadlines: list[tuple[float, int, _Request]] = []
        self._seq = itertools.count()
        self._outstanding = 0
        self._queued = 0
        self._in_flight: list[_Request] = []
        self._batch_task: asyncio.Task | None = None
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closing = False

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done() and not self._closing

    def start(self) -> None:
        """Start the dispatcher task on the running event loop (call once, from a coroutine)."""
        if self._task is not None:
            raise RuntimeError("DynamicBatcher already started")
        asyncio.get_running_loop()  # a clear error when called outside a loop
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._task = asyncio.create_task(self._dispatch_loop(), name="inference-batcher")
        self._task.add_done_callback(self._on_dispatcher_exit)

    async def stop(self, drain: bool = True, grace_s: float | None = None) -> None:
        """Stop accepting requests; then finish the queued ones (``drain``) or fail them with :class:`BatcherStopped`.

        Waits for the batch in flight either way (a model call in a thread cannot be interrupted).
        After ``grace_s`` seconds the dispatcher is cancelled and whatever is left fails with
        :class:`BatcherStopped`.
        """
        if self._task is None:
            return
        self._closing = True
        if not drain:
            self._fail_queued(BatcherStopped("the batcher was stopped before this request was batched"))
        assert self._wakeup is not None
        self._wakeup.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), grace_s)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=False)
                self._executor = None

    async def __aenter__(self) -> DynamicBatcher:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop(drain=True)

    @property
    def stats(self) -> BatcherStats:
        """The live counters, with ``queue_depth`` (queued + in flight) and ``in_flight`` as of now."""
        self._stats.queue_depth = self._outstanding
        self._stats.in_flight = len(self._in_flight)
        return self._stats

    # -- submitting ------------------------------------------------------------------------

    async def submit(self, kind: str, payload: Any, deadline: float | None = None) -> Any:
        """Queue one request and wait for its result.

        ``deadline`` is an absolute ``time.monotonic()`` value. Raises :class:`QueueFull` at once
        when ``max_queue`` requests are pending, :class:`Expired` when the deadline passes before
        the request is batched, :class:`BatcherStopped` when the batcher is not running, and the
        handler's exception when its batch failed. Cancelling the awaiting task withdraws the
        request if it has not been batched yet.
        """
        if kind not in self._handlers:
            raise ValueError(f"unknown request kind {kind!r}; this batcher handles {sorted(self._handlers)}")
        if not self.running:
            raise BatcherStopped(
                "the batcher is not running: call start() first" if self._task is None else "the batcher is stopping"
            )
        if self._outstanding >= self.max_queue:
            self._stats.rejected += 1
            raise QueueFull(f"{self._outstanding} requests pending (max_queue={self.max_queue})")
        bucket = 0 if self.length_of is None else int(self.length_of(kind, payload)) // self.bucket_width
        now = time.monotonic()
        self._stats.submitted += 1
        if deadline is not None and deadline <= now:
            self._stats.expired += 1
            raise Expired(f"{kind} request submitted {now - deadline:.3f} s after its deadline")
        future = asyncio.get_running_loop().create_future()
        request = _Request(kind, payload, bucket, deadline, now, next(self._seq), future)
        future.add_done_callback(lambda f, r=request: self._on_future_done(r, f))
        self._outstanding += 1
        self._queued += 1
        self._groups.setdefault((kind, bucket), deque()).append(request)
        if deadline is not None:
            heapq.heappush(self._deadlines, (deadline, request.seq, request))
        assert self._wakeup is not None
        self._wakeup.set()
        return await future

    def _on_future_done(self, request: _Request, future: asyncio.Future) -> None:
        self._outstanding -= 1
        if future.cancelled():
            self._stats.cancelled += 1
            if request.queued:
                self._unqueue(request)

    def _unqueue(self, request: _Request) -> None:
        group = self._groups.get((request.kind, request.bucket))
        if group is not None:
            group.remove(request)
            if not group:
                del self._groups[(request.kind, request.bucket)]
        request.queued = False
        self._queued -= 1

    # -- dispatching -----------------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        """Expire, dispatch, sleep until something is due; one batch in flight at a time.

        The model call runs as a separate task so that this loop keeps expiring requests while the
        worker thread is busy: a caller whose deadline passes learns it then, not when the model
        comes back.
        """
        assert self._wakeup is not None
        try:
            while True:
                self._wakeup.clear()
                now = time.monotonic()
                self._expire(now)
                if self._batch_task is None:
                    batch = self._take_batch(now)
                    if batch:
                        self._batch_task = asyncio.create_task(self._execute(batch), name="inference-batch")
                        continue
                    if self._closing and not self._queued:
                        return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), self._sleep_for(now))
        finally:
            if self._batch_task is not None:
                self._batch_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._batch_task

    def _expire(self, now: float) -> None:
        while self._deadlines and self._deadlines[0][0] <= now:
            _, _, request = heapq.heappop(self._deadlines)
            if request.queued and not request.future.done():
                self._unqueue(request)
                self._stats.expired += 1
                request.future.set_exception(
                    Expired(f"{request.kind} request expired after {now - request.enqueued:.3f} s in the queue")
                )
        if len(self._deadlines) > 2 * self.max_queue:  # entries of requests batched long before their deadline
            self._deadlines = [entry for entry in self._deadlines if entry[2].queued]
            heapq.heapify(self._deadlines)

    def _sleep_for(self, now: float) -> float | None:
        """Seconds until the oldest request is due or the next deadline passes; None waits for a wakeup.

        While a batch is in flight only deadlines matter: its completion wakes the loop.
        """
        wake: list[float] = []
        if self._groups and self._batch_task is None:
            oldest = min(group[0].enqueued for group in self._groups.values())
            wake.append(oldest + self.max_wait_s)
        if self._deadlines:
            wake.append(self._deadlines[0][0])
        return max(0.0, min(wake) - now) if wake else None

    def _take_batch(self, now: float) -> list[_Request]:
        if not self._groups:
            return []
        heads = {key: (group[0].enqueued, group[0].seq) for key, group in self._groups.items()}
        oldest_key = min(heads, key=heads.__getitem__)
        if self._closing or now - heads[oldest_key][0] >= self.max_wait_s:
            key, top_up = oldest_key, True
        else:
            full = [k for k, group in self._groups.items() if len(group) >= self.max_batch]
            if not full:
                return []
            key, top_up = min(full, key=heads.__getitem__), False
        batch = self._pop(key, self.max_batch)
        if top_up and len(batch) < self.max_batch:
            kind, bucket = key
            neighbours = sorted((k for k in self._groups if k[0] == kind), key=lambda k: (abs(k[1] - bucket), k[1]))
            for other in neighbours:
                batch.extend(self._pop(other, self.max_batch - len(batch)))
                if len(batch) >= self.max_batch:
                    break
        return batch

    def _pop(self, key: tuple[str, int], count: int) -> list[_Request]:
        group = self._groups[key]
        taken = []
        while group and len(taken) < count:
            request = group.popleft()
            request.queued = False
            self._queued -= 1
            taken.append(request)
        if not group:
            del self._groups[key]
        return taken

    async def _execute(self, batch: list[_Request]) -> None:
        kind = batch[0].kind
        payloads = [request.payload for request in batch]
        self._in_flight = batch
        self._stats.batches += 1
        self._stats.batch_sizes[len(batch)] += 1
        try:
            results = await asyncio.get_running_loop().run_in_executor(self._executor, self._handlers[kind], payloads)
            if len(results) != len(payloads):
                raise ValueError(f"{kind} handler returned {len(results)} results for {len(payloads)} payloads")
        except asyncio.CancelledError:
            self._fail(batch, BatcherStopped("the batcher was cancelled while this request was in flight"))
            raise
        except Exception as exc:  # noqa: BLE001 - a model failure fails its batch; the batcher goes on
            logger.warning("%s batch of %d failed: %r", kind, len(batch), exc)
            self._fail(batch, exc)
        else:
            done = time.monotonic()
            for request, result in zip(batch, results, strict=True):
                if not request.future.done():
                    request.future.set_result(result)
                    self._stats.completed += 1
                    self._stats.latencies_s.append(done - request.enqueued)
        finally:
            self._in_flight = []
            self._batch_task = None
            if self._wakeup is not None:
                self._wakeup.set()

    def _fail(self, requests: list[_Request], exc: BaseException) -> None:
        counter = "cancelled" if isinstance(exc, BatcherStopped) else "failed"
        for request in requests:
            if not request.future.done():
                request.future.set_exception(exc)
                setattr(self._stats, counter, getattr(self._stats, counter) + 1)

    def _fail_queued(self, exc: BaseException) -> None:
        queued = [request for group in self._groups.values() for request in group]
        for request in queued:
            self._unqueue(request)
        self._fail(queued, exc)

    def _on_dispatcher_exit(self, task: asyncio.Task) -> None:
        """Never leave a caller waiting forever: whatever is still pending fails when the dispatcher ends."""
        if not task.cancelled() and task.exception() is not None:
            logger.error("inference batcher crashed", exc_info=task.exception())
        self._closing = True
        self._fail_queued(BatcherStopped("the batcher stopped before this request was batched"))
