"""Where a key belongs (either partitioner), how a batch is sorted, and how misrouted records are forwarded."""

from __future__ import annotations

import asyncio
import logging
import typing
from typing import Any

import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner

from streamrec.stream.settings import Settings
from streamrec.stream.worker.contract import Limits, Reason, parse_interaction
from streamrec.stream.worker.ingest import (
    FORWARDED_FROM_OFFSET,
    FORWARDED_FROM_PARTITION,
    FORWARDED_FROM_TOPIC,
    Ingestor,
    IngestStats,
    Partitioner,
    classify,
    forwarded_from,
    partition_for_key,
    placement_warning,
)
from tests.unit.test_ingest_dead_letters import Event, Message, Producer  # the same fakes of Faust's events

PARTITIONS = 4
BASE_TS = 874_724_710_000

# Where librdkafka's default partitioner (consistent_random) put these keys: confluent-kafka 2.16.0
# (librdkafka 2.16.0) producing to topics of 3, 4, 7 and 16 partitions on the local Kafka 4.3.1
# broker, read back from its delivery reports. {key: [partition with 3, 4, 7, 16 partitions]}.
LIBRDKAFKA_PLACEMENT: dict[str, list[int]] = {
    "0": [2, 1, 4, 1],
    "42": [2, 0, 3, 8],
    "A": [2, 3, 2, 11],
    "a/b": [1, 0, 2, 12],
    "heavy-3": [1, 2, 3, 14],
    "u1": [2, 2, 5, 6],
    "u2": [0, 0, 1, 12],
    "user-ß": [1, 0, 1, 12],
    "x" * 200: [2, 2, 6, 6],
    "🙂": [0, 1, 3, 9],
}
COUNTS = [3, 4, 7, 16]


def doc(offset: int, user: str) -> dict[str, Any]:
    return {"event_id": f"e{offset}", "user_id": user, "item_id": "i", "ts": BASE_TS + offset, "type": "click"}


def record(
    offset: int,
    user: str,
    partition: int | None = None,
    raw: bytes | None = None,
    key: bytes | None = b"",
    headers: dict[str, bytes] | None = None,
) -> Event:
    p = partition_for_key(user, PARTITIONS) if partition is None else partition
    message = Message("clicks", p, offset, user.encode() if key == b"" else key, raw or orjson.dumps(doc(offset, user)))
    return Event(message, headers=headers or {})  # Faust's events hold their headers as a dict


def parse(raw: bytes):
    return parse_interaction(raw, Limits(), now_ms=1_800_000_000_000)


def users_where_partitioners_differ(n: int) -> list[str]:
    users = [f"u{i}" for i in range(200)]
    return [u for u in users if partition_for_key(u, PARTITIONS, "crc32") != partition_for_key(u, PARTITIONS)][:n]


# --- the partition function ----------------------------------------------------------------------
@pytest.mark.parametrize("partitions", COUNTS)
@pytest.mark.parametrize("key", ["u1", "42", "user-ß", "x" * 200, "🙂", ""])
def test_murmur2_is_the_kafka_default_partitioner(key: str, partitions: int):
    expected = DefaultPartitioner()(key.encode(), list(range(partitions)), list(range(partitions)))
    assert partition_for_key(key, partitions) == expected
    assert partition_for_key(key, partitions, "murmur2") == expected
    assert partition_for_key(key.encode(), partitions, "murmur2") == expected  # bytes or str, the same key


@pytest.mark.parametrize("key", sorted(LIBRDKAFKA_PLACEMENT))
def test_crc32_is_where_librdkafka_puts_a_key(key: str):
    assert [partition_for_key(key, n, "crc32") for n in COUNTS] == LIBRDKAFKA_PLACEMENT[key]


def test_crc32_of_an_empty_key_is_partition_0_as_librdkafkas_consistent_partitioner_picks():
    assert [partition_for_key("", n, "crc32") for n in COUNTS] == [0, 0, 0, 0]


def test_the_setting_offers_exactly_the_partitioners_the_function_knows():
    assert typing.get_args(Settings.model_fields["partitioner"].annotation) == typing.get_args(Partitioner)
    assert Settings(kafka_bootstrap_servers="x:1").partitioner == "murmur2"
    assert Settings(kafka_bootstrap_servers="x:1", partitioner="crc32").partitioner == "crc32"
    with pytest.raises(ValueError, match="'murmur2' or 'crc32'"):
        Settings(kafka_bootstrap_servers="x:1", partitioner="consistent_random")


