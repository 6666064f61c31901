import pytest

from streamrec.stream.worker.contract import Interaction
from streamrec.stream.worker.user_state import (
    SKIPPED_RUNS_KEPT,
    apply_interactions,
    event_time_order,
    history_items,
    seen_items,
)


def ev(ts: int, item: str, kind: str = "click") -> Interaction:
    return Interaction(event_id=f"{ts}-{item}", user_id="u", item_id=item, ts=ts, type=kind)


def apply(state, events, history_length=10, **kwargs):
    return apply_interactions(state, events, history_length, **kwargs)


def test_counts_and_time_bounds():
    state, _ = apply(None, [ev(30, "a"), ev(10, "b", "purchase"), ev(20, "c")])
    assert (state["events"], state["clicks"], state["purchases"]) == (3, 2, 1)
    assert (state["first_ts"], state["last_ts"]) == (10, 30)


def test_recent_is_time_ordered_even_for_late_events_and_keeps_arrival_order_on_ties():
    state, _ = apply(None, [ev(10, "a"), ev(30, "b"), ev(20, "late"), ev(30, "tie")])
    assert [entry[1] for entry in state["recent"]] == ["a", "late", "b", "tie"]


def test_recent_keeps_only_the_newest_entries():
    state, _ = apply(None, [ev(t, str(t)) for t in range(1, 8)], history_length=3)
    assert state["recent"] == [[5, "5", "click"], [6, "6", "click"], [7, "7", "click"]]
    assert state["events"] == 7


def test_input_state_is_not_modified():
    before, _ = apply(None, [ev(1, "a")], history_length=5)
    snapshot = {**before, "recent": [list(e) for e in before["recent"]], "seen": list(before["seen"])}
    after, _ = apply(before, [ev(2, "b")], history_length=5)
    assert before == snapshot
    assert after["events"] == 2 and len(after["recent"]) == 2


def test_each_event_gets_the_history_and_seen_items_from_just_before_it():
    state, _ = apply(None, [ev(1, "a"), ev(2, "b")])
    _, contexts = apply(state, [ev(3, "c"), ev(4, "a"), ev(0, "early")])
    assert [c.history for c in contexts] == [("a", "b"), ("a", "b", "c"), ()]
    # seen: what the state held before the batch (shared); the history adds what came since
    assert [c.seen | set(c.history) for c in contexts] == [{"a", "b"}, {"a", "b", "c"}, {"a", "b"}]
    assert not any(c.redelivered for c in contexts)


def test_history_is_not_cut_by_trimming_later_in_the_same_batch():
    _, contexts = apply(None, [ev(t, str(t)) for t in range(1, 6)], history_length=2)
    assert contexts[-1].history == ("3", "4")  # what recent held just before event 5
    assert contexts[2].history == ("1", "2")


def test_seen_is_distinct_most_recent_last_and_capped():
    state, _ = apply(None, [ev(1, "a"), ev(2, "b"), ev(3, "a"), ev(4, "c")], seen_length=2)
    assert state["seen"] == ["a", "c"]
    assert seen_items(state) == {"a", "b", "c"}  # "b" is still in the recent history
    assert history_items(state) == ("a", "b", "a", "c")


def test_redelivered_events_are_not_applied_twice_but_keep_their_context():
    first = [ev(1, "a"), ev(2, "b"), ev(3, "c")]
    positions = [("clicks", 10), ("clicks", 11), ("clicks", 12)]
    state, _ = apply(None, first, positions=positions)
    assert state["applied"] == {"clicks": 12}

    # after a crash the worker re-reads from offset 11: b and c again, then a new event d
    again, contexts = apply(
        state, [ev(2, "b"), ev(3, "c"), ev(4, "d")], positions=[("clicks", 11), ("clicks", 12), ("clicks", 13)]
    )
    assert again["events"] == 4
    assert [e[1] for e in again["recent"]] == ["a", "b", "c", "d"]
    assert [c.redelivered for c in contexts] == [True, True, False]
    assert [c.history for c in contexts] == [("a",), ("a", "b"), ("a", "b", "c")]

    # a record fetched twice in one batch (around a seek) is applied once
    twice, contexts = apply(again, [ev(5, "e"), ev(5, "e")], positions=[("clicks", 14), ("clicks", 14)])
    assert twice["events"] == 5 and [e[1] for e in twice["recent"]] == ["a", "b", "c", "d", "e"]
    assert [c.redelivered for c in contexts] == [False, True]

    # offsets are per source topic: a purchase at a lower offset of another topic is new
    bought, contexts = apply(again, [ev(5, "d", "purchase")], positions=[("purchases", 0)])
    assert bought["purchases"] == 1 and not contexts[0].redelivered


