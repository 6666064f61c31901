"""``streamrec worker augment``: the transformer inference worker, a Kafka shell around the batcher.

Stream workers put embedding, scoring and generation requests on the requests topic
(:mod:`streamrec.stream.inference.protocol`); every inference worker in the consumer group takes a share of
its partitions, feeds the requests to a :class:`~streamrec.models.inference.batcher.DynamicBatcher` per model
(dynamic batches, length buckets, one thread per model) and writes each result to the results
topic. One batcher per model, because their costs differ by orders of magnitude: on a CPU a batch
of LM prompts takes seconds, and embeddings must not queue behind it.

Backpressure: the worker fetches only as many records as the batcher has room for, so a slow
worker leaves requests in Kafka rather than in memory. A request whose deadline passed is dropped
without touching the model (counted as expired): its stream worker has already given up on it.
Requests are soft state: offsets are committed automatically, and a worker that crashes loses what
it held; those requests expire on the stream side, which goes on training with real samples.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streamrec.models.inference import CausalLM, DynamicBatcher, EmbeddingCache, Expired, QueueFull, TextEncoder
from streamrec.stream.inference.protocol import InferenceRequest, InferenceResult, InvalidRequest, length_of, now_ms
from streamrec.stream.kafka.admin import ensure_topics, start_client
from streamrec.stream.kafka.security import new_consumer, new_producer
from streamrec.stream.metrics import (
    BATCH_BOUNDS_S,
    GpuCollector,
    Histogram,
    InferenceWorkerCollector,
    exposition,
    jsonable,
    registry_with,
)
from streamrec.stream.settings import Settings

log = logging.getLogger(__name__)


class InferenceModels:
    """The worker's models and the batch handlers the batcher calls (in its model thread)."""

    def __init__(self, settings: Settings) -> None:
        started = time.perf_counter()
        torch.set_num_threads(settings.inference_torch_threads)
        self.encoder = TextEncoder(settings.inference_encoder, device=settings.inference_device)
        self.cache = EmbeddingCache(settings.inference_cache_size)
        self.lm: CausalLM | None = None
        if settings.inference_enable_lm:
            self.lm = CausalLM(settings.inference_lm, settings.inference_lm_gguf, device=settings.inference_device)
        self.load_seconds = time.perf_counter() - started

    def handlers(self) -> dict[str, Any]:
        return self.encoder_handlers() | self.lm_handlers()

    def encoder_handlers(self) -> dict[str, Any]:
        return {"embed": self.embed}

    def lm_handlers(self) -> dict[str, Any]:
        return {} if self.lm is None else {"yes_no": self.yes_no, "generate": self.generate}

    def embed(self, payloads: list[dict[str, Any]]) -> list[list[float]]:
        vectors = self.cache.get_or_compute(self.encoder.model_id, [p["text"] for p in payloads], self.encoder.embed)
        return vectors.tolist()

    def yes_no(self, payloads: list[dict[str, Any]]) -> list[float]:
        assert self.lm is not None
        # The prompt is a user message: an instruct model answers well only in its chat format.
        return [float(v) for v in self.lm.yes_no([self.lm.chat_prompt(p["prompt"]) for p in payloads])]

    def generate(self, payloads: list[dict[str, Any]]) -> list[str]:
        assert self.lm is not None
        tokens = max(int(p.get("max_new_tokens", 32)) for p in payloads)
        return self.lm.generate([p["prompt"] for p in payloads], max_new_tokens=tokens)


@dataclass
class WorkerStats:
    started_at: float = field(default_factory=time.time)
    received: Counter[str] = field(default_factory=Counter)
    answered: int = 0
    failed: int = 0
    invalid: int = 0
    expired_on_arrival: int = 0
    expired_in_queue: int = 0
    rejected: int = 0
    # Seconds per model call, by model ("encoder", "lm"): what a batch costs on this device.
    batch_seconds: dict[str, Histogram] = field(default_factory=dict)


def timed(handler: Callable[[list[Any]], list[Any]], histogram: Histogram) -> Callable[[list[Any]], list[Any]]:
    """``handler`` that also records its duration; runs in the batcher's model thread."""

    def run(payloads: list[Any]) -> list[Any]:
        started = time.perf_counter()
        try:
            return handler(payloads)
        finally:
            histogram.observe(time.perf_counter() - started)

    return run


