"""An agent's exception ends the process before Faust can acknowledge the batch (stream/worker/agent_failure.py)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from streamrec.stream.worker.agent_failure import EXIT_AGENT_CRASHED, exit_on_error


def test_an_exception_exits_with_code_70_after_logging_the_traceback(caplog):
    exits: list[int] = []
    with caplog.at_level(logging.CRITICAL, logger="streamrec.stream.worker.agent_failure"):
        with pytest.raises(KeyError), exit_on_error("ingest_interactions", exit_process=exits.append):
            raise KeyError("u1")
    assert exits == [EXIT_AGENT_CRASHED] == [70]
    (record,) = caplog.records
    assert record.getMessage().startswith("agent ingest_interactions raised; the worker exits with code 70")
    assert record.exc_info is not None and record.exc_info[0] is KeyError


def test_cancellation_is_not_an_error():
    """Faust cancels agents at shutdown and on a rebalance: the process must go on."""
    exits: list[int] = []

    async def agent() -> None:
        with exit_on_error("ingest_interactions", exit_process=exits.append):
            await asyncio.sleep(60)

    async def cancel_it() -> None:
        task = asyncio.ensure_future(agent())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_it())
    assert exits == []
