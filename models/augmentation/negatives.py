"""Popularity-aware explicit negatives: popular items the user has not chosen, as label-0 samples.

The recommender's sampled softmax already draws negatives in proportion to ``popularity ** α`` –
and then subtracts ``log Q`` from their logits. That correction is what makes the sampled softmax
estimate the full softmax: in expectation every unchosen item is pushed down *equally*, and a
popular item is not penalised merely for being drawn often. It says nothing about *which* unchosen
items the user had good reason to know.

These negatives are a different, deliberately biased signal. An item that is popular but absent
from the user's history was likely exposed to the user (it is everywhere) and skipped, so it is a
"hard" negative: more informative than a random unknown tail item. Each becomes an explicit sample
with ``label`` 0, trained with a logistic term ``weight · softplus(score)`` with **no** logQ
correction, so it pushes that item's score down for that user. Because popular items get pushed
down per user, this also counteracts the popularity bias that a most-popular fallback and the
softmax's frequent positives add. Keep the weight low: popularity is only a proxy for exposure,
and the user may simply not have reached the item yet.

``α`` < 1 flattens the distribution (α = 0 is uniform over unseen items with any interactions).
Items with no real interaction have popularity 0 and are never drawn: nothing says they were
exposed. The popularity comes in as ``(item_ids, counts)`` arrays or a callable returning them
(:meth:`Recommender.item_popularity` in the service). Each draw costs O(catalogue); with a large
catalogue, set ``negatives.popularity = model.item_popularity()`` once per micro-batch rather than
passing the callable, which is called on every draw.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import numpy as np

from streamrec.models.recommender import Sample

NEGATIVE = "negative"

Popularity = tuple[Sequence[str], Sequence[float] | np.ndarray]


@dataclass(frozen=True)
class PopularityNegativesConfig:
    enabled: bool = True
    max_per_event: int = 2  # budget: at most this many negatives per real event
    weight: float = 0.2  # sample weight of each negative
    alpha: float = 0.75  # draw ∝ popularity ** alpha
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_per_event < 0 or self.weight < 0 or self.alpha < 0:
            raise ValueError("max_per_event, weight and alpha must be non-negative")


class PopularityNegatives:
    """Draws explicit negatives for a user without replacement; reproducible for a seed and call order."""

    def __init__(
        self, popularity: Popularity | Callable[[], Popularity], config: PopularityNegativesConfig | None = None
    ) -> None:
        self.popularity = popularity
        self.config = config or PopularityNegativesConfig()
        self._rng = np.random.default_rng(self.config.seed)

    def sample(
        self,
        user_id: str,
        history: Sequence[str],
        ts_s: float,
        n: int,
        seen: Collection[str] = (),
        positive: str | None = None,
    ) -> list[Sample]:
        """Up to ``n`` label-0 samples for ``user_id``, items drawn ∝ popularity^α among unseen ones.

        ``seen``, ``history`` and ``positive`` (the real event's item) are never drawn.
        """
        c = self.config
        budget = min(n, c.max_per_event)
        if not c.enabled or budget <= 0:
            return []
        item_ids, counts = self.popularity() if callable(self.popularity) else self.popularity
        counts = np.asarray(counts, dtype=np.float64)
        excluded = {*seen, *history}
        if positive is not None:
            excluded.add(positive)
        allowed = np.fromiter((item not in excluded for item in item_ids), dtype=bool, count=len(item_ids))
        mass = np.where(allowed & (counts > 0), np.power(np.maximum(counts, 0.0), c.alpha), 0.0)
        candidates = np.flatnonzero(mass)
        if candidates.size == 0:
            return []
        p = mass[candidates] / mass[candidates].sum()
        picked = self._rng.choice(candidates, size=min(budget, candidates.size), replace=False, p=p)
        return [Sample(user_id, item_ids[k], tuple(history), c.weight, ts_s, NEGATIVE, 0.0) for k in picked.tolist()]
