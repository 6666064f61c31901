"""Build ``dashboards/streamrec.json``, the Grafana dashboard provisioned by compose and Helm.

The dashboard is generated rather than edited by hand so that every panel is one readable line
here (title, unit, PromQL) and the JSON stays consistent (grid positions, datasource, ids).
``tests/integration/test_monitoring.py`` evaluates every expression below against a Prometheus
that scraped a live replay, and ``tests/unit/test_deploy_files.py`` checks the committed JSON is
what this script writes. Run it after changing a panel::

    .venv/bin/python deploy/grafana/build_dashboard.py

``$__rate_interval`` is Grafana's own variable (at least four scrape intervals); the tests
substitute ``1m`` for it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

# Package data (streamrec.stream/dashboards): `streamrec dashboard` prints it, compose mounts the folder.
OUT = Path(__file__).resolve().parents[2] / "stream" / "dashboards" / "streamrec.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"


@dataclass
class Panel:
    title: str
    exprs: dict[str, str]  # legend -> PromQL
    unit: str = "short"
    description: str = ""
    kind: str = "timeseries"
    width: int = 8
    extra: dict = field(default_factory=dict)


def rate_by(metric: str, *labels: str, selector: str = "") -> str:
    """Per-second rate of a counter, summed (by ``labels``) across workers."""
    total = f"sum by ({', '.join(labels)}) " if labels else "sum"
    return f"{total}(rate({metric}{selector}[{RATE}]))"


def quantile(q_: float, histogram: str, *labels: str) -> str:
    """The ``q_`` quantile of a histogram across workers, per ``labels``."""
    return f"histogram_quantile({q_}, sum by ({', '.join((*labels, 'le'))}) (rate({histogram}_bucket[{RATE}])))"


ROWS: list[tuple[str, list[Panel]]] = [
    (
        "Throughput and lag",
        [
            Panel(
                "Events consumed",
                {"{{topic}}": rate_by("streamrec_events_consumed_total", "topic")},
                "ops",
                "Records read from the input topics, valid or not.",
            ),
            Panel(
                "Valid interactions by type",
                {"{{type}}": rate_by("streamrec_interactions_total", "type")},
                "ops",
                "Clicks and purchases applied to the user state.",
            ),
            Panel(
                "Dead letters by reason",
                {"{{reason}}": rate_by("streamrec_dead_letters_total", "reason")},
                "ops",
                "Invalid events sent to the dead-letter topic, with the reason they carry as a header.",
            ),
            Panel(
                "Consumer lag by partition",
                {"{{topic}}:{{partition}}": "sum by (topic, partition) (streamrec_consumer_lag)"},
                "short",
                "Log end offset minus the group's committed offset, per input partition.",
                width=12,
            ),
            Panel(
                "Event to sample latency",
                {f"p{int(p * 100)}": quantile(p, "streamrec_event_to_sample_seconds") for p in (0.5, 0.99)},
                "s",
                "From the Kafka record's timestamp to the training step that uses it.",
                width=12,
            ),
        ],
    ),
    (
        "Quality (prequential, scored before training)",
        [
            Panel(
                "HR@10 by model (overall, rolling window)",
                {"{{model}}": 'max by (model) (streamrec_prequential_hr_at_10{slice="overall"})'},
                "percentunit",
                "Every real click is ranked by each model before anyone trains on it.",
            ),
            Panel(
                "NDCG@10 by model (overall, rolling window)",
                {"{{model}}": 'max by (model) (streamrec_prequential_ndcg_at_10{slice="overall"})'},
                "percentunit",
            ),
            Panel(
                "HR@10 of streamrec by slice",
                {"{{slice}}": 'max by (slice) (streamrec_prequential_hr_at_10{model="streamrec"})'},
                "percentunit",
                "Cold users (fewer than 5 earlier events) and long-tail items (outside the top 20%).",
            ),
            Panel(
                "Scored events",
                {
                    "{{model}}": rate_by(
                        "streamrec_prequential_scored_events_total", "model", selector='{slice="overall"}'
                    )
                },
                "ops",
            ),
            Panel(
                "Events trained but not scored",
                {"{{reason}}": rate_by("streamrec_events_not_scored_total", "reason")},
                "ops",
                "late: an earlier event arrived after a later one; "
                "reread: read again after a restart, its user's state already holds what followed.",
            ),
            Panel(
                "Drift alarms (ADWIN on the prequential loss)",
                {"alarms": "sum(increase(streamrec_drift_alarms_total[1h]))"},
                "short",
                "On an alarm the trainer raises its learning rate for a while.",
            ),
        ],
    ),
    (
        "Augmentation and GPU",
        [
            Panel(
                "Augmented samples generated by kind",
                {"{{kind}}": rate_by("streamrec_augmented_samples_generated_total", "kind")},
                "ops",
            ),
            Panel(
                "Inference requests by outcome",
                {"{{kind}} {{outcome}}": rate_by("streamrec_inference_requests_total", "kind", "outcome")},
                "ops",
                "Sent by the stream worker; expired and dropped requests mean the inference worker is behind.",
            ),
            Panel(
                "Inference queue depth",
                {
                    "{{model}}": "sum by (model) (streamrec_inference_queue_depth)",
                    "{{model}} capacity": "max by (model) (streamrec_inference_queue_capacity)",
                },
                "short",
            ),
            Panel(
                "Inference batch size",
                {
                    "{{model}} mean": rate_by("streamrec_inference_batch_size_sum", "model")
                    + " / "
                    + rate_by("streamrec_inference_batch_size_count", "model")
                },
                "short",
                "Requests per model call: the dynamic batcher's work.",
            ),
            Panel(
                "Inference batch latency p99",
                {"{{model}}": quantile(0.99, "streamrec_inference_batch_seconds", "model")},
                "s",
            ),
            Panel(
                "Inference round trip p99 (stream worker)",
                {"{{kind}}": quantile(0.99, "streamrec_inference_request_seconds", "kind")},
                "s",
            ),
            Panel(
                "GPU utilisation",
                {"{{gpu}}": "max by (gpu) (streamrec_gpu_utilization_ratio)"},
                "percentunit",
                "From NVML; absent on CPU-only workers.",
            ),
            Panel(
                "GPU memory used",
                {
                    "{{gpu}} used": "max by (gpu) (streamrec_gpu_memory_used_bytes)",
                    "{{gpu}} total": "max by (gpu) (streamrec_gpu_memory_total_bytes)",
                },
                "bytes",
            ),
            Panel(
                "Inference degraded",
                {"degraded": "max(streamrec_inference_degraded)"},
                "short",
                "1 while the stream worker gets no answers: training goes on without model-based augmentation.",
            ),
        ],
    ),
    (
        "Training and freshness",
        [
            Panel(
                "Training samples",
                {
                    "real": rate_by("streamrec_training_samples_total"),
                    "augmented": rate_by("streamrec_augmented_samples_trained_total"),
                },
                "ops",
            ),
            Panel("Training loss", {"loss": "avg(streamrec_training_loss)"}, "short"),
            Panel(
                "Time spent training",
                {"busy": rate_by("streamrec_training_step_seconds_total")},
                "percentunit",
                "Fraction of wall time inside training steps; near 1 the worker cannot keep up.",
            ),
            Panel("Model version", {"{{instance}}": "max by (instance) (streamrec_model_version)"}, "short"),
            Panel(
                "Checkpoint age",
                {"{{instance}}": "max by (instance) (streamrec_checkpoint_age_seconds)"},
                "s",
            ),
            Panel(
                "Event to embedding published",
                {f"p{int(p * 100)}": quantile(p, "streamrec_event_to_embedding_seconds") for p in (0.5, 0.99)},
                "s",
                "From the Kafka timestamp of the oldest event behind a vector to its delivery.",
            ),
            Panel(
                "Embeddings published",
                {"{{entity}}": rate_by("streamrec_embeddings_published_total", "entity")},
                "ops",
            ),
        ],
    ),
    (
        "API",
        [
            Panel(
                "Requests by route and status",
                {"{{route}} {{status}}": rate_by("streamrec_http_requests_total", "route", "status")},
                "reqps",
            ),
            Panel(
                "Latency p99 by route",
                {"{{route}}": quantile(0.99, "streamrec_http_request_duration_seconds", "route")},
                "s",
            ),
            Panel(
                "Error ratio (5xx)",
                {
                    "5xx": "("
                    + rate_by("streamrec_http_requests_total", selector='{status=~"5.."}')
                    + " or vector(0)) / clamp_min("
                    + rate_by("streamrec_http_requests_total")
                    + ", 1e-9)"
                },
                "percentunit",
            ),
        ],
    ),
]


def panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict:
    targets = [
        {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend, "datasource": DATASOURCE}
        for i, (legend, expr) in enumerate(panel.exprs.items())
    ]
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
        "targets": targets,
    }


def dashboard() -> dict:
    panels: list[dict] = []
    panel_id, y = 1, 0
    for row_title, row_panels in ROWS:
        panels.append(
            {
                "id": panel_id,
                "type": "row",
                "title": row_title,
                "collapsed": False,
                "panels": [],
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
            }
        )
        panel_id, y, x = panel_id + 1, y + 1, 0
        for panel in row_panels:
            if x + panel.width > 24:
                x, y = 0, y + 8
            panels.append(panel_json(panel, panel_id, x, y))
            panel_id, x = panel_id + 1, x + panel.width
        y += 8
    return {
        "uid": "streamrec",
        "title": "streamrec",
        "description": "Streaming online-learning recommender: ingestion, quality, augmentation, training, API.",
        "tags": ["streamrec", "kafka", "recommender"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                    "refresh": 1,
                }
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT}")
