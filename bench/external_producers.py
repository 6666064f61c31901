"""Records from a client that is not ours, through a running worker: every codec, both partitioners.

    .venv/bin/python -m streamrec.bench.external_producers [--events N] [--users U]

A librdkafka producer (confluent-kafka) writes interactions compressed with each codec Kafka has
(gzip, snappy, lz4, zstd) and keyed with each of librdkafka's partitioners (``murmur2_random``, as
the Java client; ``consistent_random``, its default: CRC32) to a real stream worker, once with
``STREAMREC_PARTITIONER=murmur2`` and once with ``crc32``. Every cell of that matrix gets its own
users, and a ledger checks, per cell, through the worker's HTTP API: every event applied once
(each user's event count and history as produced), none lost, none a duplicate, no dead letter,
and how many were forwarded to their home partition (none where the producer and the setting
agree; each once where they do not). Ingestion only (training off). Exit status 1 if any cell
fails.

It starts the embedded broker on its own ports unless KAFKA_BOOTSTRAP_SERVERS is set.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

from streamrec.bench.common import bench_env, describe_machine, remove_state, settings_from
from streamrec.bench.librdkafka_client import CODECS, interaction_record, produce
from streamrec.stream.kafka.admin import ensure_topics
from streamrec.stream.kafka.local import LocalKafka
from streamrec.stream.settings import Settings
from streamrec.stream.worker.process import WorkerProcess
from streamrec.stream.worker.user_state import partition_for_key

PRODUCER_PARTITIONERS = ("murmur2_random", "consistent_random")
SETTINGS = ("murmur2", "crc32")
BASE_TS = 1_700_000_000_000


@dataclass
class Cell:
    setting: str
    codec: str
    producer_partitioner: str
    produced: int
    applied: int = 0  # events found in the users' states
    wrong_users: int = 0  # users whose state is not exactly what was produced
    forwarded: int = 0
    duplicates: int = 0
    dead_letters: int = 0

    @property
    def lost(self) -> int:
        return self.produced - self.applied

    expected_forwards: int = 0  # events whose key the two partitioners put on different partitions, when they disagree

    @property
    def ok(self) -> bool:
        clean = self.lost == 0 and self.wrong_users == 0 and self.duplicates == 0 and self.dead_letters == 0
        return clean and self.forwarded == self.expected_forwards


def expected_forwards(setting: str, producer_partitioner: str, events: list[dict[str, Any]], partitions: int) -> int:
    """Each event the producer put off the partition the setting calls its home is forwarded once."""
    producer = "murmur2" if producer_partitioner == "murmur2_random" else "crc32"
    if producer == setting:
        return 0
    return sum(
        partition_for_key(e["user_id"], partitions, producer) != partition_for_key(e["user_id"], partitions, setting)
        for e in events
    )


def cell_events(setting: str, codec: str, partitioner: str, events: int, users: int) -> list[dict[str, Any]]:
    tag = f"{setting}-{codec}-{partitioner}"
    return [
        {
            "event_id": f"{tag}-e{i}",
            "user_id": f"{tag}-u{i % users}",
            "item_id": f"i{(i * 7) % 97}",
            "ts": BASE_TS + i * 1000,
            "type": "click" if i % 3 else "purchase",
        }
        for i in range(events)
    ]


def wait_for(worker: WorkerProcess, condition: Any, timeout_s: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    stats: dict[str, Any] = {}
    while time.monotonic() < deadline:
        if not worker.alive():
            raise RuntimeError(f"the worker exited; see {worker.log_path}")
        stats = worker.get_json("/stats")[1]
        if condition(stats):
            return stats
        time.sleep(0.3)
    raise TimeoutError(f"condition not met in {timeout_s:.0f}s; last stats {stats}")


def run_setting(setting: str, env: dict[str, str], events: int, users: int) -> list[Cell]:
    settings: Settings = settings_from(env)
    asyncio.run(ensure_topics(settings))
    worker = WorkerProcess(settings, env={**os.environ, **env}, log_path=settings.state_dir / f"worker-{setting}.log")
    worker.start()
    cells = []
    try:
        worker.wait_healthy()
        wait_for(worker, lambda s: len(s.get("assigned", [])) == 2 * settings.topic_partitions)
        for codec in CODECS:
            for partitioner in PRODUCER_PARTITIONERS:
                before = worker.get_json("/stats")[1]
                batch = cell_events(setting, codec, partitioner, events, users)
                records = [interaction_record(e) for e in batch]
                produce(settings.bootstrap_servers, settings.topic_clicks, records, compression=codec,
                        partitioner=partitioner)  # fmt: skip
                cell = Cell(setting, codec, partitioner, len(batch))
                cell.expected_forwards = expected_forwards(setting, partitioner, batch, settings.topic_partitions)
                target = before["applied_interactions"] + before["duplicates"] + len(batch)
                after = wait_for(worker, lambda s, t=target: s["applied_interactions"] + s["duplicates"] >= t)
                time.sleep(1.0)  # anything applied twice would show by now
                after = worker.get_json("/stats")[1]
                cell.forwarded = after["forwarded_misrouted"] - before["forwarded_misrouted"]
                cell.duplicates = after["duplicates"] - before["duplicates"]
                cell.dead_letters = after["dead_letters_total"] - before["dead_letters_total"]
                produced_per_user: dict[str, list[dict[str, Any]]] = {}
                for e in batch:
                    produced_per_user.setdefault(e["user_id"], []).append(e)
                for user, mine in produced_per_user.items():
                    status, state = worker.get_json(f"/users/{user}")
                    if status != 200:
                        cell.wrong_users += 1
                        continue
                    cell.applied += state["events"]
                    history = [entry[1] for entry in state["recent"]]
                    wanted = [e["item_id"] for e in mine][-len(history) :] if history else []
                    if state["events"] != len(mine) or history != wanted:
                        cell.wrong_users += 1
                cells.append(cell)
                print(f"  {setting:<8}{codec:<8}{partitioner:<19}{cell.produced:>8,}{cell.applied:>9,}"
                      f"{cell.forwarded:>10,}{cell.duplicates:>6,}{cell.lost:>6,}  {'ok' if cell.ok else 'FAILED'}",
                      flush=True)  # fmt: skip
    finally:
        worker.stop()
    return cells


HEADER = (f"  {'setting':<8}{'codec':<8}{'producer':<19}{'produced':>8}{'applied':>9}{'forwarded':>10}"
          f"{'dup':>6}{'lost':>6}")  # fmt: skip


def run_matrix(base: dict[str, str], events: int, users: int, settings: tuple[str, ...] = SETTINGS) -> list[Cell]:
    """Every cell, one worker per ``STREAMREC_PARTITIONER`` setting, on the broker of ``base``."""
    cells: list[Cell] = []
    for setting in settings:
        env = {**bench_env(4, broker=base, train="false"), "STREAMREC_PARTITIONER": setting}
        cells += run_setting(setting, env, events, users)
        remove_state(env)
    return cells


def summary(cells: list[Cell]) -> str:
    failed = [c for c in cells if not c.ok]
    return (f"{len(cells)} cells, {sum(c.produced for c in cells):,} events: {len(failed)} failed; "
            f"lost {sum(c.lost for c in cells)}, duplicates {sum(c.duplicates for c in cells)}, "
            f"forwarded {sum(c.forwarded for c in cells):,} (once each where producer and setting differ)")  # fmt: skip


def as_dicts(cells: list[Cell]) -> list[dict[str, Any]]:
    return [asdict(c) | {"lost": c.lost, "ok": c.ok} for c in cells]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=2000, help="events per cell (codec × partitioner × setting)")
    parser.add_argument("--users", type=int, default=40, help="users per cell")
    args = parser.parse_args()

    base = bench_env(4, train="false")
    broker = LocalKafka(settings_from(base)) if settings_from(base).uses_embedded_kafka else None
    if broker:
        broker.start()
    print(f"machine: {describe_machine()['summary']}")
    print("command: .venv/bin/python -m streamrec.bench.external_producers " + " ".join(sys.argv[1:]))
    print(HEADER)
    try:
        cells = run_matrix(base, args.events, args.users)
    finally:
        if broker:
            broker.stop()
        remove_state(base)
    print(summary(cells))
    print(json.dumps(as_dicts(cells)))
    sys.exit(1 if any(not c.ok for c in cells) else 0)


if __name__ == "__main__":
    main()
