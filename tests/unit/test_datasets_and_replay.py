from datetime import UTC, datetime

import pytest

from streamrec.stream.tools.datasets import load_csv, load_ml100k
from streamrec.stream.tools.replay import Pacing, RunStamp, new_run_id, shift_past, stamped_id
from streamrec.stream.worker.user_state import event_id_digest


@pytest.fixture(scope="module")
def ml100k():
    return load_ml100k()


def test_ml100k_mapping(ml100k):
    frame = ml100k.interactions
    assert ml100k.source_rows == 100_000
    assert (frame["type"] == "click").sum() == 100_000
    # every rating >= 4 is also a purchase
    assert (frame["type"] == "purchase").sum() == (frame.loc[frame["type"] == "click", "rating"] >= 4).sum() == 55_375
    assert frame["ts"].is_monotonic_increasing
    assert frame["event_id"].is_unique
    assert frame["user_id"].nunique() == 943 and frame["item_id"].nunique() == 1682


def test_ml100k_purchase_follows_its_click(ml100k):
    events = list(ml100k.interaction_events())
    position = {e["event_id"]: i for i, e in enumerate(events)}
    purchases = [e for e in events if e["type"] == "purchase"][:500]
    for purchase in purchases:
        click_id = purchase["event_id"].removesuffix("-purchase") + "-click"
        assert position[click_id] < position[purchase["event_id"]]
    assert events[0]["context"]["rating"] in {1.0, 2.0, 3.0, 4.0, 5.0}


def test_ml100k_catalogue(ml100k):
    assert len(ml100k.catalogue) == 1682
    toy_story = ml100k.catalogue[0]
    assert toy_story["item_id"] == "1" and toy_story["title"] == "Toy Story"
    assert toy_story["categories"] == ["Animation", "Children's", "Comedy"]
    assert toy_story["attributes"] == {"release_year": 1995}


def test_ml100k_purchase_threshold_is_configurable():
    assert (load_ml100k(purchase_min_rating=5).interactions["type"] == "purchase").sum() == 21_201


