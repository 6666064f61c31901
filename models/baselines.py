"""Online baselines run in the same prequential protocol as the recommender.

* ``most_popular``: :class:`~streamrec.models.popularity.ItemPopularity`, most-popular with an
  exponential half-life, the baseline any streaming recommender must beat.
* ``cooccurrence`` and ``item_knn``: :class:`~streamrec.models.cooccurrence.ItemCooccurrence`,
  "people who chose X then chose Y" over each user's recent items, and cosine item-kNN.
* :class:`RiverMF`: river's ``reco.BiasedMF`` or ``reco.FunkMF`` trained on implicit feedback
  (each observed pair is a 1, plus sampled unobserved pairs as 0s).

Both expose ``learn_one(user_id, item_id, ts_s, weight)`` and ``score_batch(user_ids, item_ids, now_s)``
(one row of scores per user) so one evaluation loop (:mod:`streamrec.models.learner`) trains and ranks every
model over the same candidates, a micro-batch at a time.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Literal

import numpy as np
from river import optim, reco

from streamrec.models.cooccurrence import ItemCooccurrence
from streamrec.models.popularity import ItemPopularity


class RiverMF:
    """river matrix factorisation on implicit feedback, with a vectorised scorer for ranking.

    ``predict_one`` per candidate would cost a Python call per item per event; ``score_batch``
    computes the same values from the model's learned parameters in one numpy expression (a unit
    test checks both agree). A user river has never seen has no factors: with ``cold_fallback``
    (the default) such a user's items are ranked by decayed popularity, as any deployment of MF
    would, rather than all tied.
    """

    def __init__(
        self,
        kind: Literal["biased", "funk"] = "biased",
        n_factors: int = 16,
        lr: float = 0.02,
        negatives: int = 2,
        l2: float = 1e-4,
        seed: int = 0,
        cold_fallback: bool = True,
    ) -> None:
        self.kind = kind
        self.negatives = negatives
        self.popularity = ItemPopularity() if cold_fallback else None
        self._rng = random.Random(seed)
        self._items: list[str] = []
        self._known: set[str] = set()
        if kind == "biased":
            self.model: reco.BiasedMF | reco.FunkMF = reco.BiasedMF(
                n_factors=n_factors,
                bias_optimizer=optim.SGD(lr),
                latent_optimizer=optim.SGD(lr),
                l2_latent=l2,
                seed=seed,
            )
        elif kind == "funk":
            self.model = reco.FunkMF(n_factors=n_factors, optimizer=optim.SGD(lr), l2=l2, seed=seed)
        else:
            raise ValueError(f"unknown kind {kind!r}; use 'biased' or 'funk'")

    def learn_one(self, user_id: str, item_id: str, ts_s: float = 0.0, weight: float = 1.0) -> None:
        if self.popularity is not None:
            self.popularity.learn_one(user_id, item_id, ts_s, weight)
        if item_id not in self._known:
            self._known.add(item_id)
            self._items.append(item_id)
        for _ in range(max(1, round(weight))):
            self.model.learn_one(user_id, item_id, 1.0)
        for _ in range(self.negatives):
            negative = self._rng.choice(self._items)
            if negative != item_id:
                self.model.learn_one(user_id, negative, 0.0)

    def predict_one(self, user_id: str, item_id: str) -> float:
        return float(self.model.predict_one(user_id, item_id))

    def score_batch(self, user_ids: Sequence[str], item_ids: Sequence[str], now_s: float = 0.0) -> np.ndarray:
        """``predict_one`` for every (user, item) pair, as one matrix product."""
        m = self.model
        zero = np.zeros(m.n_factors)
        users = np.stack([_as_vector(m.u_latents.get(u), zero) for u in user_ids]).reshape(len(user_ids), -1)
        items = np.stack([_as_vector(m.i_latents.get(i), zero) for i in item_ids]).reshape(len(item_ids), -1)
        scores = users @ items.T
        if isinstance(m, reco.BiasedMF):
            user_bias = np.fromiter((m.u_biases.get(u, 0.0) for u in user_ids), dtype=np.float64, count=len(user_ids))
            item_bias = np.fromiter((m.i_biases.get(i, 0.0) for i in item_ids), dtype=np.float64, count=len(item_ids))
            scores = scores + m.global_mean.get() + user_bias[:, None] + item_bias[None, :]
        if self.popularity is not None:
            cold = np.fromiter((u not in m.u_latents for u in user_ids), dtype=bool, count=len(user_ids))
            if cold.any():
                scores[cold] = self.popularity.score_batch(user_ids[:1], item_ids, now_s)[0]
        return scores


DAY_S = 86_400.0


def default_baselines(seed: int = 0) -> dict[str, ItemPopularity | RiverMF | ItemCooccurrence]:
    """The baselines every run reports beside the model, keyed by the names metrics and tables use.

    Each is tuned on the first 10% of the MovieLens-100K stream, on NDCG@10 over the whole catalogue
    (``python -m streamrec.bench.tune_baselines``, 83 configurations; comparisons score only the
    events after those): popularity with a 7-day half-life; co-occurrence over each user's last 200
    items, no decay, directed ("what came after"), raw counts; item-kNN as cosine over each user's
    last 1,000 items; BiasedMF with 16 factors, SGD 0.01 and 8 negatives; FunkMF with 64 factors,
    SGD 0.05 and 8 negatives. Both MFs rank a user they have never seen by popularity.
    """
    return {
        "most_popular": ItemPopularity(half_life_s=7 * DAY_S),
        "cooccurrence": ItemCooccurrence(window=200, decay=1.0, directed=True, normalise="none"),
        "item_knn": ItemCooccurrence(window=1000, decay=1.0, directed=False, normalise="cosine"),
        "biased_mf": RiverMF(kind="biased", n_factors=16, lr=0.01, negatives=8, seed=seed),
        "funk_mf": RiverMF(kind="funk", n_factors=64, lr=0.05, negatives=8, seed=seed),
    }


def _as_vector(weights: np.ndarray | None, default: np.ndarray) -> np.ndarray:
    """A learned latent vector, or zeros for an id river has not seen (predict_one would draw a
    random one; for ranking, no information is better expressed as zero)."""
    return default if weights is None else np.asarray(weights, dtype=np.float64)
