"""Prequential (test-then-train) evaluation of ranking recommenders on a stream.

Every real interaction is first scored, as the rank of the item the user actually chose among every
item of the catalogue, and only then trained on. The rank becomes HR@10, NDCG@10, Recall@20 and MRR,
aggregated cumulatively (river's running mean) and over a rolling window, overall and for
slices such as cold users and long-tail items.

With one held-out item per event, Recall@k equals HR@k; both names are reported because users
compare them with offline papers that use either.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from river import stats

METRICS = ("hr@10", "ndcg@10", "recall@20", "mrr")
OVERALL = "overall"
COLD_USER = "cold_user"  # fewer than 5 earlier events of the user
COLD_ITEM = "cold_item"  # fewer than 5 earlier scored interactions with the item (0 included)
LONG_TAIL = "long_tail"  # outside the most popular fifth of items
KNOWN_ITEMS = "known_items"  # events on items the recommender had trained on, ranked among those items only
SLICES = (OVERALL, COLD_USER, COLD_ITEM, LONG_TAIL)
KEEP_ALL = 2**62  # ``keep_events``: keep every scored event (in-process benchmarks)


def rank_ranges(scores: np.ndarray, targets: np.ndarray, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(beaten, tied)``: how many candidates score above each target, and how many equal it.

    ``scores[B, N]``, ``targets[B]``; ``candidates[B, N]`` (bool) is False for excluded items
    (already seen). The target is never counted against itself, nor excluded (a user may buy an
    item again). Under a random tie-break the target's rank is uniform over
    ``beaten + 1 .. beaten + tied + 1``: :func:`expected_metrics` turns that into metrics, so a
    model that cannot tell items apart gets what a random order would get, neither the best rank
    nor the worst.
    """
    rows = np.arange(len(targets))
    target_scores = scores[rows, targets][:, None]
    above = (scores > target_scores) & candidates
    equal = (scores == target_scores) & candidates
    equal[rows, targets] = False
    return np.count_nonzero(above, axis=1), np.count_nonzero(equal, axis=1)


_NDCG_CUTOFF = 10
# _DISCOUNT_SUM[j] = sum of 1 / log2(r + 1) for r = 1..j, j = 0..10: NDCG@10's gains, summed.
_DISCOUNT_SUM = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(2, _NDCG_CUTOFF + 2)))])


_harmonic_table = np.zeros(1)  # _harmonic_table[n] = H(n); grown to the largest catalogue met


def _harmonic(n: np.ndarray) -> np.ndarray:
    """H(n) = 1 + 1/2 + ... + 1/n (0 for n = 0), read from a table of partial sums."""
    global _harmonic_table
    n = np.asarray(n, dtype=np.int64)
    largest = int(n.max()) if n.size else 0
    if largest >= len(_harmonic_table):
        size = max(largest + 1, 2 * len(_harmonic_table))
        _harmonic_table = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, size))])
    return _harmonic_table[n]


def expected_metrics(beaten: np.ndarray, tied: np.ndarray) -> dict[str, np.ndarray]:
    """Each metric's expectation when ties are broken at random, in :data:`METRICS` order.

    With ``b`` candidates above the target and ``t`` tied with it, the target's rank ``r`` is
    uniform over ``b + 1 .. b + t + 1`` (``n = t + 1`` places), so

    .. math::

        E[\\mathrm{HR@k}] = \\frac{\\min(n, \\max(0, k - b))}{n}, \\quad
        E[\\mathrm{NDCG@10}] = \\frac{1}{n} \\sum_{r=b+1}^{\\min(b+n, 10)} \\frac{1}{\\log_2(r + 1)}, \\quad
        E[\\mathrm{MRR}] = \\frac{H(b + n) - H(b)}{n}

    (``H`` the harmonic numbers). Without ties these are the usual metrics of rank ``b + 1``.

    >>> {name: round(float(value[0]), 3) for name, value in expected_metrics(np.array([0]), np.array([0])).items()}
    {'hr@10': 1.0, 'ndcg@10': 1.0, 'recall@20': 1.0, 'mrr': 1.0}
    >>> float(expected_metrics(np.array([5]), np.array([9]))["hr@10"][0])  # ranks 6..15: half are in the top 10
    0.5
    """
    beaten = np.asarray(beaten, dtype=np.int64)
    tied = np.asarray(tied, dtype=np.int64)
    if (beaten < 0).any() or (tied < 0).any():
        raise ValueError("counts of candidates above and tied with the target cannot be negative")
    places = (tied + 1).astype(np.float64)
    last = beaten + tied + 1

    def hit_rate(k: int) -> np.ndarray:
        return np.clip(k - beaten, 0, places) / places

    gains = _DISCOUNT_SUM[np.minimum(last, _NDCG_CUTOFF)] - _DISCOUNT_SUM[np.minimum(beaten, _NDCG_CUTOFF)]
    return {
        "hr@10": hit_rate(10),
        "ndcg@10": gains / places,
        "recall@20": hit_rate(20),
        "mrr": (_harmonic(last) - _harmonic(beaten)) / places,
    }


