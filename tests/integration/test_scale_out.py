"""Several stream worker processes in one consumer group: partitions spread, failover, shared item parameters.

Every worker is a real process on the real broker. The assertions read each worker's HTTP API:
which partitions it owns (``/stats``), each user's state (``/users/{id}``, routed by Faust to the
owner, so any worker answers for any user) and the item parameters each worker holds
(``/parameters/items/{id}``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np

from streamrec.models.recommender import Recommender
from streamrec.stream.worker.learner import recommender_config
from tests.integration.conftest import Mismatch, Worker, free_port, input_log_ends, settings_of, wait_until
from tests.integration.test_ingestion import expected_state, produce, valid_events
from tests.integration.test_training import records_for


def member(settings: dict[str, Any], name: str, tmp_path) -> dict[str, Any]:
    """One more worker of the same application: its own web port and state directory."""
    return {**settings, "web_port": free_port(), "state_dir": tmp_path / name}


def assignments(workers: list[Worker]) -> list[set[str]]:
    return [set(w.get("/stats")[1]["assigned"]) for w in workers]


def spread_over(workers: list[Worker], topics: tuple[str, str], partitions: int) -> list[set[str]]:
    """Wait until the group has settled: every input partition owned by exactly one of ``workers``."""
    everything = {f"{t}:{p}" for t in topics for p in range(partitions)}

    def settled() -> list[set[str]] | None:
        owned = assignments(workers)
        union = set().union(*owned)
        disjoint = sum(map(len, owned)) == len(union)
        return owned if union == everything and disjoint and all(owned) else None

    return wait_until(settled, 90, "partitions spread over every worker")


def users_match(worker: Worker, expected: dict[str, dict[str, Any]]) -> bool | Mismatch:
    """Whether every user's state, asked through ``worker``, is the expected one (else the first difference)."""
    for user, state in expected.items():
        status, body = worker.get(f"/users/{user}")
        if status != 200:
            return Mismatch(f"{user}: HTTP {status} {body}")
        got = {k: body[k] for k in state}
        if got != state:
            return Mismatch(f"{user}: {got['events']} events, expected {state['events']}")
    return True


def trained_to_the_end(workers: list[Worker], ends: dict[str, int]) -> bool | Mismatch:
    """Whether every input partition is trained to its log end by one of ``workers`` (else which are behind)."""
    trained: dict[str, int] = {}
    for worker in workers:
        for tp, offset in worker.get("/model")[1]["trained_offsets"].items():
            trained[tp] = max(trained.get(tp, 0), offset)
    behind = {tp: (trained.get(tp), end) for tp, end in ends.items() if trained.get(tp) != end}
    return True if not behind else Mismatch(f"behind: {behind}")


def parameters(worker: Worker, items: list[str]) -> np.ndarray:
    """Each item's parameters on ``worker``; NaN for an item it does not know (yet)."""
    rows = []
    for item in items:
        status, body = worker.get(f"/parameters/items/{item}")
        rows.append(body["parameters"] if status == 200 else [np.nan])
    width = max(len(r) for r in rows)
    return np.asarray([r if len(r) == width else [np.nan] * width for r in rows], dtype=np.float64)


def test_two_workers_converge_on_the_item_parameters(app_settings, start_worker, tmp_path):
    """Each worker trains only its users, yet both end up holding the same parameters for every item."""
    values = {**app_settings, "param_sync_interval_s": 0.5, "batch_size": 200}
    settings = settings_of(values)
    a = start_worker(member(values, "a", tmp_path))
    b = start_worker(member(values, "b", tmp_path))
    owned = spread_over([a, b], settings.interaction_topics, settings.topic_partitions)
    assert len(owned[0]) == len(owned[1]) == settings.topic_partitions  # 2 of 4 partitions each, both topics

    events = valid_events(3000, seed=41)
    asyncio.run(produce(settings.bootstrap_servers, records_for(values, events)))

    def all_trained() -> bool | Mismatch:
        counts = [w.get("/stats")[1]["trained"] for w in (a, b)]
        return True if sum(counts) == len(events) else Mismatch(f"trained {counts}")

    try:
        wait_until(all_trained, 120, "every event trained by one of the two")
    except AssertionError as error:  # what each worker had consumed, applied and been assigned, to find why
        keys = ("consumed", "applied_interactions", "trained", "assigned")
        states = [{k: v for k, v in w.get("/stats")[1].items() if k in keys} for w in (a, b)]
        offsets = [w.get("/model")[1].get("trained_offsets") for w in (a, b)]
        logs = "\n".join(f"--- worker {name} log:\n{w.log_tail()}" for name, w in (("a", a), ("b", b)))
        raise AssertionError(f"{error}; stats {states}; trained offsets {offsets}\n{logs}") from None
    trained = [a.get("/stats")[1]["trained"], b.get("/stats")[1]["trained"]]
    assert min(trained) > 0.2 * len(events)  # both did a real share of the training

    items = sorted({e["item_id"] for e in events})

    def converged() -> float | None:
        gap = np.abs(parameters(a, items) - parameters(b, items)).max()  # NaN (unknown somewhere) is not < 1e-4
        return gap if gap < 1e-4 else None

    def sync_reports() -> list[dict[str, Any]]:
        return [w.get("/model")[1]["parameter_sync"] for w in (a, b)]

    try:
        wait_until(converged, 60, "the two workers' item parameters agree", poll_s=1.0)
    except AssertionError as error:
        raise AssertionError(f"{error}; sync reports {sync_reports()}") from None
    reports = sync_reports()
    assert reports[0]["contributors"] == [reports[1]["worker_id"]]
    assert reports[1]["contributors"] == [reports[0]["worker_id"]]
    assert all(r["applied"] > 0 and r["published"] > 0 and r["bad_records"] == 0 for r in reports)
    # training moved every item away from where it started (the same start on every worker)
    model = Recommender(recommender_config(settings))
    start = np.stack([model.initial_item_parameters(i).numpy() for i in items])
    assert np.abs(parameters(a, items) - start).max(axis=1).min() > 1e-4


