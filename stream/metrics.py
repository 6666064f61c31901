"""Prometheus metrics of both workers, read from the counters they already keep.

A custom collector rather than instrumenting every hot path: the workers already count what they
do (``IngestStats``, ``LearnerStats``, the evaluator, the publisher, the augmentation and inference
stats) for ``/stats``, so a scrape turns those into metric families in one place, with names by
Prometheus's conventions (base units, ``_total`` counters, bounded label sets: topics, reasons,
kinds, slices and models are all small closed sets). Each process has its own registry and
serves it on ``GET /metrics``.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from faust.sensors import Sensor
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

PREFIX = "streamrec"
log = logging.getLogger(__name__)


def counter(name: str, doc: str, labels: list[str] | None = None) -> CounterMetricFamily:
    return CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=labels)


def gauge(name: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=labels)


def labelled(family: Any, values: dict[str, float]) -> Any:
    for key, value in sorted(values.items()):
        family.add_metric([str(key)], float(value))
    return family


class StreamWorkerCollector(Collector):
    """Metrics of the stream worker: ingestion, training, evaluation, publishing, augmentation."""

    def __init__(
        self,
        ingest: Any,
        learner: Any = None,
        publisher: Any = None,
        augmenter: Any = None,
        http: Any = None,
        lag: Callable[[], dict[tuple[str, int], int]] | None = None,
        consumer: Callable[[], Any] | None = None,
    ) -> None:
        self.ingest = ingest
        self.consumer = consumer  # the consumer path's stats (stream/kafka/consumer.py), once the consumer exists
        self.http = http
        self.learner = learner
        self.publisher = publisher
        self.augmenter = augmenter
        self.lag = lag

    def collect(self) -> Iterator[Metric]:
        s = self.ingest
        yield labelled(counter("events_consumed", "Records consumed, by source topic.", ["topic"]), s.consumed)
        yield labelled(counter("dead_letters", "Invalid events sent to the dead-letter topic.", ["reason"]),
                       s.dead_letters)  # fmt: skip
        applied = counter("events_applied", "Valid events applied to the tables, by kind.", ["kind"])
        applied.add_metric(["interaction"], s.applied_interactions)
        applied.add_metric(["catalogue"], s.applied_catalogue)
        yield applied
        yield _single(counter("events_redelivered", "Events read again after a restart, already applied."),
                      s.redelivered)  # fmt: skip
        yield _single(counter("events_refetched_handled", "Bad or misrouted records read again: not sent again."),
                      s.refetched_handled)  # fmt: skip
        yield _single(counter("events_duplicate", "Events whose event_id was applied before: dropped."), s.duplicates)
        yield _single(counter("events_misrouted", "Events re-keyed to their user's partition."), s.forwarded_misrouted)
        yield _single(counter("events_forwarded_again", "Copies of a misrouted event forwarded again after a crash: "
                              "dropped."), s.forwarded_again)  # fmt: skip
        yield labelled(counter("events_placement", "Valid keyed records by where they arrived: the configured "
                               "partitioner's partition, the other one's, neither.", ["placement"]),
                       s.placement)  # fmt: skip
        yield labelled(counter("interactions", "Valid interactions applied to the user state, by type.", ["type"]),
                       s.applied_by_type)  # fmt: skip
        consumer = self.consumer() if self.consumer is not None else None
        if consumer is not None:
            yield from consumer_metrics(consumer)
        if self.lag is not None:
            lag = gauge("consumer_lag", "Log end offset minus committed offset, per input partition.",
                        ["topic", "partition"])  # fmt: skip
            for (topic, partition), n in sorted(self.lag().items()):
                lag.add_metric([topic, str(partition)], n)
            yield lag
        if self.learner is not None:
            yield from self._training()
        if self.publisher is not None:
            yield from self._publishing()
        if self.augmenter is not None:
            yield from self._augmentation()
        if self.http is not None:
            yield from http_metrics(self.http)

    def _training(self) -> Iterator[Metric]:
        learner, trainer = self.learner, self.learner.trainer
        model = learner.model
        yield _single(counter("training_samples", "Real events trained on."), model.samples_trained)
        yield labelled(counter("augmented_samples_trained", "Augmented samples trained on, by kind.", ["kind"]),
                       dict(model.augmented_trained))  # fmt: skip
        yield _single(counter("training_steps", "Training steps (micro-batches)."), learner.stats.steps)
        yield _single(
            counter("training_step_seconds", "Time spent inside training steps."), learner.stats.train_seconds
        )
        yield _single(gauge("training_loss", "Mean loss of the last training step."), learner.stats.last_loss)
        yield _single(gauge("model_version", "Optimisation steps the model has taken."), model.version)
        yield _single(counter("checkpoints", "Checkpoints written."), learner.stats.checkpoints)
        jumped = counter("training_offsets_jumped", "Input offsets the model never trained: skipped upstream, or "
                         "transaction markers.", ["topic", "partition"])  # fmt: skip
        for key, n in sorted(learner.stats.offsets_jumped.items()):
            topic, partition = key.rsplit(":", 1)
            jumped.add_metric([topic, partition], n)
        yield jumped
        yield _single(counter("checkpoint_errors", "Checkpoints that failed."), learner.stats.checkpoint_errors)
        if learner.stats.last_checkpoint_at is not None:
            yield _single(gauge("checkpoint_age_seconds", "Seconds since the last checkpoint was written."),
                          time.time() - learner.stats.last_checkpoint_at)  # fmt: skip
        yield _single(counter("drift_alarms", "ADWIN alarms on the prequential loss."), trainer.drift.alarms)
        not_scored = counter("events_not_scored", "Clicks trained on but not scored, by reason.", ["reason"])
        not_scored.add_metric(["late"], trainer.late)
        not_scored.add_metric(["reread"], trainer.reread)
        yield not_scored
        yield _single(
            counter("events_scored_unknown_item", "Clicks scored on an item the model had not trained on."),
            trainer.unknown_items,
        )
        hr = gauge("prequential_hr_at_10", "HR@10 over the rolling window, scored before training.", ["model", "slice"])
        ndcg = gauge("prequential_ndcg_at_10", "NDCG@10 over the rolling window.", ["model", "slice"])
        scored = counter("prequential_scored_events", "Events scored before training.", ["model", "slice"])
        # The baselines' rows come from their process, as last refreshed (a timer in the app).
        tables = {"streamrec": trainer.evaluator.report(), **learner.baseline_metrics}
        for model_name, table in sorted(tables.items()):
            for slice_name, row in table.items():
                hr.add_metric([model_name, slice_name], row["hr@10_rolling"])
                ndcg.add_metric([model_name, slice_name], row["ndcg@10_rolling"])
                scored.add_metric([model_name, slice_name], row["n"])
        yield from (hr, ndcg, scored)
        yield histogram_family("event_to_sample_seconds",
                               "From an event's arrival in Kafka to the training step that takes it.",
                               learner.stats.event_to_sample)  # fmt: skip

    def _publishing(self) -> Iterator[Metric]:
        stats = self.publisher.stats
        published = counter("embeddings_published", "Embedding records sent to the output topic.", ["entity"])
        published.add_metric(["user"], stats.published_users)
        published.add_metric(["item"], stats.published_items)
        yield published
        yield _single(counter("embedding_tombstones", "Tombstones for expired entities."), stats.tombstones)
        yield histogram_family(
            "event_to_embedding_seconds",
            "From an event's arrival in Kafka to the broker's acknowledgement of the embedding it moved.",
            stats.latency.histogram,
        )

    def _augmentation(self) -> Iterator[Metric]:
        augmenter = self.augmenter
        augmentation, client = augmenter.augmentation, augmenter.client
        yield labelled(counter("augmented_samples_generated", "Augmented samples made, by kind.", ["kind"]),
                       dict(augmentation.generated))  # fmt: skip
        requests = counter("inference_requests", "Inference requests by kind and outcome.", ["kind", "outcome"])
        for outcome in ("sent", "completed", "failed", "expired", "dropped"):
            for kind, n in sorted(getattr(client.stats, outcome).items()):
                requests.add_metric([kind, outcome], n)
        yield requests
        yield _single(gauge("inference_requests_in_flight", "Requests awaiting a result."), client.in_flight)
        round_trip = HistogramMetricFamily(
            f"{PREFIX}_inference_request_seconds", "From sending a request to its result, by kind.", labels=["kind"]
        )
        for kind, histogram in sorted(client.stats.round_trip.items()):
            round_trip.add_metric([kind], histogram.cumulative(), histogram.sum)
        yield round_trip
        yield _single(gauge("inference_degraded", "1 when no inference result arrived recently."),
                      float(not client.available()))  # fmt: skip
        yield _single(gauge("items_with_content", "Items with a content vector from their text."),
                      augmentation.items_with_content)  # fmt: skip


class Histogram:
    """Counts per bucket and a sum, kept by the code that measures; turned into a metric on scrape.

    ``bounds`` are the buckets' upper bounds in seconds, ascending; a +Inf bucket is added.
    """

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = (*bounds, float("inf"))
        self.counts = [0] * len(self.bounds)
        self.sum = 0.0

    def observe(self, value: float, times: int = 1) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += times
        self.sum += value * times

    @property
    def count(self) -> int:
        return sum(self.counts)

    def summary(self) -> dict[str, float]:
        """For JSON endpoints such as ``/stats``: how many values, and their mean."""
        return {"count": self.count, "mean": round(self.sum / self.count, 6) if self.count else 0.0}

    def cumulative(self) -> list[tuple[str, int]]:
        """``[(le, count of values <= le)]`` as Prometheus's histogram families take them."""
        total, out = 0, []
        for bound, n in zip(self.bounds, self.counts, strict=True):
            total += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), total))
        return out