def test_csv_with_column_options_sorts_by_time_and_keeps_bad_rows(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("uid;iid;when;kind\nu1;i1;20;purchase\nu2;i2;10;click\n;i3;30;click\nu4;i4;soon;click\n")
    data = load_csv(path, user_col="uid", item_col="iid", ts_col="when", ts_unit="s", type_col="kind", sep=";")
    events = list(data.interaction_events())
    assert [e["user_id"] for e in events] == ["u4", "u2", "u1", ""]  # unparseable time sorts first
    assert events[1]["ts"] == 10_000 and events[2]["type"] == "purchase"
    assert events[0]["ts"] == "soon"  # kept as is: the worker dead-letters it with its reason
    assert data.source_rows == 4


def test_csv_names_missing_columns(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="no column\\(s\\) user_id, item_id, ts"):
        load_csv(path)


def test_pacing():
    assert Pacing().due_s(1000, 0, 0) == 0.0
    assert Pacing(rate=500).due_s(1000, 0, 0) == 2.0
    assert Pacing(speedup=3600).due_s(0, 7_200_000, 0) == 2.0
    with pytest.raises(ValueError, match="either a rate or a speed-up"):
        Pacing(rate=1, speedup=1)
    with pytest.raises(ValueError, match="positive"):
        Pacing(rate=0)


def test_csv_iso_times_become_epoch_milliseconds(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user_id,item_id,ts\nu1,i1,2024-05-01T10:00:00Z\nu2,i2,2024-05-01T12:00:00.250+02:00\n")
    events = list(load_csv(path, ts_unit="iso").interaction_events())
    assert [e["ts"] for e in events] == [1_714_557_600_000, 1_714_557_600_250]
    assert all(type(e["ts"]) is int for e in events)


# --- a run of its own: stamped ids, moved times --------------------------------------------------

DAY = 86_400_000


def test_a_stamped_run_is_new_events_by_the_same_users(ml100k):
    event = next(ml100k.interaction_events())
    stamp = RunStamp("20261203-101502-3fa2", shift_ms=215 * DAY, min_event_ms=0)
    stamped = stamp.apply(event)
    assert stamped["event_id"] == f"{event['event_id']}@20261203-101502-3fa2"
    assert stamped["ts"] == event["ts"] + 215 * DAY
    assert {k: v for k, v in stamped.items() if k not in ("event_id", "ts")} == {
        k: v for k, v in event.items() if k not in ("event_id", "ts")
    }
    assert "@" not in event["event_id"]  # the dataset's own event is left as it was


def test_stamping_never_makes_a_bad_event_valid():
    stamp = RunStamp("r1", shift_ms=10 * DAY, min_event_ms=631_152_000_000)
    assert stamp.apply({"event_id": "", "ts": 1_714_557_600_000})["event_id"] == ""  # empty: stays empty
    assert stamp.apply({"event_id": "  ", "ts": 0})["event_id"] == "  "
    assert stamp.apply({"event_id": None})["event_id"] is None
    assert stamp.apply({"event_id": True})["event_id"] is True  # not an id: a boolean
    assert stamp.apply({"event_id": "x" * 257})["event_id"] == "x" * 257  # too long already
    assert "event_id" not in stamp.apply({"ts": 5})  # missing stays missing
    assert stamp.apply({"event_id": 42})["event_id"] == "42@r1"  # integer ids are ids
    assert stamp.apply({"ts": "soon"})["ts"] == "soon"  # not a time: sent as it is
    assert stamp.apply({"ts": 1_000})["ts"] == 1_000  # before 1990: too old either way, not moved into range
    assert stamp.apply({"ts": 631_152_000_000})["ts"] == 631_152_000_000 + 10 * DAY


def test_an_id_that_would_outgrow_the_limit_becomes_its_digest():
    long_id = "y" * 250
    stamped = stamped_id(long_id, "20261203-101502-3fa2")
    assert stamped == f"{event_id_digest(long_id)}@20261203-101502-3fa2"
    assert len(stamped) <= 256 and stamped != stamped_id("y" * 249, "20261203-101502-3fa2")


def test_run_ids_sort_by_start_time_and_differ_within_a_second():
    at = datetime(2026, 12, 3, 10, 15, 2, tzinfo=UTC)
    first = new_run_id(at)
    assert first.startswith("20261203-101502-") and len(first) == len("20261203-101502-3fa2")
    assert len({new_run_id(at) for _ in range(20)}) > 1  # 4 random hex digits after the second
    assert new_run_id(datetime(2026, 12, 3, 10, 15, 3, tzinfo=UTC)) > first


def test_a_fresh_run_starts_after_the_newest_event_on_the_topics():
    first, last, now = 874_724_710_000, 893_286_638_000, 1_796_000_000_000  # ML-100K's span; now: 2026
    assert shift_past(None, first, last, now) == 0  # nothing on the topics: the dataset's own times
    assert shift_past(first - 1, first, last, now) == 0  # everything there is older than the dataset
    once = shift_past(last, first, last, now)  # after one full run
    assert once % DAY == 0 and first + once > last and first + once - DAY <= last
    assert shift_past(first, first, last, now) == DAY  # the newest is the dataset's first event
    twice = shift_past(last + once, first, last, now)  # after a second run
    assert first + twice > last + once


def test_a_fresh_run_is_never_moved_into_the_future():
    first, last = 1_700_000_000_000, 1_700_000_000_000 + 30 * DAY
    now = last + 10 * DAY + 5
    assert shift_past(last, first, last, now) == 10 * DAY  # wanted 31 days; the run's last event stays before now
    assert shift_past(last, first, now + DAY, now) == 0  # already at now: not moved at all


def test_the_time_range_counts_only_times_the_worker_accepts(tmp_path, ml100k):
    assert ml100k.time_range() == (874_724_710_000, 893_286_638_000)
    first_ten = ml100k.interactions["ts"].iloc[:10]
    assert ml100k.time_range(10) == (first_ten.min(), first_ten.max())
    path = tmp_path / "log.csv"
    path.write_text("user_id,item_id,ts\nu1,i1,soon\nu2,i2,5\nu3,i3,2000\nu4,i4,3000\n")
    data = load_csv(path)
    assert data.time_range(min_ms=1000) == (2000, 3000)  # 'soon' is not a time, 5 is before the minimum
    assert data.time_range(2, min_ms=1000) is None  # sorted by time: 'soon' and 5 come first
