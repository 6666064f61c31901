"""Faust's rebalance, mended where it lost records.

Two wrappers around one app's Faust objects: :func:`keep_queued_events_on_resume` (its flow
control: fetched events are kept when flow that was never suspended is resumed) and
:class:`SeekWithFlowStopped` (its consumer, below).

After a rebalance, nothing is delivered from the input partitions while they are being sought.
Faust resumes the stream partitions and *then* seeks them to the committed offsets (and the
learner seeks them further back, to its checkpoint: :meth:`stream.learner.Learner.rewind`).
Both seeks await the broker, and meanwhile Faust's fetch loop goes on delivering the batch it
holds. Faust's consumer keeps a per-partition read offset and drops every record below it, and
takes a jump in offsets for a gap to commit over (``faust/transport/consumer.py:
_drain_messages``): the rest of a batch fetched before the seek moves the read offset past the
position the seek just set. The records the seek brings back are then dropped, and the jump is
committed although nothing processed it. A worker joining or leaving mid-stream lost events that
way: from the model (the rewound ones), and from the user state (committed over, then cleared
from the stream queue by the next rebalance). The test is
``tests/integration/test_scale_out.py::test_a_worker_joining_and_leaving_mid_stream_loses_no_event``.

:class:`SeekWithFlowStopped` makes both seeks run with the consumer's flow stopped: resuming input
partitions (which Faust does right before it seeks them) stops the flow first, so that Faust's
fetch loop abandons its batch at the next record and waits; the wrapped ``perform_seek`` seeks,
runs ``after_seek`` (the learner's rewind), and leaves resuming the flow to Faust, which does it
right after. The next record delivered then comes from a fetch at the position the seeks set. A
seek asked for while one is running (Faust's fetch loop asks for one when it finds the flow
stopped) waits for the running one instead of seeking again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import faust

AfterSeek = Callable[[Any], Awaitable[None]]


def keep_queued_events_on_resume(app: faust.App) -> None:
    """Make ``app.flow_control.resume()`` clear the stream queues only when flow was suspended.

    Faust suspends flow at the start of a rebalance and resumes it, clearing every stream queue,
    so that events fetched before the new assignment are dropped and read again from the
    committed offsets. But after recovering tables from their changelogs, Faust resumes flow a
    second time *after* it has resumed the stream partitions and sought them: events fetched in
    between (a producer writing while the worker starts) were dropped from the queues although
    the consumer had already moved past them, so they were never processed, and the next commit
    skipped them. Resuming flow that is not suspended now keeps the queues. An event fetched
    twice around that seek is recognised as a redelivery by the user state and the learner.
    """
    flow = app.flow_control
    resume_and_clear = flow.resume

    def resume() -> None:
        if not flow.is_active():
            resume_and_clear()

    flow.resume = resume  # type: ignore[method-assign]


class SeekWithFlowStopped:
    """Wraps a consumer's ``resume_partitions`` and ``perform_seek``: no record is delivered while it seeks."""

    def __init__(self, after_seek: AfterSeek | None = None) -> None:
        self.after_seek = after_seek
        self.consumer: Any = None
        self._running: asyncio.Future[None] | None = None
        self._resume: Callable[[Iterable[Any]], None] | None = None
        self._seek: Callable[[], Awaitable[None]] | None = None

    def install(self, consumer: Any) -> None:
        """Wrap ``consumer``'s methods (once per consumer)."""
        if consumer is self.consumer:
            return
        self.consumer = consumer
        self._resume = consumer.resume_partitions
        self._seek = consumer.perform_seek
        consumer.resume_partitions = self.resume_partitions
        consumer.perform_seek = self.perform_seek

    def resume_partitions(self, partitions: Iterable[Any]) -> None:
        """Resuming input partitions (only ever right before their seek) stops the flow first."""
        assert self._resume is not None
        partitions = list(partitions)
        if self.consumer.flow_active and any(not self.consumer._is_changelog_tp(tp) for tp in partitions):
            self.consumer.stop_flow()
        self._resume(partitions)

    async def perform_seek(self) -> None:
        if self._running is not None and not self._running.done():
            await asyncio.shield(self._running)  # seeking already: wait for it rather than seek twice
            return
        self._running = asyncio.ensure_future(self._seek_with_flow_stopped())
        await asyncio.shield(self._running)

    async def _seek_with_flow_stopped(self) -> None:
        assert self._seek is not None
        consumer = self.consumer
        stopped_here = consumer.flow_active  # a seek outside a rebalance: stop and resume it here
        if stopped_here:
            consumer.stop_flow()
        try:
            await self._seek()
            if self.after_seek is not None:
                await self.after_seek(consumer)
        finally:
            if stopped_here:
                consumer.resume_flow()


def seek_with_flow_stopped(app: faust.App, after_seek: AfterSeek | None = None) -> SeekWithFlowStopped:
    """Install :class:`SeekWithFlowStopped` on ``app``'s consumer (at the first rebalance, before any seek)."""
    guard = SeekWithFlowStopped(after_seek)

    @app.on_rebalance_complete.connect
    async def wrap_seek(sender: Any, **kwargs: Any) -> None:
        guard.install(app.consumer)

    return guard
