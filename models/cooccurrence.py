"""Item co-occurrence: "people who chose X also chose Y", over each user's most recent items.

What most shops run first, and on data with sessions a strong baseline. It learns online, one
interaction at a time, and scores every candidate for a user from the items that user chose last.

**Learning.** Each user keeps their last ``window`` items. When the user chooses item ``j``, every
item ``i`` among them adds ``decay^k`` to the pair weight ``c(i, j)``, where ``k`` is how many
items back ``i`` is (0 for the newest). With ``directed=False`` the pair counts both ways
(``c(j, i)`` too): item-to-item similarity. With ``directed=True`` only ``i → j`` counts: "what
comes after", which sees order.

**Scoring.** For a user whose last items are ``i_0`` (newest), ``i_1``, ...:

.. math::

    s(u, j) = \\sum_k \\mathrm{decay}^k \\, \\frac{c(i_k, j)}{\\mathrm{norm}(i_k, j)}
              + \\epsilon \\log(1 + n_j)

``norm`` is 1 (``normalise="none"``) or ``sqrt(n_i n_j)`` with ``n`` the items' interaction
counts (``"cosine"``): with ``window`` large and ``decay=1`` this is item-kNN, the cosine between
the items' user vectors. The small popularity term (``epsilon``) ranks a user with no history by
popularity and breaks ties among items the history says nothing about, so no item is ranked by
the order of the candidate list.

Parameters: ``window`` (recent items per user that pair and score), ``decay`` (weight per step
back), ``directed``, ``normalise`` (``"cosine"`` or ``"none"``), ``epsilon`` (popularity term).

>>> model = ItemCooccurrence(window=2, decay=0.5, directed=True, normalise="none")
>>> for user, item in [("a", "tea"), ("a", "cup"), ("b", "tea"), ("b", "cup"), ("b", "milk"), ("c", "tea")]:
...     model.learn_one(user, item, ts_s=0.0)
>>> scores = model.score_batch(["c"], ["cup", "milk", "tea"])[0]
>>> [round(float(s), 3) for s in scores]  # after tea: cup twice next, milk once two steps on
[2.0, 0.5, 0.0]
>>> int(model.score_batch(["new-user"], ["cup", "milk", "tea"]).argmax())  # popularity: tea (3 times)
2
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Literal

import numpy as np


class ItemCooccurrence:
    def __init__(
        self,
        window: int = 5,
        decay: float = 0.8,
        directed: bool = False,
        normalise: Literal["cosine", "none"] = "cosine",
        epsilon: float = 1e-6,
    ) -> None:
        if window < 1 or not 0 < decay <= 1 or normalise not in ("cosine", "none") or epsilon < 0:
            raise ValueError("window >= 1, 0 < decay <= 1, normalise 'cosine' or 'none', epsilon >= 0")
        self.window = window
        self.decay = decay
        self.directed = directed
        self.normalise = normalise
        self.epsilon = epsilon
        self._index: dict[str, int] = {}  # item → row
        self._counts = np.zeros(1024, dtype=np.float64)  # interactions per row
        self._pairs: list[dict[int, float]] = []  # row i → {row j: c(i, j)}
        self._arrays: list[tuple[np.ndarray, np.ndarray] | None] = []  # row i → (columns, weights), rebuilt lazily
        self._recent: dict[str, deque[int]] = {}

    def _row(self, item_id: str) -> int:
        row = self._index.get(item_id)
        if row is None:
            row = self._index[item_id] = len(self._pairs)
            self._pairs.append({})
            self._arrays.append(None)
            if row >= len(self._counts):
                self._counts = np.concatenate([self._counts, np.zeros_like(self._counts)])
        return row

    def learn_one(self, user_id: str, item_id: str, ts_s: float, weight: float = 1.0) -> None:
        """One interaction (``ts_s`` and ``weight`` are part of the baseline protocol; order is what counts)."""
        j = self._row(item_id)
        recent = self._recent.setdefault(user_id, deque(maxlen=self.window))
        for k, i in enumerate(reversed(recent)):
            if i == j:
                continue
            w = self.decay**k
            self._pairs[i][j] = self._pairs[i].get(j, 0.0) + w
            self._arrays[i] = None
            if not self.directed:
                self._pairs[j][i] = self._pairs[j].get(i, 0.0) + w
                self._arrays[j] = None
        self._counts[j] += 1.0
        recent.append(j)

    def _neighbours(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        cached = self._arrays[row]
        if cached is None:
            pairs = self._pairs[row]
            cached = (
                np.fromiter(pairs.keys(), dtype=np.int64, count=len(pairs)),
                np.fromiter(pairs.values(), dtype=np.float64, count=len(pairs)),
            )
            self._arrays[row] = cached
        return cached

    def score_batch(self, user_ids: Sequence[str], item_ids: Sequence[str], now_s: float = 0.0) -> np.ndarray:
        """``[len(user_ids), len(item_ids)]`` scores; a user's row is computed once however often it appears."""
        rows = np.fromiter((self._index.get(item, -1) for item in item_ids), dtype=np.int64, count=len(item_ids))
        column_of = np.full(len(self._pairs) + 1, len(item_ids), dtype=np.int64)  # unknown → a spare column
        known = rows >= 0
        column_of[rows[known]] = np.flatnonzero(known)
        counts = self._counts[: len(self._pairs)]
        prior = np.zeros(len(item_ids))
        prior[known] = self.epsilon * np.log1p(counts[rows[known]])
        out = np.empty((len(user_ids), len(item_ids)))
        by_user: dict[str, np.ndarray] = {}
        for n, user in enumerate(user_ids):
            row = by_user.get(user)
            if row is None:
                row = by_user[user] = self._user_row(user, column_of, counts, len(item_ids)) + prior
            out[n] = row
        return out

    def _user_row(self, user_id: str, column_of: np.ndarray, counts: np.ndarray, width: int) -> np.ndarray:
        scores = np.zeros(width + 1)  # the spare last column collects items that are not candidates
        for k, i in enumerate(reversed(self._recent.get(user_id, ()))):
            columns, weights = self._neighbours(i)
            if not len(columns):
                continue
            if self.normalise == "cosine":
                weights = weights / np.sqrt(counts[i] * counts[columns])
            scores += np.bincount(column_of[columns], self.decay**k * weights, minlength=width + 1)
        return scores[:width]
