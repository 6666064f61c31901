"""Producers that place keys with either partitioner: librdkafka's CRC32 and the Java client's murmur2.

librdkafka (kcat, confluent-kafka-python, the Go and .NET clients) maps a key to a partition by
CRC32 by default (``consistent_random``); Java, aiokafka and Faust by murmur2. A worker that
expects one and reads the other finds most records "misrouted" and forwards them to the
partition where their user's state lives: twice the traffic, and, before the copies carried
their source position, every kill -9 made some events be applied and trained twice.

Every producer here is librdkafka (confluent-kafka, :mod:`streamrec.bench.librdkafka_client`),
every worker a real process on the real broker:

- our partition function is where librdkafka (and the Java partitioner) put each key;
- ``STREAMREC_PARTITIONER=crc32`` with librdkafka's default: nothing forwarded, every event applied
  once, and each user's state answered by either of two workers (HTTP routing by the same setting);
- the default ``murmur2`` with librdkafka's default: a warning with the figures and both fixes,
  and every event still applied exactly once (forwarded);
- point 6 of issue 15 in small: everything forwarded, the worker killed twice mid-stream: every
  event applied and trained exactly once.
"""

from __future__ import annotations

import asyncio
import random
import re
import threading
import time
from collections import Counter
from typing import Any

import orjson
import pandas as pd
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streamrec.bench.librdkafka_client import Partitioner, catalogue_record, interaction_record, produce
from streamrec.stream.kafka.admin import ensure_topics, read_topic
from streamrec.stream.tools.datasets import Dataset
from streamrec.stream.tools.replay import replay
from streamrec.stream.worker.ingest import forwarded_from, partition_for_key
from tests.integration.conftest import Mismatch, Worker, input_log_ends, settings_of, wait_until
from tests.integration.test_faults import FAST_FAILOVER, log_lines, model_stats
from tests.integration.test_ingestion import BASE_TS, expected_state, topic_for
from tests.integration.test_scale_out import member, spread_over, users_match

Record = tuple[str, bytes | None, bytes]  # topic, key, value
Position = tuple[str, int, int]  # topic, partition, offset
PARTITIONS = 4  # app_settings' topic_partitions
WARNING = re.compile(
    r"\[WARNING\].*?(\d+) of (\d+) keyed records in the last (\d+) s arrived on the partition crc32 maps their key "
    r"to, not on the murmur2 one \(STREAMREC_PARTITIONER=murmur2\); (\d+) arrived on their murmur2 partition and "
    r"(\d+) on neither\. Every misrouted record is forwarded to its murmur2 partition, crossing the broker twice\. "
    r"Fix: set STREAMREC_PARTITIONER=crc32, or make the producers use the murmur2 partitioner \(librdkafka: "
    r"partitioner=murmur2_random, kcat -X topic.partitioner=murmur2_random\)\.\s*$"
)


def user_ids(prefix: str, n: int, partitioners_differ: bool | None = None) -> list[str]:
    """``n`` user ids; with ``partitioners_differ``, those CRC32 and murmur2 put on different partitions (or not)."""
    found = []
    for i in range(100_000):
        user = f"{prefix}-u{i}"
        differ = partition_for_key(user, PARTITIONS, "crc32") != partition_for_key(user, PARTITIONS)
        if partitioners_differ is None or differ == partitioners_differ:
            found.append(user)
            if len(found) == n:
                return found
    raise AssertionError("not enough user ids")


def interactions(users: list[str], n: int, seed: int, prefix: str) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        {
            "event_id": f"{prefix}-ev-{i}",
            "user_id": rng.choice(users),
            "item_id": f"{prefix}-item-{rng.randrange(150)}",
            "ts": BASE_TS + i * 1000,
            "type": "purchase" if rng.random() < 0.3 else "click",
        }
        for i in range(n)
    ]


def records_of(settings: dict[str, Any], events: list[dict[str, Any]]) -> list[Record]:
    return [(topic_for(settings, e), *interaction_record(e)) for e in events]


def produce_records(
    bootstrap: str, records: list[Record], partitioner: Partitioner = "consistent_random"
) -> list[Position]:
    """Write ``records`` with librdkafka (each topic's in order); return where each one landed."""
    positions: list[Position | None] = [None] * len(records)
    for topic in dict.fromkeys(topic for topic, _, _ in records):
        indices = [k for k, (t, _, _) in enumerate(records) if t == topic]
        placed = produce(bootstrap, topic, [records[k][1:] for k in indices], partitioner=partitioner)
        for k, (partition, offset) in zip(indices, placed, strict=True):
            positions[k] = (topic, partition, offset)
    assert None not in positions
    return positions  # type: ignore[return-value]


