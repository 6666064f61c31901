"""Rebalance torture: stream workers join, leave and are killed with -9 while a producer writes, on a loaded CPU.

    .venv/bin/python -m streamrec.bench.torture [--minutes 5] [--runs 20] [--producer aiokafka|crc32|murmur2] [--seed 0]

One run starts three stream workers of one application on 6 partitions per input topic (12 input
partitions), one busy-loop process per core, and a producer writing interactions at a steady rate
for the whole run. Every few seconds (a seeded random schedule) it does one of:

* **join**: start a worker: a new one on an empty state directory, or one that left earlier, on
  its old state directory (a pod rescheduled with its volume);
* **leave**: stop one cleanly (SIGTERM; it commits, checkpoints and leaves the group);
* **kill**: ``kill -9`` one; it is restarted a few seconds later on the same state directory, as a
  crashed pod is.

A leave or a kill takes a worker that serves HTTP already (its Faust worker runs: stopping one
still importing torch tests nothing), and one such worker always stays; joins are not waited for,
so workers start while others rebalance. Then the chaos stops, crashed workers come back, the
running ones drain (every partition trained to its end by its one owner, the group stable with
every running worker in it), the ledger is checked, and the run prints its figures and a verdict.
A failed run keeps its state directory: the workers' logs and ``ledger.json`` (every input record
with its event id and whether it is trainable, every lineage's ranges, the checks).

The producer is ours (``aiokafka``: keyed by user id, murmur2, every event on its user's home
partition) or an external librdkafka one (confluent-kafka, ``bench/librdkafka_client.py``)
with its default partitioner ``crc32`` (``consistent_random``: most events land off their home
partition and the worker forwards them; a worker killed after forwarding and before committing
forwards them again, so copies of one event reach the home partition) or ``murmur2``
(``murmur2_random``, the Java client's). The workers keep the default ``STREAMREC_PARTITIONER``
(murmur2), so the crc32 producer's records are forwarded; "home" in the ledger follows that setting.

The ledger: what is checked, exactly
------------------------------------
The truth is the input topics themselves, read back after the drain: every record, its position,
its event id and user. Each check is one line of the verdict.

``acked-on-log``
    Every event the producer had acknowledged is on an input topic.
``no-dead-letters``
    The dead-letter topic is empty (only valid events are produced).
``applied-once``
    For every user, the state read through a worker's HTTP API (``/users/{id}``; any worker
    forwards to the owner) holds exactly that user's events: ``events``, ``clicks``,
    ``purchases``, ``first_ts``, ``last_ts`` and ``recent`` (the newest ``history_length`` by event
    time) as the log says, ``seen`` the user's distinct items, and ``ids`` exactly the digests of
    the user's event ids. ``ids`` holds each digest once and the dedupe window is set above every
    user's event count, so ``ids`` equal and ``events`` equal mean each event applied once: a
    missing one is named (missing from ``ids``), a doubled one makes ``events`` exceed.
``trained-to-end``
    After the drain every input partition is owned by exactly one running worker, and that
    worker's model has trained it to the log end (``/model`` ``trained_offsets``).
``no-offsets-jumped``
    No worker process, killed ones included (their logs are read), logged a batch that started past
    what its model had trained on that partition (``offsets never trained``), and the running
    workers' ``/model`` ``offsets_jumped`` are empty.
``trained-once-per-lineage``
    What docs/delivery.md promises for training is exactly-once *per model lineage*: a lineage is a
    state directory (model plus checkpoints) continued by every process started on it. A lineage
    first assigned a partition records where it starts and checkpoints at once, before training
    it; afterwards it trains the partition contiguously from there (after a crash, a rebalance or a
    partition coming back it rewinds to its own offset). So for every checkpoint ``C`` of every
    lineage ``L`` (all are kept, ``checkpoint_keep`` is raised for this)::

        samples_trained(C) == sum over partitions P in C of trainable(P, start_L(P), C.offsets[P])

    where ``start_L(P)`` is P's offset in L's first checkpoint that has P, and *trainable* records
    are valid interactions on their user's home partition that are the first record of their event
    id in that partition (later copies are duplicates: neither applied nor trained). Equal at every
    checkpoint means the lineage trained every trainable record of its ranges once: none skipped,
    none twice. Checked from every checkpoint, so a failure names the first checkpoint that is off
    and by how many samples (more: trained twice; fewer: skipped). One blind spot: checkpoints
    are named by model version, and a batch with nothing to train moves the offsets without a new
    version, so a later checkpoint of the same version replaces the first one; a start offset
    moved that way only ever passes records with nothing trainable for this lineage.
    **Not checked, because not promised** ("Where exactly-once stops"): that each event is trained
    by exactly one lineage. After a failover the new owner trains from the group's committed
    offset, so events a dead worker trained after its last commit are trained by two lineages, and
    events between its checkpoint and its commit are in no lineage unless the partition comes back
    to it. Both are printed as figures (``retrained``, ``untrained``), not failures.
``clean-stops`` and ``no-unexpected-exits``
    Every SIGTERM'd worker exited with code 0 within its timeout; no worker exited by itself.

Run as ``.venv/bin/python -m streamrec.bench.torture``; ``tests/integration/test_torture.py`` runs the same
harness, shorter, in ``make test``.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson
from aiokafka.partitioner import murmur2

from streamrec.bench.common import bench_env, free_port, settings_from
from streamrec.stream.settings import Settings
from streamrec.stream.worker.process import WorkerProcess
from streamrec.stream.worker.user_state import event_id_digest

ProducerKind = Literal["aiokafka", "crc32", "murmur2"]
PRODUCERS: tuple[ProducerKind, ...] = ("aiokafka", "crc32", "murmur2")
ACTIONS = ("join", "leave", "kill")
BASE_TS = 874_724_710_000  # event time of the first event (ML-100K's era; inside the contract's range)
# What the learner logs for a batch that starts past the model's offset (stream/worker/learner.py: _note_jumps).
JUMP_LINE = "offsets never trained"
# Lines worth counting in a worker's log: the jump above, and what a crash or a dropped record leaves.
LOG_MARKERS = {
    "jumped": JUMP_LINE,
    "dropped": "DROPPED",
    "traceback": "Traceback (most recent call last)",
    "critical": "[CRITICAL]",
    "crashed": "Crashed",
    "rewinding": "rewinding ",
    # stream/kafka/consumer.py's guard against Faust's recovery going on after a rebalance it missed
    "recovery_restarted": "recovery interrupted by a rebalance",
}


# --- configuration --------------------------------------------------------------------------------
@dataclass(frozen=True)
class TortureConfig:
    """One run's shape. The defaults are the full run; the test shortens ``seconds`` and ``rate``."""

    seconds: float = 300.0  # of chaos, with the producer writing throughout
    rate: float = 100.0  # events/s
    partitions: int = 6  # per input topic
    workers: int = 3  # started before the chaos
    max_running: int = 4  # never more running at once (each worker is ~700 MB)
    max_slots: int = 8  # distinct state directories (lineages) at most
    interval_s: tuple[float, float] = (3.0, 8.0)  # between two actions
    restart_after_s: tuple[float, float] = (3.0, 15.0)  # a killed worker is back after this
    actions: tuple[str, ...] = ACTIONS
    producer: ProducerKind = "aiokafka"
    compression: str = "none"  # the external producer's compression.type
    seed: int = 0
    busy_loops: int = field(default_factory=lambda: os.cpu_count() or 1)
    events_per_user: int = 40  # on average: sets the number of users
    items: int = 300
    session_timeout_s: float = 10.0  # how long the group waits for a killed worker
    checkpoint_interval_s: float = 5.0
    batch_size: int = 200
    log_level: str = "info"  # warning at least: the jump check reads the logs
    start_timeout_s: float = 240.0  # for the first workers to answer /health
    stop_timeout_s: float = 90.0  # SIGTERM to exit, before it counts as hung and is killed
    drain_stall_s: float = 180.0  # the drain fails after this long without progress ...
    drain_max_s: float = 900.0  # ... or this long in all

    @property
    def users(self) -> int:
        return max(20, round(self.rate * self.seconds / self.events_per_user))

    @property
    def dedupe_window(self) -> int:
        """Above any user's event count: ``ids`` in the user state then lists every event (the set check)."""
        return max(200, 6 * self.events_per_user)


