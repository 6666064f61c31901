"""Prequential quality, training throughput and freshness of the running service on MovieLens-100K.

    .venv/bin/python bench/quality.py [--rate 2000] [--limit N]

Starts the embedded Kafka broker and a stream worker process with the default settings (model and
the three baselines), replays ML-100K as a live stream at ``--rate`` events/s, waits until the
worker has trained on every event, then prints:

* the table: HR@10, NDCG@10 and Recall@20 — overall, cold users (< 5 earlier events) and long-tail
  items (outside the top 20% by popularity) — for every model, from the worker's ``GET /model``;
* training throughput: samples trained per second of the worker's wall clock (first to last
  batch) and per second inside the training step;
* event-to-embedding latency p50/p99, read back from the embeddings topic: broker append time of
  each record minus the timestamp of the oldest event it reflects (``streamrec.source_ts_ms``).

Nothing is simulated: the figures come from the worker process and from Kafka.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import bench_env  # noqa: E402
from models.evaluation import COLD_USER, LONG_TAIL, OVERALL  # noqa: E402
from stream.datasets import load_ml100k  # noqa: E402
from stream.kafka_admin import ensure_topics, read_topic  # noqa: E402
from stream.kafka_local import LocalKafka  # noqa: E402
from stream.publisher import SOURCE_TS_HEADER  # noqa: E402
from stream.replay import Pacing, replay  # noqa: E402
from stream.settings import Settings  # noqa: E402
from stream.worker import WorkerProcess  # noqa: E402

NAMES = {
    "streamrec": "streamrec (this model)",
    "most_popular": "most-popular (decayed)",
    "biased_mf": "river BiasedMF",
    "funk_mf": "river FunkMF",
}


def wait_trained(worker: WorkerProcess, total: int, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    stats: dict = {}
    while time.monotonic() < deadline:
        if not worker.alive():
            raise RuntimeError(f"worker exited:\n{worker.log_tail()}")
        stats = worker.get_json("/stats")[1]
        if stats.get("trained", 0) >= total:
            return stats
        time.sleep(0.5)
    raise RuntimeError(f"worker trained {stats.get('trained')} of {total} in {timeout_s:.0f}s")


def latencies(settings: Settings) -> np.ndarray:
    records = asyncio.run(read_topic(settings, settings.topic_embeddings))
    values = []
    for record in records:
        source = dict(record.headers).get(SOURCE_TS_HEADER)
        if record.value is not None and source is not None:
            values.append((record.timestamp - int(source)) / 1000.0)
    return np.asarray(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=2000.0, help="replay rate, events/s (default 2000)")
    parser.add_argument("--limit", type=int, default=None, help="interactions to replay (default: all 155,375)")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = parser.parse_args()

    env = bench_env(args.partitions)
    os.environ.update(env)
    settings = Settings()
    broker = LocalKafka(settings)
    broker.start()
    worker = WorkerProcess(settings, env={**os.environ}, log_path=settings.state_dir / "worker.log")
    try:
        dataset = load_ml100k()
        asyncio.run(ensure_topics(settings))
        worker.start()
        worker.wait_healthy()
        started = time.monotonic()
        report = asyncio.run(replay(settings, dataset, Pacing(rate=args.rate), limit=args.limit))
        stats = wait_trained(worker, report.interactions, timeout_s=1800)
        wall = time.monotonic() - started
        model = worker.get_json("/model", timeout_s=300)[1]
        lat = latencies(settings)
    finally:
        worker.stop()
        broker.stop()

    table = model["metrics"]
    span = stats["last_batch_at"] - stats["first_batch_at"]
    figures = {
        "events": report.interactions,
        "replay_rate_target": args.rate,
        "replay_rate_achieved": report.events_per_s,
        "trained": model["samples_trained"],
        "samples_per_s_wall": model["samples_trained"] / span,
        "samples_per_s_in_step": model["samples_trained"] / model["stats"]["train_seconds"],
        "embedding_records": int(lat.size),
        "latency_p50_s": float(np.quantile(lat, 0.5)) if lat.size else None,
        "latency_p99_s": float(np.quantile(lat, 0.99)) if lat.size else None,
        "drift_alarms": model["drift"]["alarms"],
        "unrankable": model["unrankable"],
        "late": model["late"],
        "metrics": table,
    }
    print(f"machine: {platform.node()} ({os.cpu_count()} cores), Python {platform.python_version()}")
    print("command: .venv/bin/python bench/quality.py " + " ".join(sys.argv[1:]))
    print(
        f"{report.interactions:,} interactions replayed at {report.events_per_s:,.0f} events/s "
        f"(target {args.rate:,.0f}); all trained {wall:.0f}s after the replay started"
    )
    print(f"{'model':<26}" + "".join(f"{h:>11}" for h in ("HR@10", "NDCG@10", "R@20")) * 3)
    print(f"{'':<26}{'overall':>33}{'cold users':>33}{'long tail':>33}")
    for name in ("streamrec", "most_popular", "biased_mf", "funk_mf"):
        if name not in table:
            continue
        row = f"{NAMES[name]:<26}"
        for slice_name in (OVERALL, COLD_USER, LONG_TAIL):
            values = table[name].get(slice_name, {})
            row += "".join(f"{values.get(m, 0.0):>11.4f}" for m in ("hr@10", "ndcg@10", "recall@20"))
        print(row)
    sizes = {s: table["streamrec"].get(s, {}).get("n", 0) for s in (OVERALL, COLD_USER, LONG_TAIL)}
    print(
        f"scored events: overall {sizes[OVERALL]:,}, cold users {sizes[COLD_USER]:,}, "
        f"long tail {sizes[LONG_TAIL]:,}; unrankable (item never seen before) {model['unrankable']:,}; "
        f"late (read after a later event of the user, not scored) {model['late']:,}; "
        f"drift alarms {model['drift']['alarms']}"
    )
    print(
        f"training: {figures['samples_per_s_wall']:,.0f} samples/s over the worker's wall clock "
        f"({figures['samples_per_s_in_step']:,.0f}/s inside the training step)"
    )
    if lat.size:
        print(
            f"event → embedding published: p50 {figures['latency_p50_s']:.2f}s, p99 {figures['latency_p99_s']:.2f}s "
            f"over {lat.size:,} records (goal p99 < 1s)"
        )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
