"""SeekWithFlowStopped: no record is delivered while the input partitions are being sought.

The consumer here is a stand-in that records calls in order; the live behaviour (a worker joining
and leaving mid-stream, real broker and Faust) is in tests/integration/test_scale_out.py.
"""

from __future__ import annotations

import asyncio
from typing import Any, NamedTuple

from stream.ingest import offset_ranges
from stream.rebalance import SeekWithFlowStopped


class TP(NamedTuple):
    topic: str
    partition: int


CLICKS_0, CHANGELOG_0 = TP("clicks", 0), TP("app-user_state-changelog", 0)


class RecordingConsumer:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.flow_active = True

    def _is_changelog_tp(self, tp: TP) -> bool:
        return tp.topic.endswith("-changelog")

    def stop_flow(self) -> None:
        self.flow_active = False
        self.calls.append("stop flow")

    def resume_flow(self) -> None:
        self.flow_active = True
        self.calls.append("resume flow")

    def resume_partitions(self, tps: Any) -> None:
        self.calls.append(f"resume {sorted(tp.partition for tp in tps)} (flow {self.flow})")

    async def perform_seek(self) -> None:
        self.calls.append(f"seek to committed (flow {self.flow})")
        await asyncio.sleep(0)  # the real one awaits the broker; Faust's fetch loop runs meanwhile

    @property
    def flow(self) -> str:
        return "on" if self.flow_active else "off"


def guarded(fail: bool = False, rewinding: asyncio.Event | None = None) -> RecordingConsumer:
    consumer = RecordingConsumer()

    async def rewind(c: Any) -> None:
        c.calls.append(f"rewind (flow {c.flow})")
        if rewinding is not None:
            rewinding.set()
        await asyncio.sleep(0)
        if fail:
            raise RuntimeError("broker went away")

    SeekWithFlowStopped(rewind).install(consumer)
    return consumer


def test_a_rebalance_resumes_the_input_partitions_with_the_flow_stopped_and_seeks_before_faust_resumes_it():
    consumer = guarded()
    consumer.resume_partitions([CLICKS_0])  # Faust, right before its seek
    asyncio.run(consumer.perform_seek())
    assert consumer.calls == ["stop flow", "resume [0] (flow off)", "seek to committed (flow off)", "rewind (flow off)"]
    assert not consumer.flow_active  # Faust resumes the flow right after its seek


def test_resuming_changelog_partitions_for_table_recovery_leaves_the_flow_on():
    consumer = guarded()
    consumer.resume_partitions([CHANGELOG_0])
    assert consumer.calls == ["resume [0] (flow on)"] and consumer.flow_active


def test_a_seek_outside_a_rebalance_stops_the_flow_and_resumes_it():
    consumer = guarded()
    asyncio.run(consumer.perform_seek())
    assert consumer.calls == ["stop flow", "seek to committed (flow off)", "rewind (flow off)", "resume flow"]


def test_a_seek_asked_for_during_one_is_run_after_it_and_every_caller_waits_for_both():
    # Faust's fetch loop asks for a seek when a fetch came back while the flow was stopped: it has
    # dropped those records. Asked for after the running seek set its positions, only a new seek
    # brings them back.
    rewinding = asyncio.Event()
    consumer = guarded(rewinding=rewinding)

    async def fetch_loop_asks_during_the_rewind() -> None:
        await rewinding.wait()
        await consumer.perform_seek()
        consumer.calls.append("fetch loop returned")

    async def faust_seeks() -> None:
        consumer.resume_partitions([CLICKS_0])
        await consumer.perform_seek()
        consumer.calls.append("faust returned")

    async def both() -> None:
        await asyncio.gather(faust_seeks(), fetch_loop_asks_during_the_rewind())

    asyncio.run(both())
    assert consumer.calls == [
        "stop flow", "resume [0] (flow off)",
        "seek to committed (flow off)", "rewind (flow off)",
        "seek to committed (flow off)", "rewind (flow off)",
        "faust returned", "fetch loop returned",
    ]  # fmt: skip
    assert not consumer.flow_active  # still Faust's to resume


def test_seeks_asked_for_one_after_another_each_seek():
    consumer = guarded()

    async def twice() -> None:
        await consumer.perform_seek()
        await consumer.perform_seek()

    asyncio.run(twice())
    assert consumer.calls.count("seek to committed (flow off)") == 2


def test_a_failed_seek_resumes_the_flow_it_stopped_and_raises_to_every_caller():
    consumer = guarded(fail=True)

    async def two_at_once() -> list[Any]:
        return await asyncio.gather(consumer.perform_seek(), consumer.perform_seek(), return_exceptions=True)

    errors = asyncio.run(two_at_once())
    assert [str(e) for e in errors] == ["broker went away", "broker went away"]
    assert consumer.calls[-1] == "resume flow" and consumer.flow_active


def test_installing_twice_on_one_consumer_wraps_it_once():
    consumer = RecordingConsumer()
    guard = SeekWithFlowStopped()
    guard.install(consumer)
    guard.install(consumer)  # the signal that installs it comes with every rebalance
    assert guard._seek.__func__ is RecordingConsumer.perform_seek  # Faust's, not the wrapper itself
    asyncio.run(consumer.perform_seek())
    assert consumer.calls == ["stop flow", "seek to committed (flow off)", "resume flow"]


class Message(NamedTuple):
    topic: str
    partition: int
    offset: int


class Event(NamedTuple):
    message: Message


def test_offset_ranges_span_each_partitions_first_to_last_record_in_any_order():
    events = [Event(Message("clicks", 0, o)) for o in (7, 5, 6)] + [Event(Message("clicks", 1, 3))]
    assert offset_ranges(events) == {("clicks", 0): range(5, 8), ("clicks", 1): range(3, 4)}