def worker_settings(config: TortureConfig) -> dict[str, str]:
    """The ``STREAMREC_*`` settings (without the prefix) every worker of a run gets."""
    if config.log_level.lower() not in ("debug", "info", "warning"):
        raise ValueError("log_level must be warning or lower: the jump check reads the warnings in the logs")
    return {
        "TOPIC_PARTITIONS": str(config.partitions),
        "BROKER_SESSION_TIMEOUT_S": str(config.session_timeout_s),
        "CHECKPOINT_INTERVAL_S": str(config.checkpoint_interval_s),
        "CHECKPOINT_KEEP": "1000000",  # every checkpoint stays: the lineage check reads them all
        "DEDUPE_WINDOW": str(config.dedupe_window),
        "BATCH_SIZE": str(config.batch_size),
        "BASELINES": "",
        "AUGMENT": "false",
        "TRAIN": "true",
        "LOG_LEVEL": config.log_level,
    }


# --- pure parts: events, schedule, ledger -------------------------------------------------------
def make_event(index: int, rng: random.Random, config: TortureConfig) -> dict[str, Any]:
    """The ``index``-th event of a run: a unique id and event time, a random user and item."""
    return {
        "event_id": f"t{config.seed}-{index}",
        "user_id": f"u{rng.randrange(config.users)}",
        "item_id": f"i{rng.randrange(config.items)}",
        "ts": BASE_TS + index * 1000,
        "type": "purchase" if rng.random() < 0.3 else "click",
    }


def home_partition(user_id: str, partitions: int, partitioner: str = "murmur2") -> int:
    """The partition the worker keeps ``user_id``'s state in (its tables' partitioner; murmur2 unless configured)."""
    raw = user_id.encode("utf-8")
    if partitioner == "crc32":
        return zlib.crc32(raw) % partitions
    return (murmur2(raw) & 0x7FFFFFFF) % partitions


def choose_action(
    rng: random.Random,
    up: int,
    running: int,
    processes: int,
    actions: Sequence[str],
    config: TortureConfig,
    done: Iterable[str] = (),
) -> str | None:
    """The next action, at random among those allowed now (None if none is); one not ``done`` yet first.

    Preferring a kind not taken yet makes every run do each kind within its first few actions
    (whatever the seed), so a short run cannot pass without having left, joined or killed.

    ``up``: running workers that serve HTTP (their Faust worker runs); ``running``: those plus the
    ones still starting; ``processes``: worker processes alive, stopping ones included. A leave or
    kill takes an up worker and needs a second one (one stays): stopping a process that is still
    importing tests nothing. A join needs room under ``max_running`` and, counting workers still
    stopping, one more.
    """
    allowed = []
    for action in actions:
        if action == "join" and running < config.max_running and processes <= config.max_running:
            allowed.append(action)
        elif action in ("leave", "kill") and up >= 2:
            allowed.append(action)
    fresh = [action for action in allowed if action not in set(done)]
    return rng.choice(fresh or allowed) if allowed else None


@dataclass(frozen=True)
class LogRecord:
    """One record of an input topic, as the ledger reads it back."""

    topic: str
    partition: int
    offset: int
    event: dict[str, Any] | None  # None: not a JSON object (never produced by this harness)


@dataclass
class LogIndex:
    """What the input topics hold: the events (first copy of each id), and per partition the trainable offsets."""

    events: dict[str, dict[str, Any]]  # event_id -> the event
    trainable: dict[str, list[int]]  # "topic:partition" -> sorted offsets of trainable records
    records: int
    off_home: int  # records on another partition than their user's (forwarded by the worker)
    copies: int  # records on the home partition whose event id came earlier there (duplicates)
    unreadable: int

    def count(self, tp: str, start: int, stop: int) -> int:
        """Trainable records of ``tp`` in ``[start, stop)``."""
        offsets = self.trainable.get(tp, [])
        return max(0, bisect.bisect_left(offsets, stop) - bisect.bisect_left(offsets, start))


