"""Turning a micro-batch of raw Kafka records into table updates and dead letters.

:func:`classify` is pure: it sorts a batch into valid events grouped by key, invalid events with
their reason, and misrouted events (valid, but on a partition their key does not hash to; see
below). :class:`Ingestor` is the thin async shell the Faust agents call: it applies the valid
groups to the tables, sends dead letters and forwards, and waits until the broker confirmed every
send before the batch is acknowledged, so an offset is committed only for what was handled.

Why misrouted events exist: Faust tables are partitioned like their source topic, so a user's
state lives in the partition that ``user_id`` hashes to (:func:`partition_for_key`, with the
partitioner ``STREAMREC_PARTITIONER`` names). A producer that keys by something else, not at all,
or with the other partitioner would scatter one user's state over several partitions. Such events
are forwarded: re-sent to the same topic keyed by their id, explicitly to its home partition, with
their own position in headers (:func:`forward_headers`), and processed when they arrive there.
The user state applies each source record once however often it is forwarded: after a crash a
record may be forwarded again (see "Why forwarded" in :mod:`streamrec.stream.worker.user_state`).

Which partitioner the producers use is counted (:class:`Placement`): when most misrouted records
sit where the *other* partitioner puts their key, the worker logs a warning with the figures,
once per :data:`PLACEMENT_WARNING_INTERVAL_S`, because every one of them crosses the broker twice.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from faust.streams import _current_event
from faust.types import EventT

from streamrec.models.learner import Observation
from streamrec.stream.kafka.consumer import UnreadableBatch
from streamrec.stream.worker.contract import (
    CatalogueItem,
    Interaction,
    InvalidEvent,
    Limits,
    Reason,
    parse_catalogue_item,
    parse_interaction,
)
from streamrec.stream.worker.dead_letters import SourcePosition, fit_value, headers_for, unreadable_batch_letter
from streamrec.stream.worker.user_state import (
    OTHER_PARTITIONER,
    Partitioner,
    Source,
    apply_interactions,
    event_time_order,
    partition_for_key,
)

log = logging.getLogger(__name__)
E = TypeVar("E", Interaction, CatalogueItem)

# A forwarded copy carries the position of the record it was made from: its identity for the user state.
FORWARDED_FROM_TOPIC = "streamrec.forwarded.source.topic"
FORWARDED_FROM_PARTITION = "streamrec.forwarded.source.partition"
FORWARDED_FROM_OFFSET = "streamrec.forwarded.source.offset"
PLACEMENT_WARNING_INTERVAL_S = 60.0


def header_items(headers: Mapping[str, bytes] | Iterable[tuple[str, bytes]] | None) -> list[tuple[str, bytes]]:
    """A record's headers as ``(name, value)`` pairs (Faust's events hold a dict, a Kafka record a list)."""
    if not headers:
        return []
    if isinstance(headers, Mapping):
        return list(headers.items())
    return list(headers)


def forwarded_from(headers: Mapping[str, bytes] | Iterable[tuple[str, bytes]] | None) -> Source | None:
    """The source position a forwarded copy carries, or ``None`` for a record as its producer sent it.

    Headers that do not parse (not ours, or damaged) count as none: the record is then an
    ordinary one, deduplicated by its offset and event id only.
    """
    found = {
        name: value
        for name, value in header_items(headers)
        if name in (FORWARDED_FROM_TOPIC, FORWARDED_FROM_PARTITION, FORWARDED_FROM_OFFSET)
    }
    if len(found) != 3:
        return None
    try:
        topic = bytes(found[FORWARDED_FROM_TOPIC]).decode("utf-8")
        return topic, int(found[FORWARDED_FROM_PARTITION]), int(found[FORWARDED_FROM_OFFSET])
    except (TypeError, ValueError):
        return None


def forward_headers(event: EventT) -> list[tuple[str, bytes]]:
    """The headers a misrouted record is forwarded with: its own, plus its position (once).

    A copy that has to be forwarded again (the topic's partition count changed in between) keeps
    the position of the record it was first made from: that position, not the copy's, identifies
    the event for the user state.
    """
    headers = header_items(event.headers)
    if forwarded_from(headers) is not None:
        return headers
    message = event.message
    return [
        *headers,
        (FORWARDED_FROM_TOPIC, message.topic.encode("utf-8")),
        (FORWARDED_FROM_PARTITION, str(message.partition).encode()),
        (FORWARDED_FROM_OFFSET, str(message.offset).encode()),
    ]


@dataclass
class Batch(Generic[E]):
    """One micro-batch, sorted. ``valid`` keeps arrival order within each key."""

    valid: dict[str, list[tuple[E, EventT]]] = field(default_factory=dict)
    invalid: list[tuple[EventT, InvalidEvent]] = field(default_factory=list)
    misrouted: list[tuple[str, EventT]] = field(default_factory=list)
    # Valid records with a key, as their producer placed them (forwarded copies are ours): see Placement.
    placement: Counter[str] = field(default_factory=Counter)
    # id(event) -> the position a forwarded copy was made from (read from its headers once, here).
    sources: dict[int, Source] = field(default_factory=dict)

    @property
    def valid_count(self) -> int:
        return sum(len(group) for group in self.valid.values())


class Placement:
    """Where producers put valid keyed records: the partitions each partitioner maps their key to.

    ``configured``: on the partition ``STREAMREC_PARTITIONER``'s partitioner maps the record's id
    to (its home, whatever the other one says); ``other``: not there, but where the other
    partitioner maps it; ``neither``: somewhere else (keyed by something other than the id, or
    by a custom partitioner). Only records that carry a key count: a null key means the producer
    picked a partition at random.
    """

    CONFIGURED, OTHER, NEITHER = "configured", "other", "neither"


def classify(
    events: Sequence[EventT],
    parse: Callable[[bytes], E],
    key_of: Callable[[E], str],
    partitions: int,
    partitioner: Partitioner = "murmur2",
) -> Batch[E]:
    """Sort a batch: valid events on their home partition by key, invalid ones, misrouted ones; count placement."""
    batch: Batch[E] = Batch()
    other = OTHER_PARTITIONER[partitioner]
    home: dict[str, int] = {}  # key -> its partition: hashed once per key, not per event
    elsewhere: dict[str, int] = {}  # key -> where the other partitioner puts it (only asked for misrouted keys)
    for event in events:
        try:
            parsed = parse(event.value or b"")  # raw serializer: bytes, or None for a tombstone
        except InvalidEvent as error:
            batch.invalid.append((event, error))
            continue
        key = key_of(parsed)
        if key not in home:
            home[key] = partition_for_key(key, partitions, partitioner)
        arrived = event.message.partition
        source = forwarded_from(event.headers) if event.headers else None
        if source is not None:
            batch.sources[id(event)] = source
        keyed = bool(event.message.key) and source is None
        if home[key] == arrived:
            if keyed:
                batch.placement[Placement.CONFIGURED] += 1
            batch.valid.setdefault(key, []).append((parsed, event))
            continue
        if keyed:
            if key not in elsewhere:
                elsewhere[key] = partition_for_key(key, partitions, other)
            batch.placement[Placement.OTHER if elsewhere[key] == arrived else Placement.NEITHER] += 1
        batch.misrouted.append((key, event))
    return batch


def placement_warning(partitioner: Partitioner, placement: Mapping[str, int], seconds: float) -> str | None:
    """The warning for a window of placement figures; ``None`` unless most misrouted records fit the other partitioner.

    Each misrouted record is read, forwarded and read again: twice the broker traffic and a
    delay. Records placed by the other partitioner are a setting away from none at all.
    """
    configured, other, neither = (
        placement.get(k, 0) for k in (Placement.CONFIGURED, Placement.OTHER, Placement.NEITHER)
    )
    if other == 0 or other <= neither:
        return None
    theirs = OTHER_PARTITIONER[partitioner]
    producers = (
        "make the producers use the murmur2 partitioner (librdkafka: partitioner=murmur2_random, "
        "kcat -X topic.partitioner=murmur2_random)"
        if partitioner == "murmur2"
        else "make the producers use librdkafka's default partitioner (consistent_random, CRC32)"
    )
    return (
        f"{other} of {configured + other + neither} keyed records in the last {seconds:.0f} s arrived on the partition "
        f"{theirs} maps their key to, not on the {partitioner} one (STREAMREC_PARTITIONER={partitioner}); "
        f"{configured} arrived on their {partitioner} partition and {neither} on neither. Every misrouted record is "
        f"forwarded to its {partitioner} partition, crossing the broker twice. Fix: set "
        f"STREAMREC_PARTITIONER={theirs}, or {producers}."
    )


@contextmanager
def writing_for(event: EventT):
    """Make table writes inside the block belong to ``event``'s partition.

    Faust routes a table write (its changelog partition and RocksDB shard) by the stream's
    *current event*, a context variable that in a micro-batch points at whichever event came
    last. Each coalesced write is therefore made in the context of an event of its own key.
    """
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


@dataclass(frozen=True, slots=True)
class TrainingEvent:
    """A valid interaction as the learner receives it: the event, its user context and its source."""

    interaction: Interaction
    history: tuple[str, ...]
    seen: frozenset[str]
    topic: str
    partition: int
    offset: int
    timestamp_ms: int  # the Kafka record's timestamp: when the event entered the system
    late: bool = False  # read after a later event of its user: trained on, not scored (see user_state)
    reread: bool = False  # read again after a restart, already in the user state: trained on if need be, not scored

    def observation(self) -> Observation:
        """What the trainer and the augmentation see of it."""
        return Observation(self.interaction, self.history, self.seen, self.late, self.reread)


def offset_ranges(events: Sequence[EventT]) -> dict[tuple[str, int], range]:
    """The offsets each partition's records in ``events`` span, first to last: what the batch covers."""
    first: dict[tuple[str, int], int] = {}
    last: dict[tuple[str, int], int] = {}
    for event in events:
        message = event.message
        tp = (message.topic, message.partition)
        first[tp] = min(first.get(tp, message.offset), message.offset)
        last[tp] = max(last.get(tp, message.offset), message.offset)
    return {tp: range(first[tp], last[tp] + 1) for tp in first}


@dataclass
class IngestStats:
    """Counters since this process started; served on ``/stats``."""

    started_at: float = field(default_factory=time.time)
    consumed: Counter[str] = field(default_factory=Counter)
    applied_interactions: int = 0
    applied_by_type: Counter[str] = field(default_factory=Counter)  # click / purchase
    applied_catalogue: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    forwarded_misrouted: int = 0
    # A forwarded copy of a record whose earlier copy was applied (forwarded again after a crash): dropped.
    forwarded_again: int = 0
    redelivered: int = 0  # re-read after a restart, already in the user state: not applied again
    duplicates: int = 0  # an event_id applied before, sent again: neither applied nor trained on
    partitioner: str = "murmur2"  # STREAMREC_PARTITIONER: what "misrouted" is measured against
    placement: Counter[str] = field(default_factory=Counter)  # valid keyed records: see ingest.Placement
    refetched_handled: int = 0  # a bad or misrouted record read again by this process: not sent again
    event_time: Any = None  # stream/worker/event_time.EventTimeBuffer, when the partitions are read in step
    batches: int = 0
    first_batch_at: float | None = None
    last_batch_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "started_at": self.started_at,
            "uptime_s": round(time.time() - self.started_at, 3),
            "consumed": dict(self.consumed),
            "consumed_total": sum(self.consumed.values()),
            "applied_interactions": self.applied_interactions,
            "applied_by_type": dict(self.applied_by_type),
            "applied_catalogue": self.applied_catalogue,
            "dead_letters": dict(self.dead_letters),
            "dead_letters_total": sum(self.dead_letters.values()),
            "forwarded_misrouted": self.forwarded_misrouted,
            "forwarded_again": self.forwarded_again,
            "redelivered": self.redelivered,
            "duplicates": self.duplicates,
            "refetched_handled": self.refetched_handled,
            "partitioner": self.partitioner,
            "placement": {
                k: self.placement.get(k, 0) for k in (Placement.CONFIGURED, Placement.OTHER, Placement.NEITHER)
            },
            "event_time": {} if self.event_time is None else self.event_time.as_dict(),
            "batches": self.batches,
            "first_batch_at": self.first_batch_at,
            "last_batch_at": self.last_batch_at,
        }


