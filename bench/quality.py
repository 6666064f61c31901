"""Prequential quality, training throughput and freshness of the running service on MovieLens-100K.

    .venv/bin/python -m streamrec.bench.quality [--rate 2000] [--limit N]

Starts the embedded Kafka broker and the service as ``streamrec demo`` runs it (a stream worker
with the default settings: the model, the three baselines in their own process and, with
augmentation on, the inference worker), replays ML-100K as a live stream at ``--rate`` events/s,
waits until the worker has trained on every event, then prints:

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
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from streamrec.bench.common import MODEL_NAMES, bench_env, describe_machine, remove_state, settings_from, to_train
from streamrec.models.comparison import paired_over_runs
from streamrec.models.evaluation import COLD_ITEM, COLD_USER, KNOWN_ITEMS, LONG_TAIL, OVERALL
from streamrec.stream.kafka.admin import ensure_topics, read_topic
from streamrec.stream.kafka.local import LocalKafka
from streamrec.stream.settings import Settings
from streamrec.stream.tools.datasets import load_ml100k
from streamrec.stream.tools.replay import Pacing, replay
from streamrec.stream.worker.process import WorkerProcess
from streamrec.stream.worker.publisher import SOURCE_TS_HEADER


def latencies(settings: Settings) -> np.ndarray:
    records = asyncio.run(read_topic(settings, settings.topic_embeddings))
    values = []
    for record in records:
        source = dict(record.headers).get(SOURCE_TS_HEADER)
        if record.value is not None and source is not None:
            values.append((record.timestamp - int(source)) / 1000.0)
    return np.asarray(values)


def progress_point(elapsed_s: float, stats: dict[str, Any]) -> dict[str, Any]:
    """The worker's counters from ``/stats`` at ``elapsed_s`` after the replay started: where its
    events went (applied, dead-lettered, dropped as duplicates) and how many it trained on."""
    return {
        "t": round(elapsed_s, 2),
        "applied": stats.get("applied_interactions", 0),
        "dead_letters": stats.get("dead_letters_total", 0),
        "duplicates": stats.get("duplicates", 0),
        "trained": stats.get("trained", 0),
    }


def quality_point(elapsed_s: float, model: dict[str, Any]) -> dict[str, Any]:
    """The prequential table's overall row per model from ``/model`` (cumulative means: the report
    derives each interval's mean from them), and the augmented samples trained so far."""
    return {
        "t": round(elapsed_s, 2),
        "augmented_trained": sum(model.get("augmented_trained", {}).values()),
        "models": {
            name: {k: row.get(OVERALL, {}).get(k, 0.0) for k in ("n", "hr@10", "ndcg@10")}
            for name, row in model["metrics"].items()
        },
    }


async def _sample(worker: WorkerProcess, path: str, point: Any, started: float, every_s: float, stop: asyncio.Event,
                  into: list[dict[str, Any]]) -> None:  # fmt: skip
    """GET ``path`` every ``every_s`` until ``stop`` is set (and once more after), keeping
    ``point(elapsed, body)`` of every answer. ``/model`` waits for the baselines' process, so it is
    sampled on its own schedule, apart from the cheap ``/stats``."""
    while True:
        stopping = stop.is_set()
        try:
            status, body = await asyncio.to_thread(worker.get_json, path, 120)
        except OSError:  # busy or gone: the waiter below notices a dead worker
            status, body = None, None
        if status == 200:
            into.append(point(time.monotonic() - started, body))
        if stopping:
            return
        try:
            await asyncio.wait_for(stop.wait(), every_s)
        except TimeoutError:
            pass


async def _until_trained(worker: WorkerProcess, progress: list[dict[str, Any]], total: int, timeout_s: float) -> float:
    """Wait until the sampled ``/stats`` show every one of the ``total`` replayed events trained on
    (but the dead letters and duplicates, which never are); return when (seconds after the replay
    started, as sampled). Raises with the log's tail if the worker exits."""
    deadline = time.monotonic() + timeout_s
    while not progress or progress[-1]["trained"] < to_train(total, progress[-1]):
        if not worker.alive():
            raise RuntimeError(f"worker exited:\n{worker.log_tail()}")
        if time.monotonic() > deadline:
            last = progress[-1] if progress else {"trained": 0}
            raise RuntimeError(f"worker trained {last['trained']} of {to_train(total, last)} in {timeout_s:.0f}s")
        await asyncio.sleep(0.2)
    return progress[-1]["t"]


