import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner

from stream.contract import Limits, Reason, parse_interaction
from stream.ingest import classify, partition_for_key
from tests.unit.test_ingest_dead_letters import Event, Message  # the same fakes of Faust's events

PARTITIONS = 4


def record(offset: int, user: str, partition: int | None = None, raw: bytes | None = None) -> Event:
    doc = {"event_id": f"e{offset}", "user_id": user, "item_id": "i", "ts": 874_724_710_000 + offset, "type": "click"}
    p = partition_for_key(user, PARTITIONS) if partition is None else partition
    return Event(Message("clicks", p, offset, user.encode(), raw if raw is not None else orjson.dumps(doc)))


def parse(raw: bytes):
    return parse_interaction(raw, Limits(), now_ms=1_800_000_000_000)


@pytest.mark.parametrize("key", ["u1", "42", "user-ß", "x" * 200])
def test_partition_for_key_matches_the_kafka_default_partitioner(key):
    expected = DefaultPartitioner()(key.encode(), list(range(PARTITIONS)), list(range(PARTITIONS)))
    assert partition_for_key(key, PARTITIONS) == expected


def test_classify_groups_valid_events_by_user_in_arrival_order():
    events = [record(0, "a"), record(1, "b"), record(2, "a")]
    batch = classify(events, parse, lambda e: e.user_id, PARTITIONS)
    assert {k: [e.event_id for e, _ in v] for k, v in batch.valid.items()} == {"a": ["e0", "e2"], "b": ["e1"]}
    assert batch.valid_count == 3 and not batch.invalid and not batch.misrouted


def test_classify_separates_invalid_and_misrouted_events():
    good = record(0, "a")
    bad = record(1, "a", raw=b"{oops")
    wrong_partition = (partition_for_key("a", PARTITIONS) + 1) % PARTITIONS
    misrouted = record(2, "a", partition=wrong_partition)
    batch = classify([good, bad, misrouted], parse, lambda e: e.user_id, PARTITIONS)
    assert [(ev.message.offset, err.reason) for ev, err in batch.invalid] == [(1, Reason.MALFORMED_JSON)]
    assert [(key, ev.message.offset) for key, ev in batch.misrouted] == [("a", 2)]
    assert batch.valid_count == 1
