"""Soak: a sustained replay for several minutes; is the stream worker's memory bounded, and its lag?

    .venv/bin/python -m streamrec.bench.soak [--minutes 5] [--rate 1000] [--warmup-s 60] [--set KEY=VALUE ...]

Starts the embedded broker and one stream worker process (default settings: the model and the
three baselines in their own process; ``--set augment=true`` etc. change any setting), then
replays MovieLens-100K in a loop at ``--rate`` events/s for ``--minutes``. Every lap is new data,
as a live stream would be: the event ids carry the lap number and the timestamps move forward by
the dataset's span, while users and items stay the same (a stable population: what a bounded
vocabulary and replay buffer should hold flat).

Every ``--every-s`` seconds it samples, from the outside:

* resident memory (VmRSS from /proc) of the worker and, apart, of its children (the baselines);
* the training backlog: events produced minus events the worker has trained on, dead-lettered or
  dropped as duplicates by its event-id dedupe (``/stats``);
* the consumer lag: the worker's own ``streamrec_consumer_lag`` on ``/metrics`` (log end minus
  committed offset, summed over partitions).

Then it prints the samples and the verdicts: resident memory after warm-up grows less than 10%
by the end, and the backlog is bounded (its maximum over the last third of the run is not above
its maximum over the middle third plus one second of events). Nothing is simulated.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

from streamrec.bench.common import bench_env, to_train
from streamrec.stream.kafka.admin import ensure_topics, start_client
from streamrec.stream.kafka.local import LocalKafka
from streamrec.stream.settings import Settings
from streamrec.stream.tools.datasets import load_ml100k
from streamrec.stream.tools.replay import producer_for
from streamrec.stream.worker.process import WorkerProcess


@dataclass
class Sample:
    t_s: float  # since the replay started
    produced: int
    trained: int
    backlog: int  # produced - trained - dead letters - duplicates: what the worker has yet to handle
    consumer_lag: int
    rss_mb: float  # the worker process
    children_rss_mb: float  # its child processes (the baselines)


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0


def children_of(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return []
    return [int(p) for p in text.split()]


def consumer_lag(web_url: str) -> int:
    with urllib.request.urlopen(web_url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    return int(
        sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("streamrec_consumer_lag{"))
    )


class LoopingReplay:
    """Produces ML-100K lap after lap at a fixed rate, in a thread with its own event loop."""

    def __init__(self, settings: Settings, rate: float, seconds: float) -> None:
        self.settings, self.rate, self.seconds = settings, rate, seconds
        self.produced = 0
        self.laps = 0
        self.error: BaseException | None = None
        dataset = load_ml100k()
        self.events = list(dataset.interaction_events())
        self.catalogue = dataset.catalogue
        self.span_ms = self.events[-1]["ts"] - self.events[0]["ts"] + 1000
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        try:
            asyncio.run(self._produce())
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            self.error = error

    async def _produce(self) -> None:
        s = self.settings
        producer = producer_for(s)
        await start_client(producer, s)
        try:
            for item in self.catalogue:
                await producer.send(s.topic_catalogue, orjson.dumps(item), key=str(item["item_id"]).encode())
            started = time.monotonic()
            pending = []
            while time.monotonic() - started < self.seconds:
                shift = self.laps * self.span_ms
                for event in self.events:
                    due = started + self.produced / self.rate
                    if due - time.monotonic() > 0.001:
                        await asyncio.sleep(due - time.monotonic())
                    if time.monotonic() - started >= self.seconds:
                        break
                    lapped = {**event, "event_id": f"{event['event_id']}-lap{self.laps}", "ts": event["ts"] + shift}
                    topic = s.topic_purchases if event["type"] == "purchase" else s.topic_clicks
                    pending.append(await producer.send(topic, orjson.dumps(lapped), key=event["user_id"].encode()))
                    self.produced += 1
                    if len(pending) >= 5000:
                        await asyncio.gather(*pending)
                        pending = []
                self.laps += 1
            await asyncio.gather(*pending)
        finally:
            await producer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=1000.0, help="events/s (default 1000)")
    parser.add_argument("--warmup-s", type=float, default=60.0, help="memory growth is measured from here")
    parser.add_argument("--every-s", type=float, default=5.0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a worker setting")
    parser.add_argument("--json", type=Path, default=None, help="also write the samples and verdicts here")
    args = parser.parse_args()

    extra = dict(item.split("=", 1) for item in args.set)
    env = bench_env(4, **extra)
    os.environ.update(env)
    settings = Settings()
    broker = LocalKafka(settings)
    broker.start()
    worker = WorkerProcess(settings, env={**os.environ}, log_path=settings.state_dir / "worker.log")
    samples: list[Sample] = []
    try:
        asyncio.run(ensure_topics(settings))
        worker.start()
        worker.wait_healthy()
        producer = LoopingReplay(settings, args.rate, args.minutes * 60)
        producer.start()
        started = time.monotonic()
        while producer.thread.is_alive():
            time.sleep(args.every_s)
            if not worker.alive():
                raise RuntimeError(f"the worker died:\n{worker.log_tail()}")
            assert worker.process is not None
            pid = worker.process.pid
            stats = worker.get_json("/stats")[1]
            trained = stats.get("trained", 0)
            samples.append(
                Sample(
                    round(time.monotonic() - started, 1), producer.produced, trained,
                    to_train(producer.produced, stats) - trained,
                    consumer_lag(worker.web_url), round(rss_mb(pid), 1),
                    round(sum(rss_mb(c) for c in children_of(pid)), 1),
                )
            )  # fmt: skip
            last = samples[-1]
            print(
                f"t={last.t_s:6.0f}s produced {last.produced:>9,} trained {last.trained:>9,} "
                f"backlog {last.backlog:>7,} lag {last.consumer_lag:>7,} rss {last.rss_mb:7.1f} MB "
                f"(+ children {last.children_rss_mb:6.1f} MB)",
                flush=True,
            )
        if producer.error is not None:
            raise producer.error
    finally:
        worker.stop()
        broker.stop()

    after = [s for s in samples if s.t_s >= args.warmup_s]
    if len(after) < 6:
        raise SystemExit(f"too few samples after the warm-up ({len(after)}); run longer")
    base, end = after[0], after[-1]
    growth = (end.rss_mb - base.rss_mb) / base.rss_mb
    children_growth = (end.children_rss_mb - base.children_rss_mb) / max(base.children_rss_mb, 1.0)
    third = len(after) // 3
    middle_max = max(s.backlog for s in after[third : 2 * third])
    last_max = max(s.backlog for s in after[2 * third :])
    bounded = last_max <= middle_max + args.rate
    achieved = end.produced / end.t_s
    verdicts = {
        "machine": f"{platform.node()} ({os.cpu_count()} cores), Python {platform.python_version()}",
        "command": "bench/soak.py " + " ".join(sys.argv[1:]),
        "events_produced": end.produced,
        "laps": producer.laps,
        "rate_achieved": achieved,
        "trained_per_s": (end.trained - base.trained) / (end.t_s - base.t_s),
        "rss_after_warmup_mb": base.rss_mb,
        "rss_end_mb": end.rss_mb,
        "rss_growth": growth,
        "children_rss_growth": children_growth,
        "backlog_max_middle_third": middle_max,
        "backlog_max_last_third": last_max,
        "consumer_lag_max": max(s.consumer_lag for s in after),
        "memory_bounded": growth < 0.10,
        "lag_bounded": bounded,
    }
    print(f"machine: {verdicts['machine']}")
    print(f"command: .venv/bin/python {verdicts['command']}")
    print(
        f"{end.produced:,} events in {end.t_s:.0f}s ({achieved:,.0f}/s, {producer.laps} laps); "
        f"trained {verdicts['trained_per_s']:,.0f}/s after the warm-up"
    )
    print(
        f"worker RSS {base.rss_mb:.1f} MB at {base.t_s:.0f}s -> {end.rss_mb:.1f} MB at {end.t_s:.0f}s: "
        f"{growth:+.1%} (goal < +10%: {'met' if growth < 0.10 else 'NOT met'}); "
        f"baselines process {base.children_rss_mb:.1f} -> {end.children_rss_mb:.1f} MB ({children_growth:+.1%})"
    )
    print(
        f"training backlog: max {middle_max:,} in the middle third, {last_max:,} in the last third "
        f"({'bounded' if bounded else 'GROWING'}); consumer lag max {verdicts['consumer_lag_max']:,}"
    )
    if args.json:
        args.json.write_text(json.dumps({"verdicts": verdicts, "samples": [asdict(s) for s in samples]}, indent=2))


if __name__ == "__main__":
    main()
