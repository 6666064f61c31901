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
right after. The next record delivered then comes from a fetch at the position the seeks set.

A seek asked for while one is running is run again after it, and every caller waits for both.
Faust's fetch loop asks for a seek when a fetch returns while the flow is stopped: it has dropped
those records, and the consumer's position is already past them. If that fetch returned after
the running seek had set its positions, only a new seek brings the records back; returning to
the fetch loop without one lost them (``tests/integration/test_restart.py``: a worker restarted
on an empty state directory never consumed the events produced while it was being sought).
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
        self._seek_again = False  # asked for since the running seek started
        self._runner: asyncio.Future[None] | None = None
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
        """Return once a seek that started after this call has finished (and no other is pending)."""
        self._seek_again = True
        if self._runner is None or self._runner.done():
            self._runner = asyncio.ensure_future(self._seek_until_covered())
        await asyncio.shield(self._runner)

    async def _seek_until_covered(self) -> None:
        consumer = self.consumer
        stopped_here = consumer.flow_active  # a seek outside a rebalance: stop and resume it here
        if stopped_here:
            consumer.stop_flow()
        try:
            while self._seek_again:
                self._seek_again = False
                await self._seek_once()
        finally:
            if stopped_here:
                consumer.resume_flow()

    async def _seek_once(self) -> None:
        assert self._seek is not None
        await self._seek()
        if self.after_seek is not None:
            await self.after_seek(self.consumer)


def seek_with_flow_stopped(app: faust.App, after_seek: AfterSeek | None = None) -> SeekWithFlowStopped:
    """Install :class:`SeekWithFlowStopped` on ``app``'s consumer (at the first rebalance, before any seek)."""
    guard = SeekWithFlowStopped(after_seek)

    @app.on_rebalance_complete.connect
    async def wrap_seek(sender: Any, **kwargs: Any) -> None:
        guard.install(app.consumer)

    return guard
