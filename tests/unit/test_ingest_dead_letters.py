"""How :class:`streamrec.stream.worker.ingest.Ingestor` sends dead letters, with the producer's rules but no broker.

The fake producer enforces what aiokafka's ``AIOKafkaProducer.send`` enforces before anything
reaches the wire (a record needs a key or a value): an agent that breaks that rule crashes, and a
crashed ingestion agent stops the whole stream while ``/health`` still answers.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson

from streamrec.stream.worker.contract import Limits, Reason
from streamrec.stream.worker.dead_letters import from_record
from streamrec.stream.worker.ingest import Ingestor, IngestStats, partition_for_key

PARTITIONS = 4


@dataclass
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float = 1_800_000_000.0


@dataclass(eq=False)  # weak-referenceable and hashable by identity, as Faust's events are
class Event:
    message: Message
    headers: list[tuple[str, bytes]] = field(default_factory=list)

    @property
    def value(self) -> bytes | None:
        return self.message.value


@dataclass
class Producer:
    """Records as sent (Faust's ``Topic.send`` keywords), refusing what aiokafka refuses: neither key nor value."""

    sent: list[dict[str, Any]] = field(default_factory=list)

    async def send(
        self,
        *,
        key: bytes | None,
        value: bytes | None,
        headers: Any = None,
        partition: int | None = None,
        timestamp: float | None = None,
    ) -> asyncio.Future[None]:
        assert not (value is None and key is None), "Need at least one: key or value"  # aiokafka's own check
        record = {"key": key, "value": value, "headers": list(headers or [])}
        if partition is not None or timestamp is not None:
            record |= {"partition": partition, "timestamp": timestamp}
        self.sent.append(record)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def ingestor(dead_letters: Producer) -> tuple[Ingestor, dict[str, Any]]:
    user_state: dict[str, Any] = {}
    return (
        Ingestor(
            user_state=user_state,
            catalogue={},
            send_dead_letter=dead_letters.send,
            forward=lambda topic: Producer().send,
            limits=Limits(),
            partitions=PARTITIONS,
            history_length=50,
            stats=IngestStats(),
        ),
        user_state,
    )


def test_a_record_without_key_or_value_is_dead_lettered_and_the_batch_goes_on():
    """Kafka accepts a record with a null key and a null value (the Java client sends one); it must not crash."""
    dead_letters = Producer()
    ingest, user_state = ingestor(dead_letters)
    good = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "ts": 874_724_710_000, "type": "click"}
    events = [
        Event(Message("clicks", 1, 7, None, None)),  # neither key nor value
        Event(Message("clicks", 2, 3, b"k", None)),  # a tombstone: its null value is kept
        Event(Message("clicks", partition_for_key("u1", PARTITIONS), 0, b"u1", orjson.dumps(good))),
    ]

    trained = asyncio.run(ingest.interactions(events))

    letters = [from_record(s["key"], s["value"], s["headers"]) for s in dead_letters.sent]
    assert [(d.source.partition, d.source.offset, d.reason, d.key) for d in letters] == [
        (1, 7, Reason.MALFORMED_JSON.value, None),
        (2, 3, Reason.MALFORMED_JSON.value, b"k"),
    ]
    assert [s["value"] for s in dead_letters.sent] == [b"", None]
    assert [e.interaction.event_id for e in trained] == ["e1"]
    assert user_state["u1"]["events"] == 1
    assert ingest.stats.dead_letters == {"malformed_json": 2} and ingest.stats.consumed == {"clicks": 3}


def test_a_record_larger_than_the_dead_letter_topic_takes_is_dead_lettered_as_a_marked_prefix():
    """An input topic configured for bigger records than the dead-letter topic: a prefix, never a crash."""
    dead_letters = Producer()
    ingest, _ = ingestor(dead_letters)
    ingest.max_dead_letter_bytes = 1024 * 1024
    huge = b'{"event_id": "x", "pad": "' + b"z" * 3_000_000 + b'"}'
    fits = b"y" * (1024 * 1024 - 64 * 1024)  # exactly what fits with the headroom for headers
    asyncio.run(
        ingest.interactions([Event(Message("clicks", 0, 1, b"u", huge)), Event(Message("clicks", 0, 2, b"u", fits))])
    )

    big, small = (from_record(s["key"], s["value"], s["headers"]) for s in dead_letters.sent)
    assert big.reason == small.reason == Reason.PAYLOAD_TOO_LARGE.value
    assert big.original_size == len(huge) and big.value == huge[: len(fits)]
    assert small.original_size is None and small.value == fits  # the original bytes when they fit


