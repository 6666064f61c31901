"""The README's main job: local broker → stream worker → live replay of a dataset → zero-loss check.

It runs the same pieces a deployment runs: the worker is a separate ``streamrec worker stream``
process, the broker is real, and the numbers printed come from the worker's ``/stats`` endpoint
and the dead-letter topic's offsets, not from the producer's own count.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from tqdm import tqdm

from stream.datasets import Dataset
from stream.kafka_admin import end_offsets, ensure_topics
from stream.kafka_local import LocalKafka
from stream.replay import Pacing, ReplayReport, replay
from stream.settings import Settings
from stream.worker import WorkerProcess


async def fetch_stats(session: aiohttp.ClientSession, settings: Settings, totals: bool = False) -> dict[str, Any]:
    url = f"{settings.web_url}/stats" + ("?totals=1" if totals else "")
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=10)) as response:
        response.raise_for_status()
        return await response.json()


@dataclass
class Accounting:
    """What the worker has accounted for: events in user state and records in the dead-letter topic."""

    applied: int
    dead_letters: int
    users: int
    items: int

    @property
    def total(self) -> int:
        return self.applied + self.dead_letters


async def accounting(session: aiohttp.ClientSession, settings: Settings) -> Accounting:
    stats = await fetch_stats(session, settings, totals=True)
    dlq = sum((await end_offsets(settings, settings.topic_dead_letters)).values())
    return Accounting(stats["user_state_events_total"], dlq, stats["users"], stats["items"])


async def settled_accounting(session: aiohttp.ClientSession, settings: Settings, quiet_s: float = 3.0) -> Accounting:
    """Accounting once the worker has stopped moving (it may be catching up on an earlier run)."""
    previous = await accounting(session, settings)
    while True:
        await asyncio.sleep(quiet_s)
        current = await accounting(session, settings)
        if current.total == previous.total:
            return current
        previous = current


class ProgressDeadline:
    """Expires ``stall_s`` after the watched count last grew.

    The demo waits for the worker to account for every event it replayed. A fixed deadline called
    a worker that was still catching up on a slow machine a loss; this one waits as long as the
    worker makes progress, and gives up only on one that has stopped.
    """

    def __init__(self, stall_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_s = stall_s
        self.clock = clock
        self.count: int | None = None
        self.expires_at = clock() + stall_s

    def note(self, count: int) -> None:
        if self.count is None or count > self.count:
            self.count = count
            self.expires_at = self.clock() + self.stall_s

    def expired(self) -> bool:
        return self.clock() >= self.expires_at


async def run_demo(
    settings: Settings,
    dataset: Dataset,
    pacing: Pacing,
    *,
    limit: int | None,
    keep_running: bool,
    drain_timeout_s: float = 300.0,
    out: Any = sys.stdout,
) -> bool:
    """Run the demo; return True when every replayed interaction is accounted for.

    ``drain_timeout_s``: how long the worker may go without accounting for one more event (and,
    after, without training one more sample) before the demo stops waiting.
    """
    broker = LocalKafka(settings) if settings.uses_embedded_kafka else None
    started_broker = False
    if broker is not None:
        if not broker.status().running:
            print(f"Starting local Kafka {broker.version} on {broker.bootstrap} (first run downloads it)…", file=out)
            started_broker = True
        await asyncio.to_thread(broker.start)  # blocking: waits for the JVM
    else:
        print(f"Using the Kafka cluster at {settings.bootstrap_servers}", file=out)
    await ensure_topics(settings)

    inference = None
    if settings.train and settings.augment:
        # The transformer inference worker (CPU here): item texts → content vectors, LM scoring.
        inference = WorkerProcess(settings, role="augment")
    worker = WorkerProcess(settings)
    ok = False
    try:
        if inference is not None:
            inference.start()
        worker.start()
        async with aiohttp.ClientSession() as session:
            if inference is not None:
                print("Inference worker loading MiniLM and SmolLM2 on the CPU…", file=out)
                await asyncio.to_thread(inference.wait_healthy, 300)
                print(f"Inference worker up ({inference.web_url}); log: {inference.log_path}", file=out)
            await asyncio.to_thread(worker.wait_healthy)
            print(f"Stream worker up ({settings.web_url}); log: {worker.log_path}", file=out)
            before = await settled_accounting(session, settings, quiet_s=2.0)
            ok = await _replay_and_check(
                session, settings, dataset, pacing, limit, before, worker, drain_timeout_s, out
            )
            if ok and settings.train:
                await _report_training(session, settings, drain_timeout_s, out)
            if keep_running:
                print("Keeping the broker and worker running; press Ctrl-C to stop.", file=out)
                await asyncio.to_thread(worker.wait)
    finally:
        if not keep_running or not worker.alive():
            if worker.process is not None:
                print(f"Stream worker stopped (exit code {worker.stop()}).", file=out)
            if inference is not None and inference.process is not None:
                print(f"Inference worker stopped (exit code {inference.stop()}).", file=out)
            if broker is not None and started_broker:
                broker.stop()
                print("Local Kafka stopped.", file=out)
    return ok


async def _replay_and_check(
    session: aiohttp.ClientSession,
    settings: Settings,
    dataset: Dataset,
    pacing: Pacing,
    limit: int | None,
    before: Accounting,
    worker: WorkerProcess,
    drain_timeout_s: float,
    out: Any,
) -> bool:
    total = len(dataset.interactions) if limit is None else min(limit, len(dataset.interactions))
    bar = tqdm(total=total, unit="ev", desc=f"replay {dataset.name}", file=out, dynamic_ncols=True)
    live: dict[str, Any] = {}
    rate = _Rate()

    async def poll() -> None:
        while True:
            try:
                stats = await fetch_stats(session, settings)
                live.update(stats)
                rate.update(stats["consumed_total"])
            except (TimeoutError, aiohttp.ClientError):
                pass
            bar.set_postfix_str(_summary(live, rate.per_s), refresh=True)
            await asyncio.sleep(1.0)

    def progress(report: ReplayReport) -> None:
        bar.n = report.interactions
        bar.refresh()

    poller = asyncio.create_task(poll())
    try:
        report = await replay(settings, dataset, pacing, limit=limit, on_progress=progress)
        bar.close()
        print(
            f"Produced {report.interactions:,} interactions and {report.catalogue:,} catalogue items "
            f"in {report.seconds:.1f}s ({report.events_per_s:,.0f} events/s).",
            file=out,
        )
        deadline = ProgressDeadline(drain_timeout_s)
        now = before
        while not deadline.expired() and worker.alive():
            now = await accounting(session, settings)
            done = now.total - before.total
            deadline.note(done)
            print(f"\r  worker: {done:,}/{report.interactions:,} accounted for · {_summary(live, rate.per_s)}   ",
                  end="", file=out, flush=True)  # fmt: skip
            if done >= report.interactions:
                break
            await asyncio.sleep(1.0)
        print(file=out)
    finally:
        poller.cancel()
    applied = now.applied - before.applied
    dead = now.dead_letters - before.dead_letters
    lost = report.interactions - applied - dead
    print(
        f"Summary: {report.interactions:,} interactions in → {applied:,} in user state + {dead:,} dead letters; "
        f"lost: {lost:,}. Users: {now.users:,}, items: {now.items:,}. "
        f"Worker ingestion {live.get('consumed_total', 0) / max(live.get('uptime_s', 1), 1e-9):,.0f} events/s "
        f"over its uptime.",
        file=out,
    )
    if lost == 0:
        print("Zero loss: every event is in user state or in the dead-letter topic.", file=out)
    else:
        why = "the worker exited" if not worker.alive() else f"no progress for {drain_timeout_s:.0f}s"
        print(f"LOSS: {lost:,} events are unaccounted for ({why}); see {worker.log_path}", file=out)
    return lost == 0


async def _report_training(session: aiohttp.ClientSession, settings: Settings, timeout_s: float, out: Any) -> None:
    """Wait until the model has trained on everything in user state, then print its prequential table."""
    deadline = ProgressDeadline(timeout_s)
    while not deadline.expired():
        stats = await fetch_stats(session, settings, totals=True)
        deadline.note(stats["trained"])
        print(f"\r  training: {stats['trained']:,} samples", end="", file=out, flush=True)
        if stats["trained"] >= stats["user_state_events_total"]:
            break
        await asyncio.sleep(1.0)
    print(file=out)
    url = f"{settings.web_url}/model"
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=300)) as response:
        model = await response.json()
    print(
        f"Model version {model['version']:,}: {model['samples_trained']:,} samples trained; "
        f"prequential (scored before training, seen items excluded), {model['drift']['alarms']} drift alarms:",
        file=out,
    )
    print(f"  {'model':<14}{'HR@10':>9}{'NDCG@10':>9}{'scored':>9}", file=out)
    for name, table in model["metrics"].items():
        overall = table.get("overall", {})
        print(f"  {name:<14}{overall.get('hr@10', 0):>9.4f}{overall.get('ndcg@10', 0):>9.4f}{overall.get('n', 0):>9,}",
              file=out)  # fmt: skip
    augmentation = model.get("augmentation")
    if augmentation:
        requests = augmentation.get("requests", {})
        generated = ", ".join(f"{kind} {n:,}" for kind, n in sorted(augmentation.get("generated", {}).items()))
        print(f"Augmented samples generated: {generated or 'none'}; trained: "
              f"{sum(model.get('augmented_trained', {}).values()):,}.", file=out)  # fmt: skip
        print(f"Item texts turned into content vectors: {augmentation.get('items_with_content', 0):,} "
              f"(rewrites {augmentation.get('rewrites', {})}); inference requests completed "
              f"{requests.get('completed', {})}, expired {requests.get('expired', {})}.", file=out)  # fmt: skip
    published = model.get("embeddings", {})
    print(
        f"Embeddings published: {published.get('published_users', 0):,} user and "
        f"{published.get('published_items', 0):,} item records to {settings.topic_embeddings}.",
        file=out,
    )


class _Rate:
    """Events per second between the two latest readings of a counter."""

    def __init__(self) -> None:
        self.last: tuple[float, int] | None = None
        self.per_s = 0.0

    def update(self, count: int) -> None:
        now = time.monotonic()
        if self.last is not None and now > self.last[0]:
            self.per_s = (count - self.last[1]) / (now - self.last[0])
        self.last = (now, count)


def _summary(stats: dict[str, Any], per_s: float) -> str:
    if not stats:
        return "waiting for worker stats"
    return (
        f"{per_s:,.0f} ev/s · users {stats.get('users', 0):,} · items {stats.get('items', 0):,} · "
        f"dead letters {stats.get('dead_letters_total', 0):,}"
    )
