"""The consumer path (stream/kafka/consumer.py): batches as fetched, the rules behind its invariant, unreadable batches.

The consumer here is the real :class:`~streamrec.stream.kafka.consumer.BatchConsumer` on a real Faust app, with
its broker calls (the fetch, the seeks, the commit) replaced by recorded stand-ins, so that each
rule is shown in isolation and in order. The live behaviour, real broker and processes, is in
tests/integration (test_restart.py, test_scale_out.py, test_torture.py, test_codecs.py). The
last tests pin the Faust and aiokafka internals the module relies on: an upgrade that changes
them fails here first.
"""

from __future__ import annotations

import asyncio
import inspect
import struct
from collections.abc import Callable, Iterator
from typing import Any

import faust
import pytest
from aiokafka.consumer import fetcher as aiokafka_fetcher
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.record.util import calc_crc32c_py
from aiokafka.structs import ConsumerRecord, TopicPartition
from faust.tables import base as faust_table_base
from faust.tables import recovery as faust_recovery
from faust.tables import table as faust_table
from faust.transport import consumer as faust_consumer

from streamrec.stream.kafka.consumer import (
    Batch,
    BatchConsumer,
    ChangelogAckedTable,
    InputRoutes,
    Record,
    Route,
    UnreadableBatch,
    batches_from,
    guard_fetch_results,
    install,
)
from streamrec.stream.worker.event_time import EventTimeBuffer
from streamrec.stream.worker.ingest import offset_ranges

CLICKS_0, CLICKS_1 = TopicPartition("clicks", 0), TopicPartition("clicks", 1)
GZIP, LZ4 = 1, 3


def record(tp: TopicPartition, offset: int, value: bytes = b"{}") -> ConsumerRecord:
    return ConsumerRecord(tp.topic, tp.partition, offset, 1_700_000_000_000 + offset, 0, b"k", value, None, 1, 2, ())


# --- batches -------------------------------------------------------------------------------------


def test_a_fetch_becomes_batches_in_partition_order_split_at_the_limit_with_the_offsets_they_cover():
    fetched = {CLICKS_0: [record(CLICKS_0, o) for o in range(10, 15)], CLICKS_1: [record(CLICKS_1, 3)]}
    batches = batches_from(fetched, assignment=7, size=2, time_of=None)
    assert [[(r.partition, r.offset) for r in b.records] for b in batches] == [
        [(0, 10), (0, 11)],
        [(0, 12), (0, 13)],
        [(0, 14), (1, 3)],
    ]
    assert [b.ranges for b in batches] == [
        {("clicks", 0): range(10, 12)},
        {("clicks", 0): range(12, 14)},
        {("clicks", 0): range(14, 15), ("clicks", 1): range(3, 4)},
    ]
    assert {b.assignment for b in batches} == {7}
    first = batches[0].records[0]
    assert (first.message is first, first.timestamp, first.key, first.value) == (True, 1_700_000_000.01, b"k", b"{}")
    # the ingestion's own view of a batch agrees with what the consumer says it covers
    assert offset_ranges(batches[2].records) == batches[2].ranges


def timed(tp: TopicPartition, offset: int, ts_ms: int) -> ConsumerRecord:
    return ConsumerRecord(tp.topic, tp.partition, offset, ts_ms, 0, b"k", b"{}", None, 1, 2, ())


def test_a_fetch_of_several_partitions_is_interleaved_by_record_timestamp_each_partition_in_order():
    """The purchases topic's records do not all come before the clicks': they go in step, in time."""
    purchases_0 = TopicPartition("purchases", 0)
    clicks = [timed(CLICKS_0, 10 + n, ts) for n, ts in enumerate((100, 104, 108, 101))]  # the last one is older
    purchases = [timed(purchases_0, 50 + n, ts) for n, ts in enumerate((102, 103, 109))]
    batches = batches_from({purchases_0: purchases, CLICKS_0: clicks}, assignment=0, size=3)
    order = [(r.topic, r.offset) for b in batches for r in b.records]
    assert order == [("clicks", 10), ("purchases", 50), ("purchases", 51), ("clicks", 11), ("clicks", 12),
                     ("clicks", 13), ("purchases", 52)]  # fmt: skip
    # each batch covers a contiguous run of each partition, as the commit and the learner need
    assert [b.ranges for b in batches] == [
        {("clicks", 0): range(10, 11), ("purchases", 0): range(50, 52)},
        {("clicks", 0): range(11, 14)},
        {("purchases", 0): range(52, 53)},
    ]
    for batch in batches:
        assert offset_ranges(batch.records) == batch.ranges


