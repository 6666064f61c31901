"""Item popularity from real interactions: what is popular now, and which items are the long tail.

One tracker serves three uses, each with its own instance fed the events that use needs:

* the **most-popular baseline** (:func:`streamrec.models.baselines.default_baselines`) ranks by
  the recency-decayed mass, the baseline any streaming recommender must beat;
* the **serving fallback** for users the model cannot personalise ranks by the same mass;
* **prequential evaluation** slices scored events into head and long tail by all-time counts.

(The recommender's own per-row counts are not a tracker but its negative sampler's proposal
distribution, kept on the model's device: :mod:`streamrec.models.recommender.sampling`.)

**Decayed mass.** An item's score is ``Σ w · 2^(−age / half_life)`` over its interactions. Every
score decays by the same factor as time passes, so ranking needs only each item's mass expressed
at a common reference time ``t_ref``: ``mass += w · 2^((t − t_ref) / half_life)``. The reference
moves forward (rescaling every mass) before the numbers could overflow.

**Long tail.** An item is in the head when its count is at least the smallest count among the top
``head_fraction`` of items. The threshold is recomputed every ``refresh_every`` updates rather than
per event: it moves slowly, and a partial sort over all items per event would dominate the cost.

Parameters: ``half_life_s`` (seconds of event time), ``head_fraction`` (0 < f < 1),
``refresh_every`` (updates between threshold refreshes).

>>> popularity = ItemPopularity(half_life_s=10.0, refresh_every=1)
>>> for ts, item in [(0, "old-hit"), (0, "old-hit"), (0, "old-hit"), (30, "new"), (30, "niche")]:
...     popularity.learn_one("u", item, ts_s=ts)
>>> popularity.top(2)  # 3 · 2^-3 = 0.375 < 1 at t = 30
['new', 'niche']
>>> round(popularity.score("old-hit", now_s=30.0), 3)
0.375
>>> popularity.is_long_tail("old-hit"), popularity.is_long_tail("niche")  # counts 3 and 1
(False, True)
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Sequence

import numpy as np


class ItemPopularity:
    def __init__(self, half_life_s: float = 7 * 86_400.0, head_fraction: float = 0.2, refresh_every: int = 500) -> None:
        if half_life_s <= 0:
            raise ValueError("half_life_s must be positive")
        if not 0 < head_fraction < 1:
            raise ValueError("head_fraction must be between 0 and 1")
        self.half_life_s = half_life_s
        self.head_fraction = head_fraction
        self.refresh_every = refresh_every
        self.mass: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.t_ref: float | None = None
        self._since_refresh = refresh_every  # refresh on first use
        self._threshold = 1

    # --- learning (river's learn_one, so it runs as a baseline too) ---------------------------------
    def learn_one(self, user_id: str, item_id: str, ts_s: float, weight: float = 1.0) -> None:
        """One real interaction; ``weight`` scales its mass (the count always grows by one)."""
        if self.t_ref is None:
            self.t_ref = ts_s
        exponent = (ts_s - self.t_ref) / self.half_life_s
        if exponent > 500:  # 2^500 ≈ 1e150: rebase before floats overflow
            scale = 2.0 ** (-exponent)
            self.mass = {item: m * scale for item, m in self.mass.items()}
            self.t_ref, exponent = ts_s, 0.0
        self.mass[item_id] = self.mass.get(item_id, 0.0) + weight * 2.0**exponent
        self.counts[item_id] = self.counts.get(item_id, 0) + 1
        self._since_refresh += 1

    # --- what is popular now -------------------------------------------------------------------------
    def score(self, item_id: str, now_s: float) -> float:
        """The decayed count at ``now_s`` (for display; ranking uses the masses directly)."""
        if self.t_ref is None:
            return 0.0
        return self.mass.get(item_id, 0.0) * 2.0 ** ((self.t_ref - now_s) / self.half_life_s)

    def score_batch(self, user_ids: Sequence[str], item_ids: Sequence[str], now_s: float = 0.0) -> np.ndarray:
        """The same row for every user: popularity is not personal. Masses rank like decayed counts."""
        row = np.fromiter((self.mass.get(i, 0.0) for i in item_ids), dtype=np.float64, count=len(item_ids))
        return np.broadcast_to(row, (len(user_ids), len(item_ids)))

    def top(self, k: int, exclude: Collection[str] = frozenset()) -> list[str]:
        """The ``k`` most popular items now, not in ``exclude`` (a partial sort: O(n log k))."""
        ranked = heapq.nlargest(k + len(exclude), self.mass.items(), key=lambda kv: kv[1])
        return [item for item, _ in ranked if item not in exclude][:k]

    # --- head and long tail --------------------------------------------------------------------------
    def head_threshold(self) -> int:
        """The smallest all-time count an item needs to be in the head."""
        if self._since_refresh >= self.refresh_every:
            self._since_refresh = 0
            if self.counts:
                values = np.fromiter(self.counts.values(), dtype=np.int64)
                head_size = max(1, int(np.ceil(len(values) * self.head_fraction)))
                self._threshold = int(np.partition(values, len(values) - head_size)[len(values) - head_size])
        return self._threshold

    def is_long_tail(self, item_id: str) -> bool:
        return self.counts.get(item_id, 0) < self.head_threshold()
