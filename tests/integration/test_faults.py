"""Faults against the real broker and real processes: a killed worker, a broker outage, a broken checkpoint disk.

Each test states what a user relies on after the fault: every produced event is accounted for
(valid ones exactly once in the user state, malformed ones in the dead-letter topic), the model
trains on each event once, and the worker keeps running. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from streamrec.models.checkpoint import Checkpoint, load_latest
from streamrec.stream.worker.contract import Reason
from streamrec.stream.worker.dead_letters import DeadLetter, read_dead_letters
from tests.integration.conftest import Worker, local_broker, settings_of, streamrec, wait_until
from tests.integration.test_ingestion import BAD_EVENTS, expected_state, produce, user_states, valid_events
from tests.integration.test_training import records_for

Record = tuple[str, bytes | None, bytes]
Position = tuple[str, int, int]  # topic, partition, offset
# The group hands a killed worker's partitions to its restarted self after the session timeout
# (Faust's default 60 s); 10 s keeps each restart short, and heartbeats (every 3 s) stay well inside it.
FAST_FAILOVER = {"broker_session_timeout_s": 10}


# --- helpers --------------------------------------------------------------------------------------
class PacedProducer(threading.Thread):
    """Writes records in small chunks with pauses, in its own thread, while the test breaks things.

    A fault in the middle of a stream is only a fault in the middle if events keep arriving
    through it; the broker's metadata for every record (partition, offset) is kept so that the
    test can find each record again, e.g. a malformed event in the dead-letter topic.
    """

    def __init__(self, bootstrap: str, records: list[Record], chunk: int = 50, pause_s: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.records, self.chunk, self.pause_s = bootstrap, records, chunk, pause_s
        self.metadata: list[Any] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._send())
        except BaseException as error:  # noqa: BLE001 - re-raised in the test's thread by finish()
            self.error = error

    async def _send(self) -> None:
        for start in range(0, len(self.records), self.chunk):
            self.metadata += await produce(self.bootstrap, self.records[start : start + self.chunk])
            await asyncio.sleep(self.pause_s)

    def run_here(self) -> list[Any]:
        """Produce in the calling thread instead (when nothing else needs to happen meanwhile)."""
        self.run()
        return self._result()

    def finish(self, timeout_s: float = 120) -> list[Any]:
        """Wait for the last record to be acknowledged; the metadata of every record, in order."""
        self.join(timeout_s)
        assert not self.is_alive(), f"the producer did not finish in {timeout_s}s"
        return self._result()

    def _result(self) -> list[Any]:
        if self.error is not None:
            raise self.error
        assert len(self.metadata) == len(self.records)
        return self.metadata


def with_malformed(
    settings: dict[str, Any], events: list[dict[str, Any]], every: int
) -> tuple[list[Record], dict[int, Reason]]:
    """The events' records with a malformed one (cycling through BAD_EVENTS) after every ``every``th.

    Returns the records and, for each malformed one, its index in the records and its reason.
    """
    records: list[Record] = []
    malformed: dict[int, Reason] = {}
    good = records_for(settings, events)
    for k, record in enumerate(good):
        records.append(record)
        if k % every == every - 1:
            raw, reason = BAD_EVENTS[len(malformed) % len(BAD_EVENTS)]
            malformed[len(records)] = reason
            records.append((settings["topic_clicks"], b"u1", raw))
    return records, malformed


def checkpoint_with(directory: Path, min_samples: int) -> Checkpoint | None:
    """The newest loadable checkpoint in ``directory`` if it holds at least ``min_samples`` samples."""
    found = load_latest(directory)
    return found if found is not None and found.model.samples_trained >= min_samples else None


def model_stats(worker: Worker) -> dict[str, Any]:
    status, body = worker.get("/model")
    assert status == 200, body
    return body


async def committed_offsets(bootstrap: str, group: str) -> dict[tuple[str, int], int]:
    """The consumer group's committed offsets (next offset to read), as the broker holds them."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        found = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {(tp.topic, tp.partition): meta.offset for tp, meta in found.items() if meta.offset >= 0}


def letters_by_position(letters: list[DeadLetter]) -> Counter[Position]:
    return Counter((d.source.topic, d.source.partition, d.source.offset) for d in letters)


def log_lines(worker: Worker, text: str) -> list[str]:
    """Lines of the worker's log that contain ``text``."""
    return [line for line in worker.log_path.read_text(errors="replace").splitlines() if text in line]