def jsonable(value: Any) -> Any:
    """A stats value ready for a JSON body: counters as dicts, histograms (also by key) as summaries."""
    if isinstance(value, Histogram):
        return value.summary()
    if isinstance(value, dict):
        return {key: jsonable(v) for key, v in value.items()}
    return value


LATENCY_BOUNDS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
HTTP_BOUNDS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_SIZE_BOUNDS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
BATCH_BOUNDS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def consumer_metrics(stats: Any) -> Iterator[Metric]:
    """The consumer path's counters (stream/kafka/consumer.py ``ConsumerStats``)."""
    yield _single(counter("consumer_batches", "Batches handed to the agents, as fetched."), stats.batches)
    yield _single(counter("consumer_records", "Records handed to the agents."), stats.records)
    yield _single(counter("consumer_fetches_discarded", "Fetched partitions not handed over (a seek ran or the flow "
                          "stopped): read again."), stats.discarded_fetches)  # fmt: skip
    yield _single(counter("consumer_repositioned", "Partitions sought back to their next offset after a discarded "
                          "fetch."), stats.repositioned)  # fmt: skip
    yield _single(counter("consumer_batches_dropped", "Batches not started when their assignment ended: read again "
                          "by the next owner."), stats.dropped_queued)  # fmt: skip
    for name, doc, values in (
        ("consumer_offsets_skipped", "Offsets a partition jumped over (compaction, retention, transaction markers).",
         stats.skipped_offsets),
        ("consumer_unreadable_batches", "Record batches that could not be decoded: skipped, dead-lettered as markers.",
         stats.unreadable_batches),
        ("consumer_unreadable_offsets", "Offsets in record batches that could not be decoded.",
         stats.unreadable_offsets),
    ):  # fmt: skip
        family = counter(name, doc, ["topic", "partition"])
        for key, n in sorted(values.items()):
            topic, _, partition = key.rpartition(":")
            family.add_metric([topic, partition], n)
        yield family


