"""The worker's consumer path: input records reach the agents batch by batch, as Kafka fetched them.

Faust's own path hands records to agents one at a time: its fetch loop awaits a callback per
record, the callback puts it on a stream's queue, and ``take_events`` rebuilds batches that Kafka
had already delivered as batches. It also keeps a per-partition *read offset* that drops records
below it and takes a jump above it for a gap to commit over. Around a seek (every rebalance, and
the learner's rewind) a batch fetched before the seek moved that offset past the position the seek
had just set: records were dropped, and the jump was committed as if processed
(``docs/delivery.md``, point 7). Two workarounds patched those symptoms; this module replaces them
with one design whose invariant can be stated and tested.

**Invariant.** Within one assignment of an input partition, every offset from the position the
assignment starts at (the committed offset, or further back where the learner's checkpoint is
behind it) to the log end is handed to the agent exactly once, in order, or it is read again in
the next assignment because it was not committed. Four rules make it hold:

1. *A seek decides.* Each input partition has a position epoch. A seek bumps it before and after it
   runs; records whose partition's epoch changed while their fetch was in flight are not handed
   over (they may come from before the seek), and rule 3 puts the position back where the seek
   set it (they may also come from after it, and have moved the consumer's position past them).
2. *Contiguity.* Each input partition has the next offset to hand over. A batch starts there (a
   record below it was handed over already; a jump above it is a compacted or deleted range, or a
   transaction marker, and is counted); handing it over moves the next offset past its end.
3. *Nothing fetched is dropped silently.* Records fetched but not handed over (a seek ran, the flow
   stopped for a rebalance) make the consumer seek back to the next offset, once no seek runs.
4. *Revocation ends an assignment cleanly.* Batches not started are dropped, the one being handled
   finishes, its table writes reach the changelog, and the offsets after the batches handled are
   committed, before Faust revokes.

With event-time alignment (``InputRoutes.event_time``, :mod:`streamrec.stream.worker.event_time`)
records may wait between rule 2 and the hand-over, in offset order per partition. They are still
handed over once or read again: a seek drops what its partitions held (rule 1 decides), rule 3
seeks a partition back to its first *held* record rather than to its next offset, and rule 4 drops
everything held (not handed over, so not committed).

Offsets are committed per partition as the position after the last batch *handled* (its table
writes done, its dead letters and forwards confirmed), not from per-record acknowledgements.

**No commit ahead of the changelog.** A table write reaches its changelog through Faust's producer
buffer, and Faust's ``producer.flush()`` before a commit gives up after 0.1 s without progress
(``ProducerBuffer.flush_atmost``); the buffer's count also drops before a message reaches the Kafka
client. Under load a commit could thus cover records whose state changes were not in the changelog
yet; killed then, or revoked while a new owner recovered, the worker left the group's offsets past
events that no user state held (``tests/integration/test_changelog_durability.py``). The tables
are :class:`ChangelogAckedTable`: each keeps its changelog writes until the broker takes them, and
every commit, and the end of every assignment, first waits for the writes made so far
(:func:`changelog_acked`).

**Unreadable batches.** A record batch the client cannot decode (a codec it lacks, a corrupt
compressed payload, a CRC mismatch) used to raise out of the fetch and stop the worker, which read
the same batch again on restart: a crash loop. :func:`guard_fetch_results` wraps aiokafka's batch
iteration so that such a batch becomes an :class:`UnreadableBatch` marker in the record stream,
handed over in order like the records around it: the agent dead-letters a marker record with the
reason and the offset range, it is counted (``streamrec_consumer_unreadable_batches_total``) and
alerted on, and the partition reads on.

Faust's tables, changelogs, recovery, standbys, commit loop and rebalance protocol are Faust's. The
Faust and aiokafka internals this module relies on are pinned by ``tests/unit/test_consumer.py``;
a Faust or aiokafka upgrade that changes them fails there first.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import faust
from aiokafka.consumer.fetcher import FetchResult, PartitionRecords
from aiokafka.errors import ConsumerStoppedError, IllegalStateError
from faust.tables.recovery import RebalanceAgain
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as FaustAIOKafkaConsumer
from faust.types import TP
from faust.types.tuples import FutureMessage

log = logging.getLogger(__name__)


class Record:
    """One input record, shaped like a Faust event so that the ingestion and the tables take it as one.

    ``message`` is the record itself; ``timestamp`` is in seconds, as on Faust's messages. Slotted
    and weak-referenceable: table writes find their partition through a weak reference to the
    current event (:func:`streamrec.stream.worker.ingest.writing_for`).
    """

    __slots__ = ("__weakref__", "headers", "key", "offset", "partition", "timestamp", "topic", "value")

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        timestamp: float,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.timestamp = timestamp
        self.key = key
        self.value = value
        self.headers = headers

    @property
    def message(self) -> Record:
        return self

    @property
    def tp(self) -> TP:
        return TP(self.topic, self.partition)

    @classmethod
    def from_consumer_record(cls, record: Any) -> Record:
        """From aiokafka's ``ConsumerRecord`` (timestamp in milliseconds; may be None for v0 records)."""
        timestamp = record.timestamp / 1000.0 if record.timestamp is not None else time.time()
        return cls(record.topic, record.partition, record.offset, timestamp, record.key, record.value, record.headers)

    def __repr__(self) -> str:
        return f"<Record {self.topic}:{self.partition}@{self.offset}>"