def test_events_read_after_a_later_event_of_the_user_are_late():
    # the purchases topic was read ahead of the clicks topic: the click at 20 comes after the purchase at 30
    state, contexts = apply(None, [ev(10, "a"), ev(30, "b", "purchase"), ev(20, "c"), ev(40, "d")])
    assert [c.late for c in contexts] == [False, False, True, False]
    assert contexts[2].history == ("a",)  # what came before it in event time, not in arrival order
    # in a later batch too
    _, contexts = apply(state, [ev(35, "e"), ev(50, "f")])
    assert [c.late for c in contexts] == [True, False]


def test_a_click_read_after_its_own_purchase_is_late_but_other_same_time_events_are_not():
    _, contexts = apply(None, [ev(10, "a", "purchase"), ev(10, "a"), ev(10, "b")])
    assert [c.late for c in contexts] == [False, True, False]
    # the usual order, click then purchase: only the purchase (never scored) is the twin
    _, contexts = apply(None, [ev(10, "a"), ev(10, "a", "purchase")])
    assert [c.late for c in contexts] == [False, True]


def test_a_batch_can_be_applied_in_event_time_order_across_topics():
    # fetched as a run of the purchases partition, then a run of the clicks partition
    arrived = [ev(20, "a", "purchase"), ev(30, "b", "purchase"), ev(20, "a"), ev(25, "c"), ev(30, "b")]
    positions = [("p", 7), ("p", 8), ("c", 3), ("c", 4), ("c", 5)]
    order = event_time_order(arrived)
    assert [(arrived[k].ts, arrived[k].type) for k in order] == [
        (20, "click"), (20, "purchase"), (25, "click"), (30, "click"), (30, "purchase"),
    ]  # fmt: skip
    state, contexts = apply(None, [arrived[k] for k in order], positions=[positions[k] for k in order])
    # the clicks are in time; each purchase follows its own click
    assert [c.late for c in contexts] == [False, True, False, False, True]
    assert not any(c.redelivered for c in contexts) and state["applied"] == {"p": 8, "c": 5}
    # the same positions again are all redeliveries, whatever their order
    _, again = apply(state, [arrived[k] for k in order], positions=[positions[k] for k in order])
    assert all(c.redelivered for c in again)


def test_an_event_sent_twice_is_applied_once_even_at_a_new_offset():
    """A producer retry puts the same event_id on the topic again, at a later offset."""
    first = ev(10, "a")
    state, _ = apply(None, [first, ev(20, "b")], positions=[("c", 0), ("c", 1)], dedupe_window=5)
    resent = Interaction(event_id=first.event_id, user_id="u", item_id="a", ts=10, type="click")
    state, contexts = apply(state, [resent, ev(30, "c")], positions=[("c", 2), ("c", 3)], dedupe_window=5)
    assert [c.duplicate for c in contexts] == [True, False]
    assert state["events"] == 3 and [e[1] for e in state["recent"]] == ["a", "b", "c"]
    assert state["applied"] == {"c": 3}  # the duplicate's offset is handled too: re-reading it is a redelivery
    # ... and, read again (the learner's rewind), it is still no event to train on; the original is
    _, contexts = apply(state, [first, resent], positions=[("c", 0), ("c", 2)], dedupe_window=5)
    assert [(c.redelivered, c.duplicate) for c in contexts] == [(True, False), (True, True)]
    # within one batch as well
    state, contexts = apply(None, [ev(1, "x"), ev(1, "x")], dedupe_window=5)
    assert [c.duplicate for c in contexts] == [False, True] and state["events"] == 1