def test_three_workers_share_six_partitions_and_take_over_a_killed_one(app_settings, start_worker, tmp_path):
    """kill -9 one of three workers mid-stream: its partitions and their user state move to the others."""
    values = {
        **app_settings,
        "topic_partitions": 6,
        "broker_session_timeout_s": 10,  # how long the group waits for a silent member
        "batch_size": 200,
    }
    settings = settings_of(values)
    workers = [start_worker(member(values, name, tmp_path)) for name in ("a", "b", "c")]
    owned = spread_over(workers, settings.interaction_topics, 6)
    assert [len(o) for o in owned] == [4, 4, 4]  # two partitions of each input topic per worker

    events = valid_events(4000, seed=43)
    first, second = events[:2000], events[2000:]
    asyncio.run(produce(settings.bootstrap_servers, records_for(values, first)))
    expected_first = expected_state(first)
    for worker in workers:  # each answers for every user, whichever worker owns it
        wait_until(lambda w=worker: users_match(w, expected_first), 120, "first half in the user state")

    victim = max(workers, key=lambda w: len(w.get("/stats")[1]["assigned"]))
    survivors = [w for w in workers if w is not victim]
    victim.kill()
    asyncio.run(produce(settings.bootstrap_servers, records_for(values, second)))

    # the survivors take the victim's partitions (after the session timeout) and recover their
    # users from the changelog; every event is then in exactly one user's state, once
    owned = spread_over(survivors, settings.interaction_topics, 6)
    assert sorted(len(o) for o in owned) == [6, 6]
    expected = expected_state(events)
    for worker in survivors:  # any worker answers for any user (Faust routes to the owner)
        wait_until(lambda w=worker: users_match(w, expected), 120, "every event applied once, via every worker")
    totals = [w.get("/stats?totals=1")[1] for w in survivors]
    assert all(t["dead_letters_total"] == 0 for t in totals)

    # and the model side: every input partition is trained to its end by the worker that owns it now
    ends = input_log_ends(settings)
    wait_until(lambda: trained_to_the_end(survivors, ends), 60, "every partition trained to its end")


def test_a_worker_joining_and_leaving_mid_stream_loses_no_event(app_settings, start_worker, tmp_path):
    """Two rebalances while events flow (a third worker joins, later stops): nothing is skipped.

    Before stream/rebalance.py, Faust's fetch loop delivered records while the partitions were
    being sought after each rebalance; its read offset then ran ahead of the seek and the records
    the seek brought back were dropped (the model's rewound ones, and events the commit passed over).
    """
    values = {**app_settings, "batch_size": 200, "topic_partitions": 6}
    settings = settings_of(values)
    a = start_worker(member(values, "a", tmp_path))
    b = start_worker(member(values, "b", tmp_path))
    spread_over([a, b], settings.interaction_topics, 6)

    events = valid_events(6000, seed=47)
    chunks = [events[i : i + 500] for i in range(0, len(events), 500)]
    jumped = {}
    for index, chunk in enumerate(chunks):
        asyncio.run(produce(settings.bootstrap_servers, records_for(values, chunk)))
        if index == 3:  # events in flight on a and b: a third member joins
            c = start_worker(member(values, "c", tmp_path))
            owned = spread_over([a, b, c], settings.interaction_topics, 6)
            assert [len(o) for o in owned] == [4, 4, 4]
        if index == 8:  # and leaves (a clean stop: its last batches committed and checkpointed)
            jumped["c"] = c.get("/model")[1]["stats"]["offsets_jumped"]
            assert c.stop() == 0
        time.sleep(0.5)  # keep the stream going while the group rebalances
    assert sorted(len(o) for o in spread_over([a, b], settings.interaction_topics, 6)) == [6, 6]

    expected = expected_state(events)
    for worker in (a, b):
        wait_until(lambda w=worker: users_match(w, expected), 120, "every event applied once, via every worker")
    ends = input_log_ends(settings)
    wait_until(lambda: trained_to_the_end([a, b], ends), 60, "every partition trained to its end")
    # and no batch started past what its model had trained: no input offset was skipped on the way
    jumped |= {name: w.get("/model")[1]["stats"]["offsets_jumped"] for name, w in (("a", a), ("b", b))}
    assert jumped == {"a": {}, "b": {}, "c": {}}