@dataclass(frozen=True, slots=True)
class UnreadableBatch:
    """A record batch that could not be decoded: offsets ``first`` up to (not including) ``end``."""

    topic: str
    partition: int
    first: int
    end: int
    error: str

    @property
    def tp(self) -> TP:
        return TP(self.topic, self.partition)


@dataclass(slots=True)
class Batch:
    """What one fetch brought for one handler: records in partition order, and unreadable batches.

    ``ranges`` is what the batch covers per partition, unreadable batches included: the learner
    takes it as the offsets it has now seen.
    """

    records: list[Record]
    unreadable: list[UnreadableBatch]
    ranges: dict[tuple[str, int], range]
    assignment: int  # the consumer's assignment count when handed over; a revoke makes it stale


def record_timestamp(record: Any) -> int:
    """The Kafka record's own timestamp (ms): the default order of a fetch's partitions."""
    return int(record.timestamp)


def batches_from(
    fetched: Mapping[TP, Sequence[Any]],
    assignment: int,
    size: int,
    time_of: Callable[[Any], int] | None = record_timestamp,
) -> list[Batch]:
    """Cut a fetch (aiokafka ``ConsumerRecord``s and :class:`UnreadableBatch` markers) into batches.

    Each batch holds at most ``size`` records; each partition's records keep their offset order,
    and a marker stays between the records fetched before and after it. With ``time_of`` (a
    record's time in ms: its Kafka timestamp, or the event time in its payload) the partitions are
    interleaved by that time (a merge: no partition's order changes), so that a fetch cut into
    several batches hands each topic's events over in step: cut partition by partition, a user's
    purchase could reach the state a batch before the click that preceded it, and that click could
    not be scored (it is *late*: :mod:`streamrec.stream.worker.user_state`).
    """
    batches: list[Batch] = []
    current = Batch([], [], {}, assignment)
    merge = time_of is not None and len(fetched) > 1
    for tp, item in _merged(fetched, time_of) if merge else _concatenated(fetched):  # type: ignore[arg-type]
        key = (tp.topic, tp.partition)
        if len(current.records) >= size:
            batches.append(current)
            current = Batch([], [], {}, assignment)
        if isinstance(item, UnreadableBatch):
            current.unreadable.append(item)
            first, end = item.first, item.end
        else:
            current.records.append(Record.from_consumer_record(item))
            first, end = item.offset, item.offset + 1
        seen = current.ranges.get(key)
        current.ranges[key] = range(first, end) if seen is None else range(seen.start, end)
    if current.ranges:
        batches.append(current)
    return batches


def _concatenated(fetched: Mapping[TP, Sequence[Any]]) -> Iterator[tuple[TP, Any]]:
    for tp, items in fetched.items():
        for item in items:
            yield tp, item