def test_the_dedupe_window_keeps_the_newest_ids_per_user():
    state, _ = apply(None, [ev(t, str(t)) for t in range(1, 8)], dedupe_window=3)
    assert len(state["ids"]) == 3
    _, contexts = apply(state, [ev(1, "1"), ev(7, "7")], dedupe_window=3)
    # event 1 fell out of the window (applied again, reported as late); event 7 is still in it
    assert [c.duplicate for c in contexts] == [False, True]


def test_without_a_window_ids_are_not_kept_and_states_from_before_the_window_load():
    state, _ = apply(None, [ev(1, "a"), ev(1, "a")])
    assert state["events"] == 2 and state["ids"] == []
    old = {k: v for k, v in state.items() if k != "ids"}  # written by a version without the window
    again, contexts = apply(old, [ev(1, "a")], dedupe_window=4)
    assert not contexts[0].duplicate and len(again["ids"]) == 1


# --- forwarded copies (stream/worker/ingest.py forwards misrouted records; see "Why forwarded") ------------------
def forwarded_user(events: int, source_partition: int = 2) -> tuple[dict, list[tuple[str, int]], list[tuple]]:
    """A user whose ``events`` events all came as forwarded copies from one source partition of "clicks".

    Copy k sits at offset 1000 + k of the home partition and was made from offset 10 * k of the source.
    """
    state, _ = apply(
        None,
        [ev(t, f"i{t}") for t in range(events)],
        positions=[("clicks", 1000 + k) for k in range(events)],
        sources=[("clicks", source_partition, 10 * k) for k in range(events)],
    )
    return state


def test_a_copy_forwarded_again_is_neither_applied_nor_trained_at_any_distance():
    """After a crash the source is forwarded again: each copy arrives behind everything applied since.

    For a heavy user that is thousands of its events later: far outside any event-id window (here
    the window is on, 200 ids, and the copy comes 10,000 events later), but its source offset is
    below the highest one applied from that source partition, so it is recognised.
    """
    state = forwarded_user(10_001)
    assert state["events"] == 10_001 and state["forwarded"] == {"clicks:2": 100_000}
    again = [ev(0, "i0"), ev(5000, "i5000"), ev(10_000, "i10000")]  # copies of source offsets 0, 50,000 and 100,000
    after, contexts = apply(
        state,
        again,
        positions=[("clicks", 20_000 + k) for k in range(3)],
        sources=[("clicks", 2, 0), ("clicks", 2, 50_000), ("clicks", 2, 100_000)],
        dedupe_window=200,
    )
    assert [(c.duplicate, c.forwarded_again, c.redelivered) for c in contexts] == [(True, True, False)] * 3
    assert after["events"] == 10_001 and after["recent"] == state["recent"]
    assert after["applied"] == {"clicks": 20_002}  # their offsets are handled: read again, they are redeliveries
    assert after["forwarded"] == {"clicks:2": 100_000}
    # the next record of that source is new, wherever it lands
    newer, contexts = apply(
        after, [ev(10_001, "new")], positions=[("clicks", 20_003)], sources=[("clicks", 2, 100_001)], dedupe_window=200
    )
    assert not contexts[0].duplicate and newer["events"] == 10_002 and newer["forwarded"] == {"clicks:2": 100_001}


def test_forwarded_sources_are_kept_per_source_partition_and_topic():
    """One entry per source partition: state stays bounded however many copies arrive."""
    state = forwarded_user(3, source_partition=2)
    # a copy from another partition of the same topic, and one from another topic, both at lower offsets
    after, contexts = apply(
        state,
        [ev(10, "x"), ev(11, "y", "purchase")],
        positions=[("clicks", 1003), ("purchases", 4)],
        sources=[("clicks", 0, 5), ("purchases", 2, 5)],
    )
    assert not any(c.duplicate for c in contexts) and after["events"] == 5
    assert after["forwarded"] == {"clicks:2": 20, "clicks:0": 5, "purchases:2": 5}
    # a record that came straight from its producer (no source) is not compared with them
    plain, contexts = apply(after, [ev(12, "z")], positions=[("clicks", 1004)], sources=[None])
    assert not contexts[0].duplicate and plain["forwarded"] == after["forwarded"]


