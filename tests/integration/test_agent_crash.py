"""An agent that raises: the worker exits at once (code 70), and the restarted one loses nothing.

The fault is injected into the real worker process from outside: a ``sitecustomize`` module on the
child's ``PYTHONPATH`` (Python imports it at start-up) wraps ``Ingestor.interactions`` so that one
batch raises. Nothing in the product has a fault switch; the broker, Faust and the commit are the
real ones.

Before the worker failed fast (stream/worker/agent_failure.py), this test saw Faust restart the agent
and carry on: the crashed batch was never applied, some partitions stopped, and in 1 run of 11
the restarted worker was missing events for good, because the batch had been acknowledged and
committed behind the crash.
"""

from __future__ import annotations

import asyncio
import textwrap
import time
from pathlib import Path
from typing import Any

from streamrec.stream.worker.agent_failure import EXIT_AGENT_CRASHED
from tests.integration.conftest import Mismatch, input_log_ends, settings_of, wait_until
from tests.integration.test_ingestion import expected_state, produce, valid_events
from tests.integration.test_scale_out import users_match
from tests.integration.test_training import records_for

CRASH_ON_BATCH = 3

SITECUSTOMIZE = f"""
import streamrec.stream.worker.ingest

_original = streamrec.stream.worker.ingest.Ingestor.interactions
_calls = 0


async def interactions(self, *args, **kwargs):
    global _calls
    _calls += 1
    if _calls == {CRASH_ON_BATCH}:
        raise RuntimeError("injected fault in batch {CRASH_ON_BATCH}")
    return await _original(self, *args, **kwargs)


streamrec.stream.worker.ingest.Ingestor.interactions = interactions
"""


def crashing_env(tmp_path: Path) -> dict[str, str]:
    directory = tmp_path / "fault"
    directory.mkdir()
    (directory / "sitecustomize.py").write_text(textwrap.dedent(SITECUSTOMIZE))
    return {"PYTHONPATH": str(directory)}


def test_an_agent_that_raises_stops_the_worker_and_the_restart_applies_and_trains_every_event_once(
    app_settings: dict[str, Any], start_worker: Any, tmp_path: Path
) -> None:
    values = {**app_settings, "batch_size": 100, "broker_session_timeout_s": 10}  # the dead member leaves soon
    settings = settings_of(values)
    events = valid_events(1500, seed=47)
    crashing = start_worker(values, extra_env=crashing_env(tmp_path))
    asyncio.run(produce(settings.bootstrap_servers, records_for(values, events)))

    deadline = time.monotonic() + 60
    while crashing.alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not crashing.alive(), "the worker went on after its agent raised"
    assert crashing.process is not None and crashing.process.returncode == EXIT_AGENT_CRASHED
    log = crashing.log_tail(200)
    assert f"agent ingest_interactions raised; the worker exits with code {EXIT_AGENT_CRASHED}" in log
    assert f"RuntimeError: injected fault in batch {CRASH_ON_BATCH}" in log  # with its traceback

    restarted = start_worker(values)  # no fault now: it reads again from the committed offsets
    expected = expected_state(events)
    wait_until(lambda: users_match(restarted, expected), 120, "every event in the user state once")
    stats = restarted.get("/stats?totals=1")[1]
    assert stats["user_state_events_total"] == len(events)
    assert stats["dead_letters_total"] == 0

    ends = input_log_ends(settings)

    def trained_to_the_end() -> dict[str, Any] | Mismatch:
        body = restarted.get("/model")[1]
        return body if body["trained_offsets"] == ends else Mismatch(f"trained {body['trained_offsets']}")

    model = wait_until(trained_to_the_end, 90, "every partition trained to its end")
    assert model["samples_trained"] == len(events)  # the model lineage saw each event once
