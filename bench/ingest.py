"""Ingestion throughput: the stream worker against raw aiokafka consumer loops over the same topics.

    .venv/bin/python -m streamrec.bench.ingest [--events N] [--partitions P] [--repeats R]

One run, side by side: the ML-100K stream (clicks + purchases) is produced once into fresh
topics, then read three times from the beginning:

1. ``raw-consume``: an aiokafka consumer loop that only counts records (the ceiling);
2. ``raw-same-work``: the same loop doing the agent's per-event work in plain Python, on the
   worker's batches (a fetch cut into ``STREAMREC_BATCH_SIZE`` records): validation, grouping by
   user, event-time order, the user-state update with the event-id dedupe the worker runs, in a
   dict: what ingestion costs without Faust, tables, changelogs or commits;
3. ``faust-empty-agent``: a Faust agent that only counts (``bench/faust_empty_agent.py``): the
   framework's own ceiling on this machine;
4. ``faust-worker``: a real ``streamrec worker stream`` process (tables with changelogs,
   RocksDB, dead-letter handling, commits), timed from its first to its last batch.

With ``--repeats R`` the two loops the goal compares (``raw-same-work`` and ``faust-worker``, the
worker each time with a fresh consumer group and state) run R times, alternating which goes first;
each repeat gives a paired ratio, reported as its geometric mean with a 95% interval (the machine
is noisy: one pair proves little). The other loops run once.

It starts the embedded broker on its own ports unless KAFKA_BOOTSTRAP_SERVERS is set.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from streamrec.bench.common import bench_env, describe_machine, remove_state, settings_from
from streamrec.stream.kafka.admin import ensure_topics
from streamrec.stream.kafka.local import LocalKafka
from streamrec.stream.kafka.security import new_consumer
from streamrec.stream.settings import Settings
from streamrec.stream.tools.datasets import load_ml100k
from streamrec.stream.tools.replay import replay
from streamrec.stream.worker.contract import InvalidEvent, Limits, parse_interaction
from streamrec.stream.worker.process import WorkerProcess
from streamrec.stream.worker.user_state import apply_interactions, event_time_order


async def raw_loop(settings: Settings, total: int, same_work: bool) -> float:
    consumer = new_consumer(
        settings,
        *settings.interaction_topics,
        group_id=f"bench-raw-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        max_poll_records=settings.max_poll_records,
    )
    await consumer.start()
    limits = Limits.from_settings(settings)
    states: dict[str, dict] = {}
    seen = 0
    started = None
    try:
        while seen < total:
            fetched = await consumer.getmany(timeout_ms=1000, max_records=settings.max_poll_records)
            if started is None and fetched:
                started = time.perf_counter()
            records = [record for batch in fetched.values() for record in batch]
            seen += len(records)
            if not same_work:
                continue
            # The worker's batches: a fetch cut into batches of STREAMREC_BATCH_SIZE, grouped by user.
            for start in range(0, len(records), settings.batch_size):
                now_ms = int(time.time() * 1000)
                groups: dict[str, list] = {}
                for record in records[start : start + settings.batch_size]:
                    try:
                        event = parse_interaction(record.value, limits, now_ms)
                    except InvalidEvent:
                        continue
                    groups.setdefault(event.user_id, []).append((event, (record.topic, record.offset)))
                for user, group in groups.items():
                    group = [group[k] for k in event_time_order([e for e, _ in group])]
                    states[user], _ = apply_interactions(
                        states.get(user),
                        [e for e, _ in group],
                        settings.history_length,
                        settings.seen_length,
                        [p for _, p in group],
                        settings.dedupe_window,
                    )
        return seen / (time.perf_counter() - (started or time.perf_counter()))
    finally:
        await consumer.stop()


def interactions_consumed(stats: dict, settings: Settings) -> int:
    return sum(stats["consumed"].get(topic, 0) for topic in settings.interaction_topics)


def faust_worker(settings: Settings, env: dict[str, str], total: int, log: Path) -> tuple[float, dict]:
    worker = WorkerProcess(settings, env={**os.environ, **env}, log_path=log)
    worker.start()
    try:
        worker.wait_healthy()
        deadline = time.monotonic() + 600
        stats: dict = {}
        while time.monotonic() < deadline:
            if not worker.alive():
                raise RuntimeError(f"worker exited; see {log}")
            stats = worker.get_json("/stats")[1]
            if interactions_consumed(stats, settings) >= total:
                break
            time.sleep(0.2)
        span = stats["last_batch_at"] - stats["first_batch_at"]
        return interactions_consumed(stats, settings) / span, stats
    finally:
        worker.stop()


def faust_empty_agent(env: dict[str, str], total: int, out: Path) -> float:
    env = {**os.environ, **env}
    done = subprocess.run(
        [sys.executable, "-m", "streamrec.bench.faust_empty_agent", str(total), str(out)],
        env=env, capture_output=True, timeout=900,
    )  # fmt: skip
    if not out.exists():
        raise RuntimeError(f"empty agent failed:\n{done.stdout.decode()[-2000:]}{done.stderr.decode()[-2000:]}")
    return float(out.read_text())


def ratio_interval(ratios: list[float]) -> dict[str, float]:
    """Geometric mean of paired ratios with a 95% t-interval (on their logs); one ratio has no interval."""
    logs = [math.log(r) for r in ratios]
    mean = statistics.fmean(logs)
    if len(logs) < 2:
        return {"n": len(logs), "mean": math.exp(mean), "low": math.nan, "high": math.nan}
    half = T_975[min(len(logs) - 1, len(T_975)) - 1] * statistics.stdev(logs) / math.sqrt(len(logs))
    return {"n": len(logs), "mean": math.exp(mean), "low": math.exp(mean - half), "high": math.exp(mean + half)}


# Student's t, 97.5th percentile, for 1..10 degrees of freedom (more: the 10's value, slightly wide).
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


def run_ingest(
    env: dict[str, str], settings: Settings, dataset: Any, limit: int | None, repeats: int = 1
) -> dict[str, Any]:
    """Produce the stream once into ``settings``' topics, then time every loop over it, one by one.

    ``env`` (the worker's environment on top of this process's) must describe ``settings``.
    """
    asyncio.run(ensure_topics(settings))
    report = asyncio.run(replay(settings, dataset, limit=limit, include_catalogue=False))
    total = report.interactions
    rates = {"raw-consume": asyncio.run(raw_loop(settings, total, same_work=False))}
    rates["faust-empty-agent"] = faust_empty_agent(env, total, settings.state_dir / "empty-agent.rate")
    same_work: list[float] = []
    worker: list[float] = []
    per_batch: list[float] = []  # the worker's records per batch handed over (fewer: more per-batch cost)
    for repeat in range(repeats):
        worker_env = {**env, "STREAMREC_APP_ID": f"{env['STREAMREC_APP_ID']}-w{repeat}",
                      "STREAMREC_STATE_DIR": str(settings.state_dir / f"worker-{repeat}")}  # fmt: skip
        order = ("raw", "worker") if repeat % 2 == 0 else ("worker", "raw")
        for loop in order:
            if loop == "raw":
                same_work.append(asyncio.run(raw_loop(settings, total, same_work=True)))
                continue
            rate, stats = faust_worker(settings_from(worker_env), worker_env, total, settings.state_dir / "worker.log")
            if stats["applied_interactions"] != total:
                raise RuntimeError(f"the worker applied {stats['applied_interactions']:,} of {total:,} interactions")
            worker.append(rate)
            per_batch.append(stats["consumer"]["records"] / max(1, stats["consumer"]["batches"]))
    rates["raw-same-work"] = statistics.median(same_work)
    rates["faust-worker"] = statistics.median(worker)
    rates = {name: rates[name] for name in ("raw-consume", "raw-same-work", "faust-empty-agent", "faust-worker")}
    return {
        "events": total,
        "partitions": settings.topic_partitions,
        "events_per_s": rates,
        # The worker's rate over each loop's, all measured in this run (medians over the repeats).
        "worker_over": {name: rates["faust-worker"] / rate for name, rate in rates.items()},
        "repeats": {"raw-same-work": same_work, "faust-worker": worker},
        "worker_records_per_batch": statistics.fmean(per_batch) if per_batch else None,
        # The goal's ratio, paired repeat by repeat.
        "worker_over_same_work": ratio_interval([w / r for w, r in zip(worker, same_work, strict=True)]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=None, help="interactions to replay (default: all 155,375)")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1, help="paired runs of raw-same-work and the worker")
    args = parser.parse_args()

    # Ingestion alone: training has its own benchmark (bench/quality.py).
    env = bench_env(args.partitions, train="false")
    settings = settings_from(env)
    broker = LocalKafka(settings) if settings.uses_embedded_kafka else None
    if broker:
        broker.start()
    try:
        results = run_ingest(env, settings, load_ml100k(), args.events, args.repeats)
    finally:
        if broker:
            broker.stop()
    remove_state(env)
    print(f"produced {results['events']:,} interactions, {args.partitions} partitions per topic")
    print(f"machine: {describe_machine()['summary']}")
    print("command: .venv/bin/python -m streamrec.bench.ingest " + " ".join(sys.argv[1:]))
    print(f"{'loop':<16}{'events/s':>12}{'faust / loop':>16}")
    for name, rate in results["events_per_s"].items():
        print(f"{name:<16}{rate:>12,.0f}{results['worker_over'][name]:>16.2f}")
    paired = results["worker_over_same_work"]
    print(f"worker / raw-same-work, paired over {paired['n']} repeats: {paired['mean']:.2f} "
          f"(95% interval {paired['low']:.2f}..{paired['high']:.2f})")  # fmt: skip
    print(json.dumps(results))


if __name__ == "__main__":
    main()
