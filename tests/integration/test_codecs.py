"""Every compression codec Kafka has, written by a producer that is not ours (librdkafka), read by the worker.

Java clients and librdkafka producers commonly compress with lz4, snappy or zstd. A batch the
consumer cannot decompress stopped its partition for good (``UnsupportedCodecError`` in Faust's
drain, the same batch again after every restart), so each codec is tested end to end: records
produced compressed, checked to be compressed on the broker's log (segment files, not a consumer,
which would decompress transparently), then applied exactly once, with nothing dead-lettered,
forwarded or dropped as a duplicate, and the group's offsets committed to the end of the log.

The producer uses the Java client's partitioner (``murmur2_random``), the worker's own, so that
this test is about codecs only: forwarding misrouted records is tested elsewhere.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest

from streamrec.bench.librdkafka_client import (
    CODECS,
    Compression,
    Record,
    catalogue_record,
    interaction_record,
    logged_batches,
    produce,
)
from streamrec.stream.kafka.admin import end_offsets
from streamrec.stream.kafka.local import LocalKafka
from streamrec.stream.worker.ingest import partition_for_key
from tests.integration.conftest import Mismatch, settings_of, wait_until
from tests.integration.test_faults import committed_offsets
from tests.integration.test_ingestion import BASE_TS, expected_state, user_states

EVENTS = 300
USERS = 24
ITEMS = 12  # catalogue entries, a separate agent reading the same codec


def interactions(codec: str, n: int = EVENTS, seed: int = 3) -> list[dict[str, Any]]:
    """Contract-valid clicks and purchases with ids of this codec's own (a failure names its codec)."""
    rng = random.Random(seed)
    return [
        {
            "event_id": f"{codec}-ev-{i}",
            "user_id": f"{codec}-u{rng.randrange(USERS)}",
            "item_id": f"{codec}-item-{rng.randrange(60)}",
            "ts": BASE_TS + i * 1000,
            "type": "purchase" if rng.random() < 0.3 else "click",
        }
        for i in range(n)
    ]


def catalogue(codec: str) -> list[dict[str, Any]]:
    return [
        {
            "item_id": f"{codec}-item-{i}",
            "title": f"{codec} movie {i}",
            "description": f"About {i}",
            "categories": ["Drama"],
        }
        for i in range(ITEMS)
    ]


def check_log(log_dir: Path, topic: str, sent: list[Record], placed: list[tuple[int, int]], codec: Compression) -> None:
    """The broker holds exactly the records sent, at the offsets it acknowledged, in batches of ``codec``."""
    batches = logged_batches(log_dir, topic)
    codecs = {(b.partition, b.base_offset): b.codec for part in batches.values() for b in part}
    assert set(codecs.values()) == {codec}, f"{topic}: batch codecs {codecs}"
    stored = {
        (b.partition, offset): (key, value)
        for part in batches.values()
        for b in part
        for offset, key, value in b.records
    }
    expected = {where: (key, value) for (key, value), where in zip(sent, placed, strict=True)}
    assert stored == expected
    for partition, part in batches.items():  # contiguous from offset 0: nothing else, nothing lost
        assert [b.base_offset for b in part] == [0, *(b.next_offset for b in part[:-1])], f"{topic}-{partition}"


@pytest.mark.parametrize("codec", CODECS)
def test_records_compressed_by_an_external_producer_are_applied_exactly_once(codec, broker, app_settings, start_worker):
    values = {**app_settings, "train": False}  # codecs are the consumer's concern: no model to wait for
    settings = settings_of(values)
    worker = start_worker(values)  # creates the topics
    events = interactions(codec)
    items = catalogue(codec)
    bootstrap = settings.bootstrap_servers
    sent: dict[str, list[Record]] = {
        settings.topic_clicks: [interaction_record(e) for e in events if e["type"] == "click"],
        settings.topic_purchases: [interaction_record(e) for e in events if e["type"] == "purchase"],
        settings.topic_catalogue: [catalogue_record(item) for item in items],
    }
    placed = {
        topic: produce(bootstrap, topic, records, compression=codec, partitioner="murmur2_random")
        for topic, records in sent.items()
    }

    # The Java client's partitioner is the worker's: every record is on its key's partition already.
    for topic, records in sent.items():
        homes = [partition_for_key(key.decode(), settings.topic_partitions) for key, _ in records]
        assert [partition for partition, _ in placed[topic]] == homes, topic
    # Written compressed: the codec is in each batch's header on the broker's log.
    log_dir = LocalKafka(settings_of(broker)).data_dir
    for topic, records in sent.items():
        check_log(log_dir, topic, records, placed[topic], codec)

    stats = worker.wait_for(lambda s: s["consumed_total"] == len(events) + len(items))
    assert stats["applied_interactions"] == stats["user_state_events_total"] == len(events)
    assert stats["applied_catalogue"] == len(items)
    nothing_else = {k: stats[k] for k in ("dead_letters_total", "forwarded_misrouted", "duplicates", "redelivered")}
    assert nothing_else == dict.fromkeys(nothing_else, 0)
    expected = expected_state(events)
    assert stats["users"] == len(expected)
    assert user_states(worker, expected) == expected  # event counts, and each event's item, time and type, in order
    for item in items:
        status, body = worker.get(f"/items/{item['item_id']}")
        assert (status, body["title"]) == (200, item["title"])
    assert sum(asyncio.run(end_offsets(bootstrap, settings.topic_dead_letters)).values()) == 0

    # The group committed every input partition to its log end, which is just past the last record
    # sent (partitions left empty have nothing to commit).
    ends: dict[tuple[str, int], int] = {}
    for topic, where in placed.items():
        for partition, offset in where:
            ends[(topic, partition)] = max(ends.get((topic, partition), 0), offset + 1)
    log_ends = {(topic, p): end for topic in sent for p, end in asyncio.run(end_offsets(bootstrap, topic)).items()}
    assert {tp: end for tp, end in log_ends.items() if end > 0} == ends

    def committed_to_the_end() -> Any:
        committed = asyncio.run(committed_offsets(bootstrap, settings.app_id))
        at = {tp: offset for tp, offset in committed.items() if tp[0] in sent and offset > 0}
        return True if at == ends else Mismatch(f"committed {at}, log ends {ends}")

    wait_until(committed_to_the_end, 30, "offsets committed to the log end")
    assert worker.alive(), worker.log_tail()
