"""A restarted worker gets its tables back from the changelog topics and re-applies nothing."""

from __future__ import annotations

import asyncio
import threading

import orjson

from tests.integration.conftest import settings_of
from tests.integration.test_ingestion import expected_state, produce, topic_for, user_states, valid_events


def test_restarted_worker_recovers_user_state_from_the_changelog(app_settings, start_worker, tmp_path):
    settings = settings_of(app_settings)
    events = valid_events(2000, seed=11)
    first, second = events[:1500], events[1500:]
    records = [(topic_for(app_settings, e), e["user_id"].encode(), orjson.dumps(e)) for e in events]
    catalogue = [(app_settings["topic_catalogue"], b"m1", orjson.dumps(
        {"item_id": "m1", "title": "Heat", "description": "1995 crime film", "categories": ["Crime"]}))]  # fmt: skip

    worker = start_worker(app_settings)
    asyncio.run(produce(settings.bootstrap_servers, records[:1500] + catalogue))
    worker.wait_for(lambda s: s["user_state_events_total"] == len(first) and s["items"] == 1)
    users = sorted({e["user_id"] for e in events})
    before = user_states(worker, sorted({e["user_id"] for e in first}))
    assert before == expected_state(first)
    assert worker.stop() == 0  # clean stop: offsets committed, tables flushed

    # A new machine: same application, empty local state directory. Everything must come back
    # from Kafka (changelog for the tables, committed offsets for the input).
    moved = {**app_settings, "state_dir": tmp_path / "new-machine"}
    restarted = start_worker(moved)
    restarted.wait_for(lambda s: s["users"] == len(before) and s["items"] == 1)
    assert user_states(restarted, before) == before
    assert restarted.get("/items/m1")[1]["title"] == "Heat"
    stats = restarted.wait_for(lambda s: True)
    assert stats["user_state_events_total"] == len(first)  # nothing replayed twice
    assert stats["consumed_total"] == 0  # resumed at the committed offsets

    # and it carries on from there
    asyncio.run(produce(settings.bootstrap_servers, records[1500:]))
    restarted.wait_for(lambda s: s["user_state_events_total"] == len(events))
    assert user_states(restarted, users) == expected_state(events)
    assert restarted.get("/stats")[1]["consumed_total"] == len(second)


def test_events_produced_while_a_worker_restarts_are_each_applied_once(app_settings, start_worker, tmp_path):
    """A producer keeps writing while the worker restarts and recovers its tables: nothing is lost.

    Regression test: Faust cleared its stream queues when it resumed flow after the recovery,
    dropping events that it had already fetched from the freshly resumed partitions.
    """
    settings = settings_of(app_settings)
    events = valid_events(3000, seed=12)
    records = [(topic_for(app_settings, e), e["user_id"].encode(), orjson.dumps(e)) for e in events]
    first = start_worker(app_settings)
    asyncio.run(produce(settings.bootstrap_servers, records[:1000]))
    first.wait_for(lambda s: s["user_state_events_total"] == 1000)
    assert first.stop() == 0

    # 2,000 more events over about 15 s, spanning the new worker's start, recovery and first seek.
    async def paced() -> None:
        for start in range(1000, len(records), 40):
            await produce(settings.bootstrap_servers, records[start : start + 40])
            await asyncio.sleep(0.3)

    producer = threading.Thread(target=asyncio.run, args=(paced(),))
    producer.start()
    restarted = start_worker({**app_settings, "state_dir": tmp_path / "new-machine"})
    producer.join()
    stats = restarted.wait_for(lambda s: s["user_state_events_total"] == len(events))
    assert stats["consumed_total"] >= 2000
    users = sorted({e["user_id"] for e in events})
    assert user_states(restarted, users) == expected_state(events)