# --- 1. kill -9 of the stream worker in the middle of a replay ---------------------------------------
@pytest.mark.parametrize("guarantee", ["at_least_once"])
def test_worker_killed_mid_stream_resumes_and_accounts_for_every_event_once(app_settings, start_worker, guarantee):
    """kill -9 while a producer writes: afterwards each valid event is in the user state and the model once.

    The restarted worker restores the newest checkpoint, seeks each interaction partition back to
    the offsets that checkpoint trained up to (the group's committed offsets, read here before
    the restart, are ahead of it), re-reads the events in between without applying them to the
    user state twice, and trains on exactly the events the checkpoint had not seen.

    Malformed events: with ``at_least_once`` (the default) they are dead-lettered at least once:
    one re-read after the crash (at or after where the restarted worker starts reading) may be
    dead-lettered a second time, with the same source position; one before it, never.
    (``exactly_once`` is refused at start-up: docs/delivery.md says why.)
    """
    values = {
        **app_settings,
        **FAST_FAILOVER,
        "processing_guarantee": guarantee,
        "checkpoint_interval_s": 2,
        "batch_size": 200,
        "log_level": "info",
    }
    settings = settings_of(values)
    events = valid_events(3000, seed=41)
    records, malformed = with_malformed(values, events, every=100)

    worker = start_worker(values)
    producer = PacedProducer(settings.bootstrap_servers, records)  # ~3,030 records over about 15 s
    producer.start()
    wait_until(lambda: checkpoint_with(settings.checkpoint_dir, 500), 90, "a checkpoint with 500 samples")
    time.sleep(1.5)  # train past that checkpoint, and let Faust commit (every second) past it too
    worker.kill()
    assert producer.is_alive(), "the producer finished before the kill: the kill was not mid-stream"
    checkpoint = load_latest(settings.checkpoint_dir)
    assert checkpoint is not None
    restored_samples, restored_version = checkpoint.model.samples_trained, checkpoint.model.version
    committed = asyncio.run(committed_offsets(settings.bootstrap_servers, settings.app_id))

    restarted = start_worker(values)
    body = model_stats(restarted)
    assert body["stats"]["restored_from"] == str(checkpoint.path)
    assert body["version"] >= restored_version
    (resumed,) = log_lines(restarted, "resumed model version")
    assert f"resumed model version {restored_version} ({restored_samples} samples) from {checkpoint.path}" in resumed

    metadata = producer.finish()
    # Caught up: the learner's offsets reached the end of every input partition (each batch is
    # applied to the state, and its dead letters acknowledged, before it is trained).
    ends = {f"{m.topic}:{m.partition}": m.offset + 1 for m in sorted(metadata, key=lambda m: m.offset)}
    wait_until(lambda: model_stats(restarted)["trained_offsets"] == ends, 120, f"trained up to {ends}")
    stats = restarted.wait_for(lambda s: True)

    # every valid event exactly once in the user state
    assert stats["user_state_events_total"] == len(events)
    assert user_states(restarted, sorted({e["user_id"] for e in events})) == expected_state(events)

    # Where the restarted worker started reading: the checkpoint's offset where the commit was
    # ahead of it (a rewind), else the committed offset (the re-read events are skipped by the learner).
    starts = {}
    expected_rewound = {}
    for topic, parts in checkpoint.offsets.items():
        for partition, trained in parts.items():
            position = committed.get((topic, partition), trained)
            starts[(topic, partition)] = min(position, trained)
            if position > trained:
                expected_rewound[f"{topic}:{partition}"] = position - trained

    # every malformed event in the dead-letter topic with its reason, matched by source position
    bad = {(m.topic, m.partition, m.offset): malformed[k] for k, m in enumerate(metadata) if k in malformed}

    def all_dead_lettered() -> list[DeadLetter] | None:
        letters = asyncio.run(read_dead_letters(settings.bootstrap_servers, settings.topic_dead_letters))
        return letters if set(letters_by_position(letters)) >= set(bad) else None

    letters = wait_until(all_dead_lettered, 30, "every malformed event dead-lettered")
    counts = letters_by_position(letters)
    assert set(counts) == set(bad)
    for letter in letters:
        position = (letter.source.topic, letter.source.partition, letter.source.offset)
        assert letter.reason == bad[position].value and letter.key == b"u1"
    for (topic, partition, offset), n in counts.items():
        if guarantee == "exactly_once":
            assert n == 1, f"{topic}:{partition}@{offset} dead-lettered {n} times under exactly_once"
        elif offset < starts[(topic, partition)]:
            assert n == 1, f"{topic}:{partition}@{offset} was read once but dead-lettered {n} times"
        else:
            assert n in (1, 2), f"{topic}:{partition}@{offset} read twice at most, dead-lettered {n} times"

    # Each valid event in the model's lineage exactly once: the checkpoint's samples plus what the
    # new process trained (every event the checkpoint had not seen), no more, no less.
    body = model_stats(restarted)
    assert body["stats"]["rewound"] == expected_rewound
    assert expected_rewound or stats["redelivered"] > 0, "the crash cost nothing to re-read: not mid-stream"
    assert body["stats"]["trained"] == len(events) - restored_samples
    assert body["samples_trained"] == len(events)


