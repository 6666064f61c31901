"""The /metrics exposition: names, labels and values taken from the workers' own counters."""

from __future__ import annotations

from types import SimpleNamespace

from faust.types import TP
from prometheus_client.parser import text_string_to_metric_families

from streamrec.stream.metrics import (
    GpuCollector,
    HttpStats,
    StreamWorkerCollector,
    consumer_lag,
    exposition,
    registry_with,
)
from streamrec.stream.worker.ingest import IngestStats
from streamrec.stream.worker.publisher import LatencyWindow, PublisherStats


def samples(collector) -> dict:
    body, content_type = exposition(registry_with(collector))
    assert content_type.startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def test_ingestion_counters_are_exposed_with_bounded_labels():
    stats = IngestStats()
    stats.consumed.update({"streamrec.clicks": 7, "streamrec.purchases": 2})
    stats.dead_letters.update({"missing_field": 3})
    stats.applied_interactions = 6
    found = samples(StreamWorkerCollector(stats))
    assert found[("streamrec_events_consumed_total", (("topic", "streamrec.clicks"),))] == 7
    assert found[("streamrec_dead_letters_total", (("reason", "missing_field"),))] == 3
    assert found[("streamrec_events_applied_total", (("kind", "interaction"),))] == 6
    assert not any(name.startswith("streamrec_training") for name, _ in found)  # no learner, no training metrics


def test_event_to_embedding_latency_is_a_cumulative_histogram():
    window = LatencyWindow()
    for seconds in (0.01, 0.3, 0.3, 4.0, 500.0):
        window.add(seconds)
    publisher = SimpleNamespace(stats=PublisherStats(published_users=2, published_items=5, latency=window))
    found = samples(StreamWorkerCollector(IngestStats(), publisher=publisher))
    bucket = "streamrec_event_to_embedding_seconds_bucket"
    assert found[(bucket, (("le", "0.05"),))] == 1
    assert found[(bucket, (("le", "0.5"),))] == 3
    assert found[(bucket, (("le", "5.0"),))] == 4
    assert found[(bucket, (("le", "+Inf"),))] == found[("streamrec_event_to_embedding_seconds_count", ())] == 5
    assert abs(found[("streamrec_event_to_embedding_seconds_sum", ())] - 504.61) < 1e-9
    assert found[("streamrec_embeddings_published_total", (("entity", "item"),))] == 5


def test_http_requests_are_counted_by_route_template_and_status():
    http = HttpStats()
    http.observe("/recommend/{user_id}", "GET", 200, 0.003)
    http.observe("/recommend/{user_id}", "GET", 200, 0.2)
    http.observe("/recommend/{user_id}", "GET", 400, 0.001)
    found = samples(StreamWorkerCollector(IngestStats(), http=http))
    ok = (("method", "GET"), ("route", "/recommend/{user_id}"), ("status", "200"))
    assert found[("streamrec_http_requests_total", ok)] == 2
    route = (("route", "/recommend/{user_id}"),)
    assert found[("streamrec_http_request_duration_seconds_count", route)] == 3
    assert found[("streamrec_http_request_duration_seconds_bucket", (("le", "0.005"), *route))] == 2


def test_interactions_by_type_and_consumer_lag_per_partition():
    stats = IngestStats()
    stats.applied_by_type.update({"click": 5, "purchase": 2})
    tp = TP
    app = SimpleNamespace(
        monitor=SimpleNamespace(
            tp_end_offsets={tp(topic="c", partition=0): 120, tp(topic="c", partition=1): 40,
                            tp(topic="c-changelog", partition=0): 9, tp(topic="p", partition=0): 10},
            tp_committed_offsets={tp(topic="c", partition=0): 100},
        ),
        consumer=SimpleNamespace(_committed_offset={tp(topic="c", partition=1): 40}),
    )  # fmt: skip
    found = samples(StreamWorkerCollector(stats, lag=lambda: consumer_lag(app, ["c", "p"])))
    assert found[("streamrec_interactions_total", (("type", "purchase"),))] == 2
    lag = {labels: v for (name, labels), v in found.items() if name == "streamrec_consumer_lag"}
    # committed by this process, else as sought on assignment; unknown committed offset: left out
    assert lag == {(("partition", "0"), ("topic", "c")): 20, (("partition", "1"), ("topic", "c")): 0}


class FakeNvml:
    """NVML's calls as pynvml names them, for two GPUs."""

    def nvmlInit(self):
        pass

    def nvmlDeviceGetCount(self):
        return 2

    def nvmlDeviceGetHandleByIndex(self, index):
        return index

    def nvmlDeviceGetName(self, handle):
        return b"NVIDIA H100" if handle == 0 else "NVIDIA L4"

    def nvmlDeviceGetMemoryInfo(self, handle):
        return SimpleNamespace(used=(handle + 1) * 2**30, total=80 * 2**30)

    def nvmlDeviceGetUtilizationRates(self, handle):
        return SimpleNamespace(gpu=75 if handle == 0 else 0, memory=10)


def test_gpu_metrics_from_nvml_per_device():
    found = samples(GpuCollector(FakeNvml()))
    assert found[("streamrec_gpu_utilization_ratio", (("gpu", "0"),))] == 0.75
    assert found[("streamrec_gpu_utilization_ratio", (("gpu", "1"),))] == 0.0
    assert found[("streamrec_gpu_memory_used_bytes", (("gpu", "1"),))] == 2 * 2**30
    assert found[("streamrec_gpu_memory_total_bytes", (("gpu", "0"),))] == 80 * 2**30
    assert found[("streamrec_gpu_info", (("gpu", "0"), ("name", "NVIDIA H100")))] == 1


def test_gpu_metrics_are_absent_when_nvml_cannot_start():
    class NoDriver(FakeNvml):
        def nvmlInit(self):
            raise RuntimeError("NVML Shared Library Not Found")

    assert samples(GpuCollector(NoDriver())) == {}
