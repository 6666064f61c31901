"""Pausing the input partitions that run ahead in event time (stream/worker/event_time.py)."""

import doctest

import pytest
from faust.types import TP

from streamrec.stream.worker import event_time
from streamrec.stream.worker.event_time import EventTimeAligner, PartitionPacer

CLICKS, PURCHASES, CATALOGUE = TP("clicks", 0), TP("purchases", 0), TP("catalogue", 0)


class FakeConsumer:
    """The consumer surface the pacer uses: assignment, lag and Faust's pause/resume sets."""

    def __init__(self, assigned: set[TP]) -> None:
        self.assigned = set(assigned)
        self.lagging = set(assigned)
        self.paused: set[TP] = set()

    def assignment(self) -> set[TP]:
        return set(self.assigned)

    def behind(self, tp: TP) -> bool:
        return tp in self.lagging

    def pause_partitions(self, tps):
        self.paused |= set(tps)

    def resume_partitions(self, tps):
        self.paused -= set(tps)


def test_the_docstring_example_runs():
    assert doctest.testmod(event_time).failed == 0


def test_the_partition_furthest_behind_is_never_paused_so_reading_progresses():
    aligner = EventTimeAligner(slack_ms=100)
    aligner.note_many({"a": 1_000, "b": 1_050, "c": 5_000})
    both = {"a", "b", "c"}
    assert aligner.watermark(both, both) == 1_000
    assert aligner.ahead(both, both) == {"c"}  # b is within the slack
    aligner.note("a", 900)  # an older event does not move a partition back
    assert aligner.newest["a"] == 1_000
    # a partition with records to read that has delivered nothing yet holds everyone who has
    assert aligner.ahead(both | {"d"}, both | {"d"}) == both
    with pytest.raises(ValueError):
        EventTimeAligner(slack_ms=-1)


def test_the_pacer_pauses_the_topic_ahead_and_resumes_it_when_the_other_catches_up():
    consumer = FakeConsumer({CLICKS, PURCHASES, CATALOGUE})
    pacer = PartitionPacer({"clicks", "purchases"})
    pacer.note_batch({CLICKS: 1_000, PURCHASES: 9_000})
    pacer.pace(consumer)
    assert consumer.paused == {PURCHASES} and pacer.pauses == 1
    pacer.note_batch({CLICKS: 9_000})
    pacer.pace(consumer)
    assert consumer.paused == set()
    # clicks at the end of their log (quiet) hold nobody back
    pacer.note_batch({PURCHASES: 20_000})
    consumer.lagging = {PURCHASES}
    pacer.pace(consumer)
    assert consumer.paused == set() and pacer.as_dict() == {"slack_ms": 0, "paused_now": [], "pauses": 1}


def test_the_pacer_never_touches_partitions_it_did_not_pause_nor_the_catalogue():
    consumer = FakeConsumer({CLICKS, PURCHASES, CATALOGUE})
    consumer.paused = {TP("changelog", 0)}  # Faust's own, for recovery
    pacer = PartitionPacer({"clicks", "purchases"})
    pacer.note_batch({CLICKS: 1_000, PURCHASES: 1_000})
    pacer.pace(consumer)
    assert consumer.paused == {TP("changelog", 0)}


def test_a_revoked_partition_is_forgotten_and_not_resumed():
    consumer = FakeConsumer({CLICKS, PURCHASES})
    pacer = PartitionPacer({"clicks", "purchases"})
    pacer.note_batch({CLICKS: 1_000, PURCHASES: 9_000})
    pacer.pace(consumer)
    consumer.assigned = {CLICKS}  # purchases:0 went to another worker (Faust drops it from its paused set)
    consumer.paused.discard(PURCHASES)
    pacer.pace(consumer)
    assert pacer.paused == set() and PURCHASES not in pacer.aligner.newest and consumer.paused == set()


def test_a_records_event_time_is_read_from_its_payload_as_the_contract_reads_it():
    from types import SimpleNamespace

    from streamrec.stream.worker.event_time import event_time_of

    def of(value: bytes) -> int:
        return event_time_of(SimpleNamespace(value=value, timestamp=1_700_000_000_000))

    assert of(b'{"ts": 874724710000, "user_id": "u"}') == 874724710000
    assert of(b'{"ts": "874724710000"}') == 874724710000
    assert of(b'{"ts": "1997-09-20T03:05:10Z"}') == 874724710000
    # not an event time: the record's own timestamp orders it (the contract dead-letters it later)
    assert of(b'{"ts": true}') == of(b"not json") == of(b'{"no_ts": 1}') == of(b'{"ts": "soon"}') == 1_700_000_000_000