def run_service(
    env: dict[str, str],
    settings: Settings,
    dataset: Any,
    rate: float,
    limit: int | None,
    every_s: float = 5.0,
    timeout_s: float = 1800.0,
    with_inference_worker: bool = True,
) -> dict[str, Any]:
    """The service as ``streamrec demo`` runs it (stream worker, baselines' process and, with
    augmentation on, the inference worker) on ``settings``' broker: replay ``dataset`` at ``rate``,
    sample progress every second and prequential quality every ``every_s`` until every event is
    trained on, then read the event-to-embedding latency of every published embedding back from
    Kafka.

    ``with_inference_worker=False`` leaves the inference worker out, as a stream worker runs when it
    is down: local augmentation goes on, text and LLM requests go unanswered.

    The stream's first 10% trains every model but is not scored: the baselines were tuned there
    (``bench.tune_baselines``)."""
    tuning = int(0.1 * (limit or len(dataset.interactions)))
    # Event-time alignment on (unless set): a replay faster than the worker trains leaves a backlog on
    # both topics, and without it most clicks would arrive after their purchase (docs/settings.md).
    child_env = {"STREAMREC_EVENT_TIME_ALIGNMENT": "true", **os.environ,
                 "STREAMREC_EVALUATION_TUNING_EVENTS": str(tuning), **env}  # fmt: skip
    asyncio.run(ensure_topics(settings))
    inference = None
    if settings.train and settings.augment and with_inference_worker:
        inference = WorkerProcess(settings, env=child_env, role="augment",
                                  log_path=settings.state_dir / "inference-worker.log")  # fmt: skip
    worker = WorkerProcess(settings, env=child_env, log_path=settings.state_dir / "worker.log")
    progress: list[dict[str, Any]] = []
    quality: list[dict[str, Any]] = []
    try:
        if inference is not None:
            inference.start()
        worker.start()
        if inference is not None:
            inference.wait_healthy(300)
        worker.wait_healthy()

        async def replay_and_sample() -> tuple[Any, float]:
            stop = asyncio.Event()
            started = time.monotonic()
            samplers = [
                asyncio.create_task(_sample(worker, "/stats", progress_point, started, 1.0, stop, progress)),
                asyncio.create_task(_sample(worker, "/model", quality_point, started, every_s, stop, quality)),
            ]
            try:
                report = await replay(settings, dataset, Pacing(rate=rate), limit=limit)
                trained_after_s = await _until_trained(worker, progress, report.interactions, timeout_s)
            finally:
                stop.set()
                await asyncio.gather(*samplers)
            return report, trained_after_s

        report, trained_after_s = asyncio.run(replay_and_sample())
        stats = worker.get_json("/stats")[1]
        model = worker.get_json("/model", timeout_s=300)[1]
        kept = worker.get_json("/model/events", timeout_s=300)[1] if settings.evaluation_keep_events else None
        inference_stats = inference.get_json("/stats")[1] if inference is not None else None
        lat = latencies(settings)
    finally:
        worker.stop()
        if inference is not None:
            inference.stop()
    span = stats["last_batch_at"] - stats["first_batch_at"]
    augmented = sum(model.get("augmented_trained", {}).values())
    return {
        "events": report.interactions,
        # Where the replayed events went, from the worker (this process: the bench's state is new).
        "applied": stats["applied_interactions"],
        "dead_letters": stats["dead_letters_total"],
        "duplicates": stats["duplicates"],
        "replay_rate_target": rate,
        "replay_rate_achieved": report.events_per_s,
        "all_trained_after_s": trained_after_s,
        "inference_worker": inference is not None,
        "inference_stats": inference_stats,
        "trained": model["samples_trained"],
        "augmented_trained": model.get("augmented_trained", {}),
        "samples_per_s_wall": model["samples_trained"] / span,
        "samples_per_s_in_step": model["samples_trained"] / model["stats"]["train_seconds"],
        "all_samples_per_s_wall": (model["samples_trained"] + augmented) / span,
        "embedding_records": int(lat.size),
        "latency_s": latency_summary(lat),
        "drift_alarms": model["drift"]["alarms"],
        "unknown_items": model["unknown_items"],
        "late": model["late"],
        "reread": model["reread"],
        "catalogue": model["catalogue"],
        "metrics": model["metrics"],
        "progress": progress,
        "quality": quality,
        "kept_events": kept,  # per-event metrics (large: run_service_seeds turns them into comparisons)
    }


# Per-event metrics kept per model and slice: more than ML-100K's clicks, so every scored one is kept.
KEEP_EVENTS = 200_000
COMPARED = ("hr@10", "ndcg@10")