Send = Callable[..., Awaitable[Any]]


class Ingestor:
    """Applies micro-batches to the user-state and catalogue tables; see the module docstring."""

    def __init__(
        self,
        *,
        user_state: Any,
        catalogue: Any,
        send_dead_letter: Send,
        forward: Callable[[str], Send],
        limits: Limits,
        partitions: int,
        history_length: int,
        stats: IngestStats,
        seen_length: int = 1000,
        dedupe_window: int = 0,
        max_dead_letter_bytes: int = 2 * 1024 * 1024,
        partitioner: Partitioner = "murmur2",
        placement_warning_interval_s: float = PLACEMENT_WARNING_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.user_state = user_state
        self.catalogue = catalogue
        self.send_dead_letter = send_dead_letter
        self.forward = forward
        self.limits = limits
        self.partitions = partitions
        self.history_length = history_length
        self.seen_length = seen_length
        self.dedupe_window = dedupe_window
        self.max_dead_letter_bytes = max_dead_letter_bytes
        self.partitioner = partitioner
        self.stats = stats
        stats.partitioner = partitioner
        # Placement figures since the last look: every batch is looked at until a warning, then none for an
        # interval (one warning per interval, not one per batch), then the figures of the whole interval.
        self.placement_warning_interval_s = placement_warning_interval_s
        self._clock = clock
        self._placement_window: Counter[str] = Counter()
        self._window_started = clock()
        self._quiet_until = self._window_started
        # Per partition, the offset after the batches this process finished: their dead letters and
        # forwards are confirmed, so a record below it, fetched again (around a seek, or by the
        # learner's rewind), is not sent again. Across a crash they are at-least-once (docs/delivery.md).
        self._handled: dict[tuple[str, int], int] = {}

    async def interactions(
        self, events: Sequence[EventT], unreadable: Sequence[UnreadableBatch] = ()
    ) -> list[TrainingEvent]:
        """Apply a batch to the user state; return its valid events, in event-time order, for training.

        Each user's events are applied in event-time order (:func:`.user_state.event_time_order`),
        whatever order the consumer fetched the topics in. Redelivered events (already in the
        state) are returned too, with their rebuilt context: whether the model still needs them is
        the learner's call (it trains an event at an offset its checkpoint had not reached). Duplicates
        are not returned: an event_id sent again, a forwarded copy of a record applied through an
        earlier copy (forwarded again after a crash, at a new offset the learner has never seen, so it
        would train it twice), and such a record read again. The model saw each one's original.
        """
        now_ms = int(time.time() * 1000)
        batch = classify(
            events,
            lambda raw: parse_interaction(raw, self.limits, now_ms),
            lambda e: e.user_id,
            self.partitions,
            self.partitioner,
        )
        arrival = {id(event): index for index, event in enumerate(events)}
        ordered: list[tuple[int, int, TrainingEvent]] = []
        for user_id, arrived in batch.valid.items():
            group = [arrived[k] for k in event_time_order([interaction for interaction, _ in arrived])]
            messages = [event.message for _, event in group]
            with writing_for(group[-1][1]):
                state, contexts = apply_interactions(
                    self.user_state.get(user_id),
                    [interaction for interaction, _ in group],
                    self.history_length,
                    self.seen_length,
                    [(m.topic, m.offset) for m in messages],
                    self.dedupe_window,
                    [batch.sources.get(id(event)) for _, event in group],
                )
                self.user_state[user_id] = state
            for (interaction, event), context, message in zip(group, contexts, messages, strict=True):
                if context.duplicate:
                    if context.redelivered:
                        self.stats.redelivered += 1  # read again; not applied, nor trained on, the first time
                    elif context.forwarded_again:
                        self.stats.forwarded_again += 1
                    else:
                        self.stats.duplicates += 1
                    continue
                if context.redelivered:
                    self.stats.redelivered += 1
                else:
                    self.stats.applied_interactions += 1
                    self.stats.applied_by_type[interaction.type] += 1
                ordered.append(
                    (
                        interaction.ts,
                        arrival[id(event)],
                        TrainingEvent(
                            interaction, context.history, context.seen, message.topic, message.partition,
                            message.offset, int(message.timestamp * 1000), context.late, context.redelivered,
                        ),
                    )
                )  # fmt: skip
        await self._finish(events, batch, unreadable)
        ordered.sort(key=lambda entry: entry[:2])
        return [training_event for _, _, training_event in ordered]

    async def catalogue_items(
        self, events: Sequence[EventT], unreadable: Sequence[UnreadableBatch] = ()
    ) -> list[CatalogueItem]:
        """Apply a batch to the catalogue table; return the latest entry of each item (for augmentation)."""
        batch = classify(
            events,
            lambda raw: parse_catalogue_item(raw, self.limits),
            lambda e: e.item_id,
            self.partitions,
            self.partitioner,
        )
        latest = []
        for item_id, group in batch.valid.items():
            item, event = group[-1]  # the latest entry replaces earlier ones
            with writing_for(event):
                self.catalogue[item_id] = item.model_dump(mode="json", exclude_none=True)
            latest.append(item)
        self.stats.applied_catalogue += batch.valid_count
        await self._finish(events, batch, unreadable)
        return latest

    def _first_time(self, event: EventT, sent: set[tuple[str, int, int]]) -> bool:
        """Whether this process has not yet dead-lettered or forwarded ``event`` (``sent``: this batch's)."""
        message = event.message
        position = (message.topic, message.partition, message.offset)
        if message.offset < self._handled.get(position[:2], 0) or position in sent:
            self.stats.refetched_handled += 1
            return False
        sent.add(position)
        return True

    async def _finish(self, events: Sequence[EventT], batch: Batch[Any], unreadable: Sequence[UnreadableBatch]) -> None:
        """Dead letters and forwards, each confirmed by the broker; then count the batch as handled.

        ``unreadable``: record batches the consumer could not decode (stream/kafka/consumer.py), one
        marker dead letter each, read again like any record (a rewind does not send it twice).
        """
        pending = []
        now_ms = int(time.time() * 1000)
        sent: set[tuple[str, int, int]] = set()
        invalid = [(event, error) for event, error in batch.invalid if self._first_time(event, sent)]
        misrouted = [(key, event) for key, event in batch.misrouted if self._first_time(event, sent)]
        for marker in unreadable:
            if marker.first < self._handled.get((marker.topic, marker.partition), 0):
                self.stats.refetched_handled += 1
                continue
            key, value, headers = unreadable_batch_letter(marker, now_ms)
            pending.append(await self.send_dead_letter(key=key, value=value, headers=headers))
            self.stats.dead_letters[str(Reason.UNREADABLE_BATCH)] += 1
        for event, error in invalid:
            message = event.message
            source = SourcePosition(message.topic, message.partition, message.offset)
            # A record with neither key nor value is legal on the wire (the Java client and kcat send
            # one), but aiokafka refuses to produce it and the agent would crash on every restart. Its
            # dead letter carries an empty value instead: "no bytes" either way (DeadLetter.value is b"").
            value = message.value if message.value is not None or message.key is not None else b""
            headers = headers_for(error, source, now_ms)
            if value:
                value, extra = fit_value(value, self.max_dead_letter_bytes)
                headers += extra
            pending.append(await self.send_dead_letter(key=message.key, value=value, headers=headers))
            self.stats.dead_letters[str(error.reason)] += 1
        for key, event in misrouted:
            # Explicitly to the key's home: the producer's own partitioner is murmur2, whatever the setting.
            message = event.message
            send = self.forward(message.topic)
            pending.append(
                await send(
                    key=key.encode("utf-8"),
                    value=message.value,
                    partition=partition_for_key(key, self.partitions, self.partitioner),
                    timestamp=message.timestamp,  # when the event entered the system, not when it was forwarded
                    headers=forward_headers(event),
                )
            )
        self.stats.forwarded_misrouted += len(misrouted)
        for fut in pending:
            await fut  # delivered to the broker: only now may the batch be acknowledged
        for tp, offsets in offset_ranges(events).items():
            self._handled[tp] = max(self._handled.get(tp, 0), offsets.stop)
        for marker in unreadable:
            tp = (marker.topic, marker.partition)
            self._handled[tp] = max(self._handled.get(tp, 0), marker.end)
        self.stats.consumed.update(event.message.topic for event in events)
        self._note_placement(batch.placement)
        self.stats.batches += 1
        self.stats.last_batch_at = time.time()
        if self.stats.first_batch_at is None:
            self.stats.first_batch_at = self.stats.last_batch_at

    def _note_placement(self, placement: Counter[str]) -> None:
        """Count where producers put keyed records; at most once per interval, warn if most fit the other one."""
        self.stats.placement.update(placement)
        self._placement_window.update(placement)
        now = self._clock()
        if now < self._quiet_until or not self._placement_window:
            return
        warning = placement_warning(self.partitioner, self._placement_window, now - self._window_started)
        if warning is not None:
            log.warning("%s", warning)
            self._quiet_until = now + self.placement_warning_interval_s
        self._placement_window.clear()
        self._window_started = now
