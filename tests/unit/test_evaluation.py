import math

import numpy as np
import pytest

from streamrec.models.evaluation import (
    COLD_USER,
    KEEP_ALL,
    LONG_TAIL,
    OVERALL,
    PrequentialEvaluator,
    RollingMean,
    expected_metrics,
    metrics_for_ranks,
    rank_ranges,
)
from streamrec.models.popularity import ItemPopularity


def ranks_of(scores: list[float] | np.ndarray, target: int, exclude: tuple[int, ...] = ()) -> tuple[int, int]:
    """``(best, worst)`` rank the target can take once ties are broken."""
    candidates = np.ones((1, len(scores)), dtype=bool)
    candidates[0, list(exclude)] = False
    beaten, tied = rank_ranges(np.asarray([scores], dtype=float), np.array([target]), candidates)
    return int(beaten[0]) + 1, int(beaten[0] + tied[0]) + 1


def rank_of(scores: list[float] | np.ndarray, target: int, exclude: tuple[int, ...] = ()) -> int:
    best, worst = ranks_of(scores, target, exclude)
    assert best == worst, "no ties expected"
    return best


def metrics_of(rank: int) -> dict[str, float]:
    return {name: float(values[0]) for name, values in metrics_for_ranks(np.array([rank])).items()}


def test_rank_counts_only_candidates_that_are_not_excluded():
    scores = [0.9, 0.1, 0.5, 0.7, 0.3]
    assert rank_of(scores, target=2) == 3
    assert rank_of(scores, target=2, exclude=(0, 3)) == 1  # seen items removed
    assert rank_of(scores, target=0, exclude=(0,)) == 1  # the target is never excluded


def test_ties_give_the_expected_metrics_of_a_random_tie_break():
    assert ranks_of(np.zeros(100), target=42) == (1, 100)
    beaten, tied = np.array([0, 5, 25]), np.array([99, 9, 4])
    values = expected_metrics(beaten, tied)
    brute = {name: [] for name in values}
    for b, t in zip(beaten, tied, strict=True):  # average the untied metrics over every place the target can take
        places = metrics_for_ranks(np.arange(b + 1, b + t + 2))
        for name in brute:
            brute[name].append(places[name].mean())
    for name in values:
        assert values[name] == pytest.approx(brute[name]), name
    assert values["hr@10"].tolist() == pytest.approx([0.1, 0.5, 0.0]) and values["recall@20"][2] == 0.0
    with pytest.raises(ValueError):
        expected_metrics(np.array([-1]), np.array([0]))


def test_metrics_for_ranks():
    assert metrics_of(1) == {"hr@10": 1.0, "ndcg@10": 1.0, "recall@20": 1.0, "mrr": 1.0}
    third = metrics_of(3)
    assert third["ndcg@10"] == pytest.approx(0.5) and third["mrr"] == pytest.approx(1 / 3)
    assert metrics_of(15) == {"hr@10": 0.0, "ndcg@10": 0.0, "recall@20": 1.0, "mrr": pytest.approx(1 / 15)}
    with pytest.raises(ValueError):
        metrics_for_ranks(np.array([2, 0]))


def test_prequential_cumulative_rolling_and_slices():
    evaluator = PrequentialEvaluator(window=2)
    evaluator.update_many(metrics_for_ranks(np.array([1, 3, 50])), {COLD_USER: np.array([True, False, True]),
                                                 LONG_TAIL: np.array([False, False, True])})  # fmt: skip
    assert evaluator.count() == 3 and evaluator.count(COLD_USER) == 2 and evaluator.count(LONG_TAIL) == 1
    assert evaluator.get("hr@10") == pytest.approx(2 / 3)
    assert evaluator.get("hr@10", rolling=True) == pytest.approx(1 / 2)  # last two events: ranks 3, 50
    assert evaluator.get("ndcg@10", COLD_USER) == pytest.approx(0.5)
    assert evaluator.get("mrr", LONG_TAIL) == pytest.approx(1 / 50)
    report = evaluator.report()
    assert report["overall"]["n"] == 3 and math.isclose(report["overall"]["mrr"], (1 + 1 / 3 + 1 / 50) / 3)
    assert evaluator.get("hr@10", "no-such-slice") == 0.0