def test_an_unreadable_marker_stays_between_the_records_fetched_around_it_and_widens_the_range():
    marker = UnreadableBatch("clicks", 0, 12, 20, "UnsupportedCodecError: snappy")
    fetched = {CLICKS_0: [record(CLICKS_0, 10), record(CLICKS_0, 11), marker, record(CLICKS_0, 20)]}
    first, second = batches_from(fetched, assignment=0, size=2)
    assert ([r.offset for r in first.records], first.unreadable, first.ranges) == (
        [10, 11],
        [],
        {("clicks", 0): range(10, 12)},
    )
    assert ([r.offset for r in second.records], second.unreadable) == ([20], [marker])
    assert second.ranges == {("clicks", 0): range(12, 21)}


# --- unreadable batches: aiokafka's own records, one of them undecodable -------------------------


def record_batch(base_offset: int, values: list[bytes], codec: int = GZIP) -> bytearray:
    builder = DefaultRecordBatchBuilder(
        magic=2, compression_type=codec, is_transactional=0, producer_id=-1, producer_epoch=-1, base_sequence=-1,
        batch_size=1 << 20,
    )  # fmt: skip
    for delta, value in enumerate(values):
        builder.append(delta, timestamp=1_700_000_000_000, key=b"k", value=value, headers=[])
    buffer = builder.build()
    struct.pack_into(">q", buffer, 0, base_offset)  # the broker assigns the base offset
    return buffer


def with_codec(buffer: bytearray, codec: int) -> bytearray:
    """The same bytes marked with another codec, CRC recomputed: a valid batch nobody can decompress."""
    attributes = struct.unpack_from(">h", buffer, 21)[0]
    struct.pack_into(">h", buffer, 21, (attributes & ~0x07) | codec)
    struct.pack_into(">I", buffer, 17, calc_crc32c_py(memoryview(buffer)[21:]))
    return buffer


def partition_records(*batches: bytearray, fetch_offset: int) -> Any:
    records = MemoryRecords(bytes(b"".join(batches)))
    return aiokafka_fetcher.PartitionRecords(
        CLICKS_0, records, [], fetch_offset, None, None, True, aiokafka_fetcher.READ_UNCOMMITTED
    )


class FetcherWith:
    """aiokafka's fetcher as guard_fetch_results sees it: its ``_records``, a FetchResult per partition."""

    def __init__(self, records: Any) -> None:
        self._records = {
            CLICKS_0: aiokafka_fetcher.FetchResult(CLICKS_0, assignment=None, partition_records=records, backoff=0)
        }


def read_all(records: Any) -> Iterator[Any]:
    fetcher = FetcherWith(records)
    guard_fetch_results(fetcher)
    guard_fetch_results(fetcher)  # guarding twice wraps once
    yield from records


@pytest.mark.parametrize("damage", ["codec", "crc"])
def test_a_batch_that_cannot_be_decoded_becomes_one_marker_and_the_records_after_it_are_read(damage):
    good = record_batch(100, [b"a", b"b"])
    bad = record_batch(102, [b"c", b"d", b"e"])
    if damage == "codec":
        bad = with_codec(bad, LZ4)  # gzip bytes said to be lz4: the decompressor fails
    else:
        bad[-1] ^= 0xFF  # a flipped byte: the CRC check fails
    after = record_batch(105, [b"f"])
    records = partition_records(good, bad, after, fetch_offset=100)

    items = list(read_all(records))

    assert [i.offset for i in items if not isinstance(i, UnreadableBatch)] == [100, 101, 105]
    [marker] = [i for i in items if isinstance(i, UnreadableBatch)]
    assert (marker.topic, marker.partition, marker.first, marker.end) == ("clicks", 0, 102, 105)
    expected = "CorruptRecordException: " if damage == "crc" else "DecompressionError: lz4"  # class and message
    assert marker.error.startswith(expected), marker.error
    assert records.next_fetch_offset == 106  # the fetch goes on after the last batch