def index_log(records: Iterable[LogRecord], partitions: int, partitioner: str = "murmur2") -> LogIndex:
    """Sort the input topics' records into events and trainable positions (see the module docstring)."""
    events: dict[str, dict[str, Any]] = {}
    trainable: dict[str, list[int]] = {}
    seen_home: set[tuple[str, int, str]] = set()
    total = off_home = copies = unreadable = 0
    for r in sorted(records, key=lambda r: (r.topic, r.partition, r.offset)):
        total += 1
        if r.event is None:
            unreadable += 1
            continue
        event_id, user = r.event["event_id"], r.event["user_id"]
        events.setdefault(event_id, r.event)
        if home_partition(user, partitions, partitioner) != r.partition:
            off_home += 1
            continue
        if (r.topic, r.partition, event_id) in seen_home:
            copies += 1
            continue
        seen_home.add((r.topic, r.partition, event_id))
        trainable.setdefault(f"{r.topic}:{r.partition}", []).append(r.offset)
    return LogIndex(events, trainable, total, off_home, copies, unreadable)


def expected_users(events: Iterable[Mapping[str, Any]], history_length: int) -> dict[str, dict[str, Any]]:
    """Each user's state as the ledger expects it after every event applied once (fields as ``/users/{id}``)."""
    by_user: dict[str, list[Mapping[str, Any]]] = {}
    for e in events:
        by_user.setdefault(e["user_id"], []).append(e)
    expected = {}
    for user, mine in by_user.items():
        mine = sorted(mine, key=lambda e: e["ts"])  # event times are unique in a run
        expected[user] = {
            "events": len(mine),
            "clicks": sum(e["type"] == "click" for e in mine),
            "purchases": sum(e["type"] == "purchase" for e in mine),
            "first_ts": mine[0]["ts"],
            "last_ts": mine[-1]["ts"],
            "recent": [[e["ts"], e["item_id"], e["type"]] for e in mine[-history_length:]],
            "seen": sorted({e["item_id"] for e in mine}),
            "ids": sorted(event_id_digest(e["event_id"]) for e in mine),
        }
    return expected


def user_problems(
    user: str, expected: Mapping[str, Any], got: Mapping[str, Any] | None, names: Mapping[str, str]
) -> str | None:
    """What is wrong with one user's state (None if nothing), naming missing and unknown events.

    ``names``: digest -> event id, to turn a missing digest back into the event it stands for.
    """
    if got is None:
        return f"{user}: no state (expected {expected['events']} events)"
    wrong = []
    for key in ("events", "clicks", "purchases", "first_ts", "last_ts"):
        if got.get(key) != expected[key]:
            wrong.append(f"{key} {got.get(key)} (expected {expected[key]})")
    ids = set(got.get("ids", []))
    missing = sorted(names.get(d, d) for d in set(expected["ids"]) - ids)
    unknown = sorted(ids - set(expected["ids"]))
    if missing:
        wrong.append(f"missing {len(missing)}: {', '.join(missing[:10])}")
    if unknown:
        wrong.append(f"{len(unknown)} unknown ids {unknown[:5]}")
    if not missing and got.get("events", 0) > expected["events"]:
        wrong.append(f"applied twice: {got['events'] - expected['events']} event(s) beyond the {expected['events']}")
    if got.get("recent") != expected["recent"]:
        wrong.append("recent differs")
    if sorted(got.get("seen", [])) != expected["seen"]:
        wrong.append("seen differs")
    return f"{user}: " + "; ".join(wrong) if wrong else None


@dataclass(frozen=True)
class CheckpointFacts:
    """What the lineage check needs of one checkpoint."""

    version: int
    samples_trained: int
    offsets: dict[str, int]  # "topic:partition" -> next offset to train
    saved_at: float


@dataclass
class LineageResult:
    name: str
    checkpoints: int
    samples_trained: int  # at the last checkpoint
    expected: int
    first_off: str | None  # the first checkpoint whose samples differ from its ranges, and by how much
    ranges: dict[str, tuple[int, int]]  # "topic:partition" -> [start, final offset) trained by the lineage


def check_lineage(name: str, checkpoints: Sequence[CheckpointFacts], log: LogIndex, t0: float = 0.0) -> LineageResult:
    """The per-lineage training check (module docstring) over every checkpoint of one state directory."""
    starts: dict[str, int] = {}
    first_off = None
    expected = samples = 0
    for c in sorted(checkpoints, key=lambda c: c.version):
        for tp, offset in c.offsets.items():
            starts.setdefault(tp, offset)
        expected = sum(log.count(tp, starts[tp], offset) for tp, offset in c.offsets.items())
        samples = c.samples_trained
        if samples != expected and first_off is None:
            first_off = (
                f"checkpoint version {c.version} (saved at t={c.saved_at - t0:.0f}s): {samples} samples trained, "
                f"its ranges hold {expected} trainable events ({samples - expected:+d})"
            )
    last = max(checkpoints, key=lambda c: c.version) if checkpoints else None
    ranges = {tp: (starts[tp], offset) for tp, offset in (last.offsets.items() if last else ())}
    return LineageResult(name, len(checkpoints), samples, expected, first_off, ranges)


def coverage(lineages: Sequence[LineageResult], log: LogIndex) -> tuple[int, int]:
    """Trainable events in no lineage's final ranges (untrained) and the extra trainings of those in several."""
    untrained = retrained = 0
    for tp, offsets in log.trainable.items():
        spans = [r.ranges[tp] for r in lineages if tp in r.ranges]
        for offset in offsets:
            n = sum(start <= offset < stop for start, stop in spans)
            untrained += n == 0
            retrained += max(0, n - 1)
    return untrained, retrained


def changelog_drops(history: Sequence[tuple[int, int, int, int]]) -> list[str]:
    """Where a user's ``events`` count went down in the table's changelog: a state written from an older or empty one.

    ``history``: ``(partition, offset, timestamp_ms, events)`` of the user's changelog records, in
    offset order. A count only grows when each event is applied once; a drop is the moment the
    state lost events (what the applied-once check then sees as missing).
    """
    drops = []
    for (_, _, _, before), (partition, offset, ts_ms, after) in itertools.pairwise(history):
        if after < before:
            drops.append(f"{before} -> {after} events at changelog {partition}@{offset} (written at {ts_ms} ms)")
    return drops


def scan_log(text: str) -> dict[str, int]:
    """How often each of :data:`LOG_MARKERS` occurs in a worker's log."""
    return {name: text.count(marker) for name, marker in LOG_MARKERS.items()}