def _merged(fetched: Mapping[TP, Sequence[Any]], time_of: Callable[[Any], int]) -> Iterator[tuple[TP, Any]]:
    """Every partition's items, merged by ``time_of``; a marker takes the time of the record before it."""

    def timed(tp: TP, items: Sequence[Any]) -> Iterator[tuple[int, TP, Any]]:
        for item, ts in timed_items(items, time_of):
            yield ts, tp, item

    for _, tp, item in heapq.merge(*(timed(tp, items) for tp, items in fetched.items()), key=lambda e: e[0]):
        yield tp, item


def timed_items(items: Sequence[Any], time_of: Callable[[Any], int]) -> list[tuple[Any, int]]:
    """``(item, time)`` for each item; an :class:`UnreadableBatch` takes the time of the record before it."""
    out, ts = [], -(2**63)
    for item in items:
        if not isinstance(item, UnreadableBatch):
            ts = time_of(item)
        out.append((item, ts))
    return out


# --- Unreadable batches: aiokafka's batch iteration, guarded -------------------------------------


class _BatchTracker:
    """Wraps aiokafka's ``MemoryRecords``: remembers the offsets of the batch it handed out last."""

    __slots__ = ("current", "records")

    def __init__(self, records: Any) -> None:
        self.records = records
        self.current: tuple[int, int] | None = None

    def has_next(self) -> bool:
        return self.records.has_next()

    def next_batch(self) -> Any:
        batch = self.records.next_batch()
        if batch is None:
            self.current = None
        else:
            base = batch.base_offset
            self.current = (base, getattr(batch, "next_offset", base + 1))
        return batch

    def size_in_bytes(self) -> int:
        return self.records.size_in_bytes()


def _guarded_records(partition_records: PartitionRecords, tracker: _BatchTracker) -> Iterator[Any]:
    """aiokafka's own record iteration; a batch it cannot decode becomes one :class:`UnreadableBatch`."""
    tp = partition_records._tp
    while True:
        try:
            yield from PartitionRecords._unpack_records(partition_records)
            return
        except Exception as error:  # any decode failure of one batch: a codec, corrupt bytes, a CRC
            if tracker.current is None:
                raise
            base, end = tracker.current
            tracker.current = None
            first = max(base, partition_records.next_fetch_offset)  # records of it already yielded stay
            partition_records.next_fetch_offset = max(partition_records.next_fetch_offset, end)
            yield UnreadableBatch(tp.topic, tp.partition, first, end, f"{type(error).__name__}: {error}")


def guard_fetch_results(fetcher: Any) -> None:
    """Guard every fetch result aiokafka holds that has not been read from yet (see the module docstring)."""
    for result in list(fetcher._records.values()):
        if type(result) is not FetchResult:
            continue
        partition_records = result._partition_records
        if partition_records is None or getattr(partition_records, "_streamrec_guarded", False):
            continue
        tracker = _BatchTracker(partition_records._records)
        partition_records._records = tracker
        partition_records._records_iterator = _guarded_records(partition_records, tracker)
        partition_records._streamrec_guarded = True


class BatchConsumerThread(AIOKafkaConsumerThread):
    """Faust's aiokafka consumer thread; every fetch result is guarded before anything reads from it."""

    async def _fetch_records(
        self,
        consumer: Any,
        active_partitions: set[TP],
        timeout: float | None = None,  # noqa: ASYNC109 (Faust's signature)
        max_records: int | None = None,
    ) -> Mapping[TP, list[Any]]:
        if not self.consumer.flow_active:
            return {}
        fetcher = consumer._fetcher
        if consumer._closed or fetcher._closed:
            raise ConsumerStoppedError()
        with fetcher._subscriptions.fetch_context():
            guard_fetch_results(fetcher)
            records = await fetcher.fetched_records(active_partitions, timeout=0, max_records=max_records)
            if records or not timeout:
                return records
            # Wait for the background fetch here, not inside fetched_records: what it brings must be
            # guarded before it is read.
            waiter = fetcher._create_fetch_waiter()
            done, pending = await asyncio.wait([waiter], timeout=timeout)
            for fut in pending:
                fut.cancel()
            if not done or fetcher._closed:
                return {}
            waiter.result()  # raises authorization errors, as aiokafka does
            guard_fetch_results(fetcher)
            return await fetcher.fetched_records(active_partitions, timeout=0, max_records=max_records)