def histogram_family(name: str, doc: str, histogram: Histogram) -> HistogramMetricFamily:
    return HistogramMetricFamily(f"{PREFIX}_{name}", doc, buckets=histogram.cumulative(), sum_value=histogram.sum)


class HttpStats:
    """Requests and their durations per route template (``/recommend/{user_id}``: a bounded set) and status."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str, str]] = Counter()  # (route, method, status)
        self.durations: dict[str, Histogram] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests[(route, method, str(status))] += 1
        self.durations.setdefault(route, Histogram(HTTP_BOUNDS_S)).observe(seconds)


class HttpSensor(Sensor):
    """A Faust sensor: Faust calls it around every web request, whichever view serves it."""

    def __init__(self, stats: HttpStats) -> None:
        super().__init__()
        self.stats = stats

    def on_web_request_end(self, app: Any, request: Any, response: Any, state: dict, *, view: Any = None) -> None:
        resource = getattr(request.match_info.route, "resource", None)
        route = resource.canonical if resource is not None else "unmatched"
        status = response.status if response is not None else 500
        self.stats.observe(route, request.method, status, time.monotonic() - state["time_start"])


def http_metrics(stats: HttpStats) -> Iterator[Metric]:
    requests = counter("http_requests", "HTTP requests by route template, method and status.",
                       ["route", "method", "status"])  # fmt: skip
    for (route, method, status), n in sorted(stats.requests.items()):
        requests.add_metric([route, method, status], n)
    yield requests
    duration = HistogramMetricFamily(
        f"{PREFIX}_http_request_duration_seconds", "HTTP request durations by route template.", labels=["route"]
    )
    for route, histogram in sorted(stats.durations.items()):
        duration.add_metric([route], histogram.cumulative(), histogram.sum)
    yield duration


class InferenceWorkerCollector(Collector):
    """Metrics of the inference worker: requests, batches, queue depth, cache."""

    def __init__(self, worker: Any) -> None:
        self.worker = worker

    def collect(self) -> Iterator[Metric]:
        w = self.worker
        s = w.stats
        yield labelled(counter("inference_received", "Requests received, by kind.", ["kind"]), dict(s.received))
        outcomes = counter("inference_handled", "Requests by outcome.", ["outcome"])
        for outcome, n in (("answered", s.answered), ("failed", s.failed), ("invalid", s.invalid),
                           ("expired_on_arrival", s.expired_on_arrival), ("expired_in_queue", s.expired_in_queue),
                           ("rejected", s.rejected)):  # fmt: skip
            outcomes.add_metric([outcome], n)
        yield outcomes
        batches = counter("inference_batches", "Model batches run, by model.", ["model"])
        batched = counter("inference_batched_requests", "Requests run in batches, by model.", ["model"])
        depth = gauge("inference_queue_depth", "Requests waiting for a batch, by model.", ["model"])
        for model, batcher in _batchers(w).items():
            stats = batcher.stats
            batches.add_metric([model], stats.batches)
            batched.add_metric([model], sum(size * n for size, n in stats.batch_sizes.items()))
            depth.add_metric([model], stats.queue_depth)
        capacity = gauge("inference_queue_capacity", "Requests a model's queue holds before rejecting.", ["model"])
        sizes = HistogramMetricFamily(f"{PREFIX}_inference_batch_size", "Requests per model call.", labels=["model"])
        seconds = HistogramMetricFamily(f"{PREFIX}_inference_batch_seconds", "Seconds per model call.",
                                        labels=["model"])  # fmt: skip
        for model, batcher in _batchers(w).items():
            capacity.add_metric([model], batcher.max_queue)
            size_histogram = Histogram(BATCH_SIZE_BOUNDS)
            for size, n in batcher.stats.batch_sizes.items():
                size_histogram.observe(size, n)
            sizes.add_metric([model], size_histogram.cumulative(), size_histogram.sum)
        for model, histogram in sorted(s.batch_seconds.items()):
            seconds.add_metric([model], histogram.cumulative(), histogram.sum)
        yield from (batches, batched, depth, capacity, sizes, seconds)
        yield _single(gauge("inference_ready", "1 once the models are loaded and requests are consumed."),
                      float(w.ready))  # fmt: skip
        if w.models is not None:
            cache = w.models.cache
            lookups = counter("inference_cache_lookups", "Embedding cache lookups.", ["result"])
            lookups.add_metric(["hit"], cache.hits)
            lookups.add_metric(["miss"], cache.misses)
            yield lookups


def _batchers(worker: Any) -> dict[str, Any]:
    """``{"encoder": batcher, "lm": batcher}``: one per model, whatever kinds it serves."""
    found = {}
    for kind, batcher in worker.batchers.items():
        found["encoder" if kind == "embed" else "lm"] = batcher
    return found


def _single(family: Any, value: float) -> Any:
    family.add_metric([], float(value))
    return family


def registry_with(*collectors: Collector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    return registry


def exposition(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The text format body and its content type, for a ``/metrics`` handler."""
    return generate_latest(registry), CONTENT_TYPE_LATEST