def run_service_seeds(
    broker_env: dict[str, str],
    dataset: Any,
    rate: float,
    limit: int | None,
    seeds: int,
    partitions: int = 4,
    every_s: float = 5.0,
    with_inference_worker: bool = True,
    say: Any = None,
) -> dict[str, Any]:
    """:func:`run_service` once per seed (``STREAMREC_MODEL_SEED`` 0, 1, ...: the model's and the
    baselines' randomness), each on fresh topics and state, then the paired comparisons.

    The first run's figures are returned whole (throughput, latency, quality over time); ``runs``
    holds every run's table, and ``comparison`` the pooled means and, per slice, streamrec against
    the best baseline *of that slice* with a 95% interval from resampling users
    (:func:`streamrec.models.comparison.paired_over_runs`: each run scored different clicks, since
    which arrive late depends on timing)."""
    runs = []
    for seed in range(seeds):
        env = bench_env(partitions, broker=broker_env, model_seed=str(seed), evaluation_keep_events=str(KEEP_EVENTS))
        figures = run_service(env, settings_from(env), dataset, rate, limit, every_s=every_s,
                              with_inference_worker=with_inference_worker)  # fmt: skip
        remove_state(env)
        runs.append(figures)
        if say is not None:
            say(f"[service] seed {seed}: streamrec HR@10 {figures['metrics']['streamrec'][OVERALL]['hr@10']:.4f}")
    result = {k: v for k, v in runs[0].items() if k != "kept_events"}
    result["seeds"] = seeds
    result["runs"] = [
        {"seed": k, "metrics": r["metrics"], "late": r["late"], "unknown_items": r["unknown_items"]}
        for k, r in enumerate(runs)
    ]
    result["comparison"] = compare_runs([r["kept_events"] for r in runs])
    return result


def paired_columns(kept: dict[str, Any], models: list[str], slice_name: str) -> tuple[list[str], dict[str, Any]]:
    """One run's per-event values of ``models`` on one slice, cut to the events every model scored.

    Every model scores the same events in the same order; ``/model/events`` copies the
    recommender's columns and the baselines' at slightly different moments, so the common prefix
    is what pairs. Raises if the users disagree there (the pairing would be wrong)."""
    empty: dict[str, list] = {"users": []} | {metric: [] for metric in COMPARED}
    columns = {m: kept[m].get(slice_name, empty) for m in models}
    n = min(len(c["users"]) for c in columns.values())
    users = columns[models[0]]["users"][:n]
    for m, c in columns.items():
        if c["users"][:n] != users:
            raise ValueError(f"{m}'s {slice_name} events are not the recommender's: cannot pair them")
    return users, {m: {metric: np.asarray(c[metric][:n]) for metric in COMPARED} for m, c in columns.items()}