# --- The consumer -------------------------------------------------------------------------------

Handler = Callable[[Batch], Awaitable[None]]
AfterSeek = Callable[[Any, dict[TP, int]], Awaitable[dict[TP, int]]]


@dataclass
class ConsumerStats:
    """Counters since this process started; on ``/stats`` (``consumer``) and ``/metrics``."""

    batches: int = 0
    records: int = 0
    discarded_fetches: int = 0  # fetched while a seek ran or the flow was stopped: read again
    repositioned: int = 0  # partitions sought back to their next offset after a discarded fetch
    dropped_queued: int = 0  # batches not started when their assignment ended: read again
    commits_failed: int = 0  # commits the broker did not take (e.g. while the group rebalanced): retried
    recoveries_restarted: int = 0  # table recoveries sent back to the start by a rebalance Faust missed
    skipped_offsets: Counter[str] = field(default_factory=Counter)  # "topic:partition" -> offsets jumped
    unreadable_batches: Counter[str] = field(default_factory=Counter)
    unreadable_offsets: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Route:
    """Records of ``topics`` go to ``handler``, one batch at a time, in order (run by :meth:`BatchConsumer.serve`)."""

    name: str
    topics: frozenset[str]
    handler: Handler


@dataclass(frozen=True)
class InputRoutes:
    """What the worker consumes through this module, and how (given to :func:`install`)."""

    routes: tuple[Route, ...]
    max_batch_records: int = 1000  # a larger fetch is split, in order
    time_of: Callable[[Any], int] | None = record_timestamp  # a fetch's partitions merged by it (batches_from)
    # Records of these topics wait in the buffer until the event-time watermark passes them
    # (stream/worker/event_time.py); needs time_of.
    event_time: Any = None  # an EventTimeBuffer, or None
    event_time_topics: frozenset[str] = frozenset()
    max_queued_batches: int = 2  # per route: a slow handler slows the fetching, memory stays bounded
    after_seek: AfterSeek | None = None  # the learner's rewind


class _Lane:
    """One route's bounded queue of batches, and an event set while its handler is not in a batch."""

    def __init__(self, route: Route, max_batches: int) -> None:
        self.route = route
        self.queue: asyncio.Queue[Batch] = asyncio.Queue(maxsize=max_batches)
        self.idle = asyncio.Event()
        self.idle.set()


