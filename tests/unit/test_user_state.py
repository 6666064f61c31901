from stream.contract import Interaction
from stream.user_state import apply_interactions, event_time_order, history_items, seen_items


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