# --- 2. the broker stopped and started again under a running worker ---------------------------------
@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A broker for this module alone (its own state directory and ports), so stopping it spares the session's."""
    with local_broker(tmp_path_factory.mktemp("own-broker")) as (base, _):
        yield base


def kill_broker(broker: dict[str, Any]) -> None:
    """``kill -9`` of the broker's JVM: no controlled shutdown; its logs are recovered at the next start."""
    pid = int((Path(broker["state_dir"]) / "kafka" / "broker.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not process_alive(pid), 30, "the broker's JVM gone")


def stop_broker(broker: dict[str, Any]) -> None:
    """``streamrec kafka stop``: a controlled shutdown (leadership given up, logs flushed)."""
    stopped = streamrec(["kafka", "stop"], broker, timeout=120)
    assert stopped.stdout.strip() == "Kafka stopped.", stopped.stdout + stopped.stderr


def process_alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc: no sampling, no load dependence)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Outage:
    wall_s: float
    cpu_s: float  # the worker's CPU time while it had no broker
    log: str  # what the worker logged meanwhile


def outage(worker: Worker, broker: dict[str, Any], stop: Callable[[dict[str, Any]], None], seconds: float) -> Outage:
    """Take the broker away for ``seconds``, checking all along that the worker lives and answers; start it again.

    Returns what the worker spent meanwhile, from the moment the broker is gone until it is started again.
    """
    assert worker.process is not None
    stop(broker)
    try:
        began, cpu_before = time.monotonic(), cpu_seconds(worker.process.pid)
        log_before = worker.log_path.stat().st_size
        while time.monotonic() - began < seconds:
            assert worker.alive(), f"the worker died without its broker:\n{worker.log_tail()}"
            status, body = worker.get_json("/health", timeout_s=5)
            assert status == 200 and body["status"] == "ok"
            time.sleep(0.5)
        spent = Outage(
            time.monotonic() - began,
            cpu_seconds(worker.process.pid) - cpu_before,
            worker.log_path.read_bytes()[log_before:].decode(errors="replace"),
        )
    finally:  # back in any case: the worker's teardown (its final commit) needs the broker
        started = streamrec(["kafka", "start"], broker, timeout=300)
    assert started.returncode == 0, started.stdout + started.stderr
    return spent


def test_worker_rides_out_broker_outages_and_applies_every_event_once(app_settings, own_broker, start_worker):
    """The broker stopped cleanly, later killed, under a running worker: it stays up and carries on by itself.

    While the broker is down the worker stays alive, answers /health, and idles: its Kafka clients
    retry with a backoff instead of spinning (stream/kafka/supervision.py; without it aiokafka's producer
    retried a metadata request about two thousand times a second and logged each failure twice).
    When the broker is back on the same data directory the worker reconnects without a restart, and
    every event produced before, between and after the outages is applied and trained exactly once.
    """
    values = {
        **app_settings,
        **{k: v for k, v in own_broker.items() if k != "state_dir"},
        **FAST_FAILOVER,
        "kafka_bootstrap_servers": f"127.0.0.1:{own_broker['local_kafka_port']}",
        # Embeddings trickle out at 50 records/s, so the worker holds records to send when the broker
        # goes away, as a worker under a steady stream would (records for a partition whose leader
        # is gone are what set aiokafka's sender spinning).
        "embedding_max_per_s": 50,
    }
    settings = settings_of(values)
    events = valid_events(2400, seed=43)
    worker = start_worker(values)
    done = 0
    for part, fault in ((events[:800], stop_broker), (events[800:1600], kill_broker), (events[1600:], None)):
        asyncio.run(produce(settings.bootstrap_servers, records_for(values, part)))
        done += len(part)
        worker.wait_for(lambda s, n=done: s["user_state_events_total"] == n and s["trained"] == n, timeout_s=120)
        if fault is None:
            continue
        spent = outage(worker, own_broker, fault, seconds=6)
        metadata_errors = spent.log.count("Unable to update metadata")
        assert spent.cpu_s < 0.3 * spent.wall_s, f"{spent.cpu_s:.1f} s of CPU in a {spent.wall_s:.1f} s outage"
        assert metadata_errors < 10 * spent.wall_s, f"{metadata_errors} metadata errors in {spent.wall_s:.1f} s"

    assert user_states(worker, sorted({e["user_id"] for e in events})) == expected_state(events)
    stats = worker.wait_for(lambda s: True)
    assert stats["applied_interactions"] == len(events)  # none twice (nor any lost)
    body = model_stats(worker)
    assert body["samples_trained"] == len(events) and body["stats"]["trained"] == len(events)


# --- 3. the checkpoint directory unwritable under a live worker -------------------------------------
CHECKPOINT_NAME = re.compile(r"^checkpoint-\d{12}\.pt$")


def produce_over(bootstrap: str, records: list[Record], seconds: float) -> None:
    """Produce ``records`` spread over about ``seconds``: several batches, so several checkpoints fall due."""
    chunk = max(1, len(records) // 10)
    PacedProducer(bootstrap, records, chunk=chunk, pause_s=seconds / 10).run_here()


class CheckpointDisk:
    """The live worker's checkpoint directory, and what the test expects of it while it is unwritable."""

    def __init__(self, worker: Worker, values: dict[str, Any]) -> None:
        self.worker, self.values = worker, values
        self.settings = settings_of(values)
        self.directory = self.settings.checkpoint_dir
        self.sent = 0

    def feed(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        """Produce ``events`` over a few seconds; return /model once the worker trained them all."""
        produce_over(self.settings.bootstrap_servers, records_for(self.values, events), seconds=4)
        self.sent += len(events)
        self.worker.wait_for(lambda s: s["trained"] == self.sent, timeout_s=120)
        return model_stats(self.worker)

    def settle(self) -> dict[str, Any]:
        """/model's checkpoint figures once no write is in flight any more.

        Checkpoints are attempted after a batch, so once every event is trained at most one write
        (begun at the last batch) is still running; its outcome is counted within a second or so.
        """
        attempts = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            stats = model_stats(self.worker)["stats"]
            now = (stats["checkpoints"], stats["checkpoint_errors"])
            if now == attempts:
                return stats
            attempts = now
            time.sleep(1.5)
        raise AssertionError(f"checkpoint attempts still changing after 30 s: {attempts}")

    def good_checkpoint(self, min_samples: int = 1) -> Checkpoint:
        """The newest checkpoint, once written and settled: the one a restart would load."""
        wait_until(lambda: checkpoint_with(self.directory, min_samples), 60, f"a checkpoint of {min_samples}+ samples")
        stats = self.settle()
        found = load_latest(self.directory)
        assert found is not None and str(found.path) == stats["last_checkpoint_path"]
        return found

    def fails_with(self, events: list[dict[str, Any]], cause: str, good: Checkpoint, holder: Path) -> None:
        """While ``events`` stream in, every checkpoint fails with ``cause``; training goes on, ``good`` still loads.

        ``holder`` is where the good checkpoints are now (the directory, or where it was moved).
        """
        before = self.settle()
        lines_before = len(self.error_lines(cause))
        body = self.feed(events)
        assert body["samples_trained"] == self.sent  # kept consuming and training
        after = self.settle()
        errors = after["checkpoint_errors"] - before["checkpoint_errors"]
        assert errors > 0 and after["checkpoints"] == before["checkpoints"]  # every attempt failed
        # one clear ERROR line per failure, naming the directory and the cause
        lines = self.error_lines(cause)[lines_before:]
        assert len(lines) == errors, lines
        assert all("[ERROR]" in line for line in lines), lines
        # no partial or temporary file next to the good checkpoints, and the newest good one still loads
        assert all(CHECKPOINT_NAME.match(p.name) or p.name == "filler" for p in holder.iterdir()), list(
            holder.iterdir()
        )
        latest = load_latest(holder)
        assert latest is not None and latest.path.name == good.path.name
        assert latest.model.samples_trained == good.model.samples_trained

    def error_lines(self, cause: str) -> list[str]:
        return log_lines(self.worker, f"cannot write checkpoint to {self.directory}: {cause}")

    def writes_again(self, events: list[dict[str, Any]], after: Checkpoint) -> None:
        """Once writable again, checkpoints resume by themselves; the clean stop's one has every event."""
        self.feed(events)
        self.good_checkpoint(min_samples=after.model.samples_trained + 1)
        assert self.worker.stop() == 0
        final = load_latest(self.directory)
        assert final is not None and final.model.samples_trained == self.sent


def test_checkpoint_directory_turned_into_a_file_fails_loudly_while_training_goes_on(app_settings, start_worker):
    """The checkpoint directory replaced by a regular file under a live worker (root ignores permissions).

    Each checkpoint then fails with one ERROR line naming the directory and the cause, counted in
    /model's ``checkpoint_errors``; the worker keeps consuming and training, the earlier checkpoints
    are untouched, and once the directory is back checkpoints resume by themselves.
    """
    values = {**app_settings, "checkpoint_interval_s": 1, "batch_size": 100}
    events = valid_events(1200, seed=47)
    disk = CheckpointDisk(start_worker(values), values)
    disk.feed(events[:400])
    good = disk.good_checkpoint()

    moved = disk.directory.with_name("checkpoints.moved")
    disk.directory.rename(moved)
    disk.directory.write_bytes(b"")  # a regular file where the directory was
    disk.fails_with(events[400:800], "Not a directory", good, holder=moved)
    assert disk.directory.read_bytes() == b""  # nothing was written into it

    disk.directory.unlink()
    moved.rename(disk.directory)
    disk.writes_again(events[800:], after=good)


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Callable[..., None]]:
    """``mount`` on a directory: a tmpfs of a given size, remounted read-only or back; unmounted at the end.

    Skips the test where mounting is not allowed (it needs root or CAP_SYS_ADMIN).
    """
    mounted: list[Path] = []

    def mount(directory: Path, options: str) -> None:
        if directory not in mounted:
            if shutil.which("mount") is None:
                pytest.skip("no mount command here")
            directory.mkdir(parents=True, exist_ok=True)
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "streamrec-test", str(directory)],
                                  capture_output=True, text=True)  # fmt: skip
            if done.returncode != 0:
                pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
            mounted.append(directory)
        else:
            subprocess.run(["mount", "-o", f"remount,{options}", str(directory)], check=True, capture_output=True)

    yield mount
    for directory in mounted:
        subprocess.run(["umount", "-l", str(directory)], capture_output=True)


