import pytest

from stream.datasets import load_csv, load_ml100k
from stream.replay import Pacing


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
