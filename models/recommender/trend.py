"""What is popular now, as a feature of the item tower: the trend prior.

A user the model knows little about is best served by what is popular *now*; on MovieLens the
recency-decayed most-popular baseline beat streamrec on cold users until this term existed. The
learned biases cannot follow it: they move only when an item is a positive or a sampled negative,
and the sampled softmax's logQ correction takes all-time popularity out of them on purpose.

So each item row carries a decayed count ``m_i(t) = Σ 2^(−(t − t_k) / half_life)`` over its real
interactions ``t_k``, and the score gains ``γ · log(floor + m_i(t))`` with one learned weight
``γ`` (zero at first: a new model scores as before). ``t`` is the model's clock, the newest event
time it has trained on, so scoring never reads the future. Like :class:`streamrec.models.popularity.ItemPopularity`,
masses are kept at a reference time and rebased before they could overflow.

>>> trend = TrendPrior(half_life_s=10.0, floor=0.1, capacity=4)
>>> trend.learn(torch.tensor([1, 1, 2]), torch.tensor([0.0, 0.0, 30.0]))  # row 1 twice long ago, row 2 now
>>> [round(float(v), 3) for v in trend.feature(torch.tensor([1, 2, 3]))]  # log(0.1 + 2/8), log(1.1), log(0.1)
[-1.05, 0.095, -2.303]
"""

from __future__ import annotations

from typing import Any

import torch


class TrendPrior:
    def __init__(self, half_life_s: float, floor: float = 0.1, capacity: int = 1, device: torch.device | None = None):
        if half_life_s <= 0 or floor <= 0:
            raise ValueError("half_life_s and floor must be positive")
        self.half_life_s = half_life_s
        self.floor = floor
        self.mass = torch.zeros(capacity, device=device)
        self.reference_s: float | None = None
        self.clock_s: float | None = None

    def ensure(self, capacity: int) -> None:
        extra = capacity - self.mass.shape[0]
        if extra > 0:
            self.mass = torch.cat([self.mass, torch.zeros(extra, device=self.mass.device)])

    def reset(self, rows: torch.Tensor) -> None:
        """Rows handed to new items start with no interactions."""
        self.mass[rows] = 0.0

    def learn(self, rows: torch.Tensor, ts_s: torch.Tensor) -> None:
        """Real interactions with ``rows`` at event times ``ts_s`` (seconds)."""
        if rows.numel() == 0:
            return
        newest = float(ts_s.max())
        if self.reference_s is None:
            self.reference_s = newest
        self.clock_s = newest if self.clock_s is None else max(self.clock_s, newest)
        if (self.clock_s - self.reference_s) / self.half_life_s > 100:  # 2^100: rebase long before overflow
            self.mass *= 2.0 ** ((self.reference_s - self.clock_s) / self.half_life_s)
            self.reference_s = self.clock_s
        weights = torch.exp2((ts_s.to(self.mass.device, torch.float64) - self.reference_s) / self.half_life_s)
        self.mass.index_add_(0, rows.to(self.mass.device), weights.to(self.mass.dtype))

    def feature(self, rows: torch.Tensor) -> torch.Tensor:
        """``log(floor + m(t))`` for ``rows`` at the model's clock."""
        if self.clock_s is None or self.reference_s is None:
            return torch.full(rows.shape, float(torch.log(torch.tensor(self.floor))), device=self.mass.device)
        scale = 2.0 ** ((self.reference_s - self.clock_s) / self.half_life_s)
        return torch.log(self.floor + self.mass[rows] * scale)

    def state_dict(self, rows: int) -> dict[str, Any]:
        return {"mass": self.mass[:rows].clone(), "reference_s": self.reference_s, "clock_s": self.clock_s}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        rows = state["mass"].shape[0]
        self.ensure(rows)
        self.mass[:rows] = state["mass"].to(self.mass.device)
        self.reference_s = state["reference_s"]
        self.clock_s = state["clock_s"]