def fill(directory: Path, leave: int) -> Path:
    """Fill ``directory``'s file system with one file, then free ``leave`` bytes of it; return the file.

    With ``leave`` below a checkpoint's size, the next checkpoint's write starts and then fails
    with ENOSPC part-way: the case where a torn temporary file could be left behind.
    """
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * (1 << 20))
    except OSError as error:
        assert error.errno == errno.ENOSPC, error
        os.ftruncate(fd, max(0, os.fstat(fd).st_size - leave))
    finally:
        os.close(fd)
    return filler


def test_full_then_read_only_checkpoint_disk_fails_loudly_while_training_goes_on(
    app_settings, start_worker, small_tmpfs
):
    """The checkpoint directory on a small tmpfs that fills up, then turns read-only, under a live worker.

    A full disk fails a checkpoint part-way through its write: the temporary file must go, the
    earlier checkpoints stay loadable. Both faults are one ERROR line each, counted, and training
    goes on; when the disk is writable again checkpoints resume by themselves.
    """
    values = {**app_settings, "checkpoint_interval_s": 1, "batch_size": 100}
    events = valid_events(1600, seed=53)
    directory = settings_of(values).checkpoint_dir
    small_tmpfs(directory, "size=64m")
    disk = CheckpointDisk(start_worker(values), values)
    try:
        disk.feed(events[:400])
        good = disk.good_checkpoint()

        filler = fill(directory, leave=good.path.stat().st_size // 2)
        disk.fails_with(events[400:800], "No space left on device", good, holder=directory)

        filler.unlink()
        small_tmpfs(directory, "ro")
        disk.fails_with(events[800:1200], "Read-only file system", good, holder=directory)

        small_tmpfs(directory, "rw")
        disk.writes_again(events[1200:], after=good)
    finally:
        disk.worker.stop()  # before the tmpfs goes: its final checkpoint belongs there