def stats(worker: Worker) -> dict[str, Any]:
    status, body = worker.get("/stats?totals=1")
    assert status == 200, body
    return body


def placement_lines(worker: Worker) -> list[str]:
    return log_lines(worker, "keyed records in the last")


# --- our partition function against librdkafka's real placement ---------------------------------------
@pytest.mark.parametrize("partitions", [4, 7])
def test_partition_for_key_is_where_librdkafka_puts_each_key(app_settings, partitions):
    """confluent-kafka's ``consistent_random`` (librdkafka's default) and ``murmur2_random``, as the broker got them."""
    settings = settings_of(app_settings)
    topic = f"{settings.app_id}.placement-{partitions}"

    async def create() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, partitions, 1)])
        finally:
            await admin.close()

    asyncio.run(create())
    rng = random.Random(partitions)
    alphabet = "abcxyz0129-_.:/ßé漢🙂"
    keys = [f"u{i}" for i in range(200)] + ["".join(rng.choices(alphabet, k=rng.randrange(1, 300))) for _ in range(200)]
    records = [(k.encode(), b"{}") for k in keys]
    for theirs, ours in (("consistent_random", "crc32"), ("murmur2_random", "murmur2")):
        placed = produce(settings.bootstrap_servers, topic, records, partitioner=theirs)
        wrong = [(k, p, partition_for_key(k, partitions, ours)) for k, (p, _) in zip(keys, placed, strict=True)
                 if p != partition_for_key(k, partitions, ours)]  # fmt: skip
        assert not wrong, f"{theirs}: {len(wrong)} of {len(keys)} keys elsewhere, e.g. {wrong[:3]}"
        assert len({p for p, _ in placed}) == partitions  # every partition used: a real test of the modulo


@pytest.mark.parametrize("partitioner", ["crc32", "murmur2"])
def test_the_replay_puts_each_record_where_the_setting_says(app_settings, partitioner):
    """``streamrec replay`` (aiokafka, whose own partitioner is murmur2) places every key by the setting, explicitly."""
    values = {**app_settings, "partitioner": partitioner}
    settings = settings_of(values)
    asyncio.run(ensure_topics(settings))
    users = user_ids(f"r{partitioner}", 12, partitioners_differ=True)
    events = interactions(users, 120, seed=8, prefix=f"r{partitioner}")
    items = [{"item_id": f"r-item-{i}", "title": f"Item {i}", "description": "", "categories": []} for i in range(10)]
    dataset = Dataset("placement", items, pd.DataFrame(events), len(events))
    report = asyncio.run(replay(settings, dataset))
    assert (report.interactions, report.catalogue) == (len(events), len(items))
    placed = {
        (orjson.loads(r.value).get("event_id") or orjson.loads(r.value)["item_id"]): (r.key, r.partition)
        for topic in (*settings.interaction_topics, settings.topic_catalogue)
        for r in asyncio.run(read_topic(settings, topic))
    }
    expected = {e["event_id"]: (e["user_id"].encode(), partition_for_key(e["user_id"], PARTITIONS, partitioner))
                for e in events} | {i["item_id"]: (i["item_id"].encode(), partition_for_key(i["item_id"], PARTITIONS,
                                                                                             partitioner))
                                    for i in items}  # fmt: skip
    assert placed == expected