def test_without_the_guard_aiokafka_raises_out_of_the_fetch():
    """Why the guard exists: the same fetch raises from aiokafka's iteration (the old crash loop)."""
    records = partition_records(record_batch(0, [b"a"]), with_codec(record_batch(1, [b"b"]), LZ4), fetch_offset=0)
    with pytest.raises(Exception, match="lz4") as raised:  # cramjam's DecompressionError
        list(records)
    assert raised.type.__name__ == "DecompressionError"


# --- the consumer's rules, on the real BatchConsumer with recorded broker calls -----------------


class Harness:
    """A BatchConsumer whose fetches come from a script and whose seeks and commits are recorded."""

    def __init__(
        self, *, size: int = 1000, rewind: dict[TopicPartition, int] | None = None, event_time: Any = None
    ) -> None:
        self.handled: list[Batch] = []
        self.seeks: list[dict[TopicPartition, int]] = []
        self.commits: list[dict[Any, int]] = []
        self.script: list[Any] = []
        self.assigned = {CLICKS_0, CLICKS_1}
        self.committed: dict[TopicPartition, int | None] = {CLICKS_0: 10, CLICKS_1: None}
        self.gate = asyncio.Event()
        self.gate.set()

        async def handle(batch: Batch) -> None:
            await self.gate.wait()
            self.handled.append(batch)

        async def after_seek(consumer: Any, positions: dict[Any, int]) -> dict[Any, int]:
            return dict(rewind or {})

        app = faust.App("unit", broker="kafka://127.0.0.1:1")
        routes = InputRoutes(
            (Route("clicks", frozenset({"clicks"}), handle),),
            max_batch_records=size,
            after_seek=after_seek,
            event_time=event_time,
            event_time_topics=frozenset({"clicks"}),
        )
        install(app, routes, ())
        consumer: BatchConsumer = app.consumer
        consumer.assignment = lambda: set(self.assigned)  # type: ignore[method-assign]
        consumer.highwater = lambda tp: 1000  # type: ignore[method-assign]

        async def seek_to_committed() -> dict[TopicPartition, int | None]:
            return {tp: self.committed.get(tp) for tp in self.assigned}

        async def earliest_offsets(*tps: TopicPartition) -> dict[TopicPartition, int]:
            return dict.fromkeys(tps, 3)

        async def seek_wait(positions: dict[TopicPartition, int]) -> None:
            self.seeks.append(dict(positions))
            await asyncio.sleep(0)  # the real one awaits the consumer's thread

        async def commit_offsets(offsets: dict[Any, int], start_new_transaction: bool = True) -> bool:
            self.commits.append(dict(offsets))
            return True

        async def next_records(timeout: float) -> tuple[dict[TopicPartition, list[Any]], None]:  # noqa: ASYNC109
            step = self.script.pop(0) if self.script else None
            if step is None:
                self.fetcher._stopped.set()
                return {}, None
            if callable(step):
                step = await step()
            return step, None

        consumer.seek_to_committed = seek_to_committed  # type: ignore[method-assign]
        consumer.earliest_offsets = earliest_offsets  # type: ignore[method-assign]
        consumer.seek_wait = seek_wait  # type: ignore[method-assign]
        consumer._commit_offsets = commit_offsets  # type: ignore[method-assign]
        consumer._wait_next_records = next_records  # type: ignore[method-assign]
        self.paused: set[TopicPartition] = set()
        consumer.pause_partitions = self.paused.update  # type: ignore[method-assign]
        consumer.resume_partitions = self.paused.difference_update  # type: ignore[method-assign]
        self.consumer = consumer
        self.fetcher = type("Fetcher", (), {"_stopped": asyncio.Event()})()

    async def run(self, *script: Any) -> list[list[tuple[int, int]]]:
        """Feed fetches through the drain loop and the route; return each handled batch's (partition, offset)s."""
        self.script = list(script)
        self.fetcher._stopped.clear()
        server = asyncio.ensure_future(self.consumer.serve("clicks"))
        await self.consumer._drain_messages(self.fetcher)
        while any(not lane.queue.empty() or not lane.idle.is_set() for lane in self.consumer._lanes.values()):  # noqa: ASYNC110
            await asyncio.sleep(0)
        server.cancel()
        return [[(r.partition, r.offset) for r in b.records] for b in self.handled]


