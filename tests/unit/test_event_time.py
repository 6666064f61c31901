"""Handing the input partitions over in step in event time (stream/worker/event_time.py)."""

import doctest

import pytest
from faust.types import TP

from streamrec.stream.worker import event_time
from streamrec.stream.worker.event_time import EventTimeAligner, EventTimeBuffer

CLICKS, PURCHASES, CATALOGUE = TP("clicks", 0), TP("purchases", 0), TP("catalogue", 0)


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


def released(buffer, assigned, behind, now):
    return {tp: items for tp, items in buffer.release(assigned, behind, now).items()}


def test_a_purchase_waits_for_the_clicks_fetched_after_it():
    buffer = EventTimeBuffer(idle_s=0.5)
    both = {CLICKS, PURCHASES}
    buffer.add(PURCHASES, [("p1", 100), ("p2", 200), ("p3", 300)], now=0.0)
    buffer.add(CLICKS, [("c1", 100)], now=0.0)
    assert released(buffer, both, both, 0.0) == {PURCHASES: ["p1"], CLICKS: ["c1"]}
    assert buffer.as_dict()["watermark_ms"] == 100 and buffer.held_count(PURCHASES) == 2
    # clicks catch up to 250: the purchase at 200 goes, the one at 300 still waits
    buffer.add(CLICKS, [("c2", 150), ("c3", 250)], now=0.1)
    assert released(buffer, both, both, 0.1) == {PURCHASES: ["p2"], CLICKS: ["c2", "c3"]}
    assert buffer.released == 5 and buffer.most_held == 4


def test_a_partition_keeps_its_offset_order_a_held_record_holds_the_ones_after_it():
    buffer = EventTimeBuffer(idle_s=0.5)
    both = {CLICKS, PURCHASES}
    buffer.add(PURCHASES, [("p1", 300), ("p2", 50)], now=0.0)  # out of time order on its partition
    buffer.add(CLICKS, [("c1", 100)], now=0.0)
    assert released(buffer, both, both, 0.0) == {CLICKS: ["c1"]}
    assert buffer.first_held(PURCHASES) == "p1" and buffer.held_count(PURCHASES) == 2


def test_a_partition_with_records_left_holds_the_others_a_quiet_one_only_for_idle_s():
    buffer = EventTimeBuffer(idle_s=0.5)
    both = {CLICKS, PURCHASES}
    buffer.add(PURCHASES, [("p1", 900)], now=0.0)
    buffer.add(CLICKS, [("c1", 100)], now=0.0)
    assert released(buffer, both, {CLICKS}, 0.0) == {CLICKS: ["c1"]}
    assert released(buffer, both, {CLICKS}, 10.0) == {}  # clicks have records left to read: no end to waiting
    assert released(buffer, both, set(), 0.4) == {}  # at the end of their log, but brought records 0.4 s ago
    assert released(buffer, both, set(), 0.6) == {PURCHASES: ["p1"]}  # quiet for idle_s: nobody holds back
    # a partition just assigned that has not been fetched yet holds the others for idle_s
    buffer.add(PURCHASES, [("p2", 1000)], now=1.0)
    assert released(buffer, both | {TP("clicks", 1)}, {TP("clicks", 1)}, 1.0) == {}


def test_the_partition_holding_too_much_is_paused_but_never_the_one_behind():
    buffer = EventTimeBuffer(idle_s=0.5, max_held=4)
    both = {CLICKS, PURCHASES}
    buffer.add(PURCHASES, [(f"p{k}", 1000 + k) for k in range(6)], now=0.0)
    buffer.add(CLICKS, [("c1", 100)], now=0.0)
    released(buffer, both, both, 0.0)
    assert buffer.to_pause(both) == {PURCHASES} and buffer.to_pause(both) == set()  # paused once
    assert buffer.to_resume(both) == set()
    buffer.add(CLICKS, [("c2", 1004)], now=0.1)
    released(buffer, both, both, 0.1)  # p0..p4 go: 1 held, under half of max_held
    assert buffer.to_resume(both) == {PURCHASES} and buffer.as_dict()["pauses"] == 1
    # the partition that defines the watermark is never paused, however much it holds
    lone = EventTimeBuffer(idle_s=0.5, max_held=2)
    lone.add(CLICKS, [("c", 5), ("d", 6), ("e", 7)], now=0.0)
    lone.add(PURCHASES, [("p", 1)], now=0.0)
    lone.release(both, both, 0.0)
    assert lone.to_pause(both) == {CLICKS}
    lone.add(PURCHASES, [("q", 9)], now=0.1)
    lone.release(both, both, 0.1)
    assert lone.mark == 7 and lone.to_resume(both) == {CLICKS}


def test_a_seek_or_a_revocation_drops_what_was_held():
    buffer = EventTimeBuffer(idle_s=0.5, max_held=1)
    both = {CLICKS, PURCHASES}
    buffer.add(PURCHASES, [("p1", 900), ("p2", 901)], now=0.0)
    buffer.add(CLICKS, [("c1", 100)], now=0.0)
    released(buffer, both, both, 0.0)
    buffer.to_pause(both)
    assert buffer.drop([PURCHASES]) == 2 and buffer.first_held(PURCHASES) is None and not buffer.holding()
    buffer.add(PURCHASES, [("p3", 950)], now=0.1)
    buffer.forget([PURCHASES])
    assert PURCHASES not in buffer.aligner.newest and buffer.paused == set() and not buffer.holding()
    with pytest.raises(ValueError):
        EventTimeBuffer(max_held=0)


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


def test_what_a_fetch_lets_go_gathers_into_a_batch_unless_it_has_waited_idle_s():
    buffer = EventTimeBuffer(idle_s=0.5, min_release=3)
    both = {CLICKS, PURCHASES}
    buffer.add(PURCHASES, [("p1", 100), ("p2", 900)], now=0.0)
    buffer.add(CLICKS, [("c1", 100)], now=0.0)
    assert released(buffer, both, both, 0.1) == {}  # two may go: fewer than min_release, and not old yet
    buffer.add(CLICKS, [("c2", 200)], now=0.2)
    assert released(buffer, both, both, 0.2) == {PURCHASES: ["p1"], CLICKS: ["c1", "c2"]}
    buffer.add(CLICKS, [("c3", 300)], now=0.3)
    assert released(buffer, both, both, 0.5) == {}
    assert released(buffer, both, both, 0.8) == {CLICKS: ["c3"]}  # waited idle_s: a small batch goes
    with pytest.raises(ValueError):
        EventTimeBuffer(min_release=0)
