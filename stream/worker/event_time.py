"""Hand the input partitions over in step in event time: a watermark, a hold-back buffer, pausing.

Kafka orders a user's events within one partition of one topic, not across topics or partitions.
A worker reading the clicks topic behind the purchases topic applies a user's purchase before the
click that came first; that click is then *late* (:mod:`streamrec.stream.worker.user_state`): it
is trained on, but cannot be scored without using the future. In a replay compressed a hundred
thousand times, one second of skew between topics is a day of event time. Two causes: a backlog
(each fetch brings thousands of records per partition, and the purchases partition, with fewer
events, covers more event time per fetch), and a live stream (a producer appends a purchase's
batch before its click's batch, or the fetch of the clicks partition is answered a moment before
the click arrives). Merging one fetch by event time fixes neither; holding records back does.

The **watermark** is the newest event time fetched from the partition furthest behind, among the
*active* partitions: those with records left to read, or that brought records within the last
``idle_s`` (a quiet partition holds nobody back for long: after ``idle_s`` it is taken to have
nothing older to say). A record whose event time is more than ``slack_ms`` past the watermark is
**held** in :class:`EventTimeBuffer` until the watermark reaches it, so a purchase waits for the
clicks fetched after it. Each partition's records leave in offset order (a held record holds the
ones after it on its partition). The partition that defines the watermark releases everything it
fetched, so the reading always progresses. What a fetch lets go gathers up to ``min_release``
records (the worker's batch size) before it is handed over, or until the oldest has waited
``idle_s``: with a backlog the watermark moves a little with every fetch, and batches of a few
records cost the worker per batch. A partition holding ``max_held`` records or more is
**paused** (not fetched: memory stays bounded while another partition catches up), and resumed
once it holds fewer than half as many; the partition defining the watermark is never paused.

Holding moves no offsets: the consumer commits only what was handed over and handled, drops the
held records of a partition that is sought or revoked (they are read again from where the seek or
the next owner starts), and a partition sought back after a discarded fetch is sought to its first
held record (:mod:`streamrec.stream.kafka.consumer`). The cost is latency: a record waits at most
until the slowest active partition's fetch passes its time, or ``idle_s``.

>>> buffer = EventTimeBuffer(idle_s=0.2)
>>> clicks, purchases = "clicks:0", "purchases:0"
>>> buffer.add(purchases, [("p@10", 10), ("p@20", 20)], now=0.0)  # (record, event time)
>>> buffer.add(clicks, [("c@10", 10)], now=0.0)
>>> buffer.release(assigned={clicks, purchases}, behind={clicks, purchases}, now=0.0)
{'purchases:0': ['p@10'], 'clicks:0': ['c@10']}
>>> buffer.held_count(purchases)  # the purchase at 20 waits for the clicks up to 20
1
>>> buffer.add(clicks, [("c@20", 20), ("c@30", 30)], now=0.05)
>>> buffer.release(assigned={clicks, purchases}, behind={clicks, purchases}, now=0.05)
{'purchases:0': ['p@20'], 'clicks:0': ['c@20']}
>>> buffer.release(assigned={clicks, purchases}, behind=set(), now=0.3)  # both quiet for idle_s: none holds
{'clicks:0': ['c@30']}
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import orjson

from streamrec.stream.worker.contract import timestamp_to_ms

log = logging.getLogger(__name__)

TPT = TypeVar("TPT", bound=Hashable)


class EventTimeAligner(Generic[TPT]):
    """The pure core: each partition's newest event time, and which partitions run ahead."""

    def __init__(self, slack_ms: int = 0) -> None:
        if slack_ms < 0:
            raise ValueError("slack_ms cannot be negative")
        self.slack_ms = slack_ms
        self.newest: dict[TPT, int] = {}

    def note(self, tp: TPT, ts_ms: int) -> None:
        """An event of partition ``tp`` with event time ``ts_ms`` was handed over."""
        if ts_ms > self.newest.get(tp, ts_ms - 1):
            self.newest[tp] = ts_ms

    def note_many(self, newest: Mapping[TPT, int]) -> None:
        for tp, ts_ms in newest.items():
            self.note(tp, ts_ms)

    def forget(self, tps: Iterable[TPT]) -> None:
        """Partitions revoked: another worker reads them now."""
        for tp in tps:
            self.newest.pop(tp, None)

    def watermark(self, assigned: Iterable[TPT], behind: Iterable[TPT]) -> int | None:
        """The newest event time of the partition furthest behind, among ``behind`` (None: nobody holds back).

        A partition with records to read that has handed over nothing yet is at minus infinity: every
        partition that has is paused until it delivers.
        """
        waiting = set(behind) & set(assigned)
        if not waiting:
            return None
        return min(self.newest.get(tp, -(2**62)) for tp in waiting)

    def ahead(self, assigned: Iterable[TPT], behind: Iterable[TPT]) -> set[TPT]:
        """The assigned partitions to pause: newest event more than ``slack_ms`` past the watermark."""
        assigned = set(assigned)
        mark = self.watermark(assigned, behind)
        if mark is None:
            return set()
        return {tp for tp in assigned if tp in self.newest and self.newest[tp] > mark + self.slack_ms}


