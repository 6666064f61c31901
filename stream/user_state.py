"""Per-user state kept in the ``user_state`` Faust table: counters and the last N interactions.

The state is a plain JSON-able dict (it is written to a changelog topic and read back on recovery),
updated by a pure function so that ordering, trimming and counting are tested without Kafka.

Shape::

    {
      "events": 12, "clicks": 9, "purchases": 3,
      "first_ts": 874724710000, "last_ts": 874965758000,
      "recent": [[ts_ms, item_id, type], ...]   # oldest first, at most history_length entries
    }
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
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


def empty_state() -> UserState:
    return UserState(events=0, clicks=0, purchases=0, first_ts=0, last_ts=0, recent=[])


def apply_interactions(state: UserState | None, interactions: Iterable[Interaction], history_length: int) -> UserState:
    """Return the state after ``interactions``; the input is not modified.

    ``recent`` stays ordered by event time even when events arrive late, and keeps the newest
    ``history_length`` entries, because later stages build sequences from it.
    """
    new: UserState = empty_state() if state is None else {**state, "recent": list(state["recent"])}
    recent = new["recent"]
    for event in interactions:
        new["events"] += 1
        new["clicks" if event.type == "click" else "purchases"] += 1
        new["first_ts"] = event.ts if new["first_ts"] == 0 else min(new["first_ts"], event.ts)
        new["last_ts"] = max(new["last_ts"], event.ts)
        entry = [event.ts, event.item_id, event.type]
        if not recent or recent[-1][0] <= event.ts:
            recent.append(entry)
        else:
            bisect.insort_right(recent, entry, key=lambda e: e[0])
    if len(recent) > history_length:
        del recent[: len(recent) - history_length]
    return new