def metrics_for_ranks(ranks: np.ndarray) -> dict[str, np.ndarray]:
    """Each metric for each (untied) 1-based rank, as float arrays in :data:`METRICS` order."""
    ranks = np.asarray(ranks, dtype=np.int64)
    if ranks.size and ranks.min() < 1:
        raise ValueError("ranks start at 1")
    return expected_metrics(ranks - 1, np.zeros_like(ranks))


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
    keep_events: int = 0  # the first this many events keep their metrics and user
    count: int = 0
    cumulative: dict[str, stats.Mean] = field(default_factory=dict)
    rolling: dict[str, RollingMean] = field(default_factory=dict)
    users: list[str] = field(default_factory=list)  # with keep_events: each event's user ...
    values: list[np.ndarray] = field(default_factory=list)  # ... and its metrics, [n, len(METRICS)] per batch

    def __post_init__(self) -> None:
        for name in METRICS:
            self.cumulative[name] = stats.Mean()
            self.rolling[name] = RollingMean(self.window)

    def update_many(self, values: dict[str, np.ndarray], users: Sequence[str] | None) -> None:
        for name in METRICS:
            self.cumulative[name].update_many(values[name])
            self.rolling[name].update_many(values[name])
        room = self.keep_events - len(self.users)
        self.count += len(values[METRICS[0]])
        if room > 0:
            if users is None:
                raise ValueError("keep_events needs each event's user")
            self.users.extend(users[:room])
            self.values.append(np.column_stack([values[name][:room] for name in METRICS]))


class PrequentialEvaluator:
    """Running ranking metrics, overall and per slice, cumulative and over the last ``window`` events.

    Cumulative means are river's ``stats.Mean``; the rolling window is a ring buffer so that a
    micro-batch is one update per metric rather than one Python call per event. With
    ``keep_events`` the first that many events of each slice keep their metrics and user, so that a
    benchmark can put an interval on a difference between models by resampling users
    (:mod:`streamrec.models.comparison`). It is a count, not a switch, because a service keeping
    them runs for ever: memory stays bounded (:data:`KEEP_ALL` in process, where the stream ends).
    """

    def __init__(self, window: int = 1000, keep_events: int = 0) -> None:
        self.window = window
        self.keep_events = keep_events
        self._slices: dict[str, _SliceStats] = {}

    def update_many(
        self,
        values: dict[str, np.ndarray],
        slices: dict[str, np.ndarray] | None = None,
        users: Sequence[str] | None = None,
    ) -> None:
        """Add a batch of per-event metrics (:func:`expected_metrics`) overall and to each slice.

        ``slices`` maps a slice name to a boolean mask over the events; ``users`` names each
        event's user (needed with ``keep_events``).
        """
        if len(values[METRICS[0]]) == 0:
            return
        self._slice(OVERALL).update_many(values, users)
        for name, mask in (slices or {}).items():
            if mask.any():
                picked = None if users is None else [u for u, m in zip(users, mask, strict=True) if m]
                self._slice(name).update_many({metric: values[metric][mask] for metric in METRICS}, picked)

    def update_slice(self, name: str, values: dict[str, np.ndarray], users: Sequence[str] | None = None) -> None:
        """Add a batch to one slice only (the ``known_items`` column, ranked over other candidates)."""
        if len(values[METRICS[0]]):
            self._slice(name).update_many(values, users)

    def _slice(self, name: str) -> _SliceStats:
        if name not in self._slices:
            self._slices[name] = _SliceStats(self.window, self.keep_events)
        return self._slices[name]

    def count(self, slice_name: str = OVERALL) -> int:
        found = self._slices.get(slice_name)
        return 0 if found is None else found.count

    def get(self, metric: str, slice_name: str = OVERALL, rolling: bool = False) -> float:
        found = self._slices.get(slice_name)
        if found is None:
            return 0.0
        return (found.rolling if rolling else found.cumulative)[metric].get()

    def events(self, slice_name: str = OVERALL) -> tuple[list[str], np.ndarray]:
        """``(users, values[n, len(METRICS)])`` of every event kept in the slice, in scoring order."""
        found = self._slices.get(slice_name)
        if found is None or not found.values:
            return [], np.zeros((0, len(METRICS)))
        return found.users, np.concatenate(found.values)

    def kept(self) -> dict[str, dict[str, list]]:
        """The kept events as JSON-able columns: ``{slice: {"users": [...], "<metric>": [...]}}``."""
        out: dict[str, dict[str, list]] = {}
        for name in self._slices:
            users, values = self.events(name)
            out[name] = {"users": list(users)} | {metric: values[:, k].tolist() for k, metric in enumerate(METRICS)}
        return out

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