# --- the run's processes ----------------------------------------------------------------------------
@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Action:
    t_s: float
    kind: str  # join, leave, kill, restart, unexpected-exit, hung-stop, ...
    slot: str
    detail: str = ""


class Slot:
    """One worker identity: a state directory (its model lineage), a web port and a log, started many times."""

    def __init__(self, name: str, base_env: Mapping[str, str], root: Path) -> None:
        self.name = name
        self.state_dir = root / "slots" / name
        self.log_path = root / "logs" / f"{name}.log"
        self.base_env = dict(base_env)
        self.port = free_port()
        self.worker: WorkerProcess | None = None
        self.state = "new"  # running | stopping | left | killed
        self.up = False  # this process has answered /health (Faust's worker runs, its signal handlers too)
        self.starts = 0
        self.stop_sent_at = 0.0
        self.restart_at = 0.0

    @property
    def env(self) -> dict[str, str]:
        """This slot's settings: the run's, with its own state directory and web port."""
        own = {
            "STREAMREC_STATE_DIR": str(self.state_dir),
            "STREAMREC_WEB_PORT": str(self.port),
            "PYTHONUNBUFFERED": "1",
        }
        return {**self.base_env, **own}

    def process_env(self) -> dict[str, str]:
        """The child's whole environment: this one's, less any ``STREAMREC_*`` or cluster of its own, plus ``env``."""
        inherited = {k: v for k, v in os.environ.items()
                     if not k.startswith("STREAMREC_") and k != "KAFKA_BOOTSTRAP_SERVERS"}  # fmt: skip
        return {**inherited, **self.env}

    @property
    def settings(self) -> Settings:
        return settings_from(self.env)

    def start(self, t_s: float) -> None:
        """Start a process on this slot's state directory (not waiting for it: joining is part of the chaos)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a") as log:
            log.write(f"\n=== torture: {self.name} start #{self.starts + 1} at t={t_s:.1f}s\n")
        for _ in range(5):
            self.worker = WorkerProcess(self.settings, env=self.process_env(), log_path=self.log_path)
            try:
                self.worker.start()
                break
            except RuntimeError:  # someone took the port meanwhile: another one
                self.port = free_port()
        self.starts += 1
        self.state, self.up = "running", False

    def check_up(self) -> bool:
        """Whether this process serves HTTP yet (remembered once it does)."""
        if not self.up and self.state == "running" and self.alive():
            self.up = self.get("/health", timeout_s=1) is not None
        return self.up

    def pid(self) -> int | None:
        return None if self.worker is None or self.worker.process is None else self.worker.process.pid

    def alive(self) -> bool:
        return self.worker is not None and self.worker.alive()

    def exit_code(self) -> int | None:
        return None if self.worker is None or self.worker.process is None else self.worker.process.poll()

    def terminate(self, now: float) -> None:
        assert self.worker is not None and self.worker.process is not None
        self.worker.process.send_signal(signal.SIGTERM)
        self.state, self.stop_sent_at = "stopping", now

    def kill(self) -> None:
        assert self.worker is not None and self.worker.process is not None
        self.worker.process.kill()
        self.worker.process.wait()

    def get(self, path: str, timeout_s: float = 10) -> Any:
        """The JSON body of a 200 answer, else None (not answering, busy or rebalancing)."""
        status, body = self.ask(path, timeout_s)
        return body if status == 200 else None

    def ask(self, path: str, timeout_s: float = 10) -> tuple[int | str, Any]:
        """``(status, body)`` of a GET, or ``(the error, None)`` when there is no HTTP answer."""
        if self.worker is None:
            return "not started", None
        try:
            return self.worker.get_json(path, timeout_s=timeout_s)
        except (OSError, ValueError) as error:
            return repr(error), None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class BusyLoops:
    """One ``while True: pass`` process per core: the machine is as loaded as a busy node."""

    def __init__(self, count: int) -> None:
        self.processes = [
            subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL) for _ in range(count)
        ]

    def stop(self) -> None:
        for p in self.processes:
            p.kill()
            p.wait()


@dataclass(frozen=True)
class Acked:
    event_id: str
    topic: str
    partition: int
    offset: int


class SteadyProducer(threading.Thread):
    """Writes the run's events at ``config.rate`` for ``config.seconds`` in its own thread; keeps what was acked."""

    def __init__(self, settings: Settings, config: TortureConfig) -> None:
        super().__init__(daemon=True)
        self.settings, self.config = settings, config
        self.rng = random.Random(config.seed)
        self.acked: list[Acked] = []
        self.produced = 0
        self.error: BaseException | None = None
        self.seconds_taken = 0.0

    def run(self) -> None:
        started = time.monotonic()
        try:
            if self.config.producer == "aiokafka":
                asyncio.run(self._aiokafka())
            else:
                self._librdkafka()
        except BaseException as error:  # noqa: BLE001 - reported by the run's checks
            self.error = error
        self.seconds_taken = time.monotonic() - started

    def _due(self, started: float) -> list[dict[str, Any]]:
        """The events due by now (the rate's schedule), in order."""
        elapsed = min(time.monotonic() - started, self.config.seconds)
        due = int(elapsed * self.config.rate) - self.produced
        events = [make_event(self.produced + k, self.rng, self.config) for k in range(max(0, due))]
        self.produced += len(events)
        return events

    def _topic(self, event: Mapping[str, Any]) -> str:
        return self.settings.topic_purchases if event["type"] == "purchase" else self.settings.topic_clicks

    async def _aiokafka(self) -> None:
        from streamrec.stream.kafka.admin import start_client
        from streamrec.stream.tools.replay import producer_for

        producer = producer_for(self.settings)
        await start_client(producer, self.settings)
        try:
            started = time.monotonic()
            while time.monotonic() - started < self.config.seconds:
                await asyncio.sleep(0.2)
                events = self._due(started)
                sent = [await producer.send(self._topic(e), orjson.dumps(e), key=e["user_id"].encode()) for e in events]
                for e, meta in zip(events, await asyncio.gather(*sent), strict=True):
                    self.acked.append(Acked(e["event_id"], meta.topic, meta.partition, meta.offset))
        finally:
            await producer.stop()

    def _librdkafka(self) -> None:
        from streamrec.bench.librdkafka_client import interaction_record, produce

        partitioner = "consistent_random" if self.config.producer == "crc32" else "murmur2_random"
        started = time.monotonic()
        while time.monotonic() - started < self.config.seconds:
            time.sleep(0.5)
            by_topic: dict[str, list[dict[str, Any]]] = {}
            for e in self._due(started):
                by_topic.setdefault(self._topic(e), []).append(e)
            for topic, events in by_topic.items():
                placed = produce(
                    self.settings.bootstrap_servers, topic, [interaction_record(e) for e in events],
                    compression=self.config.compression, partitioner=partitioner,  # type: ignore[arg-type]
                )  # fmt: skip
                self.acked += [Acked(e["event_id"], topic, p, o) for e, (p, o) in zip(events, placed, strict=True)]


