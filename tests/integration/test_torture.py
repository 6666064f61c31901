"""The rebalance torture run, short: workers join, leave and are killed with -9 under a loaded CPU; the ledger holds.

Both runs use ``bench/torture.py``'s harness (the same code and ledger as the five-minute runs of
``.venv/bin/python -m streamrec.bench.torture --runs 20``) on the session's broker, with a busy-loop process
per core for the whole run. What each check means is in that module's docstring; a failure's
message names the check, the users and events missing or doubled, the first checkpoint whose
training is off, and the worker log lines of any skipped offsets.

The ledger's own logic is tested first, without Kafka: a ledger that cannot fail proves nothing.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from streamrec.bench.torture import (
    CheckpointFacts,
    LogRecord,
    Torture,
    TortureConfig,
    changelog_drops,
    check_lineage,
    choose_action,
    coverage,
    expected_users,
    home_partition,
    index_log,
    user_problems,
)
from streamrec.stream.worker.user_state import event_id_digest

T = "t.clicks"


def event(n: int, user: str = "u1", kind: str = "click") -> dict[str, Any]:
    return {"event_id": f"e{n}", "user_id": user, "item_id": f"i{n % 3}", "ts": 1_000_000 + n, "type": kind}


def home_users(partition: int, partitions: int = 6, count: int = 2) -> list[str]:
    """User ids whose home (murmur2) is ``partition``."""
    found = [f"u{k}" for k in range(1000) if home_partition(f"u{k}", partitions) == partition]
    return found[:count]


# --- the ledger, without Kafka ----------------------------------------------------------------------
def test_the_log_index_trains_first_copies_on_the_home_partition_only():
    """Off-home records (a crc32 producer's, forwarded) and later copies of an event id are not trainable."""
    at_home, elsewhere = home_users(2)[0], home_users(3)[0]
    records = [
        LogRecord(T, 2, 0, event(0, at_home)),
        LogRecord(T, 2, 1, event(1, elsewhere)),  # off its home: the worker forwards it to partition 3
        LogRecord(T, 2, 2, event(0, at_home)),  # the same event again: a duplicate
        LogRecord(T, 3, 0, event(1, elsewhere)),  # the forwarded copy, at home
        LogRecord(T, 3, 1, None),  # unreadable
    ]
    log = index_log(records, 6)
    assert log.trainable == {f"{T}:2": [0], f"{T}:3": [0]}
    assert (log.records, log.off_home, log.copies, log.unreadable) == (5, 1, 1, 1)
    assert sorted(log.events) == ["e0", "e1"]
    assert log.count(f"{T}:2", 0, 3) == 1 and log.count(f"{T}:2", 1, 3) == 0


def test_a_lineage_that_trains_an_event_twice_or_skips_one_is_caught_at_its_first_wrong_checkpoint():
    user = home_users(0)[0]
    log = index_log([LogRecord(T, 0, k, event(k, user)) for k in range(10)], 6)
    tp = f"{T}:0"
    # first assigned at offset 4 (checkpointed before training), then trained 4..7, then to 10
    good = [CheckpointFacts(1, 0, {tp: 4}, 10.0), CheckpointFacts(5, 3, {tp: 7}, 11.0),
            CheckpointFacts(9, 6, {tp: 10}, 12.0)]  # fmt: skip
    result = check_lineage("w0", good, log, t0=10.0)
    assert result.first_off is None and result.ranges == {tp: (4, 10)} and result.expected == 6

    twice = [*good[:2], CheckpointFacts(9, 7, {tp: 10}, 12.0)]  # one sample more than its range holds
    assert check_lineage("w0", twice, log, t0=10.0).first_off == (
        "checkpoint version 9 (saved at t=2s): 7 samples trained, its ranges hold 6 trainable events (+1)"
    )
    skipped = [good[0], CheckpointFacts(5, 2, {tp: 7}, 11.0), good[2]]
    assert "(-1)" in str(check_lineage("w0", skipped, log).first_off)

    # three lineages over one partition: 4..5 trained by two of them, 3 by none (failover figures, not failures)
    other = check_lineage("w1", [CheckpointFacts(1, 0, {tp: 0}, 0.0), CheckpointFacts(2, 3, {tp: 3}, 0.0)], log)
    mine = check_lineage("w2", [CheckpointFacts(1, 0, {tp: 4}, 0.0), CheckpointFacts(2, 2, {tp: 6}, 0.0)], log)
    assert other.first_off is None and mine.first_off is None
    assert coverage([result, mine, other], log) == (1, 2)


def test_a_user_state_that_misses_or_doubles_an_event_names_it():
    events = [event(k) for k in range(4)]
    want = expected_users(events, history_length=2)["u1"]
    assert want["recent"] == [[1_000_002, "i2", "click"], [1_000_003, "i0", "click"]]
    names = {event_id_digest(e["event_id"]): e["event_id"] for e in events}
    assert user_problems("u1", want, dict(want), names) is None

    missing = {**want, "events": 3, "clicks": 3, "ids": [d for d in want["ids"] if names[d] != "e2"]}
    assert user_problems("u1", want, missing, names) == (
        "u1: events 3 (expected 4); clicks 3 (expected 4); missing 1: e2"
    )
    doubled = {**want, "events": 5, "clicks": 5}
    assert user_problems("u1", want, doubled, names) == (
        "u1: events 5 (expected 4); clicks 5 (expected 4); applied twice: 1 event(s) beyond the 4"
    )
    assert user_problems("u1", want, None, names) == "u1: no state (expected 4 events)"


def test_a_user_state_written_from_an_empty_one_shows_as_a_drop_in_its_changelog():
    history = [(1, 10, 1000, 1), (1, 14, 1100, 2), (1, 30, 1500, 1), (1, 31, 1600, 2), (1, 40, 1700, 3)]
    assert changelog_drops(history) == ["2 -> 1 events at changelog 1@30 (written at 1500 ms)"]
    assert changelog_drops(history[:2]) == []


def test_the_schedule_always_leaves_a_serving_worker_running():
    config = TortureConfig()
    rng = random.Random(1)
    every = ("join", "leave", "kill")
    assert {choose_action(rng, 1, 1, 1, every, config) for _ in range(50)} == {"join"}
    assert choose_action(rng, 1, 1, 1, ("leave", "kill"), config) is None
    # two running but only one serving yet: stopping the other one would hit a process still importing
    assert choose_action(rng, 1, 2, 2, ("leave", "kill"), config) is None
    assert {choose_action(rng, 4, 4, 4, every, config) for _ in range(50)} == {"leave", "kill"}
    assert {choose_action(rng, 2, 3, 5, every, config) for _ in range(50)} == {"leave", "kill"}  # 2 still stopping
    # a kind not taken yet comes first, so that a short run does every kind
    assert {choose_action(rng, 3, 3, 3, every, config, done={"join", "kill"}) for _ in range(20)} == {"leave"}
    assert choose_action(rng, 1, 4, 4, every, config, done={"join"}) is None  # nothing allowed at all


# --- the torture runs, against the broker -----------------------------------------------------------
# Every wait bounded so that a run ends (and reports) well inside the test's 900 s: start 35 s, chaos,
# a hung stop 90 s at most, the drain, the checks, the final stops.
BOUNDED: dict[str, Any] = {"drain_stall_s": 120.0, "drain_max_s": 300.0, "start_timeout_s": 180.0}


def torture_env(app_settings: dict[str, Any]) -> dict[str, str]:
    """The run's settings as a worker's environment (each slot gets its own state directory and port)."""
    return {f"STREAMREC_{k.upper()}": str(v) for k, v in app_settings.items()}


def run_torture(app_settings: dict[str, Any], tmp_path: Path, config: TortureConfig) -> None:
    result = Torture(torture_env(app_settings), config, tmp_path / "torture", say=print).run()
    print(result.summary())
    failed = "\n".join(f"{c.name}: {c.detail}" for c in result.failed())
    assert result.ok, f"torture run failed (worker logs in {tmp_path / 'torture' / 'logs'}):\n{failed}"
    assert result.figures["events_acked"] >= 0.8 * config.rate * config.seconds  # the producer kept up
    kinds = {a.kind for a in result.actions}
    assert set(config.actions) <= kinds, f"the chaos did not do every kind of action: {kinds}"


@pytest.mark.integration
@pytest.mark.timeout(900)
def test_workers_joining_leaving_and_killed_under_cpu_load_lose_and_double_nothing(app_settings, tmp_path):
    """90 s of chaos on 6 partitions while our producer writes 40 events/s: the ledger holds."""
    config = TortureConfig(seconds=90, rate=40, seed=11, interval_s=(3.0, 7.0), **BOUNDED)
    run_torture(app_settings, tmp_path, config)


@pytest.mark.integration
@pytest.mark.timeout(900)
def test_an_external_crc32_producer_through_repeated_kill_9_loses_and_doubles_nothing(app_settings, tmp_path):
    """librdkafka's default partitioner (most events forwarded to their home) while workers are killed -9 repeatedly.

    A worker killed after forwarding and before its commit forwards again, so copies of one event
    reach the home partition: each must be applied once, and trained once by each lineage.
    """
    config = TortureConfig(
        seconds=75, rate=40, seed=12, producer="crc32", actions=("kill",), interval_s=(4.0, 9.0), **BOUNDED
    )
    run_torture(app_settings, tmp_path, config)