def in_a_loop(test: Any) -> Any:
    """Run an async test with asyncio.run (the suite has no async plugin)."""

    def run() -> None:
        asyncio.run(test())

    run.__name__, run.__doc__ = test.__name__, test.__doc__
    return run


def fetch(tp: TopicPartition, offsets: range) -> dict[TopicPartition, list[ConsumerRecord]]:
    return {tp: [record(tp, o) for o in offsets]}


@in_a_loop
async def test_an_assignment_starts_at_the_commit_or_the_log_start_then_the_rewind_and_reads_on_in_order():
    h = Harness(rewind={CLICKS_0: 8})
    await h.consumer.perform_seek()
    assert h.seeks == [{CLICKS_0: 8, CLICKS_1: 3}]  # rewound below the commit; no commit: the log start
    got = await h.run(fetch(CLICKS_0, range(8, 12)) | fetch(CLICKS_1, range(3, 5)), fetch(CLICKS_0, range(12, 14)))
    # one fetch, its partitions interleaved by record timestamp (here the offset): partition 1's are older
    assert got == [[(1, 3), (1, 4), (0, 8), (0, 9), (0, 10), (0, 11)], [(0, 12), (0, 13)]]
    assert h.consumer._handled == {CLICKS_0: 14, CLICKS_1: 5}


@in_a_loop
async def test_records_fetched_before_the_partition_is_positioned_are_not_handed_over():
    h = Harness()
    got = await h.run(fetch(CLICKS_0, range(0, 4)))
    assert got == [] and h.seeks == []  # the assignment's seek positions it and reading starts there


@in_a_loop
async def test_a_fetch_that_returns_while_a_seek_runs_is_not_handed_over_and_reading_resumes_where_the_seek_set():
    h = Harness()
    await h.consumer.perform_seek()  # clicks-0 at 10

    async def seek_during_fetch() -> dict[TopicPartition, list[ConsumerRecord]]:
        # The learner-style seek to 20 runs while this fetch is in flight; the fetch came back with
        # 20..24 read from the new position, which moved the consumer's position to 25.
        async with h.consumer._seek_lock:
            await h.consumer._seek_positions({CLICKS_0: 20})
        return fetch(CLICKS_0, range(20, 25))

    got = await h.run(seek_during_fetch, fetch(CLICKS_0, range(20, 23)))
    assert h.seeks[1:] == [{CLICKS_0: 20}, {CLICKS_0: 20}]  # the seek, then back to where it set
    assert got == [[(0, 20), (0, 21), (0, 22)]]
    assert h.consumer.stats.discarded_fetches == 1 and h.consumer.stats.repositioned == 1


@in_a_loop
async def test_records_fetched_while_the_flow_is_stopped_send_the_partition_back_to_its_next_offset():
    h = Harness()
    await h.consumer.perform_seek()

    async def flow_stops() -> dict[TopicPartition, list[ConsumerRecord]]:
        h.consumer.stop_flow()
        return fetch(CLICKS_0, range(12, 15))

    async def flow_resumes() -> dict[TopicPartition, list[ConsumerRecord]]:
        h.consumer.resume_flow()
        return fetch(CLICKS_0, range(10, 13))

    got = await h.run(fetch(CLICKS_0, range(10, 12)), flow_stops, flow_resumes)
    assert h.seeks[1:] == [{CLICKS_0: 12}]
    assert got == [[(0, 10), (0, 11)], [(0, 12)]]  # 10 and 11 were handed over once: not again


@in_a_loop
async def test_a_jump_past_the_next_offset_is_handed_over_and_counted():
    """Compacted or deleted ranges and transaction markers leave gaps that no seek can fill."""
    h = Harness()
    await h.consumer.perform_seek()
    got = await h.run(fetch(CLICKS_0, range(13, 15)))
    assert got == [[(0, 13), (0, 14)]]
    assert h.consumer.stats.skipped_offsets == {"clicks:0": 3}


@in_a_loop
async def test_the_commit_is_the_offset_after_the_last_batch_handled():
    h = Harness()
    await h.consumer.perform_seek()
    h.consumer._committed_offset[CLICKS_0] = 10
    await h.run(fetch(CLICKS_0, range(10, 13)))
    assert list(h.consumer._filter_tps_with_pending_acks()) == [CLICKS_0]
    assert h.consumer._new_offset(CLICKS_0) == 13
    h.consumer._committed_offset[CLICKS_0] = 13
    assert list(h.consumer._filter_tps_with_pending_acks()) == []