def test_a_bad_record_fetched_again_by_the_same_process_is_dead_lettered_once():
    """A seek or the learner's rewind re-reads records this process already handled: one dead letter each.

    Re-read valid events still reach the learner (it decides what is trained), and a misrouted
    event is forwarded once; a record this process has not handled yet is dead-lettered as usual.
    """
    dead_letters, forwarded = Producer(), Producer()
    ingest, user_state = ingestor(dead_letters)
    ingest.forward = lambda topic: forwarded.send
    home = partition_for_key("u1", PARTITIONS)
    elsewhere = (home + 1) % PARTITIONS
    good = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "ts": 874_724_710_000, "type": "click"}
    first = [
        Event(Message("clicks", home, 10, b"u1", b"{not json")),
        Event(Message("clicks", home, 11, b"u1", orjson.dumps(good))),
        Event(Message("clicks", elsewhere, 5, b"x", orjson.dumps(good))),  # misrouted: forwarded to `home`
        Event(Message("clicks", home, 10, b"u1", b"{not json")),  # fetched twice within the batch
    ]
    asyncio.run(ingest.interactions(first))
    again = [
        Event(Message("clicks", home, 10, b"u1", b"{not json")),
        Event(Message("clicks", home, 11, b"u1", orjson.dumps(good))),
        Event(Message("clicks", elsewhere, 5, b"x", orjson.dumps(good))),
        Event(Message("clicks", home, 12, b"u1", b"[]")),  # new: dead-lettered
    ]
    trained = asyncio.run(ingest.interactions(again))

    letters = [from_record(s["key"], s["value"], s["headers"]) for s in dead_letters.sent]
    assert [(d.source.offset, d.reason) for d in letters] == [
        (10, Reason.MALFORMED_JSON.value),
        (12, Reason.NOT_AN_OBJECT.value),
    ]
    assert len(forwarded.sent) == 1 and ingest.stats.forwarded_misrouted == 1
    assert [e.offset for e in trained] == [11]  # re-read, already in the state: the learner's call
    assert user_state["u1"]["events"] == 1 and ingest.stats.redelivered == 1
    assert ingest.stats.refetched_handled == 3  # offset 10 twice more, the misrouted record once more
    assert ingest.stats.dead_letters == {"malformed_json": 1, "not_an_object": 1}


def test_a_record_batch_the_consumer_could_not_decode_is_one_marker_dead_letter_sent_once():
    """An unreadable batch (kafka/consumer.py) is dead-lettered as a marker with its range, counted with the rest.

    The bad record fetched before it in the same batch is still dead-lettered; read again (the
    learner's rewind), neither is sent a second time.
    """
    from streamrec.stream.kafka.consumer import UnreadableBatch

    dead_letters = Producer()
    ingest, _ = ingestor(dead_letters)
    marker = UnreadableBatch("clicks", 2, 11, 20, "DecompressionError: lz4 frame")
    batch = [Event(Message("clicks", 2, 10, b"u", b"{not json")), Event(Message("clicks", 2, 20, b"u", b"{"))]

    asyncio.run(ingest.interactions(batch, [marker]))
    asyncio.run(ingest.interactions(batch, [marker]))  # read again

    letters = [from_record(s["key"], s["value"], s["headers"]) for s in dead_letters.sent]
    assert [(d.source.offset, d.reason) for d in letters] == [
        (11, Reason.UNREADABLE_BATCH.value),
        (10, Reason.MALFORMED_JSON.value),
        (20, Reason.MALFORMED_JSON.value),
    ]
    unreadable = letters[0]
    assert unreadable.value == b"" and "offsets 11..19 (9) skipped: DecompressionError: lz4 frame" in unreadable.detail
    end_offset = dict(dead_letters.sent[0]["headers"])["streamrec.dlq.source.end_offset"]
    assert end_offset == b"20"
    assert ingest.stats.dead_letters == {"unreadable_batch": 1, "malformed_json": 2}
    assert ingest.stats.refetched_handled == 3