# --- one run ----------------------------------------------------------------------------------------
@dataclass
class RunResult:
    config: dict[str, Any]
    workdir: str
    checks: list[Check]
    figures: dict[str, Any]
    actions: list[Action]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def summary(self) -> str:
        """The figures, the checks and a one-line verdict, as printed."""
        f = self.figures
        kinds = Counter(a.kind for a in self.actions)
        lines = [
            f"{f['events_acked']:,} events acked of {f['events_produced']:,} produced ({self.config['producer']}, "
            f"{f['rate_achieved']:.0f}/s) over {self.config['seconds']:.0f} s of chaos; "
            f"{self.config['partitions']} partitions per topic; {self.config['busy_loops']} busy loops",
            "actions: " + ", ".join(f"{kinds[k]} {k}" for k in sorted(kinds)) + f" ({f['slots']} state directories)",
            f"log: {f['log_records']:,} records, {f['log_events']:,} distinct events, {f['off_home']:,} off their "
            f"home partition (forwarded), {f['copies']:,} copies at home; {f['users']:,} users",
            f"drain: {f['drain']}",
            f"training: {f['lineage_samples']:,} samples over {f['lineages']} lineages for {f['trainable']:,} "
            f"trainable events; retrained across failovers {f['retrained']:,}, in no lineage {f['untrained']:,}",
            f"worker logs: {f['log_markers']}",
        ]
        lines += [f"check {c.name:<26} {'ok' if c.ok else 'FAILED'}: {c.detail}" for c in self.checks]
        verdict = "PASS" if self.ok else "FAIL (" + ", ".join(c.name for c in self.failed()) + ")"
        lines.append(f"verdict: {verdict}")
        return "\n".join(lines)