# --- (a) STREAMREC_PARTITIONER=crc32 with librdkafka's default partitioner ----------------------------------
def test_crc32_setting_takes_librdkafka_input_without_forwarding_and_routes_http_by_crc32(
    app_settings, start_worker, tmp_path
):
    """Nothing forwarded, every event applied once, and every user answered by either of two workers.

    Each worker owns half the partitions; ``/users/{id}`` asked of the worker that does not hold
    the user is routed to the one that does, by the partition CRC32 maps the id to (murmur2 would
    ask the wrong worker for most users, which then answers 404).
    """
    values = {**app_settings, "partitioner": "crc32", "train": False}
    settings = settings_of(values)
    workers = [start_worker(member(values, name, tmp_path)) for name in ("a", "b")]
    spread_over(workers, settings.interaction_topics, settings.topic_partitions)
    users = user_ids("a", 30)
    events = interactions(users, 900, seed=5, prefix="a")
    items = [{"item_id": f"a-item-{i}", "title": f"Item {i}", "description": "", "categories": []} for i in range(20)]
    positions = produce_records(settings.bootstrap_servers, records_of(values, events))
    catalogue = produce(settings.bootstrap_servers, settings.topic_catalogue, [catalogue_record(i) for i in items])
    # librdkafka put every record where the worker's partition function says
    assert [p for _, p, _ in positions] == [partition_for_key(e["user_id"], PARTITIONS, "crc32") for e in events]
    assert [p for p, _ in catalogue] == [partition_for_key(i["item_id"], PARTITIONS, "crc32") for i in items]

    def applied() -> bool | Mismatch:
        got = [stats(w) for w in workers]
        counts = (sum(s["applied_interactions"] for s in got), sum(s["applied_catalogue"] for s in got))
        return True if counts == (len(events), len(items)) else Mismatch(f"applied {counts}")

    wait_until(applied, 120, "every event and item applied")
    got = [stats(w) for w in workers]
    assert [(s["forwarded_misrouted"], s["dead_letters_total"]) for s in got] == [(0, 0), (0, 0)]
    assert sum(s["consumed_total"] for s in got) == len(events) + len(items)  # each record read once
    assert sum(s["user_state_events_total"] for s in got) == len(events)
    assert [s["placement"]["other"] + s["placement"]["neither"] for s in got] == [0, 0]
    assert sum(s["placement"]["configured"] for s in got) == len(events) + len(items)
    assert all(s["partitioner"] == "crc32" and s["duplicates"] == s["forwarded_again"] == 0 for s in got)
    expected = expected_state(events)
    for worker in workers:  # each user through each worker: half of them routed to the other one
        assert users_match(worker, expected) is True
        for item in items:
            status, body = worker.get(f"/items/{item['item_id']}")
            assert (status, body.get("title")) == (200, item["title"])
    assert not any(placement_lines(w) for w in workers)


# --- (b) the default murmur2 with librdkafka's default partitioner ------------------------------------------
def test_murmur2_setting_warns_with_figures_and_still_applies_librdkafka_input_once(app_settings, start_worker):
    """Records placed by CRC32 are forwarded (each once) and applied once; the log says why and what to change."""
    values = {**app_settings, "train": False}
    settings = settings_of(values)
    worker = start_worker(values)
    users = user_ids("b", 40)
    events = interactions(users, 1200, seed=6, prefix="b")
    produce_records(settings.bootstrap_servers, records_of(values, events))
    moved = sum(partition_for_key(e["user_id"], PARTITIONS, "crc32") != partition_for_key(e["user_id"], PARTITIONS)
                for e in events)  # fmt: skip
    assert 0 < moved < len(events)

    final = worker.wait_for(
        lambda s: s["applied_interactions"] == len(events) and s["consumed_total"] >= len(events) + moved
    )
    assert final["forwarded_misrouted"] == moved  # each misrouted record forwarded once ...
    assert final["consumed_total"] == len(events) + moved  # ... and read once more, on its home partition
    assert final["placement"] == {"configured": len(events) - moved, "other": moved, "neither": 0}
    assert (final["user_state_events_total"], final["forwarded_again"], final["duplicates"]) == (len(events), 0, 0)
    assert users_match(worker, expected_state(events)) is True

    # one warning (not one per batch: the default interval is a minute), with figures that add up
    lines = placement_lines(worker)
    assert len(lines) == 1, lines
    found = WARNING.search(lines[0])
    assert found is not None, lines[0]
    other, keyed, _, configured, neither = map(int, found.groups())
    assert neither == 0 and configured + other == keyed <= len(events) and other > 0


# --- (c) everything forwarded, kill -9 twice mid-stream ----------------------------------------------------
class HeldProducer(threading.Thread):
    """librdkafka's default producer writing records chunk by chunk in its own thread, held before some chunks.

    ``holds`` maps a chunk number to an event the producer waits for before writing that chunk:
    the test lets it go on while the worker is down, so each kill is in the middle of the stream.
    """

    def __init__(self, bootstrap: str, records: list[Record], chunk: int, pause_s: float,
                 holds: dict[int, threading.Event]) -> None:  # fmt: skip
        super().__init__(daemon=True)
        self.bootstrap, self.records, self.chunk, self.pause_s, self.holds = bootstrap, records, chunk, pause_s, holds
        self.positions: list[Position] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for number, start in enumerate(range(0, len(self.records), self.chunk)):
                hold = self.holds.get(number)
                if hold is not None and not hold.wait(600):
                    raise TimeoutError(f"held before chunk {number} for 600 s")
                self.positions += produce_records(self.bootstrap, self.records[start : start + self.chunk])
                time.sleep(self.pause_s)
        except BaseException as error:  # noqa: BLE001 - re-raised in the test's thread by finish()
            self.error = error

    def waiting_at(self, number: int) -> bool:
        return len(self.positions) == number * self.chunk

    def finish(self, timeout_s: float = 180) -> list[Position]:
        self.join(timeout_s)
        assert not self.is_alive(), f"the producer did not finish in {timeout_s}s"
        if self.error is not None:
            raise self.error
        assert len(self.positions) == len(self.records)
        return self.positions