def event_time_of(record: Any) -> int:
    """An interaction record's event time in ms: its payload's ``ts``, else its Kafka timestamp.

    Only orders records for hand-over; the contract validates ``ts`` afterwards, and a record
    without a usable one is dead-lettered there.
    """
    try:
        ts = timestamp_to_ms(orjson.loads(record.value)["ts"])
    except (orjson.JSONDecodeError, TypeError, KeyError, ValueError):
        return int(record.timestamp)
    return ts if isinstance(ts, int) and not isinstance(ts, bool) else int(record.timestamp)


@dataclass
class _Held:
    """One partition's records not handed over yet, oldest first, with their event times."""

    items: deque[tuple[Any, int, float]] = field(default_factory=deque)  # (record, event time, added at)


class EventTimeBuffer(Generic[TPT]):
    """The pure core of the hold-back (module docstring): what to release, hold, pause and resume.

    The consumer calls :meth:`add` with each partition's contiguous records as fetched, with
    their event times, then :meth:`release` for what may be handed over now, and :meth:`to_pause`
    / :meth:`to_resume` for the fetching. ``now`` is a monotonic clock in seconds.
    """

    def __init__(self, slack_ms: int = 0, idle_s: float = 0.2, max_held: int = 2000, min_release: int = 1) -> None:
        if idle_s < 0 or max_held < 1 or min_release < 1:
            raise ValueError("idle_s cannot be negative; max_held and min_release must be positive")
        self.min_release = min_release
        self.aligner: EventTimeAligner[TPT] = EventTimeAligner(slack_ms)
        self.idle_s = idle_s
        self.max_held = max_held
        self.held: dict[TPT, _Held] = {}
        self.last_fetched: dict[TPT, float] = {}  # when each partition last brought records (or was first seen)
        self.paused: set[TPT] = set()
        self.mark: int | None = None  # the last watermark (None: nobody held back)
        self.pauses = 0  # partitions paused, counted each time
        self.released = 0
        self.most_held = 0  # the most records held at once, all partitions together

    def add(self, tp: TPT, timed: Sequence[tuple[Any, int]], now: float) -> None:
        """Records of ``tp`` just fetched, in offset order, each with its event time in ms."""
        if not timed:
            return
        held = self.held.setdefault(tp, _Held())
        held.items.extend((item, ts, now) for item, ts in timed)
        self.aligner.note(tp, max(ts for _, ts in timed))
        self.last_fetched[tp] = now
        self.most_held = max(self.most_held, sum(len(h.items) for h in self.held.values()))

    def release(self, assigned: Iterable[TPT], behind: Iterable[TPT], now: float) -> dict[TPT, list[Any]]:
        """The records that may be handed over now, per partition in offset order (the rest stay held).

        ``behind``: the assigned partitions with records left to read (as of their last fetch).
        """
        assigned = set(assigned)
        for tp in assigned:
            self.last_fetched.setdefault(tp, now)  # a partition just assigned is active for idle_s
        active = {tp for tp in assigned if tp in behind or now - self.last_fetched[tp] < self.idle_s}
        self.mark = self.aligner.watermark(assigned, active)
        limit = None if self.mark is None else self.mark + self.aligner.slack_ms
        counts = {tp: self._releasable(held.items, limit) for tp, held in self.held.items()}
        if limit is not None and self.min_release > 1 and not self.paused:
            # A backlog releases a little with every fetch; small batches cost the worker per batch, so
            # they gather up to min_release, unless the oldest has waited idle_s (latency stays bounded).
            oldest = min((held.items[0][2] for tp, held in self.held.items() if counts[tp]), default=now)
            if sum(counts.values()) < self.min_release and now - oldest < self.idle_s:
                return {}
        out: dict[TPT, list[Any]] = {}
        for tp, n in counts.items():
            if n:
                items = self.held[tp].items
                out[tp] = [items.popleft()[0] for _ in range(n)]
                self.released += n
        return out

    @staticmethod
    def _releasable(items: deque[tuple[Any, int, float]], limit: int | None) -> int:
        """How many of a partition's held records, from the oldest, are at or below ``limit``."""
        if limit is None:
            return len(items)
        n = 0
        for _, ts, _ in items:
            if ts > limit:
                break
            n += 1
        return n

    def holding(self) -> bool:
        """Whether any record waits (the consumer then wakes after ``idle_s`` even without a fetch)."""
        return any(held.items for held in self.held.values())

    def held_count(self, tp: TPT) -> int:
        held = self.held.get(tp)
        return 0 if held is None else len(held.items)

    def first_held(self, tp: TPT) -> Any | None:
        """The oldest record ``tp`` holds (a seek back after a discarded fetch starts there), or None."""
        held = self.held.get(tp)
        return held.items[0][0] if held is not None and held.items else None

    def drop(self, tps: Iterable[TPT]) -> int:
        """Forget what ``tps`` hold (sought, or revoked: the records are read again); returns how many."""
        dropped = 0
        for tp in tps:
            held = self.held.pop(tp, None)
            dropped += 0 if held is None else len(held.items)
        return dropped

    def forget(self, tps: Iterable[TPT]) -> None:
        """Partitions revoked: another worker reads them now."""
        tps = list(tps)
        self.drop(tps)
        self.aligner.forget(tps)
        for tp in tps:
            self.last_fetched.pop(tp, None)
        self.paused.difference_update(tps)

    def to_pause(self, assigned: Iterable[TPT]) -> set[TPT]:
        """Assigned partitions holding ``max_held`` or more, but not the one defining the watermark."""
        assigned = set(assigned)
        defining = {tp for tp in assigned if self.mark is not None and self.aligner.newest.get(tp) == self.mark}
        pause = {tp for tp in assigned - self.paused - defining if self.held_count(tp) >= self.max_held}
        self.paused |= pause
        self.pauses += len(pause)
        return pause

    def to_resume(self, assigned: Iterable[TPT]) -> set[TPT]:
        """Partitions this buffer paused that hold fewer than half of ``max_held`` now (or define the watermark)."""
        assigned = set(assigned)
        resume = {
            tp
            for tp in self.paused
            if tp in assigned and (self.held_count(tp) < self.max_held // 2 or self.aligner.newest.get(tp) == self.mark)
        }
        self.paused -= resume
        return resume

    def as_dict(self) -> dict[str, Any]:
        """What ``/stats`` shows as ``event_time``."""
        return {
            "slack_ms": self.aligner.slack_ms,
            "idle_s": self.idle_s,
            "watermark_ms": self.mark,
            "held_now": sum(len(h.items) for h in self.held.values()),
            "most_held": self.most_held,
            "released": self.released,
            "paused_now": sorted(str(tp) for tp in self.paused),
            "pauses": self.pauses,
        }