def test_long_tail_is_outside_the_top_fifth_by_popularity():
    popularity = ItemPopularity(head_fraction=0.2, refresh_every=1)
    for i in range(10):  # item i has i+1 interactions
        for _ in range(i + 1):
            popularity.learn_one("u", f"i{i}", ts_s=0.0)
    assert popularity.head_threshold() == 9  # the top 2 of 10 items have 9 and 10
    assert [popularity.is_long_tail(f"i{i}") for i in (9, 8, 7, 0)] == [False, False, True, True]
    assert popularity.is_long_tail("never-seen")


def test_batch_ranks_equal_one_at_a_time_ranks():
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 5, size=(40, 30)).astype(float)  # small integers: many ties
    targets = rng.integers(0, 30, size=40)
    excluded = [rng.choice(30, size=int(rng.integers(0, 10)), replace=False) for _ in range(40)]
    candidates = np.ones_like(scores, dtype=bool)
    for b, ex in enumerate(excluded):
        candidates[b, ex] = False
    beaten, tied = rank_ranges(scores, targets, candidates)
    single = [ranks_of(scores[b], int(targets[b]), tuple(excluded[b])) for b in range(40)]
    assert list(zip((beaten + 1).tolist(), (beaten + tied + 1).tolist(), strict=True)) == single
    assert tied.sum() > 0


def test_rolling_mean_keeps_the_last_window_values_across_wraparound():
    rolling = RollingMean(window=4)
    rolling.update_many(np.array([1.0, 2.0, 3.0]))
    assert rolling.get() == pytest.approx(2.0)
    rolling.update_many(np.array([4.0, 5.0, 6.0]))  # wraps: keeps 3, 4, 5, 6
    assert rolling.get() == pytest.approx(4.5)
    rolling.update_many(np.arange(10.0))  # longer than the window: keeps 6..9
    assert rolling.get() == pytest.approx(7.5)


def test_one_batch_equals_the_same_ranks_fed_one_at_a_time():
    ranks = np.array([1, 4, 12, 30, 2])
    cold = np.array([True, False, True, False, False])
    one, many = PrequentialEvaluator(window=3), PrequentialEvaluator(window=3)
    for rank, is_cold in zip(ranks, cold, strict=True):
        one.update_many(metrics_for_ranks(np.array([rank])), {COLD_USER: np.array([is_cold])})
    many.update_many(metrics_for_ranks(ranks), {COLD_USER: cold})
    assert one.report().keys() == many.report().keys()
    for name, row in one.report().items():
        assert row == pytest.approx(many.report()[name])
    assert many.count(COLD_USER) == 2


def test_kept_events_name_their_users_per_slice():
    evaluator = PrequentialEvaluator(keep_events=KEEP_ALL)
    evaluator.update_many(
        metrics_for_ranks(np.array([1, 2, 30])), {COLD_USER: np.array([False, True, True])}, ["a", "b", "c"]
    )
    users, values = evaluator.events(COLD_USER)
    assert users == ["b", "c"] and values[:, 0].tolist() == [1.0, 0.0]  # hr@10 of ranks 2 and 30
    with pytest.raises(ValueError, match="user"):
        evaluator.update_many(metrics_for_ranks(np.array([1])))


def test_a_service_keeps_at_most_keep_events_per_slice_and_counts_the_rest():
    evaluator = PrequentialEvaluator(keep_events=3)
    evaluator.update_many(metrics_for_ranks(np.array([1, 20])), users=["a", "b"])
    evaluator.update_many(metrics_for_ranks(np.array([3, 4, 5])), users=["c", "d", "e"])
    users, values = evaluator.events(OVERALL)
    assert users == ["a", "b", "c"] and values[:, 0].tolist() == [1.0, 0.0, 1.0]
    assert evaluator.count(OVERALL) == 5  # the metrics still cover every event
    assert evaluator.events(COLD_USER) == ([], pytest.approx(np.zeros((0, 4))))