def consumer_stats(app: Any) -> Any:
    """The consumer path's stats (stream/kafka/consumer.py), or None before the consumer exists or without it."""
    consumer = getattr(app, "_consumer", None)
    return getattr(consumer, "stats", None)


def consumer_lag(app: Any, topics: Sequence[str]) -> dict[tuple[str, int], int]:
    """Lag per input partition assigned to this worker: log end offset minus committed offset.

    Faust's monitor keeps the end offsets (from every fetch response) and the offsets it has
    committed; before this process has committed a partition, the committed offset Faust sought
    to on assignment stands in. A partition whose end offset is not known yet is left out.
    """
    monitor, consumer = app.monitor, app.consumer
    committed_on_assignment = getattr(consumer, "_committed_offset", {})
    lag: dict[tuple[str, int], int] = {}
    for tp, end in list(monitor.tp_end_offsets.items()):
        if tp.topic not in topics:
            continue
        committed = monitor.tp_committed_offsets.get(tp, committed_on_assignment.get(tp))
        if committed is None:
            continue
        lag[(tp.topic, tp.partition)] = max(0, end - committed)
    return lag


class GpuCollector(Collector):
    """Utilisation and memory of each GPU through NVML (``nvidia-ml-py``); no samples without a GPU.

    NVML is initialised on the first scrape; if it cannot be (no driver, no device, a CPU-only
    container) the collector stays silent rather than reporting zeros that look like an idle GPU.
    """

    def __init__(self, nvml: Any = None) -> None:
        self._nvml = nvml
        self._ready: bool | None = None

    def _available(self) -> bool:
        if self._ready is None:
            try:
                if self._nvml is None:
                    import pynvml

                    self._nvml = pynvml
                self._nvml.nvmlInit()
                self._ready = True
            except Exception as error:  # noqa: BLE001 - any NVML failure means "no GPU metrics"
                log.info("no GPU metrics: NVML is not available (%s)", error)
                self._ready = False
        return self._ready

    def collect(self) -> Iterator[Metric]:
        if not self._available():
            return
        nvml = self._nvml
        utilization = gauge("gpu_utilization_ratio", "Fraction of the last sample period the GPU was busy.", ["gpu"])
        used = gauge("gpu_memory_used_bytes", "GPU memory in use (all processes).", ["gpu"])
        total = gauge("gpu_memory_total_bytes", "GPU memory in all.", ["gpu"])
        info = gauge("gpu_info", "1 per GPU, with its name.", ["gpu", "name"])
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            name = nvml.nvmlDeviceGetName(handle)
            gpu = str(index)
            utilization.add_metric([gpu], nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0)
            used.add_metric([gpu], memory.used)
            total.add_metric([gpu], memory.total)
            info.add_metric([gpu, name.decode() if isinstance(name, bytes) else str(name)], 1.0)
        yield from (utilization, used, total, info)