# --- classify --------------------------------------------------------------------------------------
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


@pytest.mark.parametrize(
    ("partitioner", "valid", "misrouted", "placement"),
    [
        ("crc32", ["e0", "e1", "e2", "e3"], [], {"configured": 4}),
        ("murmur2", [], ["e0", "e1", "e2", "e3"], {"other": 4}),
    ],
)
def test_records_placed_by_librdkafka_are_home_under_crc32_and_misrouted_under_murmur2(
    partitioner: Partitioner, valid: list[str], misrouted: list[str], placement: dict[str, int]
):
    users = users_where_partitioners_differ(4)
    events = [record(k, u, partition=partition_for_key(u, PARTITIONS, "crc32")) for k, u in enumerate(users)]
    batch = classify(events, parse, lambda e: e.user_id, PARTITIONS, partitioner)
    assert sorted(e.event_id for group in batch.valid.values() for e, _ in group) == valid
    assert sorted(orjson.loads(ev.message.value)["event_id"] for _, ev in batch.misrouted) == misrouted
    assert batch.placement == placement


def test_placement_counts_only_records_placed_by_their_producer_with_a_key():
    user = users_where_partitioners_differ(1)[0]
    murmur2, crc32 = partition_for_key(user, PARTITIONS), partition_for_key(user, PARTITIONS, "crc32")
    neither = ({0, 1, 2, 3} - {murmur2, crc32}).pop()
    copy = {FORWARDED_FROM_TOPIC: b"clicks", FORWARDED_FROM_PARTITION: b"3", FORWARDED_FROM_OFFSET: b"9"}
    events = [
        record(0, user, partition=murmur2),  # home
        record(1, user, partition=crc32),  # where librdkafka puts it
        record(2, user, partition=neither, key=b"session-17"),  # keyed by something else
        record(3, user, partition=neither, key=None),  # no key: the producer picked at random
        record(4, user, partition=murmur2, headers=copy),  # our own forwarded copy
        record(5, user, partition=murmur2, raw=b"{oops"),  # invalid
    ]
    batch = classify(events, parse, lambda e: e.user_id, PARTITIONS)
    assert batch.placement == {"configured": 1, "other": 1, "neither": 1}
    assert [ev.message.offset for _, ev in batch.misrouted] == [1, 2, 3]


# --- the warning -----------------------------------------------------------------------------------
def test_the_warning_gives_the_figures_and_both_fixes():
    message = placement_warning("murmur2", {"configured": 250, "other": 750}, 60.2)
    assert message == (
        "750 of 1000 keyed records in the last 60 s arrived on the partition crc32 maps their key to, not on the "
        "murmur2 one (STREAMREC_PARTITIONER=murmur2); 250 arrived on their murmur2 partition and 0 on neither. "
        "Every misrouted record is forwarded to its murmur2 partition, crossing the broker twice. Fix: set "
        "STREAMREC_PARTITIONER=crc32, or make the producers use the murmur2 partitioner (librdkafka: "
        "partitioner=murmur2_random, kcat -X topic.partitioner=murmur2_random)."
    )
    other_way = placement_warning("crc32", {"configured": 5, "other": 20, "neither": 3}, 12)
    assert other_way is not None and other_way.startswith("20 of 28 keyed records in the last 12 s")
    assert "Fix: set STREAMREC_PARTITIONER=murmur2, or make the producers use librdkafka's default" in other_way


@pytest.mark.parametrize(
    "placement",
    [{"configured": 1000}, {"configured": 10, "other": 5, "neither": 5}, {"other": 2, "neither": 9}, {}],
)
def test_no_warning_unless_most_misrouted_records_fit_the_other_partitioner(placement: dict[str, int]):
    assert placement_warning("murmur2", placement, 60) is None