class Torture:
    """One run against the broker in ``base_env``; :meth:`run` returns its :class:`RunResult`."""

    def __init__(self, base_env: Mapping[str, str], config: TortureConfig, workdir: Path,
                 say: Callable[[str], None] = print) -> None:  # fmt: skip
        self.config = config
        self.base_env = {**base_env, **{f"STREAMREC_{k}": v for k, v in worker_settings(config).items()}}
        self.settings = settings_from(self.base_env)
        self.workdir = workdir
        self.say = say
        self.rng = random.Random(config.seed)
        self.slots: list[Slot] = []
        self.actions: list[Action] = []
        self.checks: list[Check] = []
        self.t0 = time.monotonic()
        self.t0_wall = time.time()
        self.clean_stop_failures: list[str] = []
        self.unexpected_exits: list[str] = []
        self.closing = False  # set when the run ends: nothing is restarted any more
        self.records: list[LogRecord] = []
        self.ledger: tuple[LogIndex, list[LineageResult]] | None = None

    # --- chaos -------------------------------------------------------------------------------------
    def now(self) -> float:
        return time.monotonic() - self.t0

    def note(self, kind: str, slot: Slot, detail: str = "") -> None:
        self.actions.append(Action(round(self.now(), 1), kind, slot.name, detail))
        wall = time.strftime("%H:%M:%S")  # as the workers' log lines have it
        self.say(f"  t={self.now():6.1f}s {wall} {kind:<16} {slot.name} {detail}")

    def running(self) -> list[Slot]:
        return [s for s in self.slots if s.state == "running"]

    def up(self) -> list[Slot]:
        return [s for s in self.running() if s.check_up()]

    def new_slot(self) -> Slot:
        slot = Slot(f"w{len(self.slots)}", self.base_env, self.workdir)
        self.slots.append(slot)
        return slot

    def join(self) -> None:
        left = [s for s in self.slots if s.state in ("left", "new")]
        if left and (len(self.slots) >= self.config.max_slots or self.rng.random() < 0.5):
            slot, how = self.rng.choice(left), "its old state directory"
        else:
            slot, how = self.new_slot(), "a new state directory"
        slot.start(self.now())
        self.note("join", slot, f"pid {slot.pid()}, {how}")

    def leave(self) -> None:
        slot = self.rng.choice(self.up())
        slot.terminate(self.now())
        self.note("leave", slot, f"SIGTERM pid {slot.pid()}")

    def kill(self) -> None:
        slot = self.rng.choice(self.up())
        pid = slot.pid()
        slot.kill()
        slot.state = "killed"
        slot.restart_at = self.now() + self.rng.uniform(*self.config.restart_after_s)
        self.note("kill", slot, f"kill -9 pid {pid}; back at t={slot.restart_at:.0f}s")

    def supervise(self, final: bool = False) -> None:
        """Reap stopping workers, notice ones that died by themselves, restart killed ones when due."""
        now = self.now()
        for slot in self.slots:
            code = slot.exit_code()
            if slot.state == "stopping":
                if code is not None:
                    slot.state = "left"
                    if code != 0:
                        self.clean_stop_failures.append(f"{slot.name} exited {code} after SIGTERM")
                    self.note("left", slot, f"exit code {code} after {now - slot.stop_sent_at:.1f}s")
                elif now - slot.stop_sent_at > self.config.stop_timeout_s:
                    slot.kill()
                    slot.state = "left"
                    self.clean_stop_failures.append(f"{slot.name} still running {self.config.stop_timeout_s:.0f}s "
                                                    "after SIGTERM: killed")  # fmt: skip
                    self.note("hung-stop", slot, "killed after the stop timeout")
            elif slot.state == "running" and code is not None:
                tail = "\n".join(slot.log_text().splitlines()[-15:])
                self.unexpected_exits.append(f"{slot.name} exited {code} by itself; log tail:\n{tail}")
                slot.state = "killed"  # a crashed pod: restarted on its state directory
                slot.restart_at = now + self.rng.uniform(*self.config.restart_after_s)
                self.note("unexpected-exit", slot, f"exit code {code}")
            elif slot.state == "killed" and not self.closing and (final or now >= slot.restart_at):
                slot.start(now)
                self.note("restart", slot, f"pid {slot.pid()}, same state directory")

    def chaos(self, producer: SteadyProducer) -> None:
        next_at = self.now() + self.rng.uniform(*self.config.interval_s)
        end = self.now() + self.config.seconds
        while self.now() < end:
            self.supervise()
            if self.now() >= next_at:
                up, running, processes = len(self.up()), len(self.running()), sum(s.alive() for s in self.slots)
                done = {a.kind for a in self.actions}
                action = choose_action(self.rng, up, running, processes, self.config.actions, self.config, done)
                if action is not None:
                    getattr(self, action)()
                next_at = self.now() + self.rng.uniform(*self.config.interval_s)
            time.sleep(0.2)
        self.say(f"  t={self.now():6.1f}s chaos over; producer {'still writing' if producer.is_alive() else 'done'}")

    def settle(self) -> None:
        """After the chaos: crashed workers back, stopping ones gone."""
        self.supervise(final=True)
        while any(s.state == "stopping" for s in self.slots):
            time.sleep(0.5)
            self.supervise()

    # --- drain -------------------------------------------------------------------------------------
    def log_ends(self) -> dict[str, int]:
        from streamrec.stream.kafka.admin import end_offsets

        return {
            f"{topic}:{p}": end
            for topic in self.settings.interaction_topics
            for p, end in asyncio.run(end_offsets(self.settings, topic)).items()
        }

    def survey(self) -> tuple[dict[str, list[str]], dict[str, int], list[str]]:
        """Who owns each input partition (``/stats``), how far each owner's model has trained it, and
        which running workers do not answer."""
        owners: dict[str, list[str]] = {}
        trained: dict[str, int] = {}
        silent = []
        for slot in self.running():
            stats, model = slot.get("/stats"), slot.get("/model")
            if stats is None or model is None:
                silent.append(slot.name)
                continue
            for tp in stats.get("assigned", []):
                owners.setdefault(tp, []).append(slot.name)
                trained[tp] = model["trained_offsets"].get(tp, -1)
        return owners, trained, silent

    def group(self) -> str:
        """The consumer group as the broker describes it: its state and number of members."""
        from streamrec.stream.kafka.admin import start_client
        from streamrec.stream.kafka.security import new_admin

        async def describe() -> str:
            admin = new_admin(self.settings)
            await start_client(admin, self.settings)
            try:
                (response,) = await admin.describe_consumer_groups([self.settings.app_id])
                # each group: (error_code, group_id, state, protocol_type, protocol, members, ...)
                _, _, state, _, _, members, *_ = response.groups[0]
                return f"{state} with {len(members)} members"
            finally:
                await admin.close()

        return asyncio.run(describe())

    def drain(self) -> Check:
        """Wait until every input partition has one owner whose model trained it to the (settled) log end.

        And until the group is stable with every running worker in it: one still joining would
        rebalance the group in the middle of the checks. (A member may own nothing: Faust's
        assignor gives the 6 co-partitioned pairs to 4 workers as 2, 2, 2 and 0.)
        """
        started = last_progress = time.monotonic()
        best, previous_ends = -1, None
        while True:
            self.supervise()
            ends = self.log_ends()
            owners, trained, silent = self.survey()
            group, wanted = self.group(), f"Stable with {len(self.running())} members"
            behind = {
                tp: f"{'+'.join(owners.get(tp, [])) or 'no owner'} at {trained.get(tp)} of {end}"
                for tp, end in ends.items()
                if len(owners.get(tp, [])) != 1 or trained.get(tp) != end
            }
            waited = time.monotonic() - started
            if silent:
                behind["silent"] = f"running workers not answering: {silent}"
            if group != wanted:
                behind["group"] = f"{group}, expected {wanted}"
            if not behind and ends == previous_ends:
                detail = f"each input partition trained to its end ({sum(ends.values()):,} records) by its one owner"
                return Check("trained-to-end", True, f"{detail}, after {waited:.0f}s of drain")
            previous_ends = ends
            progress = sum(max(0, trained.get(tp, 0)) for tp in ends)
            if progress > best:
                best, last_progress = progress, time.monotonic()
            if time.monotonic() - last_progress > self.config.drain_stall_s or waited > self.config.drain_max_s:
                return Check("trained-to-end", False, f"not drained after {waited:.0f}s "
                                                      f"(no progress for {time.monotonic() - last_progress:.0f}s): "
                                                      f"{behind}")  # fmt: skip
            time.sleep(2)

    # --- the ledger --------------------------------------------------------------------------------
    def read_log(self) -> list[LogRecord]:
        from streamrec.stream.kafka.admin import read_topic

        records = []
        for topic in self.settings.interaction_topics:
            for r in asyncio.run(read_topic(self.settings, topic)):
                try:
                    event = orjson.loads(r.value)
                except orjson.JSONDecodeError:
                    event = None
                records.append(LogRecord(r.topic, r.partition, r.offset, event if isinstance(event, dict) else None))
        return records

    def check_users(self, log: LogIndex) -> Check:
        expected = expected_users(log.events.values(), self.settings.history_length)
        names = {event_id_digest(i): i for i in log.events}
        biggest = max((e["events"] for e in expected.values()), default=0)
        if biggest > self.config.dedupe_window:
            window = self.config.dedupe_window
            return Check("applied-once", False, f"a user has {biggest} events, over the dedupe window {window}")
        askers = self.running()
        if not askers:
            return Check("applied-once", False, "no running worker to ask")
        problems = []
        for k, (user, want) in enumerate(sorted(expected.items())):
            asker = askers[k % len(askers)]  # any worker answers for any user: spread over all of them
            status, got = asker.ask(f"/users/{urllib.parse.quote(user, safe='')}")
            problem = user_problems(user, want, got if status == 200 else None, names)
            if problem and status != 200:
                problem += f": HTTP {status} {str(got)[:200]}"
            if problem:
                problems.append(f"{problem} (asked {asker.name})")
        total = sum(e["events"] for e in expected.values())
        if problems:
            shown = "\n    ".join(problems[:20])
            wrong = [p.split(":", 1)[0] for p in problems[:5]]
            drops = "\n    ".join(f"{user}: {'; '.join(d) or 'no drop'}" for user, d in self.drops(wrong).items())
            counts = f"their events count in the changelog (t0 = {self.t0_wall * 1000:.0f} ms)"
            detail = f"{len(problems)} of {len(expected)} users wrong:\n    {shown}\n  {counts}:\n    {drops}"
            return Check("applied-once", False, detail)
        return Check("applied-once", True, f"{len(expected):,} users hold their {total:,} events once each")

    def drops(self, users: Sequence[str]) -> dict[str, list[str]]:
        """For each of ``users``, where its ``events`` count went down in the ``user_state`` changelog."""
        from streamrec.stream.kafka.admin import read_topic

        topic = f"{self.settings.app_id}-user_state-changelog"
        history: dict[str, list[tuple[int, int, int, int]]] = {user: [] for user in users}
        for r in sorted(asyncio.run(read_topic(self.settings, topic)), key=lambda r: (r.partition, r.offset)):
            user = (r.key or b"").decode(errors="replace")
            if user in history and r.value:
                state = orjson.loads(r.value)
                events = state.get("events", -1) if isinstance(state, dict) else -1
                history[user].append((r.partition, r.offset, r.timestamp, events))
        return {user: changelog_drops(h) for user, h in history.items()}

    def check_lineages(self, log: LogIndex) -> tuple[Check, list[LineageResult]]:
        import torch

        results = []
        for slot in self.slots:
            facts = []
            for path in sorted(slot.settings.checkpoint_dir.glob("checkpoint-*.pt")):
                payload = torch.load(path, map_location="cpu", weights_only=True)
                offsets = {f"{t}:{p}": o for t, parts in payload["offsets"].items() for p, o in parts.items()}
                facts.append(CheckpointFacts(int(payload["model"]["version"]), int(payload["model"]["samples_trained"]),
                                             offsets, float(payload["saved_at"])))  # fmt: skip
            results.append(check_lineage(slot.name, facts, log, self.t0_wall))
        off = [f"{r.name}: {r.first_off}" for r in results if r.first_off]
        final = [f"{r.name} {r.samples_trained:,}/{r.expected:,}" for r in results]
        if off:
            return Check("trained-once-per-lineage", False, "; ".join(off) + f" (final: {', '.join(final)})"), results
        n = sum(r.checkpoints for r in results)
        detail = f"{n} checkpoints of {len(results)} lineages: samples == trainable events in their ranges"
        return Check("trained-once-per-lineage", True, f"{detail} ({', '.join(final)})"), results

    def check_jumps(self, markers: Mapping[str, Mapping[str, int]]) -> Check:
        jumped_logs = {name: m["jumped"] for name, m in markers.items() if m["jumped"]}
        live = {s.name: (s.get("/model") or {}).get("stats", {}).get("offsets_jumped") for s in self.running()}
        live_jumps = {name: j for name, j in live.items() if j}
        lines = [line for s in self.slots for line in s.log_text().splitlines() if JUMP_LINE in line]
        if jumped_logs or live_jumps:
            shown = "\n    ".join(lines[:10])
            return Check("no-offsets-jumped", False, f"jump lines per worker log {jumped_logs}; live offsets_jumped "
                                                     f"{live_jumps}:\n    {shown}")  # fmt: skip
        return Check("no-offsets-jumped", True, f"no jump line in {len(self.slots)} logs; running workers' "
                                                f"offsets_jumped empty ({sorted(live)})")  # fmt: skip

    def stop_all(self) -> None:
        """SIGTERM every running worker and wait (a hung one is killed after the stop timeout, and counted)."""
        self.closing = True
        for slot in self.running():
            slot.terminate(self.now())
        while any(s.state == "stopping" for s in self.slots):
            time.sleep(0.5)
            self.supervise()

    # --- the whole run -------------------------------------------------------------------------------
    def run(self) -> RunResult:
        from streamrec.stream.kafka.admin import ensure_topics
        from streamrec.stream.worker.dead_letters import read_dead_letters

        asyncio.run(ensure_topics(self.settings))
        busy = BusyLoops(self.config.busy_loops)
        producer = SteadyProducer(self.settings, self.config)
        try:
            for _ in range(self.config.workers):
                self.new_slot().start(self.now())
            for slot in self.slots:
                assert slot.worker is not None
                slot.worker.wait_healthy(self.config.start_timeout_s)
                self.note("started", slot, f"pid {slot.pid()}")
            producer.start()
            self.chaos(producer)
            producer.join(60)
            self.settle()
            drained = self.drain()
            self.say(f"  t={self.now():6.1f}s drain: {drained.detail[:200]}")
            self.records = self.read_log()
            log = index_log(self.records, self.config.partitions, getattr(self.settings, "partitioner", "murmur2"))
            acked_missing = sorted({a.event_id for a in producer.acked} - set(log.events))
            letters = asyncio.run(read_dead_letters(self.settings, self.settings.topic_dead_letters))
            users = self.check_users(log)
            markers_before_stop = {s.name: scan_log(s.log_text()) for s in self.slots}
            jumps = self.check_jumps(markers_before_stop)
        finally:
            self.stop_all()
            busy.stop()
            for slot in self.slots:  # nothing left behind, whatever happened
                if slot.alive():
                    slot.kill()
        lineages_check, lineages = self.check_lineages(log)
        self.ledger = (log, lineages)
        markers = {s.name: scan_log(s.log_text()) for s in self.slots}
        untrained, retrained = coverage(lineages, log)
        producer_ok = producer.error is None
        self.checks = [
            Check("producer", producer_ok, "wrote every due event" if producer_ok else f"failed: {producer.error!r}"),
            Check("acked-on-log", not acked_missing,
                  f"all {len(producer.acked):,} acked events on the input topics" if not acked_missing
                  else f"{len(acked_missing)} acked events not on the input topics: {acked_missing[:10]}"),
            Check("no-dead-letters", not letters, f"{len(letters)} dead letters"
                  + (f": {[(d.reason, d.detail) for d in letters[:5]]}" if letters else "")),
            users, drained, jumps, lineages_check,
            Check("clean-stops", not self.clean_stop_failures, "; ".join(self.clean_stop_failures) or "every SIGTERM "
                  "ended in exit code 0"),
            Check("no-unexpected-exits", not self.unexpected_exits, "\n".join(self.unexpected_exits) or "none"),
        ]  # fmt: skip
        totals = Counter()
        for m in markers.values():
            totals.update(m)
        figures = {
            "events_produced": producer.produced,
            "events_acked": len(producer.acked),
            "rate_achieved": producer.produced / max(producer.seconds_taken, 1e-9),
            "slots": len(self.slots),
            "log_records": log.records,
            "log_events": len(log.events),
            "off_home": log.off_home,
            "copies": log.copies,
            "users": len({e["user_id"] for e in log.events.values()}),
            "drain": drained.detail[:300],
            "trainable": sum(len(v) for v in log.trainable.values()),
            "lineages": len(lineages),
            "lineage_samples": sum(r.samples_trained for r in lineages),
            "retrained": retrained,
            "untrained": untrained,
            "log_markers": dict(totals),
            "log_markers_per_worker": markers,
        }
        result = RunResult(asdict(self.config), str(self.workdir), self.checks, figures, self.actions)
        if not result.ok:
            self.write_ledger(result)
        return result

    def write_ledger(self, result: RunResult) -> Path:
        """For a failed run: the ledger as read (every input record, every lineage's ranges) next to the logs.

        The broker and its topics may be gone when someone looks, so what the checks saw is kept.
        """
        assert self.ledger is not None
        log, lineages = self.ledger
        trainable = {(tp, offset) for tp, offsets in log.trainable.items() for offset in offsets}
        records = [
            [r.topic, r.partition, r.offset, *(((r.event or {}).get(k)) for k in ("event_id", "user_id", "type")),
             (f"{r.topic}:{r.partition}", r.offset) in trainable]
            for r in self.records
        ]  # fmt: skip
        path = self.workdir / "ledger.json"
        path.write_text(json.dumps({
            "columns": ["topic", "partition", "offset", "event_id", "user_id", "type", "trainable"],
            "records": records,
            "lineages": [asdict(r) for r in lineages],
            "result": asdict(result),
        }, default=str))  # fmt: skip
        self.say(f"  ledger written to {path}")
        return path


