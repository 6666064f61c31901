"""A commit never covers table writes the broker has not taken: kill -9 during a stalled changelog loses nothing.

Faust writes a table change to its changelog through a buffer (``send_soon``) and, before it
commits offsets, calls ``producer.flush()``. That flush gives up after 0.1 s without progress
(``ProducerBuffer.flush_atmost``), and the buffer's count drops before a message reaches the
Kafka client: under load a commit could pass records whose user-state writes were still in the
buffer. A worker killed then, or one whose partition moved on, leaves a changelog without those
writes behind offsets that say they were handled: a new owner (a pod rescheduled without its
volume, or another worker after a rebalance) never applies those events. The rebalance torture
run (bench/torture.py, crc32, seed 8) showed it as one event trained twice in one lineage: its
first copy's state write was lost, so a later forwarded copy was applied in its place.

Here the stall is injected into the real worker from outside: a ``sitecustomize`` module on the
child's ``PYTHONPATH`` holds the changelog sends after the first few. The broker, Faust's commit
loop and the tables are real. The worker is killed -9 while the changelog is stalled, and a worker
on a fresh state directory (no local RocksDB to hide the loss) must hold every event once.
"""

from __future__ import annotations

import asyncio
import textwrap
import time
from pathlib import Path
from typing import Any

from tests.integration.conftest import settings_of, wait_until
from tests.integration.test_ingestion import expected_state, produce, valid_events
from tests.integration.test_scale_out import users_match
from tests.integration.test_training import records_for

STALL_AFTER = 40  # changelog records sent before the stall

SITECUSTOMIZE = f"""
import asyncio
import os
from pathlib import Path

import faust.transport.producer

_original = faust.transport.producer.ProducerBuffer._send_pending
_sent = 0


async def _send_pending(self, fut):
    global _sent
    if fut.message.channel.get_topic_name().endswith("-changelog"):
        _sent += 1
        if _sent == {STALL_AFTER}:
            Path(os.environ["STALL_MARKER"]).write_text("stalled")
            await asyncio.sleep(3600)  # a producer stuck behind a loaded CPU or a slow broker
    return await _original(self, fut)


faust.transport.producer.ProducerBuffer._send_pending = _send_pending
"""


def stalling_env(tmp_path: Path) -> tuple[dict[str, str], Path]:
    directory = tmp_path / "fault"
    directory.mkdir()
    (directory / "sitecustomize.py").write_text(textwrap.dedent(SITECUSTOMIZE))
    marker = tmp_path / "stalled"
    return {"PYTHONPATH": str(directory), "STALL_MARKER": str(marker)}, marker


def test_a_worker_killed_while_its_changelog_is_stalled_loses_no_event(
    app_settings: dict[str, Any], start_worker: Any, tmp_path: Path
) -> None:
    values = {**app_settings, "batch_size": 50, "train": False, "broker_session_timeout_s": 10}
    settings = settings_of(values)
    events = valid_events(1500, seed=53)
    env, marker = stalling_env(tmp_path)
    stalling = start_worker(values, extra_env=env)
    asyncio.run(produce(settings.bootstrap_servers, records_for(values, events)))

    wait_until(marker.exists, 90, "the changelog stalled")
    # Batches go on being handled while the changelog is held; Faust's commit loop runs every second.
    stalling.wait_for(lambda stats: stats["applied_interactions"] >= 400, 60)
    time.sleep(3.0)
    stalling.kill()

    moved = {**values, "state_dir": tmp_path / "new-machine"}  # no local RocksDB: the changelog is the state
    restarted = start_worker(moved)
    expected = expected_state(events)
    wait_until(lambda: users_match(restarted, expected), 120, "every event in the user state once")
    stats = restarted.get("/stats?totals=1")[1]
    assert stats["user_state_events_total"] == len(events)