def copies_on_the_topics(values: dict[str, Any]) -> dict[str, list[Any]]:
    """Every record on the input topics, by event id: the original and each forwarded copy."""
    found: dict[str, list[Any]] = {}
    for topic in (values["topic_clicks"], values["topic_purchases"]):
        for record in asyncio.run(read_topic(values["kafka_bootstrap_servers"], topic)):
            found.setdefault(orjson.loads(record.value)["event_id"], []).append(record)
    return found


@pytest.mark.timeout(600)
def test_forwarded_events_are_applied_and_trained_once_when_the_worker_is_killed_twice(app_settings, start_worker):
    """Point 6 of issue 15 in small: a librdkafka producer, a murmur2 worker, kill -9 twice mid-stream.

    Every user is one that CRC32 and murmur2 put on different partitions, so every event is
    forwarded. With the default checkpoint interval (30 s) each restart rewinds to a checkpoint
    well behind what the killed worker had done: it reads the source partitions again and forwards
    those records a second (and third) time, and the copies land behind everything the home
    partitions got meanwhile. The users are few and busy and the event-id window is 3, so those
    copies are far outside it, as a heavy user's are with the default 200 in a real stream. The
    second rewind also reads the copies the first restart dropped, at offsets the model has not
    trained. The ledger: every event applied exactly once in the user state and trained exactly
    once by the model's lineage, although every record was forwarded twice or more.
    """
    values = {**app_settings, **FAST_FAILOVER, "batch_size": 200, "dedupe_window": 3, "log_level": "info"}
    settings = settings_of(values)
    users = user_ids("c", 6, partitioners_differ=True)
    events = interactions(users, 2400, seed=7, prefix="c")
    records = records_of(values, events)
    # 40 chunks of 60 records; the producer waits before chunks 14 and 27 until the worker before it is killed
    holds = {14: threading.Event(), 27: threading.Event()}
    producer = HeldProducer(settings.bootstrap_servers, records, chunk=60, pause_s=0.25, holds=holds)

    worker = start_worker(values)
    producer.start()
    for hold, samples in ((14, 600), (27, 1400)):  # killed once the model has this many samples (restored ones too)
        wait_until(lambda w=worker, n=samples: model_stats(w)["samples_trained"] >= n, 180, f"{samples} trained")
        worker.kill()
        assert producer.is_alive()  # more records to come: the kill is mid-stream
        holds[hold].set()  # the producer goes on while the worker is down
        worker = start_worker(values)
    positions = producer.finish()

    # caught up: trained to the end of every input partition (copies included, as they stand now)
    def caught_up() -> bool | Mismatch:
        ends, trained = input_log_ends(settings), model_stats(worker)["trained_offsets"]
        return True if trained == ends else Mismatch(f"trained {trained}, ends {ends}")

    wait_until(caught_up, 240, "trained to the end of every input partition")
    final = stats(worker)
    body = model_stats(worker)

    # the ledger: every event once in the user state, once in the model's lineage
    assert final["user_state_events_total"] == len(events)
    assert users_match(worker, expected_state(events)) is True
    assert body["samples_trained"] == len(events)

    # the case under test happened: records forwarded more than once, the extra copies dropped as such
    records_by_event = copies_on_the_topics(values)
    copies = Counter(len(found) - 1 for found in records_by_event.values())
    assert set(records_by_event) == {e["event_id"] for e in events} and 0 not in copies
    assert sum(n * count for n, count in copies.items()) > len(events), f"copies per event: {copies}"
    assert final["forwarded_again"] > 0 and final["forwarded_misrouted"] > 0
    # each copy names the record it was made from: where the producer put the event
    original = {e["event_id"]: position for e, position in zip(events, positions, strict=True)}
    user_of = {e["event_id"]: e["user_id"] for e in events}
    for event_id, found in records_by_event.items():
        forwarded = [r for r in found if forwarded_from(list(r.headers)) is not None]
        assert {forwarded_from(list(r.headers)) for r in forwarded} == {original[event_id]}, event_id
        home = partition_for_key(user_of[event_id], PARTITIONS)  # explicitly there, murmur2 being the setting
        assert {(r.topic, r.partition) for r in forwarded} == {(original[event_id][0], home)}
