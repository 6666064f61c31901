"""Dead-letter records: the original bytes, untouched, with why and where they came from.

The value of a dead-letter message is exactly the bytes the producer sent, so nothing is lost and
a fixed event can be replayed as it was. The reason and the source coordinates travel as Kafka
headers (the convention of Kafka Connect's ``errors.deadletterqueue.context.headers.enable``), and
the key is the original key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from streamrec.stream.worker.contract import InvalidEvent, Reason

if TYPE_CHECKING:
    from streamrec.stream.kafka.consumer import UnreadableBatch
    from streamrec.stream.kafka.security import KafkaTarget

HEADER_PREFIX = "streamrec.dlq."
MAX_DETAIL_CHARS = 512
# Room left in a dead-letter record for its key and headers (keys are at most a few KiB in practice).
HEADROOM_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class SourcePosition:
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A dead-letter message as read back from the topic."""

    key: bytes | None
    value: bytes
    reason: str
    detail: str
    source: SourcePosition
    failed_at_ms: int
    original_size: int | None = None  # set when ``value`` is a truncated prefix of the original record


def fit_value(value: bytes, max_record_bytes: int) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The value to dead-letter and its extra headers: the original bytes, or a prefix if they cannot fit.

    An input topic may accept records larger than the dead-letter topic does (its own
    ``max.message.bytes``). Such a record is not dropped and does not stop the worker: its dead
    letter carries the first bytes and ``streamrec.dlq.truncated_from`` with the original size.
    """
    limit = max(0, max_record_bytes - HEADROOM_BYTES)
    if len(value) <= limit:
        return value, []
    return value[:limit], [(HEADER_PREFIX + "truncated_from", str(len(value)).encode())]


def headers_for(error: InvalidEvent, source: SourcePosition, failed_at_ms: int) -> list[tuple[str, bytes]]:
    detail = error.detail[:MAX_DETAIL_CHARS]
    return [
        (HEADER_PREFIX + "reason", str(error.reason).encode()),
        (HEADER_PREFIX + "detail", detail.encode("utf-8", "replace")),
        (HEADER_PREFIX + "source.topic", source.topic.encode()),
        (HEADER_PREFIX + "source.partition", str(source.partition).encode()),
        (HEADER_PREFIX + "source.offset", str(source.offset).encode()),
        (HEADER_PREFIX + "failed_at_ms", str(failed_at_ms).encode()),
    ]


def unreadable_batch_letter(marker: UnreadableBatch, failed_at_ms: int) -> tuple[None, bytes, list[tuple[str, bytes]]]:
    """The dead letter standing for a record batch the consumer could not decode (stream/kafka/consumer.py).

    Its bytes cannot be had (the client could not read them), so the letter is a marker: an empty
    value, the reason ``unreadable_batch``, the error, and the source range, first offset in
    ``source.offset`` and the end (exclusive) in ``source.end_offset``; the records are still on
    the source topic for a client that can read them.
    """
    detail = f"offsets {marker.first}..{marker.end - 1} ({marker.end - marker.first}) skipped: {marker.error}"
    error = InvalidEvent(Reason.UNREADABLE_BATCH, detail)
    headers = headers_for(error, SourcePosition(marker.topic, marker.partition, marker.first), failed_at_ms)
    return None, b"", [*headers, (HEADER_PREFIX + "source.end_offset", str(marker.end).encode())]


def from_record(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> DeadLetter:
    """Read a dead-letter record (for tools and tests); raises ``KeyError`` if it is not one."""
    h = {name.removeprefix(HEADER_PREFIX): raw.decode() for name, raw in headers if name.startswith(HEADER_PREFIX)}
    return DeadLetter(
        key=key,
        value=value or b"",
        reason=h["reason"],
        detail=h["detail"],
        source=SourcePosition(h["source.topic"], int(h["source.partition"]), int(h["source.offset"])),
        failed_at_ms=int(h["failed_at_ms"]),
        original_size=int(h["truncated_from"]) if "truncated_from" in h else None,
    )


async def read_dead_letters(target: KafkaTarget, topic: str, last: int | None = None) -> list[DeadLetter]:
    """Every dead letter currently in ``topic`` (or the newest ``last`` per partition), oldest first.

    ``target``: the settings (cluster and credentials) or a PLAINTEXT ``host:port``.
    """
    from streamrec.stream.kafka.admin import read_topic

    records = await read_topic(target, topic, last)
    letters = [from_record(r.key, r.value, list(r.headers)) for r in records]
    return sorted(letters, key=lambda d: d.failed_at_ms)
