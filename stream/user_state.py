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
    }

Why ``applied``: Kafka delivers at least once. After a crash the worker re-reads events from the
last committed offset, but their effect on this state may already be in the changelog. A user's
events on one topic all live in one partition and arrive in offset order, so "offset at or below
the last applied one" means "already in this state"; such a redelivered event is not applied
again, and its :class:`Context` is rebuilt from the state (it is still trained on if the model
has not seen it, see :mod:`stream.learner`).
"""

from __future__ import annotations

import bisect
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


@dataclass(frozen=True, slots=True)
class Context:
    """What was known about the user just before an event: the model's input and the ranking's exclusions."""

    history: tuple[str, ...]  # item ids of the recent entries before the event, oldest first
    seen: frozenset[str]  # items interacted with before this batch; with ``history``, all before the event
    redelivered: bool = False  # the event was already in the state (at-least-once redelivery)


def empty_state() -> UserState:
    return UserState(events=0, clicks=0, purchases=0, first_ts=0, last_ts=0, recent=[], seen=[], applied={})


def apply_interactions(
    state: UserState | None,
    interactions: Iterable[Interaction],
    history_length: int,
    seen_length: int = 1000,
    positions: Sequence[tuple[str, int]] | None = None,
) -> tuple[UserState, list[Context]]:
    """Return the state after ``interactions`` and each one's :class:`Context`; the input is not modified.

    ``recent`` stays ordered by event time even when events arrive late, and keeps the newest
    ``history_length`` entries, because later stages build sequences from it. A late event's
    history is what came before it in event time. ``positions`` gives each event's source
    ``(topic, offset)``; events at or below the state's ``applied`` offset are redeliveries.
    """
    new: UserState = empty_state() if state is None else _copy(state)
    recent, applied = new["recent"], new["applied"]
    seen = dict.fromkeys(new["seen"])  # insertion-ordered set: O(1) moves to the end
    seen_before = frozenset(seen)  # shared by the batch's contexts; their histories add the rest
    contexts: list[Context] = []
    for index, event in enumerate(interactions):
        entry = [event.ts, event.item_id, event.type]
        if positions is not None:
            topic, offset = positions[index]
            if offset <= applied.get(topic, -1):
                contexts.append(Context(_history_of_applied(recent, entry), seen_before, redelivered=True))
                continue
            applied[topic] = offset
        at = len(recent) if not recent or recent[-1][0] <= event.ts else bisect.bisect_right(recent, event.ts, key=_ts)
        contexts.append(Context(tuple(e[1] for e in recent[:at]), seen_before))
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
    return new, contexts


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
    }


def _ts(entry: RecentEntry) -> int:
    return entry[0]


def _history_of_applied(recent: list[RecentEntry], entry: RecentEntry) -> tuple[str, ...]:
    """History of an event already in ``recent``: the entries before it (before its time if trimmed)."""
    try:
        at = recent.index(entry)
    except ValueError:
        at = bisect.bisect_left(recent, entry[0], key=_ts)
    return tuple(e[1] for e in recent[:at])
