from stream.contract import Interaction
from stream.user_state import apply_interactions, history_items, seen_items


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

    # offsets are per source topic: a purchase at a lower offset of another topic is new
    bought, contexts = apply(again, [ev(5, "d", "purchase")], positions=[("purchases", 0)])
    assert bought["purchases"] == 1 and not contexts[0].redelivered