class BatchConsumer(FaustAIOKafkaConsumer):
    """Faust's aiokafka consumer, with the input topics' records handed over batch by batch.

    The topics of ``routes`` go through this module's path; every other topic (changelogs,
    standbys) keeps Faust's record-by-record path.
    """

    def __init__(self, *args: Any, routes: InputRoutes, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.routes = routes
        self._lanes = {route.name: _Lane(route, routes.max_queued_batches) for route in routes.routes}
        self._lane_of = {topic: lane for lane in self._lanes.values() for topic in lane.route.topics}
        self._epoch: Counter[TP] = Counter()  # per input partition, bumped around every seek
        self._seeking: set[TP] = set()
        self._next: dict[TP, int] = {}  # the next offset to hand over, per input partition
        self._handled: dict[TP, int] = {}  # the offset after the last batch handled: what commits
        self._assignment = 0  # bumped on every revocation: batches handed over before it are stale
        self._seek_lock = asyncio.Lock()
        self.stats = ConsumerStats()

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return BatchConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def is_batch_tp(self, tp: TP) -> bool:
        return tp.topic in self._lane_of

    def behind(self, tp: TP) -> bool:
        """Whether an input partition may have records not handed over yet (as of its last fetch response).

        Not yet positioned, or never fetched: perhaps; its first fetch says.
        """
        next_offset = self._next.get(tp)
        end = self.highwater(tp) if next_offset is not None else None
        return next_offset is None or end is None or next_offset < end

    async def serve(self, name: str) -> None:
        """Run one route's handler over its batches, in order, until cancelled (an app task)."""
        lane = self._lanes[name]
        while True:
            batch = await lane.queue.get()
            if batch.assignment != self._assignment:
                self.stats.dropped_queued += 1
                continue
            lane.idle.clear()
            try:
                await lane.route.handler(batch)
                # Noted even if a revocation began meanwhile: it waits for this batch, then commits it.
                self._note_handled(batch)
            finally:
                lane.idle.set()

    def _note_handled(self, batch: Batch) -> None:
        for (topic, partition), offsets in batch.ranges.items():
            tp = TP(topic, partition)
            if offsets.stop > self._handled.get(tp, -1):
                self._handled[tp] = offsets.stop

    # --- the fetch loop ----------------------------------------------------------------------
    async def _drain_messages(self, fetcher: Any) -> None:  # replaces Faust's (faust/transport/consumer.py)
        consumer_stopped = self._stopped.is_set
        fetcher_stopped = fetcher._stopped.is_set
        inbound_time = self.app.monitor.stream_inbound_time
        try:
            buffer, held_topics, time_of = self.routes.event_time, self.routes.event_time_topics, self.routes.time_of
            while not (consumer_stopped() or fetcher_stopped()):
                epochs = dict(self._epoch)
                assignment = self._assignment
                holding = buffer is not None and buffer.holding()
                records, active = await self._wait_next_records(min(1.0, buffer.idle_s) if holding else 1.0)
                if self.should_stop or not (records or holding):
                    continue
                handed: dict[str, dict[TP, list[Any]]] = {}
                not_handed: list[TP] = []
                for tp, items in records.items():
                    self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
                    lane = self._lane_of.get(tp.topic)
                    if lane is None:
                        await self._deliver_one_by_one(tp, items, active)
                        continue
                    positioned = tp in self._next and tp not in self._seeking and self._epoch[tp] == epochs.get(tp, 0)
                    if not (positioned and self.flow_active and assignment == self._assignment):
                        # Not positioned in this assignment yet, a seek ran while this was fetched, or
                        # the flow stopped: not handed over. The fetch moved the consumer's position
                        # past these records (perhaps from the position a seek had just set), so the
                        # partition is sought back to its next offset once no seek is running.
                        self.stats.discarded_fetches += 1
                        not_handed.append(tp)
                        continue
                    kept = self._contiguous(tp, items)
                    if kept:
                        inbound_time[tp] = time.monotonic()  # Faust's livelock detector reads it
                        if buffer is not None and tp.topic in held_topics:
                            buffer.add(tp, timed_items(kept, time_of), time.monotonic())
                        else:
                            handed.setdefault(lane.route.name, {})[tp] = kept
                if not_handed:
                    await self._reposition(not_handed)
                if buffer is not None and self.flow_active and assignment == self._assignment:
                    self._release_held(buffer, held_topics, handed)
                for name, fetched in handed.items():
                    lane = self._lanes[name]
                    size, time_of = self.routes.max_batch_records, self.routes.time_of
                    for chunk in batches_from(fetched, assignment, size, time_of):
                        self.stats.batches += 1
                        self.stats.records += len(chunk.records)
                        for marker in chunk.unreadable:
                            self._note_unreadable(marker)
                        await lane.queue.put(chunk)  # bounded: a slow handler slows the fetching
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise
        except Exception as exc:
            log.exception("Drain messages raised: %r", exc)
            raise

    def _release_held(self, buffer: Any, topics: frozenset[str], handed: dict[str, dict[TP, list[Any]]]) -> None:
        """Add what the event-time watermark lets go to ``handed``; pause and resume the fetching."""
        assigned = {tp for tp in self.assignment() if tp.topic in topics and tp in self._next}
        behind = {tp for tp in assigned if self.behind(tp)}
        for tp, items in buffer.release(assigned, behind, time.monotonic()).items():
            handed.setdefault(self._lane_of[tp.topic].route.name, {})[tp] = items
        resume = buffer.to_resume(assigned)
        if resume:
            self.resume_partitions(resume)
        pause = buffer.to_pause(assigned)
        if pause:
            self.pause_partitions(pause)

    def _contiguous(self, tp: TP, items: list[Any]) -> list[Any]:
        """Rule 2: drop what was handed over already, count a jump, move the next offset past the batch."""
        expected = self._next[tp]
        start = 0
        while start < len(items) and _first_offset(items[start]) < expected:
            start += 1
        items = items[start:] if start else items
        if not items:
            return items
        first = _first_offset(items[0])
        if first > expected:
            self.stats.skipped_offsets[f"{tp.topic}:{tp.partition}"] += first - expected
        last = items[-1]
        self._next[tp] = last.end if isinstance(last, UnreadableBatch) else last.offset + 1
        return items

    def _note_unreadable(self, marker: UnreadableBatch) -> None:
        key = f"{marker.topic}:{marker.partition}"
        self.stats.unreadable_batches[key] += 1
        self.stats.unreadable_offsets[key] += marker.end - marker.first
        log.error(
            "cannot decode the record batch at %s offsets %d..%d (%s): it is dead-lettered as a marker and skipped",
            key, marker.first, marker.end - 1, marker.error,
        )  # fmt: skip

    async def _deliver_one_by_one(self, tp: TP, items: list[Any], active: set[TP] | None) -> None:
        """Faust's own path, for changelog and standby partitions (see Faust's ``getmany``/``_drain_messages``)."""
        if active is not None and tp not in active and tp not in self._buffered_partitions:
            return
        callback = self.callback
        read_offset = self._read_offset
        for record in items:
            if not self.flow_active:
                return
            if isinstance(record, UnreadableBatch):  # our own changelogs: never expected
                log.error(
                    "cannot decode %s:%d offsets %d..%d (%s)", *record.tp, record.first, record.end - 1, record.error
                )
                continue
            offset = record.offset
            r_offset = read_offset[tp]
            if r_offset is None or offset >= r_offset:
                message = self._to_message(tp, record)
                await self.wait_first(callback(message), self.suspend_flow.wait())
                read_offset[tp] = offset

    # --- seeks -----------------------------------------------------------------------------------
    async def _reposition(self, tps: list[TP]) -> None:
        """Rule 3: seek partitions whose fetched records were not handed over back to their next offset.

        Under the seek lock, so after any seek that was running: its target is then the next offset.
        A partition not positioned in this assignment yet is left to the seek that will position it.
        """
        async with self._seek_lock:
            assigned = self.assignment()
            targets = {tp: self._next[tp] for tp in tps if tp in assigned and tp in self._next}
            buffer = self.routes.event_time
            if buffer is not None:  # records held back were not handed over: read again from the first
                for tp in targets:
                    first = buffer.first_held(tp)
                    if first is not None:
                        targets[tp] = _first_offset(first)
            if not targets:
                return
            self.stats.repositioned += len(targets)
            try:
                await self._seek_positions(targets)
            except IllegalStateError as exc:
                # Revoked meanwhile (a rebalance is under way): the next owner reads from the commit.
                log.info("not repositioning %s: %s", sorted(targets), exc)

    async def seek_wait(self, partitions: Mapping[TP, int | None]) -> None:
        """Faust's seek, except that a changelog partition without an offset restarts the table recovery.

        Faust's recovery swallows the ``RebalanceAgain`` raised when a rebalance interrupts it
        while it waits for the active changelogs (an ``except Exception`` around that wait), and
        goes on to seek the standby partitions of the *new* assignment, whose offsets it never
        built: ``None``, which aiokafka refuses (``ValueError: Offset must be a positive integer``),
        and the worker crashed. Two torture runs in a row hit it. A ``None`` offset only exists for
        a partition added after the offsets were built, so it means exactly that a rebalance came
        in between: the recovery is sent back to its start for the new assignment, as Faust
        intended (pinned in tests/unit/test_consumer.py).
        """
        unbuilt = sorted(f"{tp.topic}:{tp.partition}" for tp, offset in partitions.items() if offset is None)
        if unbuilt:
            self.stats.recoveries_restarted += 1
            log.info("recovery interrupted by a rebalance (no offset for %s): restarting it", ", ".join(unbuilt))
            recovery = self.app.tables.recovery
            recovery.signal_recovery_start.set()  # its loop starts again at once, on the current assignment
            raise RebalanceAgain()
        await super().seek_wait(partitions)

    async def _seek_positions(self, positions: Mapping[TP, int]) -> None:
        """Seek input partitions (under the seek lock), with rule 1's epochs around it."""
        tps = list(positions)
        self._seeking.update(tps)
        self._epoch.update(tps)
        try:
            if self.routes.event_time is not None:  # a seek decides: what was held is read again from it
                self.routes.event_time.drop(tps)
            # In the consumer's thread, as one call: aiokafka's seek is not thread-safe.
            await self.seek_wait(dict(positions))
            self._next.update(positions)
        finally:
            self._seeking.difference_update(tps)
            self._epoch.update(tps)

    async def perform_seek(self) -> None:
        """After an assignment: every input partition to its committed offset (or the log start), then the rewind.

        Faust's version leaves a partition without a commit wherever its position was; here every
        input partition gets an explicit position, so the next offset to hand over is always known.
        """
        async with self._seek_lock:
            inputs = [tp for tp in self.assignment() if self.is_batch_tp(tp)]
            self._seeking.update(inputs)
            self._epoch.update(inputs)
            try:
                committed = await self.seek_to_committed()  # every assigned partition, changelogs included
                self._read_offset.update(
                    {tp: offset if offset is not None and offset >= 0 else None for tp, offset in committed.items()}
                )
                # Every partition, those without a commit too: what the broker has, not what Faust last tried.
                self._committed_offset.update({tp: offset or None for tp, offset in committed.items()})
                positions: dict[TP, int] = {}
                missing = []
                for tp in inputs:
                    offset = committed.get(tp)
                    if offset is None or offset < 0:
                        missing.append(tp)
                    else:
                        positions[tp] = offset
                if missing:
                    earliest = await self.earliest_offsets(*missing)
                    positions.update({tp: earliest.get(tp) or 0 for tp in missing})
                if self.routes.after_seek is not None and positions:
                    positions.update(await self.routes.after_seek(self, dict(positions)))
                await self._seek_positions(positions)
            finally:
                self._seeking.difference_update(inputs)
                self._epoch.update(inputs)

    # --- rebalance and commit ------------------------------------------------------------------
    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        """Rule 4, before Faust's own revocation: stop, drop what was not started, finish, commit."""
        await self._end_assignment()
        try:
            await self.commit()
        except Exception as exc:  # noqa: BLE001 (a commit refused mid-rebalance: those offsets are read again)
            log.warning("commit before revocation failed (%r); the new owner reads from the last commit", exc)
        for tp in revoked:
            self._next.pop(tp, None)
            self._handled.pop(tp, None)
        if self.routes.event_time is not None:
            self.routes.event_time.forget(revoked)
        await super().on_partitions_revoked(revoked)

    async def _end_assignment(self) -> None:
        """No batch handed over from now on starts; the ones being handled finish."""
        self.stop_flow()
        self._assignment += 1
        if self.routes.event_time is not None:  # not handed over, not committed: read again by the next owner
            self.routes.event_time.drop(list(self.routes.event_time.held))
        for lane in self._lanes.values():
            while not lane.queue.empty():
                lane.queue.get_nowait()
                self.stats.dropped_queued += 1
        for lane in self._lanes.values():
            await lane.idle.wait()
        # The next owner recovers the tables from the changelog: everything written so far must be there.
        await changelog_acked(self.app)

    async def wait_empty(self) -> None:
        """Faust waits here before a rebalance or shutdown completes (then commits): end the assignment first.

        At shutdown this is what keeps a queued batch from starting after Faust has stopped the tables.
        """
        await self._end_assignment()
        await super().wait_empty()

    def _filter_tps_with_pending_acks(self, topics: Any = None) -> Iterator[TP]:
        yield from super()._filter_tps_with_pending_acks(topics)
        for tp, handled in list(self._handled.items()):
            if topics is not None and tp not in topics and tp.topic not in topics:
                continue
            committed = self._committed_offset.get(tp)
            if committed is None or handled > committed:
                yield tp

    async def _commit_offsets(self, offsets: Mapping[TP, int], start_new_transaction: bool = True) -> bool:
        """Faust's commit, after the tables' changelog writes are acknowledged; a failed one is not recorded as made.

        Faust records the offsets as committed whether or not the broker took them (a commit refused
        while the group rebalances returns False); nothing newer was then handled, so nothing was
        committed again and the group's offsets stayed behind what the worker had handled.
        """
        try:
            await changelog_acked(self.app)
        except Exception as exc:  # noqa: BLE001 (Faust crashes the consumer on a send the producer gave up on)
            log.error("a table changelog write failed (%r): no commit over it; the worker stops", exc)
            await self.crash(exc)
            return False
        before = {tp: self._committed_offset.get(tp) for tp in offsets}
        did_commit = await super()._commit_offsets(offsets, start_new_transaction=start_new_transaction)
        if not did_commit:
            self.stats.commits_failed += 1
            for tp, offset in before.items():
                self._committed_offset[tp] = offset  # retried at the next commit
        return did_commit

    def _new_offset(self, tp: TP) -> int | None:
        if self.is_batch_tp(tp):
            return self._handled.get(tp)
        return super()._new_offset(tp)


class ChangelogAckedTable(faust.Table):
    """A Faust table that keeps each changelog write until the broker acknowledges it (see the module docstring).

    Installed as the app's ``Table`` class (the ``Table`` setting of the app in stream/worker/app.py).
    """

    def send_changelog(
        self,
        partition: int | None,
        key: Any,
        value: Any,
        key_serializer: Any = None,
        value_serializer: Any = None,
    ) -> FutureMessage:
        sent = super().send_changelog(partition, key, value, key_serializer, value_serializer)
        unacked = self.__dict__.setdefault("_unacked_changelog", set())
        unacked.add(sent)
        sent.add_done_callback(unacked.discard)
        return sent

    def unacked_changelog(self) -> list[FutureMessage]:
        """The changelog writes the broker has not acknowledged yet."""
        return list(self.__dict__.get("_unacked_changelog", ()))

    def _verify_source_topic_partitions(self, source_topic: str) -> None:
        """Faust's check that the changelog has as many partitions as the source, once it can be made.

        Right after a worker starts, the consumer's metadata may still list a changelog topic created
        a moment ago with 0 partitions (its leader not elected yet). Faust took that for a mismatch
        (4 against 0) and the first write to the table stopped the worker: a crash at startup whenever
        a record came in that early. 0 means "not known yet": the check is left for the next write,
        which makes it once the metadata knows the topic; a real mismatch still stops the worker.
        """
        if self.app.consumer.topic_partitions(self.changelog_topic_name) == 0:
            return
        super()._verify_source_topic_partitions(source_topic)


async def changelog_acked(app: Any, warn_after_s: float = 10.0) -> None:
    """Wait until every changelog write made so far by ``app``'s tables is acknowledged; raise if one failed.

    Writes made while waiting are not waited for: they belong to batches a later commit covers.
    """
    writes = [sent for table in app.tables.values() if isinstance(table, ChangelogAckedTable)
              for sent in table.unacked_changelog()]  # fmt: skip
    pending, waited = set(writes), 0.0
    while pending:
        _, pending = await asyncio.wait(pending, timeout=warn_after_s)
        if pending:
            waited += warn_after_s
            log.warning(
                "%d table changelog writes not acknowledged after %.0f s; holding the commit until they are",
                len(pending), waited,
            )  # fmt: skip
    for sent in writes:
        sent.result()  # a write the broker refused: its state change is lost, so nothing may be committed over it


def _first_offset(item: Any) -> int:
    return item.first if isinstance(item, UnreadableBatch) else item.offset


def install(app: Any, routes: InputRoutes, topics: Iterable[Any]) -> None:
    """Make ``app`` create a :class:`BatchConsumer` for ``routes`` (before its consumer exists), and subscribe it.

    ``topics`` (Faust topic objects for the routes' topics) are added to Faust's conductor, so that
    the group subscribes to them and Faust's assignor co-partitions the tables with them, as it
    would for an agent's topics.
    """
    app.transport.Consumer = functools.partial(BatchConsumer, routes=routes)
    for topic in topics:
        app.topics.add(topic)