class InferenceWorker:
    def __init__(self, settings: Settings, models: InferenceModels | None = None) -> None:
        self.settings = settings
        self.models = models
        self.name = f"augment-{uuid.uuid4().hex[:8]}"
        self.stats = WorkerStats()
        self.batchers: dict[str, DynamicBatcher] = {}  # by request kind (one batcher per model)
        self.ready = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._registry = registry_with(InferenceWorkerCollector(self), GpuCollector())

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        await ensure_topics(s)
        web_runner = await self._serve_http()
        try:
            if self.models is None:
                # Loading takes seconds (tens with the LM on a CPU): off the loop, so /health answers.
                self.models = await asyncio.to_thread(InferenceModels, s)
                log.info("models loaded in %.1fs (LM: %s)", self.models.load_seconds, self.models.lm is not None)
            for model, handlers, max_batch in (
                ("encoder", self.models.encoder_handlers(), s.inference_max_batch),
                ("lm", self.models.lm_handlers(), s.inference_lm_max_batch),
            ):
                if not handlers:
                    continue
                histogram = self.stats.batch_seconds.setdefault(model, Histogram(BATCH_BOUNDS_S))
                batcher = DynamicBatcher(
                    {kind: timed(handler, histogram) for kind, handler in handlers.items()},
                    max_batch=max_batch,
                    max_wait_s=s.inference_max_wait_ms / 1000.0,
                    max_queue=s.inference_max_queue,
                    length_of=length_of,
                    bucket_width=16,
                )
                batcher.start()
                self.batchers |= dict.fromkeys(handlers, batcher)
            consumer = new_consumer(
                s,
                s.topic_inference_requests,
                group_id=f"{s.app_id}-inference",
                enable_auto_commit=True,
                auto_offset_reset="latest",
                max_poll_records=s.inference_max_batch * 4,
            )
            producer = new_producer(s, linger_ms=2)
            await start_client(producer, s)
            await start_client(consumer, s)
            self.ready = True
            log.info("inference worker %s consuming %s", self.name, s.topic_inference_requests)
            try:
                await self._consume(consumer, producer, stop)
            finally:
                self.ready = False
                await consumer.stop()
                for task in list(self._tasks):
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)
                for batcher in set(self.batchers.values()):
                    await batcher.stop()
                await producer.stop()
        finally:
            await web_runner.cleanup()

    async def _consume(self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, stop: asyncio.Event) -> None:
        limit = self.settings.inference_max_queue
        while not stop.is_set():
            room = limit - len(self._tasks)
            if room <= 0:  # backpressure: leave the requests in Kafka until the batcher has room
                await asyncio.sleep(0.005)
                continue
            fetched = await consumer.getmany(timeout_ms=100, max_records=room)
            arrived_ms = now_ms()
            for records in fetched.values():
                for record in records:
                    self._accept(record.value or b"", arrived_ms, producer)

    def _accept(self, raw: bytes, arrived_ms: int, producer: AIOKafkaProducer) -> None:
        try:
            request = InferenceRequest.decode(raw, self.settings.inference_max_request_bytes)
        except InvalidRequest as error:
            self.stats.invalid += 1
            log.warning("dropped an invalid inference request: %s", error)
            return
        self.stats.received[request.kind] += 1
        if request.expired(arrived_ms):
            self.stats.expired_on_arrival += 1
            return
        task = asyncio.ensure_future(self._answer(request, producer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, request: InferenceRequest, producer: AIOKafkaProducer) -> None:
        deadline = time.monotonic() + (request.deadline_ms - now_ms()) / 1000.0
        started = time.perf_counter()
        try:
            batcher = self.batchers.get(request.kind)
            if batcher is None:
                raise ValueError(f"this worker does not serve {request.kind!r} requests (is the LM disabled?)")
            value = await batcher.submit(request.kind, request.payload, deadline=deadline)
            result = InferenceResult(request.id, request.client, True, value, worker=self.name)
            self.stats.answered += 1
        except Expired:
            self.stats.expired_in_queue += 1
            return
        except QueueFull:
            self.stats.rejected += 1
            result = InferenceResult(request.id, request.client, False, error="overloaded", worker=self.name)
        except ValueError as error:  # e.g. a kind this worker does not serve (LM disabled)
            self.stats.failed += 1
            result = InferenceResult(request.id, request.client, False, error=str(error), worker=self.name)
        except Exception as error:
            self.stats.failed += 1
            log.exception("inference request %s (%s) failed", request.id, request.kind)
            result = InferenceResult(request.id, request.client, False, error=type(error).__name__, worker=self.name)
        result = dataclasses.replace(result, latency_ms=round((time.perf_counter() - started) * 1000.0, 3))
        await producer.send(self.settings.topic_inference_results, result.encode(), key=request.client.encode("utf-8"))

    # --- HTTP: /health and /stats --------------------------------------------------------------------
    async def _serve_http(self) -> web.AppRunner:
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_get("/stats", self._stats)
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, self.settings.web_host, self.settings.inference_web_port).start()
        return runner

    async def _health(self, request: web.Request) -> web.Response:
        status = 200 if self.ready else 503
        return web.json_response({"status": "ok" if self.ready else "starting", "worker": self.name}, status=status)

    async def _metrics(self, request: web.Request) -> web.Response:
        body, content_type = exposition(self._registry)
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _stats(self, request: web.Request) -> web.Response:
        body: dict[str, Any] = {"worker": self.name, "ready": self.ready, "in_flight": len(self._tasks)}
        body |= {k: jsonable(v) for k, v in vars(self.stats).items()}
        if self.models is not None:
            body["load_seconds"] = round(self.models.load_seconds, 2)
            body["lm"] = self.models.lm is not None
            body["cache"] = self.models.cache.stats()
        kinds_of: dict[int, list[str]] = {}
        for kind, batcher in self.batchers.items():
            kinds_of.setdefault(id(batcher), []).append(kind)
        body["batchers"] = {
            "/".join(kinds_of[id(b)]): b.stats.as_dict() for b in {id(b): b for b in self.batchers.values()}.values()
        }
        return web.json_response(body)


def run_inference_worker(settings: Settings) -> None:
    """Run until SIGTERM/SIGINT. Models load from local paths only: the hub is never asked."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    logging.basicConfig(
        level=settings.log_level.upper(), format="[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"
    )
    from streamrec.stream.kafka.supervision import back_off_failed_metadata_updates

    back_off_failed_metadata_updates()  # no busy loop while the broker is away (see stream/kafka/supervision.py)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        worker = InferenceWorker(settings)
        with contextlib.suppress(asyncio.CancelledError):
            await worker.run(stop)

    asyncio.run(main())