@in_a_loop
async def test_a_commit_the_broker_refused_is_made_again_at_the_next_tick():
    h = Harness()
    await h.consumer.perform_seek()
    await h.run(fetch(CLICKS_0, range(10, 13)))
    refused = [True]
    real_commit(h, accepted=lambda: not refused[0])  # Faust's driver returns False on CommitFailedError
    assert await h.consumer.commit() is False
    assert h.consumer._committed_offset[CLICKS_0] == 10 and h.consumer.stats.commits_failed == 1
    refused[0] = False
    assert await h.consumer.commit() is True
    assert h.commits == [{CLICKS_0: 13}, {CLICKS_0: 13}] and h.consumer._committed_offset[CLICKS_0] == 13


def real_commit(h: Harness, accepted: Callable[[], bool] = lambda: True) -> None:
    """The real commit path (Faust's, and ours around it) on the harness, around a recorded broker commit."""

    async def broker_commit(offsets: dict[Any, int]) -> bool:
        h.commits.append(dict(offsets))
        return accepted()

    async def no_flush() -> None:  # Faust's flush gives up after 0.1 s anyway: nothing may rely on it
        return None

    del h.consumer._commit_offsets
    h.consumer._commit = broker_commit
    h.consumer.app.producer.flush = no_flush


@in_a_loop
async def test_revocation_drops_batches_not_started_waits_for_the_one_in_progress_and_commits_it():
    h = Harness(size=2)
    await h.consumer.perform_seek()
    revoked_by_faust: list[set[Any]] = []

    async def faust_revokes(revoked: set[Any]) -> None:
        revoked_by_faust.append(revoked)

    h.consumer._on_partitions_revoked = faust_revokes
    h.gate.clear()  # the handler blocks in its first batch
    h.script = [fetch(CLICKS_0, range(10, 16))]  # three batches of two
    h.fetcher._stopped.clear()
    server = asyncio.ensure_future(h.consumer.serve("clicks"))
    drain = asyncio.ensure_future(h.consumer._drain_messages(h.fetcher))
    while h.consumer._lanes["clicks"].queue.qsize() < 2:  # noqa: ASYNC110
        await asyncio.sleep(0)  # batch 10-11 in progress, 12-13 and 14-15 queued

    revocation = asyncio.ensure_future(h.consumer.on_partitions_revoked({CLICKS_0, CLICKS_1}))
    await asyncio.sleep(0.01)
    assert not revocation.done()  # waits for the batch in progress
    h.gate.set()
    await revocation
    await drain
    server.cancel()

    assert [[r.offset for r in b.records] for b in h.handled] == [[10, 11]]
    assert h.consumer.stats.dropped_queued == 2
    assert h.commits == [{CLICKS_0: 12}]  # what was handled, committed before Faust revokes
    assert revoked_by_faust == [{CLICKS_0, CLICKS_1}] and h.consumer._next == {} and not h.consumer.flow_active