# --- the command ------------------------------------------------------------------------------------
def run_once(config: TortureConfig, broker_env: Mapping[str, str], keep: bool = False,
             say: Callable[[str], None] = print) -> RunResult:  # fmt: skip
    """One run on the broker of ``broker_env`` with topics, app id and state directory of its own."""
    env = bench_env(config.partitions, broker=broker_env)
    workdir = Path(env["STREAMREC_STATE_DIR"])
    result = Torture(env, config, workdir, say).run()
    if result.ok and not keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0, help="of chaos per run (default 5)")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--rate", type=float, default=100.0, help="events/s (default 100)")
    parser.add_argument(
        "--producer",
        choices=PRODUCERS,
        default="aiokafka",
        help="aiokafka (ours, murmur2), or confluent-kafka with crc32 (its default) or murmur2",
    )
    parser.add_argument("--compression", default="none", help="the confluent-kafka producer's compression.type")
    parser.add_argument("--actions", default=",".join(ACTIONS), help="comma-separated among join,leave,kill")
    parser.add_argument("--workers", type=int, default=3, help="running at the start (default 3)")
    parser.add_argument("--max-running", type=int, default=4)
    parser.add_argument("--partitions", type=int, default=6, help="per input topic (default 6)")
    parser.add_argument("--interval", type=float, nargs=2, default=(3.0, 8.0), metavar=("MIN_S", "MAX_S"))
    parser.add_argument("--busy-loops", type=int, default=os.cpu_count() or 1, help="default: one per core")
    parser.add_argument("--seed", type=int, default=0, help="run k uses seed + k")
    parser.add_argument("--keep", action="store_true", help="keep passing runs' state directories too")
    parser.add_argument("--json", type=Path, default=None, help="also write every run's result here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    from streamrec.stream.kafka.local import LocalKafka

    args = parse_args(argv)
    actions = tuple(a for a in args.actions.split(",") if a)
    if not set(actions) <= set(ACTIONS):
        raise SystemExit(f"--actions: choose among {','.join(ACTIONS)}")
    broker_env = bench_env(args.partitions)
    broker = LocalKafka(settings_from(broker_env))
    print(f"broker: {broker.start().bootstrap}; state under {tempfile.gettempdir()}", flush=True)
    results: list[RunResult] = []
    try:
        for k in range(args.runs):
            config = TortureConfig(
                seconds=args.minutes * 60, rate=args.rate, partitions=args.partitions, workers=args.workers,
                max_running=args.max_running, interval_s=tuple(args.interval), actions=actions,
                producer=args.producer, compression=args.compression, seed=args.seed + k, busy_loops=args.busy_loops,
            )  # fmt: skip
            print(f"--- run {k + 1}/{args.runs} (seed {config.seed}, {config.producer}, "
                  f"{config.seconds:.0f} s, {config.rate:.0f} events/s)", flush=True)  # fmt: skip
            result = run_once(config, broker_env, keep=args.keep, say=lambda line: print(line, flush=True))
            results.append(result)
            print(result.summary(), flush=True)
            if not result.ok:
                print(f"run {k + 1} kept for inspection: {result.workdir} (worker logs in logs/)", flush=True)
            if args.json:
                args.json.write_text(json.dumps([asdict(r) for r in results], indent=2, default=str))
    finally:
        broker.stop()
        shutil.rmtree(broker_env["STREAMREC_STATE_DIR"], ignore_errors=True)
    failed = [k + 1 for k, r in enumerate(results) if not r.ok]
    print(f"failures per run: {' '.join('F' if not r.ok else '.' for r in results)}")
    print(f"{len(results)} runs: {len(failed)} failed" + (f" (runs {failed})" if failed else ""))
    for k in failed:
        print(f"  run {k}: " + ", ".join(c.name for c in results[k - 1].failed()))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
