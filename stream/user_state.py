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
    }

Why ``applied``: Kafka delivers at least once. After a crash the worker re-reads events from the
last committed offset, but their effect on this state may already be in the changelog. A user's
events on one topic all live in one partition and arrive in offset order, so "offset at or below
the last applied one" means "already in this state"; such a redelivered event is not applied
again, and its :class:`Context` is rebuilt from the state (it is still trained on if the model
has not seen it, see :mod:`stream.learner`).

Why ``ids``: offsets catch a record read twice, not an event *sent* twice. A producer that retries
after a timeout, a replay started twice, or a misrouted event forwarded again after a crash puts the
same event on the topic a second time, at a new offset. Each state keeps short digests of its
user's newest ``dedupe_window`` event ids; an event whose id is among them is a duplicate: it is
neither applied nor trained on, only counted. The window is per user because a user's events all
live in one partition, so the check needs no coordination between workers.

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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

from stream.contract import Interaction

RecentEntry = list[Any]  # [ts_ms: int, item_id: str, type: str]


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


@dataclass(frozen=True, slots=True)
class Context:
    """What was known about the user just before an event: the model's input and the ranking's exclusions."""

    history: tuple[str, ...]  # item ids of the recent entries before the event, oldest first
    seen: frozenset[str]  # items interacted with before this batch; with ``history``, all before the event
    redelivered: bool = False  # the event was already in the state (at-least-once redelivery)
    late: bool = False  # the state already held a later event of the user (or this one's twin)
    duplicate: bool = False  # its event_id was applied before (sent twice): not applied, not trained on


def empty_state() -> UserState:
    return UserState(events=0, clicks=0, purchases=0, first_ts=0, last_ts=0, recent=[], seen=[], applied={}, ids=[])


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
) -> tuple[UserState, list[Context]]:
    """Return the state after ``interactions`` and each one's :class:`Context`; the input is not modified.

    ``recent`` stays ordered by event time even when events arrive late, and keeps the newest
    ``history_length`` entries, because later stages build sequences from it. A late event's
    history is what came before it in event time. ``positions`` gives each event's source
    ``(topic, offset)``; events at or below the state's ``applied`` offset (as it was before the
    batch), and positions met earlier in the same batch, are redeliveries, so the events of a
    batch may be applied in any order.
    """
    new: UserState = empty_state() if state is None else _copy(state)
    recent, applied = new["recent"], new["applied"]
    applied_before = dict(applied)  # redelivery is relative to the state before the batch ...
    in_batch: set[tuple[str, int]] = set()  # ... or to the batch itself (a record fetched twice around a seek)
    seen = dict.fromkeys(new["seen"])  # insertion-ordered set: O(1) moves to the end
    seen_before = frozenset(seen)  # shared by the batch's contexts; their histories add the rest
    ids = dict.fromkeys(new["ids"]) if dedupe_window else {}  # insertion-ordered: oldest id first
    contexts: list[Context] = []
    for index, event in enumerate(interactions):
        entry = [event.ts, event.item_id, event.type]
        if positions is not None:
            topic, offset = positions[index]
            if offset <= applied_before.get(topic, -1) or (topic, offset) in in_batch:
                contexts.append(Context(_history_of_applied(recent, entry), seen_before, redelivered=True))
                continue
            applied[topic] = max(offset, applied.get(topic, -1))
            in_batch.add((topic, offset))
        if dedupe_window:
            digest = event_id_digest(event.event_id)
            if digest in ids:
                contexts.append(Context(_history_of_applied(recent, entry), seen_before, duplicate=True))
                continue
            ids[digest] = None
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
