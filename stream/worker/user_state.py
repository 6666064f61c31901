"""Per-user state kept in the ``user_state`` Faust table, and what each event knew about its user.

The state is a plain JSON-able dict (it is written to a changelog topic and read back on recovery),
updated by a pure function so that ordering, trimming, counting and redelivery are tested without
Kafka.

Shape::

    {
      "events": 12, "clicks": 9, "purchases": 3,
      "first_ts": 874724710000, "last_ts": 874965758000,
      "recent": [[ts_ms, item_id, type], ...],  # oldest first, at most history_length entries
      "seen": ["i1", "i7", ...],                # distinct items, most recently used last (capped)
      "applied": {"streamrec.clicks": 1041},    # offset of the last event applied, per source topic
      "ids": ["3q2+7w...", ...],                # digests of the newest event_ids applied (the dedupe window)
      "forwarded": {"streamrec.clicks:2": 880}, # highest source offset applied through a forwarded copy
      "skipped": {"streamrec.clicks": [[1050, 1062]]},  # runs of this user's offsets not applied (copies)
    }

Why ``applied``: Kafka delivers at least once. After a crash the worker re-reads events from the
last committed offset, but their effect on this state may already be in the changelog. A user's
events on one topic all live in one partition and arrive in offset order, so "offset at or below
the last applied one" means "already in this state"; such a redelivered event is not applied
again, and its :class:`Context` is rebuilt from the state (it is still trained on if the model
has not seen it, see :mod:`streamrec.stream.worker.learner`).

Why ``ids``: offsets catch a record read twice, not an event *sent* twice. A producer that retries
after a timeout, or a replay started twice, puts the same event on the topic a second time, at a
new offset. Each state keeps short digests of its user's newest ``dedupe_window`` event ids; an
event whose id is among them is a duplicate: it is neither applied nor trained on, only counted.
The window is per user because a user's events all live in one partition, so the check needs no
coordination between workers. It reaches back ``dedupe_window`` of the user's events, no further.

Why ``forwarded``: a record that arrives on another partition than its user's home (see
:func:`partition_for_key`) is forwarded by the worker: a copy is written to the home partition,
carrying the record's own position (topic, partition, offset) in headers (:mod:`streamrec.stream.worker.ingest`).
After a crash the worker reads the source partition again from its last commit (or further back,
to the model's checkpoint) and forwards those records *again*: a second copy of each, at new
offsets, behind everything the home partition received meanwhile. For a heavy user that is
thousands of its events later, far outside the id window: 7,560 of 151,572 events were applied
and trained twice that way. So each state keeps, per source partition, the highest source offset
it applied through a copy; a copy whose source offset is at or below it is *forwarded again*:
neither applied nor trained. This holds at any distance, because it compares positions, not
recent ids, and it is exact because the copies of one source partition reach a home partition
in source order with nothing missing before the last one: a source partition is read in offset
order by one worker at a time; that worker forwards each batch's records in order and waits for
the broker to acknowledge every copy before the batch counts as handled (so before its offsets
are committed); the producer keeps one request in flight per broker and retries a failed batch
before the next one, so copies are neither reordered nor skipped on the home partition. After a
crash, forwarding starts again at or before the first record whose copy was not acknowledged:
every copy whose source offset is at or below the highest applied one is therefore a copy of a
record already applied. One entry per source partition the user's records came from: bounded.

Why ``skipped``: the learner's rewind (:mod:`streamrec.stream.worker.learner`) re-reads a partition from the
model's checkpoint, and the user state then sees every record again as a redelivery (its offset is
at or below ``applied``). A redelivery is handed back for training, because the model may have
lost it in the crash; but a record that was *not* applied the first time (a copy forwarded again,
a duplicate id) must not be trained on when it is read again either. So the state remembers where
those records were: runs of this user's offsets on each topic with nothing applied in between
(a crash's re-forwarded copies make one run per user), the newest :data:`SKIPPED_RUNS_KEPT` runs.
A rewind reaches back one checkpoint interval, so only a user with more runs than that within one
interval could have an old one trained again.

Why ``late``: Kafka orders a user's events within one partition of one topic, not across the
clicks and purchases topics. A consumer that reads one topic ahead of the other applies some of a
user's *future* events before older ones. Scoring such an event would let the model (and the
seen-item exclusions) use what happened after it, so evaluation leaves late events out (they are
still applied and trained on). An event is late if the state holds an event with a later
timestamp, or the same item at the same timestamp (a purchase's click read after the purchase).
In real time this is rare; in a replay compressed a hundred thousand times, a second of skew
between topics is days of event time.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from aiokafka.partitioner import murmur2

from streamrec.stream.worker.contract import Interaction

RecentEntry = list[Any]  # [ts_ms: int, item_id: str, type: str]
Source = tuple[str, int, int]  # the topic, partition and offset a forwarded copy was made from
SKIPPED_RUNS_KEPT = 16  # runs of not-applied offsets remembered per user and topic (see "Why skipped")

# --- Where a user's state lives ---------------------------------------------------------------
Partitioner = Literal["murmur2", "crc32"]  # as STREAMREC_PARTITIONER spells them (stream/settings.py)
OTHER_PARTITIONER: dict[str, Partitioner] = {"murmur2": "crc32", "crc32": "murmur2"}


def partition_for_key(key: str | bytes, partitions: int, partitioner: Partitioner = "murmur2") -> int:
    """The partition a keyed record belongs on: what a producer using ``partitioner`` picks for ``key``.

    Faust tables are partitioned like their source topics, so this is also where the key's state
    lives. ``murmur2``: the Java client's default partitioner (and aiokafka's, Faust's, and
    librdkafka's ``murmur2_random``): murmur2 of the key bytes, sign bit cleared, modulo the
    partition count. ``crc32``: librdkafka's default ``consistent_random`` (kcat,
    confluent-kafka-python, the Go and .NET clients) and its ``consistent``: the CRC-32 (zlib's) of
    the key bytes modulo the count (``rd_crc32(key, keylen) % partition_cnt`` in librdkafka's
    ``rd_kafka_msg_partitioner_consistent``). ``consistent_random`` sends an empty or null key to a
    random partition, as every client does with a null key, so no function can say where such a
    record lands; for an empty key this returns what ``consistent`` picks (CRC-32 of nothing is 0:
    partition 0). Ids in the event contract are never empty, so every valid event has a home.

    The one function for every place that needs a key's home: :func:`streamrec.stream.worker.ingest.classify`, the
    forwarding of misrouted records (sent to it explicitly), the replay producer and the HTTP
    routing (:func:`streamrec.stream.worker.api.owner_route`).
    """
    raw = key.encode("utf-8") if isinstance(key, str) else key
    if partitioner == "crc32":
        return zlib.crc32(raw) % partitions
    return (murmur2(raw) & 0x7FFFFFFF) % partitions


class UserState(TypedDict):
    events: int
    clicks: int
    purchases: int
    first_ts: int
    last_ts: int
    recent: list[RecentEntry]
    seen: list[str]
    applied: dict[str, int]
    ids: list[str]
    forwarded: dict[str, int]  # "topic:partition" of a source partition -> highest source offset applied from it
    skipped: dict[str, list[list[int]]]  # topic -> runs [first, last] of offsets whose records were not applied


@dataclass(frozen=True, slots=True)
class Context:
    """What was known about the user just before an event: the model's input and the ranking's exclusions."""

    history: tuple[str, ...]  # item ids of the recent entries before the event, oldest first
    seen: frozenset[str]  # items interacted with before this batch; with ``history``, all before the event
    redelivered: bool = False  # the record was read before (at-least-once redelivery): not applied again
    late: bool = False  # the state already held a later event of the user (or this one's twin)
    # Not applied, and not to be trained on: its event is in the state through another record (its
    # event_id was applied before, or it is a forwarded copy made again), or it is such a record read again.
    duplicate: bool = False
    forwarded_again: bool = False  # a duplicate because it is a forwarded copy of a record applied before


def empty_state() -> UserState:
    return UserState(
        events=0, clicks=0, purchases=0, first_ts=0, last_ts=0, recent=[], seen=[], applied={}, ids=[], forwarded={},
        skipped={},
    )  # fmt: skip


def event_id_digest(event_id: str) -> str:
    """64 bits of BLAKE2b, base64: 11 characters per id in the changelog, whatever the id's length."""
    digest = hashlib.blake2b(event_id.encode("utf-8"), digest_size=8).digest()
    return base64.b64encode(digest).decode("ascii").rstrip("=")


def apply_interactions(
    state: UserState | None,
    interactions: Iterable[Interaction],
    history_length: int,
    seen_length: int = 1000,
    positions: Sequence[tuple[str, int]] | None = None,
    dedupe_window: int = 0,
    sources: Sequence[Source | None] | None = None,
) -> tuple[UserState, list[Context]]:
    """Return the state after ``interactions`` and each one's :class:`Context`; the input is not modified.

    ``recent`` stays ordered by event time even when events arrive late, and keeps the newest
    ``history_length`` entries, because later stages build sequences from it. A late event's
    history is what came before it in event time. ``positions`` gives each event's source
    ``(topic, offset)``; events at or below the state's ``applied`` offset (as it was before the
    batch), and positions met earlier in the same batch, are redeliveries. ``sources`` gives, for
    each event that came as a forwarded copy, the position of the record it was copied from (else
    ``None``). Which events are applied is decided in offset order, whatever order they are
    applied in, so the events of a batch may be applied in any order.
    """
    events = list(interactions)
    new: UserState = empty_state() if state is None else _copy(state)
    verdicts, ids = _verdicts(new, events, positions, sources, dedupe_window)
    recent = new["recent"]
    seen = dict.fromkeys(new["seen"])  # insertion-ordered set: O(1) moves to the end
    seen_before = frozenset(seen)  # shared by the batch's contexts; their histories add the rest
    contexts: list[Context] = []
    for event, verdict in zip(events, verdicts, strict=True):
        entry = [event.ts, event.item_id, event.type]
        if verdict != _APPLY:
            contexts.append(
                Context(
                    _history_of_applied(recent, entry),
                    seen_before,
                    redelivered=verdict in (_REDELIVERED, _REREAD_SKIPPED),
                    duplicate=verdict != _REDELIVERED,
                    forwarded_again=verdict == _FORWARDED_AGAIN,
                )
            )
            continue
        in_order = not recent or recent[-1][0] <= event.ts
        at = len(recent) if in_order else bisect.bisect_right(recent, event.ts, key=_ts)
        late = not in_order or _has_twin(recent, at, event.ts, event.item_id)
        contexts.append(Context(tuple(e[1] for e in recent[:at]), seen_before, late=late))
        recent.insert(at, entry)
        if len(recent) > history_length:
            del recent[: len(recent) - history_length]
        seen.pop(event.item_id, None)
        seen[event.item_id] = None
        new["events"] += 1
        new["clicks" if event.type == "click" else "purchases"] += 1
        new["first_ts"] = event.ts if new["first_ts"] == 0 else min(new["first_ts"], event.ts)
        new["last_ts"] = max(new["last_ts"], event.ts)
    new["seen"] = list(seen)[-seen_length:]
    new["ids"] = list(ids)[-dedupe_window:] if dedupe_window else []
    return new, contexts


# What becomes of each event of a batch (see _verdicts).
_APPLY = "apply"
_REDELIVERED = "redelivered"  # read before and applied then: not applied again, still handed to the learner
_REREAD_SKIPPED = "reread_skipped"  # read before and not applied then (a duplicate): neither
_FORWARDED_AGAIN = "forwarded_again"  # a copy of a source record applied through an earlier copy
_DUPLICATE = "duplicate"  # an event_id in the dedupe window


def _verdicts(
    new: UserState,
    events: Sequence[Interaction],
    positions: Sequence[tuple[str, int]] | None,
    sources: Sequence[Source | None] | None,
    dedupe_window: int,
) -> tuple[list[str], dict[str, None]]:
    """Decide, in offset order, which events are applied; update ``new``'s offsets, sources, runs and ids.

    Offset order, because "the first copy" is the one at the lower offset: the batch is applied
    in event-time order, which can put a record's later copy first. Returns the verdicts, in the
    order of ``events``, and the dedupe window's ids (insertion-ordered, oldest first).
    """
    applied, forwarded, skipped = new["applied"], new["forwarded"], new["skipped"]
    applied_before = dict(applied)  # redelivery is relative to the state before the batch ...
    forwarded_before = dict(forwarded)
    handled: dict[tuple[str, int], bool] = {}  # ... or to the batch itself: position -> applied when first met
    sources_met: set[tuple[str, int]] = set()  # ("topic:partition", offset) of the copies met in this batch
    ids = dict.fromkeys(new["ids"]) if dedupe_window else {}  # insertion-ordered: oldest id first
    verdicts = [_APPLY] * len(events)
    order = sorted(range(len(events)), key=positions.__getitem__) if positions is not None else range(len(events))
    for index in order:
        topic, offset, previous = "", 0, -1
        if positions is not None:
            topic, offset = positions[index]
            if (topic, offset) in handled:  # a record fetched twice in one batch (around a seek)
                verdicts[index] = _REDELIVERED if handled[(topic, offset)] else _REREAD_SKIPPED
                continue
            if offset <= applied_before.get(topic, -1):
                reread_skipped = _in_runs(skipped.get(topic, ()), offset)
                verdicts[index] = _REREAD_SKIPPED if reread_skipped else _REDELIVERED
                handled[(topic, offset)] = not reread_skipped
                continue
            previous = applied.get(topic, -1)  # the user's last record on this topic before this one
            applied[topic] = max(offset, previous)
        verdict = _APPLY
        source = sources[index] if sources is not None else None
        if source is not None:
            partition_key, source_offset = f"{source[0]}:{source[1]}", source[2]
            if (
                source_offset <= forwarded_before.get(partition_key, -1)
                or (partition_key, source_offset) in sources_met
            ):
                verdict = _FORWARDED_AGAIN
            else:
                forwarded[partition_key] = max(source_offset, forwarded.get(partition_key, -1))
                sources_met.add((partition_key, source_offset))
        if verdict == _APPLY and dedupe_window:
            digest = event_id_digest(events[index].event_id)
            if digest in ids:
                verdict = _DUPLICATE
            else:
                ids[digest] = None
        if positions is not None:
            handled[(topic, offset)] = verdict == _APPLY
            if verdict != _APPLY:
                _note_skipped(skipped.setdefault(topic, []), offset, previous)
        verdicts[index] = verdict
    return verdicts, ids


def _note_skipped(runs: list[list[int]], offset: int, previous: int) -> None:
    """Add ``offset`` to the runs of not-applied offsets: extend the last run if the user's previous record ended it."""
    if runs and runs[-1][1] == previous:
        runs[-1][1] = offset
    else:
        runs.append([offset, offset])
        del runs[:-SKIPPED_RUNS_KEPT]


def _in_runs(runs: Iterable[list[int]], offset: int) -> bool:
    return any(first <= offset <= last for first, last in runs)


# On equal timestamps a click comes before a purchase: a purchase's own click precedes it.
_TYPE_ORDER = {"click": 0, "purchase": 1}


def event_time_order(interactions: Sequence[Interaction]) -> list[int]:
    """Indices of ``interactions`` in event-time order (stable; clicks before purchases at equal times).

    A micro-batch mixes the clicks and purchases topics in whatever order the consumer fetched
    them, typically a run of one partition then a run of another. Applying a user's events in
    event-time order within the batch keeps those runs from making one another late; only skew
    across batches remains.
    """
    return sorted(
        range(len(interactions)), key=lambda k: (interactions[k].ts, _TYPE_ORDER.get(interactions[k].type, 2))
    )


def history_items(state: UserState | None) -> tuple[str, ...]:
    """The user's recent item ids, oldest first: the user tower's input when serving."""
    return () if state is None else tuple(entry[1] for entry in state["recent"])


def seen_items(state: UserState | None) -> set[str]:
    """Everything the user interacted with (as far as the capped ``seen`` list reaches)."""
    if state is None:
        return set()
    return set(state.get("seen", ())) | {entry[1] for entry in state["recent"]}


def _copy(state: UserState) -> UserState:
    return {  # type: ignore[return-value]
        **state,
        "recent": list(state["recent"]),
        "seen": list(state.get("seen", ())),
        "applied": dict(state.get("applied", {})),
        "ids": list(state.get("ids", ())),  # states written before the dedupe window have none
        "forwarded": dict(state.get("forwarded", {})),  # nor these, before idempotent forwarding
        "skipped": {topic: [list(run) for run in runs] for topic, runs in state.get("skipped", {}).items()},
    }


def _ts(entry: RecentEntry) -> int:
    return entry[0]


def _has_twin(recent: list[RecentEntry], at: int, ts: int, item_id: str) -> bool:
    """Whether an entry at ``ts`` for ``item_id`` sits just before position ``at`` (same-time entries)."""
    for entry in reversed(recent[:at]):
        if entry[0] != ts:
            return False
        if entry[1] == item_id:
            return True
    return False


def _history_of_applied(recent: list[RecentEntry], entry: RecentEntry) -> tuple[str, ...]:
    """History of an event already in ``recent``: the entries before it (before its time if trimmed)."""
    try:
        at = recent.index(entry)
    except ValueError:
        at = bisect.bisect_left(recent, entry[0], key=_ts)
    return tuple(e[1] for e in recent[:at])
