"""The demo's wait for the worker: as long as it makes progress, never for one that stopped."""

from __future__ import annotations

from stream.demo import ProgressDeadline


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
