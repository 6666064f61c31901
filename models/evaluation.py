"""Prequential (test-then-train) evaluation of ranking recommenders on a stream.

Every real interaction is first scored, as the rank of the item the user actually chose among all
known items, and only then trained on. The rank becomes HR@10, NDCG@10, Recall@20 and MRR,
aggregated cumulatively and over a rolling window (river's running statistics), overall and for
slices such as cold users and long-tail items.

With one held-out item per event, Recall@k equals HR@k; both names are reported because users
compare them with offline papers that use either.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from river import stats, utils

METRICS = ("hr@10", "ndcg@10", "recall@20", "mrr")
OVERALL = "overall"
COLD_USER = "cold_user"
LONG_TAIL = "long_tail"


def rank_of_target(scores: np.ndarray, target: int, exclude: Iterable[int] = ()) -> int:
    """1-based rank of ``scores[target]`` among the candidates that are not excluded.

    Ties count against the target, so a model that scores everything equally gets the worst rank,
    not a lucky one. The target itself is never excluded (a user may buy an item again).
    """
    candidates = np.ones(len(scores), dtype=bool)
    excluded = np.fromiter(exclude, dtype=np.int64)
    if excluded.size:
        candidates[excluded] = False
    candidates[target] = False
    return 1 + int(np.count_nonzero(scores[candidates] >= scores[target]))


def metrics_for_rank(rank: int) -> dict[str, float]:
    if rank < 1:
        raise ValueError("ranks start at 1")
    return {
        "hr@10": float(rank <= 10),
        "ndcg@10": 1.0 / float(np.log2(rank + 1)) if rank <= 10 else 0.0,
        "recall@20": float(rank <= 20),
        "mrr": 1.0 / rank,
    }


@dataclass
class _SliceStats:
    window: int
    count: int = 0
    cumulative: dict[str, stats.Mean] = field(default_factory=dict)
    rolling: dict[str, utils.Rolling] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in METRICS:
            self.cumulative[name] = stats.Mean()
            self.rolling[name] = utils.Rolling(stats.Mean, window_size=self.window)

    def update(self, values: dict[str, float]) -> None:
        self.count += 1
        for name, value in values.items():
            self.cumulative[name].update(value)
            self.rolling[name].update(value)


class PrequentialEvaluator:
    """Running ranking metrics, overall and per slice, cumulative and over the last ``window`` events."""

    def __init__(self, window: int = 1000) -> None:
        self.window = window
        self._slices: dict[str, _SliceStats] = {}

    def update(self, rank: int, slices: Iterable[str] = ()) -> dict[str, float]:
        values = metrics_for_rank(rank)
        for name in (OVERALL, *slices):
            if name not in self._slices:
                self._slices[name] = _SliceStats(self.window)
            self._slices[name].update(values)
        return values

    def count(self, slice_name: str = OVERALL) -> int:
        found = self._slices.get(slice_name)
        return 0 if found is None else found.count

    def get(self, metric: str, slice_name: str = OVERALL, rolling: bool = False) -> float:
        found = self._slices.get(slice_name)
        if found is None:
            return 0.0
        return (found.rolling if rolling else found.cumulative)[metric].get()

    def report(self) -> dict[str, dict[str, float]]:
        """``{slice: {"n": count, "<metric>": cumulative, "<metric>_rolling": rolling}}``."""
        out: dict[str, dict[str, float]] = {}
        for name, slice_stats in self._slices.items():
            row: dict[str, float] = {"n": slice_stats.count}
            for metric in METRICS:
                row[metric] = slice_stats.cumulative[metric].get()
                row[f"{metric}_rolling"] = slice_stats.rolling[metric].get()
            out[name] = row
        return out


class PopularityTracker:
    """Interaction counts per item, and which items are long-tail (outside the top ``head_fraction``).

    The head threshold is recomputed every ``refresh_every`` updates rather than per event: it moves
    slowly, and a partial sort over all items per event would dominate the evaluation cost.
    """

    def __init__(self, head_fraction: float = 0.2, refresh_every: int = 500) -> None:
        if not 0 < head_fraction < 1:
            raise ValueError("head_fraction must be between 0 and 1")
        self.head_fraction = head_fraction
        self.refresh_every = refresh_every
        self.counts: dict[str, int] = {}
        self._since_refresh = refresh_every  # refresh on first use
        self._threshold = 1

    def update(self, item_id: str, weight: int = 1) -> None:
        self.counts[item_id] = self.counts.get(item_id, 0) + weight
        self._since_refresh += 1

    def head_threshold(self) -> int:
        """The smallest count an item needs to be in the head."""
        if self._since_refresh >= self.refresh_every:
            self._since_refresh = 0
            if self.counts:
                values = np.fromiter(self.counts.values(), dtype=np.int64)
                head_size = max(1, int(np.ceil(len(values) * self.head_fraction)))
                self._threshold = int(np.partition(values, len(values) - head_size)[len(values) - head_size])
        return self._threshold

    def is_long_tail(self, item_id: str) -> bool:
        return self.counts.get(item_id, 0) < self.head_threshold()


def slices_for(
    user_events_before: int, item_id: str, popularity: PopularityTracker, cold_user_max: int = 5
) -> list[str]:
    """The slices an event belongs to, judged on what was known *before* the event."""
    found = []
    if user_events_before < cold_user_max:
        found.append(COLD_USER)
    if popularity.is_long_tail(item_id):
        found.append(LONG_TAIL)
    return found
