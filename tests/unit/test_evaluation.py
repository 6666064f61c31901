import math

import numpy as np
import pytest

from streamrec.models.evaluation import (
    COLD_USER,
    LONG_TAIL,
    PrequentialEvaluator,
    RollingMean,
    metrics_for_ranks,
    ranks_of_targets,
)
from streamrec.models.popularity import ItemPopularity


def rank_of(scores: list[float] | np.ndarray, target: int, exclude: tuple[int, ...] = ()) -> int:
    candidates = np.ones((1, len(scores)), dtype=bool)
    candidates[0, list(exclude)] = False
    return int(ranks_of_targets(np.asarray([scores], dtype=float), np.array([target]), candidates)[0])


def metrics_of(rank: int) -> dict[str, float]:
    return {name: float(values[0]) for name, values in metrics_for_ranks(np.array([rank])).items()}


def test_rank_counts_only_candidates_that_are_not_excluded():
    scores = [0.9, 0.1, 0.5, 0.7, 0.3]
    assert rank_of(scores, target=2) == 3
    assert rank_of(scores, target=2, exclude=(0, 3)) == 1  # seen items removed
    assert rank_of(scores, target=0, exclude=(0,)) == 1  # the target is never excluded


def test_ties_count_against_the_target():
    assert rank_of(np.zeros(100), target=42) == 100


def test_metrics_for_ranks():
    assert metrics_of(1) == {"hr@10": 1.0, "ndcg@10": 1.0, "recall@20": 1.0, "mrr": 1.0}
    third = metrics_of(3)
    assert third["ndcg@10"] == pytest.approx(0.5) and third["mrr"] == pytest.approx(1 / 3)
    assert metrics_of(15) == {"hr@10": 0.0, "ndcg@10": 0.0, "recall@20": 1.0, "mrr": pytest.approx(1 / 15)}
    with pytest.raises(ValueError):
        metrics_for_ranks(np.array([2, 0]))


def test_prequential_cumulative_rolling_and_slices():
    evaluator = PrequentialEvaluator(window=2)
    evaluator.update_many(np.array([1, 3, 50]), {COLD_USER: np.array([True, False, True]),
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
    batch = ranks_of_targets(scores, targets, candidates)
    single = [rank_of(scores[b], int(targets[b]), tuple(excluded[b])) for b in range(40)]
    assert batch.tolist() == single


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
        one.update_many(np.array([rank]), {COLD_USER: np.array([is_cold])})
    many.update_many(ranks, {COLD_USER: cold})
    assert one.report().keys() == many.report().keys()
    for name, row in one.report().items():
        assert row == pytest.approx(many.report()[name])
    assert many.count(COLD_USER) == 2
