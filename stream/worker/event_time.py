"""Read the input partitions in step in event time: pause those that run ahead.

Kafka orders a user's events within one partition of one topic, not across topics or partitions.
A worker reading the clicks topic behind the purchases topic applies a user's purchase before the
click that came first; that click is then *late* (:mod:`streamrec.stream.worker.user_state`): it
is trained on, but cannot be scored without using the future. In a replay compressed a hundred
thousand times, one second of skew between topics is a day of event time, and the demo used to
score a fifth of its clicks.

The fix is a **watermark** over the input partitions: the newest event time handed over by the
partition furthest behind, among the partitions that still have records to read (a partition at
the end of its log holds nobody back: it may simply be quiet). Every partition whose newest event
is more than ``slack_ms`` past the watermark is **paused** (Faust's ``pause_partitions``: it is
not fetched) until the watermark catches up. The partition that defines the watermark is never
paused, so the reading always progresses. The granularity is a fetched batch: a batch already
fetched is handed over whole, so skew stays below about one batch of event time.

Pausing moves no offsets and drops nothing: records are only fetched later. The consumer commits
what was handled, as before (:mod:`streamrec.stream.kafka.consumer`).

>>> aligner = EventTimeAligner(slack_ms=0)
>>> aligner.note("clicks:0", 1_000)
>>> aligner.note("purchases:0", 5_000)
>>> sorted(aligner.ahead(assigned={"clicks:0", "purchases:0"}, behind={"clicks:0", "purchases:0"}))
['purchases:0']
>>> sorted(aligner.ahead(assigned={"clicks:0", "purchases:0"}, behind={"purchases:0"}))  # clicks caught up
[]
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Iterable, Mapping
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


class PartitionPacer:
    """The Faust shell: applies :meth:`EventTimeAligner.ahead` to the consumer after each batch.

    Only interaction partitions are paced (the catalogue has no event time, and is never paused),
    and only the partitions this pacer paused are ever resumed: Faust pauses and resumes changelog
    partitions for its own recovery.
    """

    def __init__(self, topics: Iterable[str], slack_ms: int = 0) -> None:
        self.topics = frozenset(topics)
        self.aligner: EventTimeAligner[Any] = EventTimeAligner(slack_ms)
        self.paused: set[Any] = set()
        self.pauses = 0  # partitions paused, counted each time (for /stats)

    def note_batch(self, newest: Mapping[Any, int]) -> None:
        self.aligner.note_many(newest)

    def pace(self, consumer: Any) -> None:
        """Pause the partitions that run ahead, resume those that no longer do (or were revoked)."""
        assigned = {tp for tp in consumer.assignment() if tp.topic in self.topics}
        self.aligner.forget([tp for tp in self.aligner.newest if tp not in assigned])
        behind = {tp for tp in assigned if consumer.behind(tp)}
        ahead = self.aligner.ahead(assigned, behind)
        resume = {tp for tp in self.paused if tp not in ahead}
        pause = ahead - self.paused
        if resume:
            consumer.resume_partitions({tp for tp in resume if tp in assigned})
        if pause:
            consumer.pause_partitions(pause)
            self.pauses += len(pause)
        self.paused = (self.paused - resume) | pause

    def as_dict(self) -> dict[str, Any]:
        return {
            "slack_ms": self.aligner.slack_ms,
            "paused_now": sorted(f"{tp.topic}:{tp.partition}" for tp in self.paused),
            "pauses": self.pauses,
        }
