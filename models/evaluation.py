"""Prequential (test-then-train) evaluation of ranking recommenders on a stream.

Every real interaction is first scored, as the rank of the item the user actually chose among all
known items, and only then trained on. The rank becomes HR@10, NDCG@10, Recall@20 and MRR,
aggregated cumulatively (river's running mean) and over a rolling window, overall and for
slices such as cold users and long-tail items.

With one held-out item per event, Recall@k equals HR@k; both names are reported because users
compare them with offline papers that use either.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from river import stats

METRICS = ("hr@10", "ndcg@10", "recall@20", "mrr")
OVERALL = "overall"
COLD_USER = "cold_user"
LONG_TAIL = "long_tail"


def ranks_of_targets(scores: np.ndarray, targets: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """1-based rank of each target's score among its candidates.

    ``scores[B, N]``, ``targets[B]``; ``candidates[B, N]`` (bool) is False for excluded items
    (already seen). The target is never counted against itself, nor excluded (a user may buy an
    item again). Ties count against the target, so a model that scores everything equally gets
    the worst rank, not a lucky one.
    """
    rows = np.arange(len(targets))
    target_scores = scores[rows, targets]
    beaten_or_tied = (scores >= target_scores[:, None]) & candidates
    beaten_or_tied[rows, targets] = False
    return 1 + np.count_nonzero(beaten_or_tied, axis=1)


def metrics_for_ranks(ranks: np.ndarray) -> dict[str, np.ndarray]:
    """Each metric for each rank, as float arrays in :data:`METRICS` order."""
    ranks = np.asarray(ranks, dtype=np.float64)
    if ranks.size and ranks.min() < 1:
        raise ValueError("ranks start at 1")
    top10 = ranks <= 10
    return {
        "hr@10": top10.astype(np.float64),
        "ndcg@10": np.where(top10, 1.0 / np.log2(ranks + 1), 0.0),
        "recall@20": (ranks <= 20).astype(np.float64),
        "mrr": 1.0 / ranks,
    }


class RollingMean:
    """The mean of the last ``window`` values, in a ring buffer (a batch is one numpy write)."""

    def __init__(self, window: int) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        self.window = window
        self._values = np.zeros(window)
        self._next = 0
        self._filled = 0

    def update_many(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64)[-self.window :]
        end = self._next + len(values)
        if end <= self.window:
            self._values[self._next : end] = values
        else:
            split = self.window - self._next
            self._values[self._next :] = values[:split]
            self._values[: end - self.window] = values[split:]
        self._next = end % self.window
        self._filled = min(self.window, self._filled + len(values))

    def get(self) -> float:
        return float(self._values[: self._filled].mean()) if self._filled else 0.0


@dataclass
class _SliceStats:
    window: int
    count: int = 0
    cumulative: dict[str, stats.Mean] = field(default_factory=dict)
    rolling: dict[str, RollingMean] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in METRICS:
            self.cumulative[name] = stats.Mean()
            self.rolling[name] = RollingMean(self.window)

    def update_many(self, values: dict[str, np.ndarray]) -> None:
        for name, column in values.items():
            self.cumulative[name].update_many(column)
            self.rolling[name].update_many(column)
        self.count += len(next(iter(values.values())))


class PrequentialEvaluator:
    """Running ranking metrics, overall and per slice, cumulative and over the last ``window`` events.

    Cumulative means are river's ``stats.Mean``; the rolling window is a ring buffer so that a
    micro-batch of ranks is one update per metric rather than one Python call per event.
    """

    def __init__(self, window: int = 1000) -> None:
        self.window = window
        self._slices: dict[str, _SliceStats] = {}

    def update_many(self, ranks: np.ndarray, slices: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Add a batch of ranks; ``slices`` maps a slice name to a boolean mask over ``ranks``."""
        values = metrics_for_ranks(ranks)
        if len(ranks) == 0:
            return values
        self._slice(OVERALL).update_many(values)
        for name, mask in (slices or {}).items():
            if mask.any():
                self._slice(name).update_many({metric: column[mask] for metric, column in values.items()})
        return values

    def _slice(self, name: str) -> _SliceStats:
        if name not in self._slices:
            self._slices[name] = _SliceStats(self.window)
        return self._slices[name]

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
