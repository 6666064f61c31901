"""Records written by a client that is not ours: librdkafka (confluent-kafka), as Java, Go and C services write them.

Our own tools produce with aiokafka, whose defaults happen to be what the worker expects: no
compression and the Java client's murmur2 partitioner. Producers in the wild differ in exactly
those two ways, and each has broken the worker before: a batch compressed with snappy, lz4 or
zstd that the consumer could not decode stopped its partition for good, and librdkafka's default
partitioner (``consistent_random``: CRC32 of the key) puts a user's events on another partition
than the worker's tables (murmur2), so the worker has to forward them. This module lets a test be
such a producer, and then look at what the broker really stored:

- :func:`produce` writes ``(key, value)`` records to one topic with a chosen ``compression.type``
  and ``partitioner`` and returns where each landed, raising on any failed delivery;
- :func:`interaction_record` and :func:`catalogue_record` key a contract-valid event as a real
  producer would (by user id, by item id);
- :func:`logged_batches` reads the local broker's log segments, so that a test can assert how
  the records were written (their codec) and not only that a consumer read them back: every
  consumer, ours included, decompresses transparently.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson
from aiokafka.record.memory_records import MemoryRecords
from confluent_kafka import KafkaError, Message, Producer

Compression = Literal["none", "gzip", "snappy", "lz4", "zstd"]
Partitioner = Literal["consistent_random", "consistent", "murmur2_random", "murmur2", "fnv1a_random", "random"]
Key = bytes | str | None
Record = tuple[Key, bytes | None]

CODECS: tuple[Compression, ...] = ("gzip", "snappy", "lz4", "zstd")  # every codec Kafka has, besides none
# The codec id in a record batch's attributes (its lowest 3 bits), as the Kafka protocol numbers them.
CODEC_NAMES: dict[int, Compression] = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}


class DeliveryFailed(RuntimeError):
    """Some records were not acknowledged by the broker; ``failures`` holds ``(index, reason)`` for each."""

    def __init__(self, topic: str, failures: list[tuple[int, str]]) -> None:
        shown = "; ".join(f"record {index}: {reason}" for index, reason in failures[:5])
        super().__init__(f"{len(failures)} record(s) to {topic} not delivered: {shown}")
        self.failures = failures


def produce(
    bootstrap: str,
    topic: str,
    records: Iterable[Record],
    *,
    compression: Compression = "none",
    partitioner: Partitioner = "consistent_random",
    config: Mapping[str, Any] | None = None,
    timeout_s: float = 60.0,
) -> list[tuple[int, int]]:
    """Write ``records`` (``(key, value)``, in order) to ``topic``; return each one's ``(partition, offset)``.

    ``partitioner`` is librdkafka's: ``consistent_random`` (its default, CRC32 of the key) or
    ``murmur2_random`` (the Java client's, and so the worker's: nothing to forward). ``config``
    adds or overrides librdkafka properties (e.g. ``enable.idempotence``, ``linger.ms``). Records
    are batched as librdkafka batches them (``linger.ms`` 5 by default), so a few hundred records
    make a few multi-record batches, each compressed with ``compression``.

    Returns only when the broker has acknowledged every record; raises :class:`DeliveryFailed`
    naming the records it did not acknowledge (or that were still unsent after ``timeout_s``).
    """
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "compression.type": compression,
            "partitioner": partitioner,
            # A delivery that cannot succeed fails within the timeout, with its reason, instead of
            # leaving flush() to give up on it silently.
            "message.timeout.ms": int(timeout_s * 1000),
            **(config or {}),
        }
    )
    records = list(records)
    placed: list[tuple[int, int] | None] = [None] * len(records)
    failures: list[tuple[int, str]] = []

    def report(index: int) -> Any:
        def delivered(error: KafkaError | None, message: Message) -> None:
            if error is not None:
                failures.append((index, str(error)))
            else:
                placed[index] = (message.partition(), message.offset())

        return delivered

    for index, (key, value) in enumerate(records):
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=report(index))
                break
            except BufferError:  # librdkafka's local queue is full: serve delivery reports, try again
                producer.poll(0.1)
        producer.poll(0)
    producer.flush(timeout_s)
    failed = {index for index, _ in failures}
    failures += [(index, f"not acknowledged within {timeout_s:g}s") for index, where in enumerate(placed)
                 if where is None and index not in failed]  # fmt: skip
    if failures:
        raise DeliveryFailed(topic, sorted(failures))
    return [where for where in placed if where is not None]


def interaction_record(event: Mapping[str, Any]) -> Record:
    """An interaction (stream/worker/contract.py ``Interaction``) keyed by its user id, as a producer sends it."""
    return str(event["user_id"]).encode("utf-8"), orjson.dumps(event)


def catalogue_record(item: Mapping[str, Any]) -> Record:
    """A catalogue entry (stream/worker/contract.py ``CatalogueItem``) keyed by its item id."""
    return str(item["item_id"]).encode("utf-8"), orjson.dumps(item)


@dataclass(frozen=True)
class LoggedBatch:
    """One record batch as the broker stored it: its offsets, codec, and records (decompressed)."""

    partition: int
    base_offset: int
    next_offset: int
    codec: Compression
    records: list[tuple[int, bytes | None, bytes | None]]  # (offset, key, value)


def batches_in(segment: bytes, partition: int) -> list[LoggedBatch]:
    """The record batches in one log segment's bytes (the wire format: a segment is batches back to back)."""
    found = []
    memory = MemoryRecords(segment)
    while (batch := memory.next_batch()) is not None:
        if not batch.validate_crc():
            raise ValueError(f"partition {partition}: batch at offset {batch.base_offset} fails its CRC")
        records = [(record.offset, record.key, record.value) for record in batch]
        found.append(LoggedBatch(partition, batch.base_offset, batch.next_offset, CODEC_NAMES[batch.compression_type],
                                 records))  # fmt: skip
    return found


def logged_batches(log_dir: Path, topic: str) -> dict[int, list[LoggedBatch]]:
    """Every record batch of ``topic`` in the broker's log directory (``log.dirs``), by partition, in offset order.

    Reads the segment files (``<topic>-<partition>/*.log``) directly: what a test wants to know
    (was this written compressed, and with which codec) is in each batch's header, which no
    consumer API exposes. The broker writes appends through to the files at once (no fsync needed
    to read them from another process), keeps a producer's batch as it came when the topic's
    ``compression.type`` is ``producer`` (the default), and does not preallocate ``.log`` files.
    Only for the local test broker, and only for segments the log cleaner has not rewritten.
    """
    batches: dict[int, list[LoggedBatch]] = {}
    for partition_dir in log_dir.glob(f"{topic}-*"):
        name, _, number = partition_dir.name.rpartition("-")
        if name != topic or not number.isdigit():
            continue  # another topic whose name starts with this one's
        partition = int(number)
        batches[partition] = [
            batch
            for segment in sorted(partition_dir.glob("*.log"))
            for batch in batches_in(segment.read_bytes(), partition)
        ]
    return batches
