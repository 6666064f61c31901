"""The demo's pure parts: its wait for the worker (as long as it makes progress), its accounting of
every event (applied, dead-lettered, duplicate or lost) and its record of runs for ``--continue``."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from streamrec.stream.tools.datasets import Dataset
from streamrec.stream.tools.demo import (
    Accounting,
    DemoRun,
    NoRunToContinue,
    ProgressDeadline,
    dedupe_window_note,
    last_run,
    newest_event_time,
    record_run,
    run_to_continue,
    tally,
    untrained,
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_worker_still_catching_up_is_waited_for_past_the_stall_time() -> None:
    clock = Clock()
    deadline = ProgressDeadline(10.0, clock)
    for count in range(0, 1000, 100):  # 100 more events every 9 s: 81 s in all
        deadline.note(count)
        clock.now += 9.0
        assert not deadline.expired()


def test_a_worker_that_stops_is_given_up_on_the_stall_time_after_its_last_progress() -> None:
    clock = Clock()
    deadline = ProgressDeadline(10.0, clock)
    deadline.note(500)
    clock.now = 5.0
    deadline.note(500)  # no progress: does not extend the wait
    clock.now = 9.9
    assert not deadline.expired()
    clock.now = 10.0
    assert deadline.expired()


def test_nothing_at_all_expires_the_stall_time_after_the_start() -> None:
    clock = Clock()
    deadline = ProgressDeadline(10.0, clock)
    clock.now = 10.0
    assert deadline.expired()


# --- accounting: every event is applied, dead-lettered, a duplicate, or lost ----------------------


def test_duplicates_are_accounted_for_not_lost() -> None:
    # The second run: 20,000 sent again, 11,006 of them dropped by the event-id dedupe.
    before = Accounting(applied=155_375, dead_letters=0, duplicates=0, users=943, items=1682)
    now = Accounting(applied=164_369, dead_letters=0, duplicates=11_006, users=943, items=1682)
    counted = tally(20_000, before, now)
    assert (counted.applied, counted.dead_letters, counted.duplicates, counted.lost) == (8_994, 0, 11_006, 0)
    assert counted.line() == (
        "20,000 interactions in → 8,994 in user state + 0 dead letters + 11,006 duplicates "
        "(dropped by the event-id dedupe); lost: 0"
    )


def test_what_is_in_none_of_the_three_places_is_lost() -> None:
    before = Accounting(applied=10, dead_letters=2, duplicates=1, users=1, items=1)
    now = Accounting(applied=15, dead_letters=4, duplicates=2, users=1, items=1)
    assert tally(10, before, now).lost == 2  # 10 - 5 applied - 2 dead letters - 1 duplicate
    assert tally(6, before, now).lost == -2  # more accounted for than produced: someone else's events
    assert now.total == 21


def test_the_model_has_caught_up_when_it_trained_past_every_log_end() -> None:
    ends = {"clicks:0": 100, "clicks:1": 50, "purchases:0": 0}
    assert untrained(ends, {"clicks:0": 100, "clicks:1": 50}) == 0  # an empty partition needs nothing
    assert untrained(ends, {"clicks:0": 90}) == 10 + 50  # a partition it never trained on: all of it
    assert untrained(ends, {"clicks:0": 120, "clicks:1": 50}) == 0  # past the end taken earlier


# --- runs ------------------------------------------------------------------------------------------


def _run(run_id: str, app_id: str = "streamrec", dataset: str = "ml-100k", shift_ms: int = 0) -> DemoRun:
    return DemoRun(run_id, dataset, shift_ms, app_id, "2026-12-03T10:15:02+00:00")


def test_continue_finds_the_last_run_of_the_app(tmp_path: Path) -> None:
    path = tmp_path / "state" / "demo-runs.jsonl"
    assert last_run(path, "streamrec") is None
    record_run(path, _run("r1", shift_ms=0))
    record_run(path, _run("r2", shift_ms=216 * 86_400_000))
    record_run(path, _run("other", app_id="another-app"))
    with path.open("a") as file:
        file.write("not json\n")  # a torn line is skipped, not fatal
    assert last_run(path, "streamrec") == _run("r2", shift_ms=216 * 86_400_000)
    assert run_to_continue(path, "another-app", "ml-100k").run_id == "other"


def test_continue_without_a_run_or_with_another_dataset_says_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "demo-runs.jsonl"
    with pytest.raises(NoRunToContinue) as error:
        run_to_continue(path, "streamrec", "ml-100k")
    assert str(error.value) == (
        f"--continue: no earlier demo run of app 'streamrec' is recorded in {path}; run the demo without --continue"
    )
    record_run(path, _run("r1"))
    with pytest.raises(NoRunToContinue, match=r"the last run \(r1\) replayed ml-100k, not shop"):
        run_to_continue(path, "streamrec", "shop")


def test_newest_event_time_counts_only_times_the_worker_accepts() -> None:
    values = [
        json.dumps({"ts": 1_000}).encode(),
        json.dumps({"ts": 5_000}).encode(),
        json.dumps({"ts": 9_000}).encode(),  # past max: dead-lettered as in the future
        json.dumps({"ts": "2024-05-01T10:00:00Z"}).encode(),  # not an epoch-ms integer: not read
        json.dumps({"ts": True}).encode(),
        b"not json",
        json.dumps([1, 2]).encode(),
        None,  # a tombstone
    ]
    assert newest_event_time(values, min_ms=500, max_ms=8_000) == 5_000
    assert newest_event_time(values[:1], min_ms=2_000, max_ms=8_000) is None
    assert newest_event_time([], min_ms=0, max_ms=8_000) is None


def _dataset(users: list[str]) -> Dataset:
    frame = pd.DataFrame(
        {"event_id": [f"e{i}" for i in range(len(users))], "user_id": users, "item_id": "i", "ts": 1, "type": "click"}
    )
    return Dataset("tiny", [], frame, source_rows=len(users))


def test_continue_warns_about_users_the_dedupe_window_cannot_cover() -> None:
    data = _dataset(["u1"] * 5 + ["u2"] * 3 + ["u3"])
    assert dedupe_window_note(data, None, 5) is None
    assert dedupe_window_note(data, None, 4) == (
        "Note: 1 users have more than 4 events in this replay, and the worker keeps each user's 4 newest event ids "
        "(STREAMREC_DEDUPE_WINDOW): their events are applied again, not dropped as duplicates. "
        "STREAMREC_DEDUPE_WINDOW=5 for both runs drops them all."
    )
    assert dedupe_window_note(data, 4, 3) is not None and dedupe_window_note(data, 3, 3) is None  # the replayed part
    assert "turns the event-id dedupe off" in (dedupe_window_note(data, None, 0) or "")


def test_the_demo_reads_its_backlog_in_step_in_event_time_unless_the_user_chose():
    from streamrec.stream.tools.demo import demo_worker_env

    assert demo_worker_env({"PATH": "/bin"}) == {"STREAMREC_EVENT_TIME_ALIGNMENT": "true", "PATH": "/bin"}
    assert demo_worker_env({"STREAMREC_EVENT_TIME_ALIGNMENT": "false"})["STREAMREC_EVENT_TIME_ALIGNMENT"] == "false"
