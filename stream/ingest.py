"""Turning a micro-batch of raw Kafka records into table updates and dead letters.

:func:`classify` is pure: it sorts a batch into valid events grouped by key, invalid events with
their reason, and misrouted events (valid, but on a partition their key does not hash to; see
below). :class:`Ingestor` is the thin async shell the Faust agents call: it applies the valid
groups to the tables, sends dead letters and forwards, and waits until the broker confirmed every
send before the batch is acknowledged, so an offset is committed only for what was handled.

Why misrouted events exist: Faust tables are partitioned like their source topic, so a user's
state lives in the partition that ``user_id`` hashes to. A producer that keys by something else
(or not at all) would scatter one user's state over several partitions. Such events are re-sent
to the same topic keyed by their id, and processed when they arrive on the right partition.
"""

from __future__ import annotations

import time
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from aiokafka.partitioner import murmur2
from faust.streams import _current_event
from faust.types import EventT

from models.training import Observation
from stream.contract import CatalogueItem, Interaction, InvalidEvent, Limits, parse_catalogue_item, parse_interaction
from stream.dead_letters import SourcePosition, fit_value, headers_for
from stream.user_state import apply_interactions, event_time_order

E = TypeVar("E", Interaction, CatalogueItem)


def partition_for_key(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2, as in the Java client) picks for a key."""
    return (murmur2(key.encode("utf-8")) & 0x7FFFFFFF) % partitions


@dataclass
class Batch(Generic[E]):
    """One micro-batch, sorted. ``valid`` keeps arrival order within each key."""

    valid: dict[str, list[tuple[E, EventT]]] = field(default_factory=dict)
    invalid: list[tuple[EventT, InvalidEvent]] = field(default_factory=list)
    misrouted: list[tuple[str, EventT]] = field(default_factory=list)

    @property
    def valid_count(self) -> int:
        return sum(len(group) for group in self.valid.values())


def classify(
    events: Sequence[EventT],
    parse: Callable[[bytes], E],
    key_of: Callable[[E], str],
    partitions: int,
) -> Batch[E]:
    batch: Batch[E] = Batch()
    home: dict[str, int] = {}  # key -> its partition; murmur2 once per key, not per event
    for event in events:
        try:
            parsed = parse(event.value or b"")  # raw serializer: bytes, or None for a tombstone
        except InvalidEvent as error:
            batch.invalid.append((event, error))
            continue
        key = key_of(parsed)
        if key not in home:
            home[key] = partition_for_key(key, partitions)
        if home[key] != event.message.partition:
            batch.misrouted.append((key, event))
            continue
        batch.valid.setdefault(key, []).append((parsed, event))
    return batch


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

    def observation(self) -> Observation:
        """What the trainer and the augmentation see of it."""
        return Observation(self.interaction, self.history, self.seen, self.late)


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
    redelivered: int = 0  # re-read after a restart, already in the user state: not applied again
    duplicates: int = 0  # an event_id applied before, sent again: neither applied nor trained on
    refetched_handled: int = 0  # a bad or misrouted record read again by this process: not sent again
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
            "redelivered": self.redelivered,
            "duplicates": self.duplicates,
            "refetched_handled": self.refetched_handled,
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
        self.stats = stats
        # Per partition, the offset after the batches this process finished: their dead letters and
        # forwards are confirmed, so a record below it, fetched again (around a seek, or by the
        # learner's rewind), is not sent again. Across a crash they are at-least-once (docs/delivery.md).
        self._handled: dict[tuple[str, int], int] = {}

    async def interactions(self, events: Sequence[EventT]) -> list[TrainingEvent]:
        """Apply a batch to the user state; return its valid events, in event-time order, for training.

        Each user's events are applied in event-time order (:func:`~stream.user_state.event_time_order`),
        whatever order the consumer fetched the topics in. Redelivered events (already in the
        state) are returned too, with their rebuilt context: whether the model still needs them is
        the learner's call. Duplicates (an event_id sent again) are not: the model saw the original.
        """
        now_ms = int(time.time() * 1000)
        batch = classify(
            events,
            lambda raw: parse_interaction(raw, self.limits, now_ms),
            lambda e: e.user_id,
            self.partitions,
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
                )
                self.user_state[user_id] = state
            for (interaction, event), context, message in zip(group, contexts, messages, strict=True):
                if context.duplicate:
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
                            message.offset, int(message.timestamp * 1000), context.late,
                        ),
                    )
                )  # fmt: skip
        await self._finish(events, batch)
        ordered.sort(key=lambda entry: entry[:2])
        return [training_event for _, _, training_event in ordered]

    async def catalogue_items(self, events: Sequence[EventT]) -> list[CatalogueItem]:
        """Apply a batch to the catalogue table; return the latest entry of each item (for augmentation)."""
        batch = classify(
            events, lambda raw: parse_catalogue_item(raw, self.limits), lambda e: e.item_id, self.partitions
        )
        latest = []
        for item_id, group in batch.valid.items():
            item, event = group[-1]  # the latest entry replaces earlier ones
            with writing_for(event):
                self.catalogue[item_id] = item.model_dump(mode="json", exclude_none=True)
            latest.append(item)
        self.stats.applied_catalogue += batch.valid_count
        await self._finish(events, batch)
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

    async def _finish(self, events: Sequence[EventT], batch: Batch[Any]) -> None:
        """Dead letters and forwards, each confirmed by the broker; then count the batch as handled."""
        pending = []
        now_ms = int(time.time() * 1000)
        sent: set[tuple[str, int, int]] = set()
        invalid = [(event, error) for event, error in batch.invalid if self._first_time(event, sent)]
        misrouted = [(key, event) for key, event in batch.misrouted if self._first_time(event, sent)]
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
            send = self.forward(event.message.topic)
            pending.append(await send(key=key.encode("utf-8"), value=event.message.value, headers=event.headers))
        self.stats.forwarded_misrouted += len(misrouted)
        for fut in pending:
            await fut  # delivered to the broker: only now may the batch be acknowledged
        for tp, offsets in offset_ranges(events).items():
            self._handled[tp] = max(self._handled.get(tp, 0), offsets.stop)
        self.stats.consumed.update(event.message.topic for event in events)
        self.stats.batches += 1
        self.stats.last_batch_at = time.time()
        if self.stats.first_batch_at is None:
            self.stats.first_batch_at = self.stats.last_batch_at
