from stream.contract import Interaction
from stream.user_state import apply_interactions


def ev(ts: int, item: str, kind: str = "click") -> Interaction:
    return Interaction(event_id=f"{ts}-{item}", user_id="u", item_id=item, ts=ts, type=kind)


def test_counts_and_time_bounds():
    state = apply_interactions(None, [ev(30, "a"), ev(10, "b", "purchase"), ev(20, "c")], history_length=10)
    assert (state["events"], state["clicks"], state["purchases"]) == (3, 2, 1)
    assert (state["first_ts"], state["last_ts"]) == (10, 30)


def test_recent_is_time_ordered_even_for_late_events_and_keeps_arrival_order_on_ties():
    state = apply_interactions(None, [ev(10, "a"), ev(30, "b"), ev(20, "late"), ev(30, "tie")], history_length=10)
    assert [entry[1] for entry in state["recent"]] == ["a", "late", "b", "tie"]


def test_recent_keeps_only_the_newest_entries():
    state = apply_interactions(None, [ev(t, str(t)) for t in range(1, 8)], history_length=3)
    assert state["recent"] == [[5, "5", "click"], [6, "6", "click"], [7, "7", "click"]]
    assert state["events"] == 7


def test_input_state_is_not_modified():
    before = apply_interactions(None, [ev(1, "a")], history_length=5)
    snapshot = {**before, "recent": [list(e) for e in before["recent"]]}
    after = apply_interactions(before, [ev(2, "b")], history_length=5)
    assert before == snapshot
    assert after["events"] == 2 and len(after["recent"]) == 2
