import json

import pytest

from streamrec.models.vocabulary import FALLBACK_ROW, Vocabulary


def test_rows_are_allocated_on_first_sight_without_collisions():
    vocab = Vocabulary()
    rows = [vocab.lookup(f"id{i}", now_s=i) for i in range(1000)]
    assert [r.row for r in rows] == list(range(1, 1001))
    assert all(r.fresh for r in rows)
    assert vocab.lookup("id5", now_s=2000).row == 6 and not vocab.lookup("id5", now_s=2000).fresh
    assert vocab.num_rows == 1001


def test_rare_ids_share_the_fallback_row_until_frequent():
    vocab = Vocabulary(min_count=3)
    assert [vocab.lookup("a", 0).row, vocab.lookup("a", 1).row] == [FALLBACK_ROW, FALLBACK_ROW]
    assert vocab.row("a") == FALLBACK_ROW and "a" not in vocab
    third = vocab.lookup("a", 2)
    assert (third.row, third.fresh) == (1, True)
    assert vocab.row("a") == 1
    assert vocab.report().pending == 0 and vocab.report().assigned == 1


def test_idle_ids_expire_and_their_rows_are_reused():
    vocab = Vocabulary(ttl_s=100)
    vocab.lookup("old", 0)
    vocab.lookup("kept", 0)
    vocab.lookup("kept", 150)  # seen again: not idle
    vocab.lookup("rare", 10)
    assert vocab.expire(now_s=160) == [("old", 1)]
    assert "old" not in vocab and "kept" in vocab
    reused = vocab.lookup("newcomer", 160)
    assert (reused.row, reused.fresh) == (1, True)  # old's row, to be re-initialised
    assert vocab.num_rows == 4  # the table did not grow
    assert vocab.expire(now_s=1000) == [("kept", 2), ("rare", 3), ("newcomer", 1)]
    assert vocab.report().free == 3


def test_memory_stays_bounded_under_churn():
    vocab = Vocabulary(min_count=2, ttl_s=50)
    for t in range(10_000):
        vocab.lookup(f"one-off-{t}", t)  # never frequent
        vocab.lookup(f"active-{t % 40}", t)
        vocab.expire(t)
    report = vocab.report()
    assert report.assigned == 40 and report.rows <= 41
    assert report.pending <= 51  # one-offs are forgotten after the TTL


def test_late_events_do_not_make_an_id_older():
    vocab = Vocabulary(ttl_s=100)
    vocab.lookup("a", 500)
    vocab.lookup("a", 10)  # a late event
    assert vocab.expire(now_s=550) == []


def test_state_dict_round_trips_through_json():
    vocab = Vocabulary(min_count=2, ttl_s=30)
    for t, key in enumerate(["a", "a", "b", "c", "c", "d", "d"]):
        vocab.lookup(key, t)
    vocab.expire(40)
    restored = Vocabulary.from_state_dict(json.loads(json.dumps(vocab.state_dict())))
    assert restored.state_dict() == vocab.state_dict()
    assert restored.lookup("e", 50) == vocab.lookup("e", 50)


@pytest.mark.parametrize(("kwargs", "message"), [({"min_count": 0}, "min_count"), ({"ttl_s": 0}, "ttl_s")])
def test_invalid_configuration(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Vocabulary(**kwargs)


def test_assigned_lists_ids_with_their_own_rows_only():
    vocab = Vocabulary(min_count=2)
    for key in ["a", "a", "b", "c", "c"]:
        vocab.lookup(key, 0)
    assert vocab.assigned() == (["a", "c"], [1, 2])