def with_changelog_writes(h: Harness, monkeypatch: pytest.MonkeyPatch) -> tuple[ChangelogAckedTable, list[Any]]:
    """A table on the harness's app whose changelog sends return futures the test resolves (no broker)."""
    app = h.consumer.app
    table = app.tables.add(ChangelogAckedTable(app, name="user_state", beacon=app.tables.beacon))
    sent: list[Any] = []

    def send_soon(self: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(asyncio.get_running_loop().create_future())
        return sent[-1]

    monkeypatch.setattr(faust_table_base.Collection, "send_changelog", send_soon)
    return table, sent


def test_a_commit_waits_until_the_broker_has_the_table_writes_it_covers(monkeypatch: pytest.MonkeyPatch):
    async def scenario() -> None:
        h = Harness()
        await h.consumer.perform_seek()
        table, sent = with_changelog_writes(h, monkeypatch)
        await h.run(fetch(CLICKS_0, range(10, 13)))
        table.send_changelog(0, b"u1", b"{}")  # the batch's state write, still in Faust's producer buffer
        table.send_changelog(0, b"u2", b"{}")
        real_commit(h)
        commit = asyncio.ensure_future(h.consumer.commit())
        await asyncio.sleep(0.05)
        sent[0].set_result(None)
        await asyncio.sleep(0.05)
        assert not commit.done() and h.commits == []  # one write still unacknowledged: no commit over it
        sent[1].set_result(None)
        assert await commit is True and h.commits == [{CLICKS_0: 13}]
        assert table.unacked_changelog() == []

    asyncio.run(scenario())


def test_a_changelog_write_the_producer_gave_up_on_stops_the_worker_without_a_commit(monkeypatch: pytest.MonkeyPatch):
    async def scenario() -> None:
        h = Harness()
        await h.consumer.perform_seek()
        table, sent = with_changelog_writes(h, monkeypatch)
        await h.run(fetch(CLICKS_0, range(10, 13)))
        table.send_changelog(0, b"u1", b"{}")
        sent[0].set_exception(RuntimeError("KafkaTimeoutError"))
        real_commit(h)
        crashed: list[BaseException] = []

        async def crash(exc: BaseException) -> None:
            crashed.append(exc)

        h.consumer.crash = crash
        assert await h.consumer.commit() is False
        assert h.commits == [] and [str(e) for e in crashed] == ["KafkaTimeoutError"]
        assert h.consumer._committed_offset[CLICKS_0] == 10

    asyncio.run(scenario())


def test_revocation_waits_for_the_changelog_before_faust_hands_the_partitions_on(monkeypatch: pytest.MonkeyPatch):
    async def scenario() -> None:
        h = Harness()
        await h.consumer.perform_seek()
        table, sent = with_changelog_writes(h, monkeypatch)
        revoked_by_faust: list[set[Any]] = []

        async def faust_revokes(revoked: set[Any]) -> None:
            revoked_by_faust.append(revoked)

        h.consumer._on_partitions_revoked = faust_revokes
        await h.run(fetch(CLICKS_0, range(10, 13)))
        table.send_changelog(0, b"u1", b"{}")
        revocation = asyncio.ensure_future(h.consumer.on_partitions_revoked({CLICKS_0}))
        await asyncio.sleep(0.05)
        assert not revocation.done() and revoked_by_faust == []  # the next owner would recover without it
        sent[0].set_result(None)
        await revocation
        assert revoked_by_faust == [{CLICKS_0}] and h.commits == [{CLICKS_0: 13}]

    asyncio.run(scenario())


def test_a_changelog_partition_without_an_offset_restarts_the_table_recovery(monkeypatch: pytest.MonkeyPatch):
    async def scenario() -> None:
        h = Harness()
        del h.consumer.seek_wait  # the real one (ours, around Faust's)
        sought: list[dict[Any, Any]] = []

        async def faust_seek_wait(self: Any, partitions: dict[Any, int]) -> None:
            sought.append(dict(partitions))

        monkeypatch.setattr(faust_consumer.ThreadDelegateConsumer, "seek_wait", faust_seek_wait)
        recovery = h.consumer.app.tables.recovery
        changelog = TopicPartition("unit-user_state-changelog", 3)
        await h.consumer.seek_wait({changelog: 41})
        assert sought == [{changelog: 41}] and not recovery.signal_recovery_start.is_set()
        # A standby partition added by a rebalance after Faust built the offsets: None.
        with pytest.raises(faust_recovery.RebalanceAgain):
            await h.consumer.seek_wait({changelog: 41, TopicPartition("unit-user_state-changelog", 4): None})
        assert sought == [{changelog: 41}]  # nothing sought: aiokafka would refuse None and crash the worker
        assert recovery.signal_recovery_start.is_set() and h.consumer.stats.recoveries_restarted == 1

    asyncio.run(scenario())


# --- the internals this module relies on ---------------------------------------------------------


def test_faust_still_drives_the_consumer_the_way_this_module_expects():
    fetcher_loop = inspect.getsource(faust_consumer.Fetcher._fetcher.fun)
    assert "_drain_messages(self)" in fetcher_loop
    for method in (faust_recovery.Recovery.on_recovery_completed, faust_recovery.Recovery._resume_streams):
        source = inspect.getsource(method)
        # input partitions are resumed, then sought (our perform_seek), then the flow resumes
        assert source.index("resume_partitions") < source.index("perform_seek()") < source.index("resume_flow()")
    revoke = inspect.getsource(faust_consumer.Consumer.on_partitions_revoked)
    assert "self._on_partitions_revoked" in revoke
    commit = inspect.getsource(faust_consumer.Consumer.force_commit) + inspect.getsource(
        faust_consumer.Consumer._filter_committable_offsets
    )
    assert "_filter_tps_with_pending_acks" in commit and "_new_offset(tp)" in commit
    wait = inspect.getsource(faust_consumer.Consumer._wait_next_records)
    assert "self._getmany(" in wait and "can_resume_flow" in wait


def test_every_table_write_still_goes_through_send_changelog_and_faust_flush_still_gives_up():
    # ChangelogAckedTable sees every changelog write only if Faust's writers all call send_changelog.
    assert "self.send_changelog(" in inspect.getsource(faust_table_base.Collection._send_changelog)
    assert "return self.changelog_topic.send_soon(" in inspect.getsource(faust_table_base.Collection.send_changelog)
    for writer in (faust_table.Table.on_key_set, faust_table.Table.on_key_del):
        assert "self.send_changelog(" in inspect.getsource(writer)
    # Why the commit waits on the writes themselves: Faust's flush before a commit returns after 0.1 s without
    # progress. If a Faust upgrade makes it wait for the buffer to drain, changelog_acked may become redundant.
    from faust.transport.producer import ProducerBuffer

    assert "timeout=0.1" in inspect.getsource(ProducerBuffer.flush_atmost)


def test_faust_recovery_still_needs_the_restart_guard():
    restart = inspect.getsource(faust_recovery.Recovery._restart_recovery.fun)
    # The swallow: a RebalanceAgain raised while waiting for the actives is caught by "except Exception" and
    # recovery goes on with the new assignment's standby partitions. If Faust re-raises it, the guard in
    # BatchConsumer.seek_wait is no longer needed (keep it: it is harmless).
    wait = restart.index("await self._wait(self.signal_recovery_end.wait())")
    assert restart.index("except Exception as exc:", wait) < restart.index("Done reading from changelog topics")
    # What the guard relies on: standby seeks go through consumer.seek_wait with None left as it is, and the
    # loop restarts on RebalanceAgain once signal_recovery_start is set.
    seek = inspect.getsource(faust_recovery.Recovery._seek_offsets)
    assert "if offset == -1:" in seek and "consumer.seek_wait(new_offsets)" in seek
    add = inspect.getsource(faust_recovery.Recovery._add)
    assert "offsets.setdefault(tp, None)" in add
    assert "except RebalanceAgain" in restart and "continue  # another rebalance started" in restart
    assert "self.signal_recovery_start.clear()" in restart


def test_aiokafka_still_iterates_batches_the_way_the_guard_expects():
    unpack = inspect.getsource(aiokafka_fetcher.PartitionRecords._unpack_records)
    assert "records.has_next()" in unpack and "records.next_batch()" in unpack and "self.next_fetch_offset" in unpack
    init = inspect.getsource(aiokafka_fetcher.PartitionRecords.__init__)
    assert "self._records_iterator = self._unpack_records()" in init
    fetched = inspect.getsource(aiokafka_fetcher.Fetcher.fetched_records)
    assert "getall(max_records)" in fetched and "_create_fetch_waiter" in fetched


def test_a_record_is_what_the_tables_take_for_an_event():
    r = Record("clicks", 2, 41, 1.5, b"u1", b"{}", [("h", b"v")])
    assert (r.message.topic, r.message.partition, r.message.offset, r.tp) == ("clicks", 2, 41, ("clicks", 2))
    import weakref

    assert (
        weakref.ref(r)() is r
    )  # streamrec.stream.worker.ingest.writing_for keeps a weak reference to the current event


def test_a_changelog_whose_metadata_is_not_known_yet_is_checked_on_a_later_write_not_taken_for_a_mismatch():
    h = Harness()
    app = h.consumer.app
    table = app.tables.add(ChangelogAckedTable(app, name="catalogue", beacon=app.tables.beacon))
    partitions = {"clicks": 4, table.changelog_topic_name: 0}
    h.consumer.topic_partitions = partitions.get  # the consumer's metadata snapshot, just after start
    table._verify_source_topic_partitions("clicks")  # 4 against "0": not known yet, no error
    assert "clicks" not in table._verified_source_topics_for_partitions
    partitions[table.changelog_topic_name] = 4
    table._verify_source_topic_partitions("clicks")
    assert "clicks" in table._verified_source_topics_for_partitions  # checked once the metadata knows it
    other = app.tables.add(ChangelogAckedTable(app, name="other", beacon=app.tables.beacon))
    partitions[other.changelog_topic_name] = 8
    with pytest.raises(faust.exceptions.PartitionsMismatch):  # a real mismatch still stops the worker
        other._verify_source_topic_partitions("clicks")


# --- event-time hold-back (stream/worker/event_time.py) through the consumer ---------------------


def at(tp: TopicPartition, offsets: range, first_ts: int, step: int = 10) -> dict[TopicPartition, list[ConsumerRecord]]:
    return {tp: [timed(tp, o, first_ts + step * k) for k, o in enumerate(offsets)]}


@in_a_loop
async def test_records_past_the_watermark_wait_for_the_partition_behind_and_are_committed_only_once_handed():
    h = Harness(event_time=EventTimeBuffer(idle_s=60.0))
    h.committed = {CLICKS_0: 10, CLICKS_1: 0}
    await h.consumer.perform_seek()
    # partition 1 runs ahead in event time (1000..1090); partition 0 is at 100..130
    got = await h.run(at(CLICKS_0, range(10, 14), 100) | at(CLICKS_1, range(0, 10), 1000))
    assert got == [[(0, 10), (0, 11), (0, 12), (0, 13)]]
    assert h.consumer._handled == {CLICKS_0: 14} and h.consumer._next == {CLICKS_0: 14, CLICKS_1: 10}
    # partition 0 catches up to 1045: partition 1's records up to 1040 go, interleaved by time
    got = await h.run(at(CLICKS_0, range(14, 16), 1035))
    assert got[1:] == [[(1, 0), (1, 1), (1, 2), (1, 3), (0, 14), (1, 4), (0, 15)]]
    assert h.consumer._handled == {CLICKS_0: 16, CLICKS_1: 5}  # the commit never covers what is held
    assert h.consumer.routes.event_time.held_count(CLICKS_1) == 5


@in_a_loop
async def test_a_discarded_fetch_seeks_back_to_the_first_record_held_not_past_it():
    h = Harness(event_time=EventTimeBuffer(idle_s=60.0))
    h.committed = {CLICKS_0: 10, CLICKS_1: 0}
    await h.consumer.perform_seek()

    async def flow_stops() -> dict[TopicPartition, list[ConsumerRecord]]:
        h.consumer.stop_flow()
        return at(CLICKS_1, range(10, 12), 2000)

    async def flow_resumes() -> dict[TopicPartition, list[ConsumerRecord]]:
        h.consumer.resume_flow()
        return at(CLICKS_1, range(3, 12), 1030) | at(CLICKS_0, range(11, 12), 5000)

    got = await h.run(at(CLICKS_0, range(10, 11), 1020) | at(CLICKS_1, range(0, 10), 1000), flow_stops, flow_resumes)
    assert h.seeks[1:] == [{CLICKS_1: 3}]  # 3..9 were held, not handed over: read again from 3
    handed = [(p, o) for batch in got for p, o in batch]
    assert sorted(handed) == [(0, 10)] + [(1, o) for o in range(12)]  # every offset once, none skipped
    assert h.consumer.routes.event_time.first_held(CLICKS_0).offset == 11  # at 5000: partition 1 is at 1110


@in_a_loop
async def test_a_partition_holding_too_much_is_paused_and_what_it_held_is_dropped_on_revocation():
    h = Harness(event_time=EventTimeBuffer(idle_s=60.0, max_held=4))
    h.committed = {CLICKS_0: 10, CLICKS_1: 0}
    await h.consumer.perform_seek()
    await h.run(at(CLICKS_0, range(10, 11), 100) | at(CLICKS_1, range(0, 6), 1000))
    assert h.paused == {CLICKS_1}

    async def faust_revokes(revoked: set[Any]) -> None:
        pass

    h.consumer._on_partitions_revoked = faust_revokes
    await h.consumer.on_partitions_revoked({CLICKS_0, CLICKS_1})
    assert h.commits == [{CLICKS_0: 11}]  # partition 1 handed nothing over: its commit stays where it was
    assert not h.consumer.routes.event_time.holding() and h.consumer.routes.event_time.paused == set()