def ingestor(partitioner: Partitioner = "murmur2", **kwargs: Any) -> tuple[Ingestor, dict[str, Any], Producer]:
    forwarded = Producer()
    user_state: dict[str, Any] = {}
    ingest = Ingestor(
        user_state=user_state,
        catalogue={},
        send_dead_letter=Producer().send,
        forward=lambda topic: forwarded.send,
        limits=Limits(),
        partitions=PARTITIONS,
        history_length=50,
        stats=IngestStats(),
        dedupe_window=200,
        partitioner=partitioner,
        **kwargs,
    )
    return ingest, user_state, forwarded


def test_one_warning_per_interval_with_the_figures_not_one_per_batch(caplog: pytest.LogCaptureFixture):
    users = users_where_partitioners_differ(3)
    home_users = [u for u in (f"h{i}" for i in range(100)) if u not in users][:2]
    now = [1000.0]
    ingest, _, _ = ingestor(placement_warning_interval_s=60, clock=lambda: now[0])

    def batch(first: int) -> list[Event]:
        crc32 = [record(first + k, u, partition=partition_for_key(u, PARTITIONS, "crc32")) for k, u in enumerate(users)]
        return crc32 + [record(first + 10 + k, u) for k, u in enumerate(home_users)]

    def warnings_for(batches: list[tuple[float, int]]) -> list[str]:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="streamrec.stream.worker.ingest"):
            for at, first in batches:
                now[0] = at
                asyncio.run(ingest.interactions(batch(first)))
        return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

    # every batch is looked at until one warns, then none for 60 s
    warnings = warnings_for([(1002.0, 0), (1010.0, 100), (1061.0, 200)])
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("3 of 5 keyed records in the last 2 s arrived on the partition crc32 maps")
    assert "2 arrived on their murmur2 partition and 0 on neither" in warnings[0]
    assert "Fix: set STREAMREC_PARTITIONER=crc32, or make the producers use the murmur2 partitioner" in warnings[0]
    assert ingest.stats.as_dict()["placement"] == {"configured": 6, "other": 9, "neither": 0}
    assert ingest.stats.as_dict()["partitioner"] == "murmur2"
    # 60 s after the first look: one warning with the figures since then (three batches)
    warnings = warnings_for([(1062.0, 300)])
    assert len(warnings) == 1 and warnings[0].startswith("9 of 15 keyed records in the last 60 s")


def test_a_batch_that_agrees_does_not_silence_the_next_one(caplog: pytest.LogCaptureFixture):
    users = users_where_partitioners_differ(2)
    now = [50.0]
    ingest, _, _ = ingestor(placement_warning_interval_s=60, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="streamrec.stream.worker.ingest"):
        asyncio.run(ingest.interactions([record(0, users[0])]))  # on its murmur2 home
        now[0] = 51.0
        asyncio.run(
            ingest.interactions([record(1, users[1], partition=partition_for_key(users[1], PARTITIONS, "crc32"))])
        )
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith("1 of 1 keyed records in the last 1 s")


def test_no_warning_when_the_input_agrees_with_the_setting(caplog: pytest.LogCaptureFixture):
    users = users_where_partitioners_differ(3)
    ingest, user_state, forwarded = ingestor("crc32")
    events = [record(k, u, partition=partition_for_key(u, PARTITIONS, "crc32")) for k, u in enumerate(users)]
    with caplog.at_level(logging.WARNING, logger="streamrec.stream.worker.ingest"):
        trained = asyncio.run(ingest.interactions(events))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [e.interaction.event_id for e in trained] == ["e0", "e1", "e2"] and not forwarded.sent
    assert sorted(user_state) == sorted(users) and ingest.stats.placement == {"configured": 3}