def test_the_lower_offset_is_the_copy_applied_whatever_order_the_batch_is_applied_in():
    """A batch is applied in event-time order; which copy counts is decided in offset order."""
    first, second = ev(10, "a"), ev(10, "a")
    state, contexts = apply(
        None,
        [second, first],  # the later copy listed first
        positions=[("clicks", 8), ("clicks", 5)],
        sources=[("clicks", 1, 3), ("clicks", 1, 3)],
    )
    assert [(c.forwarded_again, c.duplicate) for c in contexts] == [(True, True), (False, False)]
    assert state["events"] == 1 and state["skipped"] == {"clicks": [[8, 8]]}


def test_a_rewind_trains_the_first_copy_again_but_never_a_copy_forwarded_again():
    """The learner's rewind re-reads the home partition from its checkpoint: first copies and re-forwarded ones.

    Every record re-read is a redelivery (its offset is handled); a first copy is handed back for
    training (the model may have lost it), a copy that was not applied the first time is not,
    even after a second crash has moved the state on (new copies applied after the skipped run).
    """
    state = forwarded_user(4)  # copies of source offsets 0, 10, 20, 30 at home offsets 1000..1003
    # crash: the source is forwarded again from offset 10: copies at 1004..1006, then a new record at 1007
    state, contexts = apply(
        state,
        [ev(1, "i1"), ev(2, "i2"), ev(3, "i3"), ev(4, "new")],
        positions=[("clicks", 1004 + k) for k in range(4)],
        sources=[("clicks", 2, 10), ("clicks", 2, 20), ("clicks", 2, 30), ("clicks", 2, 40)],
    )
    assert [c.forwarded_again for c in contexts] == [True, True, True, False]
    assert state["skipped"] == {"clicks": [[1004, 1006]]} and state["events"] == 5
    # a second crash; the rewind reads the home partition again from 1002
    rewind = list(range(1002, 1008))
    items = {1002: "i2", 1003: "i3", 1004: "i1", 1005: "i2", 1006: "i3", 1007: "new"}
    ts = {1002: 2, 1003: 3, 1004: 1, 1005: 2, 1006: 3, 1007: 4}
    again, contexts = apply(
        state,
        [ev(ts[o], items[o]) for o in rewind],
        positions=[("clicks", o) for o in rewind],
        sources=[("clicks", 2, s) for s in (20, 30, 10, 20, 30, 40)],
    )
    assert all(c.redelivered for c in contexts)
    trained = [o for o, c in zip(rewind, contexts, strict=True) if not c.duplicate]
    assert trained == [1002, 1003, 1007]  # each source record once: 20, 30 and 40
    assert again == state  # a re-read changes nothing


def test_runs_of_skipped_offsets_merge_and_only_the_newest_are_kept():
    state = forwarded_user(2)  # source offsets 0 and 10
    offset = 1002
    for run in range(SKIPPED_RUNS_KEPT + 2):
        # two copies forwarded again (a crash), then one new record: each crash leaves one run of two offsets
        state, contexts = apply(
            state,
            [ev(0, "i0"), ev(1, "i1"), ev(100 + run, f"n{run}")],
            positions=[("clicks", offset), ("clicks", offset + 1), ("clicks", offset + 2)],
            sources=[("clicks", 2, 0), ("clicks", 2, 10), ("clicks", 2, 100 + run)],
        )
        assert [c.forwarded_again for c in contexts] == [True, True, False]
        offset += 3
    runs = state["skipped"]["clicks"]
    assert len(runs) == SKIPPED_RUNS_KEPT and runs[-1] == [offset - 3, offset - 2]
    assert runs[0] == [1002 + 3 * 2, 1002 + 3 * 2 + 1]  # the two oldest runs are gone


@pytest.mark.parametrize("missing", [("forwarded", "skipped"), ("ids", "forwarded", "skipped")])
def test_states_written_before_forwarding_was_idempotent_load(missing):
    state, _ = apply(None, [ev(1, "a")], positions=[("c", 0)])
    old = {k: v for k, v in state.items() if k not in missing}
    again, contexts = apply(old, [ev(2, "b")], positions=[("c", 1)], sources=[("c", 3, 7)], dedupe_window=4)
    assert not contexts[0].duplicate and again["events"] == 2 and again["forwarded"] == {"c:3": 7}