def compare_runs(kept_runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Pooled means of every model per slice, and streamrec against each slice's best baseline.

    The best baseline of a slice is the one with the highest pooled NDCG@10 there (popularity on cold
    users, co-occurrence overall, ...), chosen on the same events it is compared on: that favours
    the baseline, never streamrec."""
    models = [m for m in kept_runs[0] if m != "keep_events"]
    baselines = [m for m in models if m != "streamrec"]
    out: dict[str, Any] = {"seeds": len(kept_runs), "slices": {}}
    for slice_name in (OVERALL, COLD_USER, COLD_ITEM, LONG_TAIL):
        paired = [paired_columns(kept, models, slice_name) for kept in kept_runs]
        users_runs = [users for users, _ in paired]
        events = sum(len(u) for u in users_runs)
        if events == 0:
            continue
        means = {m: {metric: float(np.concatenate([v[m][metric] for _, v in paired]).mean()) for metric in COMPARED}
                 for m in models}  # fmt: skip
        row: dict[str, Any] = {"events": events, "means": means}
        if baselines:
            best = max(baselines, key=lambda m: means[m]["ndcg@10"])
            row["best"] = best
            for metric in COMPARED:
                d = paired_over_runs(users_runs, [v["streamrec"][metric] for _, v in paired],
                                     [v[best][metric] for _, v in paired])  # fmt: skip
                row[metric] = asdict(d) | {"excludes_zero": d.excludes_zero, "described": d.describe("streamrec", best)}
        out["slices"][slice_name] = row
    return out


def latency_summary(lat: np.ndarray) -> dict[str, Any]:
    """Quantiles (every 0.5%, enough to draw the distribution) and the usual summary of ``lat``."""
    if lat.size == 0:
        return {"n": 0}
    grid = np.linspace(0.0, 1.0, 201)
    counts, edges = np.histogram(lat, bins=60)
    return {
        "n": int(lat.size),
        "mean": float(lat.mean()),
        "p50": float(np.quantile(lat, 0.5)),
        "p90": float(np.quantile(lat, 0.9)),
        "p99": float(np.quantile(lat, 0.99)),
        "max": float(lat.max()),
        "quantile_levels": grid.round(4).tolist(),
        "quantiles": np.quantile(lat, grid).round(4).tolist(),
        "histogram": {"edges": edges.round(4).tolist(), "counts": counts.tolist()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=2000.0, help="replay rate, events/s (default 2000)")
    parser.add_argument("--limit", type=int, default=None, help="interactions to replay (default: all 155,375)")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--no-inference-worker", action="store_true",
                        help="leave the inference worker out (the stream worker runs degraded)")  # fmt: skip
    parser.add_argument("--seeds", type=int, default=1,
                        help="service runs, STREAMREC_MODEL_SEED 0..N-1, paired (bench: 5)")  # fmt: skip
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = parser.parse_args()

    env = bench_env(args.partitions)
    settings = settings_from(env)
    broker = LocalKafka(settings)
    broker.start()
    try:
        figures = run_service_seeds(
            env, load_ml100k(), args.rate, args.limit, args.seeds, args.partitions,
            with_inference_worker=not args.no_inference_worker, say=lambda line: print(line, file=sys.stderr),
        )  # fmt: skip
    finally:
        broker.stop()
    remove_state(env)

    table = figures["metrics"]
    lat = figures["latency_s"]
    print(f"machine: {describe_machine()['summary']}")
    print(f"first run (seed 0) of {args.seeds}:")
    print("command: .venv/bin/python -m streamrec.bench.quality " + " ".join(sys.argv[1:]))
    print(
        f"{figures['events']:,} interactions replayed at {figures['replay_rate_achieved']:,.0f} events/s "
        f"(target {args.rate:,.0f}) → {figures['applied']:,} applied + {figures['dead_letters']:,} dead letters + "
        f"{figures['duplicates']:,} duplicates (dropped by the event-id dedupe); all trained "
        f"{figures['all_trained_after_s']:.0f}s after the replay started"
    )
    shown = (OVERALL, COLD_USER, COLD_ITEM, LONG_TAIL, KNOWN_ITEMS)
    print(f"{'model':<26}" + "".join(f"{h:>11}" for h in ("HR@10", "NDCG@10", "R@20")) * len(shown))
    print(f"{'':<26}" + "".join(f"{name:>33}" for name in ("overall", "cold users", "cold items", "long tail",
                                                               "known items only")))  # fmt: skip
    for name in MODEL_NAMES:
        if name not in table:
            continue
        row = f"{MODEL_NAMES[name]:<26}"
        for slice_name in shown:
            values = table[name].get(slice_name, {})
            row += "".join(f"{values.get(m, 0.0):>11.4f}" for m in ("hr@10", "ndcg@10", "recall@20"))
        print(row)
    sizes = {s: table["streamrec"].get(s, {}).get("n", 0) for s in shown}
    print(
        f"scored events (ranked over {figures['catalogue']:,} catalogue items): overall {sizes[OVERALL]:,}, "
        f"cold users {sizes[COLD_USER]:,}, cold items {sizes[COLD_ITEM]:,}, long tail {sizes[LONG_TAIL]:,}, "
        f"on items the model knew {sizes[KNOWN_ITEMS]:,} ({figures['unknown_items']:,} on items it had not "
        f"trained on); late (read after a later event of the user, not scored) {figures['late']:,}; "
        f"re-read after a restart (not scored) {figures['reread']:,}; "
        f"drift alarms {figures['drift_alarms']}"
    )
    print(
        f"training: {figures['samples_per_s_wall']:,.0f} samples/s over the worker's wall clock "
        f"({figures['samples_per_s_in_step']:,.0f}/s inside the training step); with augmented samples "
        f"{figures['all_samples_per_s_wall']:,.0f}/s"
    )
    if lat["n"]:
        print(
            f"event → embedding published: p50 {lat['p50']:.2f}s, p99 {lat['p99']:.2f}s "
            f"over {lat['n']:,} records (goal p99 < 1s)"
        )
    print()
    for line in comparison_lines(figures["comparison"]):
        print(line)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


def comparison_lines(comparison: dict[str, Any]) -> list[str]:
    """The pooled means and the paired differences, as the command prints them."""
    seeds = comparison["seeds"]
    lines = [f"over {seeds} run{'s' if seeds > 1 else ''} (seeds 0..{seeds - 1}), pooled; "
             "streamrec against the best baseline of each slice, 95% CI from resampling users:"]  # fmt: skip
    for slice_name, row in comparison["slices"].items():
        means = ", ".join(f"{m} {v['hr@10']:.4f}/{v['ndcg@10']:.4f}" for m, v in row["means"].items())
        lines.append(f"  {slice_name} ({row['events']:,} events; HR@10/NDCG@10): {means}")
        for metric in COMPARED:
            if metric in row:
                per_seed = ", ".join(f"{d:+.4f}" for d in row[metric]["per_seed"])
                lines.append(f"    {metric}: {row[metric]['described']}; per run {per_seed}")
    return lines


if __name__ == "__main__":
    main()