# --- forwarding --------------------------------------------------------------------------------------
@pytest.mark.parametrize("partitioner", ["murmur2", "crc32"])
def test_a_misrouted_record_is_forwarded_to_its_home_explicitly_with_its_position(partitioner: Partitioner):
    """The copy goes to the partition the setting maps the id to (not the producer's murmur2), with its source."""
    user = users_where_partitioners_differ(1)[0]
    home = partition_for_key(user, PARTITIONS, partitioner)
    elsewhere = ({0, 1, 2, 3} - {home}).pop()
    misrouted = record(41, user, partition=elsewhere, key=b"session-9", headers={"trace": b"t-1"})
    misrouted.message.timestamp = 1_700_000_000.5
    ingest, user_state, forwarded = ingestor(partitioner)
    assert asyncio.run(ingest.interactions([misrouted])) == [] and user_state == {}
    assert forwarded.sent == [
        {
            "key": user.encode(),
            "value": misrouted.message.value,
            "partition": home,
            "timestamp": 1_700_000_000.5,
            "headers": [
                ("trace", b"t-1"),
                (FORWARDED_FROM_TOPIC, b"clicks"),
                (FORWARDED_FROM_PARTITION, str(elsewhere).encode()),
                (FORWARDED_FROM_OFFSET, b"41"),
            ],
        }
    ]
    assert forwarded_from(forwarded.sent[0]["headers"]) == ("clicks", elsewhere, 41)
    assert ingest.stats.forwarded_misrouted == 1


def test_a_copy_that_must_move_again_keeps_the_position_of_the_record_it_was_made_from():
    user = users_where_partitioners_differ(1)[0]
    elsewhere = partition_for_key(user, PARTITIONS, "crc32")
    source = {FORWARDED_FROM_TOPIC: b"clicks", FORWARDED_FROM_PARTITION: b"3", FORWARDED_FROM_OFFSET: b"7"}
    ingest, _, forwarded = ingestor()
    asyncio.run(ingest.interactions([record(90, user, partition=elsewhere, headers=source)]))
    assert forwarded_from(forwarded.sent[0]["headers"]) == ("clicks", 3, 7) and len(forwarded.sent[0]["headers"]) == 3


@pytest.mark.parametrize(
    "headers",
    [[], [(FORWARDED_FROM_TOPIC, b"clicks")], [(FORWARDED_FROM_TOPIC, b"c"), (FORWARDED_FROM_PARTITION, b"x"),
                                               (FORWARDED_FROM_OFFSET, b"1")]],
)  # fmt: skip
def test_records_without_a_whole_readable_source_are_not_copies(headers: list[tuple[str, bytes]]):
    assert forwarded_from(headers) is None and forwarded_from(dict(headers)) is None


def test_copies_forwarded_again_after_a_crash_are_neither_applied_nor_handed_to_the_learner():
    """Point 6 of issue 15 in small: the source read again after a crash forwards its records a second time.

    The second copies land behind everything the home partition got meanwhile (here 300 of the
    user's events, beyond the 200-id window); the learner trains what ``interactions`` returns
    at offsets its checkpoint has not reached, and these are new offsets, so they must not be returned.
    The learner's rewind re-reading the first copies still gets them (its checkpoint may lack them).
    """
    user = users_where_partitioners_differ(1)[0]
    home, source = partition_for_key(user, PARTITIONS), partition_for_key(user, PARTITIONS, "crc32")

    def copy(home_offset: int, source_offset: int) -> Event:
        position = {
            FORWARDED_FROM_TOPIC: b"clicks",
            FORWARDED_FROM_PARTITION: str(source).encode(),
            FORWARDED_FROM_OFFSET: str(source_offset).encode(),
        }
        event = record(home_offset, user, partition=home, headers=position)
        event.message.value = orjson.dumps(doc(source_offset, user))
        return event

    ingest, user_state, _ = ingestor()
    first = asyncio.run(ingest.interactions([copy(k, k) for k in range(300)]))
    assert len(first) == 300 and user_state[user]["events"] == 300
    again = asyncio.run(ingest.interactions([copy(300 + k, k) for k in range(250, 300)] + [copy(350, 300)]))
    assert [(e.offset, e.interaction.event_id) for e in again] == [(350, "e300")]  # only the new record
    assert user_state[user]["events"] == 301
    assert (ingest.stats.forwarded_again, ingest.stats.duplicates, ingest.stats.applied_interactions) == (50, 0, 301)

    # the rewind re-reads the home partition from 280: first copies 280..299 go back to the learner,
    # copies 300..349 (forwarded again) do not, 350 does (applied the first time)
    reread = [copy(o, o) for o in range(280, 300)] + [copy(300 + k, k) for k in range(250, 300)] + [copy(350, 300)]
    returned = asyncio.run(ingest.interactions(reread))
    assert [e.offset for e in returned] == [*range(280, 300), 350]
    assert user_state[user]["events"] == 301 and ingest.stats.redelivered == 71
