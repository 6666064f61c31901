"""Paired comparison of two models scored on the same events: the difference, with a bootstrap interval.

Prequential evaluation scores every model on the same events, so two models' metrics pair up
event by event. Events of one user are not independent (the same taste, the same history), so the
interval resamples **users**, not events: each bootstrap draw picks ``n_users`` users with
replacement and recomputes both models' means over the events of the users drawn. The 95%
interval is the 2.5th to 97.5th percentile of the draws (percentile bootstrap).

For a metric ``m`` with per-event values ``a_e`` and ``b_e``, a draw with user multiplicities
``w_u`` gives

.. math::

    \\bar a^* = \\frac{\\sum_u w_u \\sum_{e \\in u} a_e}{\\sum_u w_u n_u}, \\quad
    \\Delta^* = \\bar a^* - \\bar b^*, \\quad \\rho^* = \\bar a^* / \\bar b^*

Runs with several seeds are compared on the per-event mean over seeds (the events are the same in
every run), so the interval covers the users drawn; :class:`Difference` also keeps each seed's own
difference, so a reader sees how much the seed moves it. Runs through the service score different
events each time (which clicks arrive late depends on timing): :func:`paired_over_runs` pools them,
each user's events from every run resampled together, so a draw weighs a user the same in all runs.

>>> users = ["a", "a", "b", "c", "c", "c"]
>>> better = np.array([1.0, 1.0, 0.0, 1.0, 0.0, 1.0])
>>> worse = np.array([0.0, 1.0, 0.0, 0.0, 0.0, 1.0])
>>> d = paired_difference(users, better, worse, draws=2000, seed=1)
>>> round(d.a, 3), round(d.b, 3), round(d.difference, 3), round(d.ratio, 2)
(0.667, 0.333, 0.333, 2.0)
>>> d.low >= 0, d.excludes_zero  # no user is served worse, but three users are too few to name a winner
(True, False)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np


@dataclass(frozen=True)
class Difference:
    """``a - b`` of one metric over the same events, with a 95% interval from resampling users."""

    a: float  # the first model's mean
    b: float  # the second model's mean
    difference: float
    low: float  # 2.5th percentile of the bootstrap differences
    high: float  # 97.5th percentile
    ratio: float  # a / b (inf where b is 0)
    ratio_low: float
    ratio_high: float
    users: int
    events: int
    per_seed: tuple[float, ...] = field(default=())  # a - b in each seed's run, when compared over seeds

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval says which model is better (it does not contain 0)."""
        return self.low > 0 or self.high < 0

    def describe(self, a_name: str = "a", b_name: str = "b") -> str:
        """One sentence that claims no more than the interval shows."""
        figures = (
            f"{a_name} {self.a:.4f} vs {b_name} {self.b:.4f}: difference {self.difference:+.4f} "
            f"(95% CI {self.low:+.4f}..{self.high:+.4f}), ratio {self.ratio:.2f} "
            f"({self.ratio_low:.2f}..{self.ratio_high:.2f})"
        )
        if not self.excludes_zero:
            return figures + "; the interval includes 0: no winner"
        return figures + f"; {a_name if self.low > 0 else b_name} is better"


def paired_difference(
    users: Sequence[str], a: np.ndarray, b: np.ndarray, draws: int = 2000, seed: int = 0
) -> Difference:
    """Compare per-event values ``a`` and ``b`` (same events, same order), resampling ``users``."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if not (len(users) == len(a) == len(b)):
        raise ValueError(f"one user per event: {len(users)} users, {len(a)} and {len(b)} values")
    if len(a) == 0:
        raise ValueError("no events to compare")
    names, index = np.unique(np.asarray(users, dtype=object), return_inverse=True)
    counts = np.bincount(index, minlength=len(names)).astype(np.float64)
    sum_a = np.bincount(index, weights=a, minlength=len(names))
    sum_b = np.bincount(index, weights=b, minlength=len(names))
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(len(names), np.full(len(names), 1.0 / len(names)), size=draws).astype(np.float64)
    n = weights @ counts
    mean_a, mean_b = (weights @ sum_a) / n, (weights @ sum_b) / n
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(mean_b > 0, mean_a / mean_b, np.inf)
    point_a, point_b = float(a.mean()), float(b.mean())
    low, high = np.percentile(mean_a - mean_b, [2.5, 97.5])
    ratio_low, ratio_high = np.percentile(ratios, [2.5, 97.5], method="lower")  # no interpolation with inf
    return Difference(
        a=point_a,
        b=point_b,
        difference=point_a - point_b,
        low=float(low),
        high=float(high),
        ratio=point_a / point_b if point_b > 0 else float("inf"),
        ratio_low=float(ratio_low),
        ratio_high=float(ratio_high),
        users=len(names),
        events=len(a),
    )


def paired_over_seeds(
    users: Sequence[str], a_runs: Sequence[np.ndarray], b_runs: Sequence[np.ndarray], draws: int = 2000, seed: int = 0
) -> Difference:
    """:func:`paired_difference` of the per-event means over seeds; ``per_seed`` holds each run's difference.

    Runs pair up by position (run ``k`` of ``a`` with run ``k`` of ``b``, the same seed); a model
    without randomness may pass one run, which pairs with every run of the other.
    """
    if not a_runs or not b_runs:
        raise ValueError("at least one run per model")
    a_mean = np.mean(np.stack(a_runs), axis=0)
    b_mean = np.mean(np.stack(b_runs), axis=0)
    found = paired_difference(users, a_mean, b_mean, draws, seed)
    runs = max(len(a_runs), len(b_runs))
    per_seed = tuple(float(np.mean(a_runs[k % len(a_runs)]) - np.mean(b_runs[k % len(b_runs)])) for k in range(runs))
    return replace(found, per_seed=per_seed)


def paired_over_runs(
    users_runs: Sequence[Sequence[str]],
    a_runs: Sequence[np.ndarray],
    b_runs: Sequence[np.ndarray],
    draws: int = 2000,
    seed: int = 0,
) -> Difference:
    """:func:`paired_difference` over runs that scored different events; ``per_seed`` holds each run's.

    Within a run the two models scored the same events (``users_runs[k]`` names them); across runs
    the events differ, so the runs are pooled rather than averaged event by event. The pooled mean
    weighs each run by its events.

    >>> d = paired_over_runs([["a", "b"], ["a", "b", "b"]], [np.array([1.0, 0.0]), np.array([1.0, 1.0, 0.0])],
    ...                      [np.array([0.0, 0.0]), np.array([1.0, 0.0, 0.0])], draws=500)
    >>> round(d.difference, 2), d.per_seed, d.events
    (0.4, (0.5, 0.3333333333333333), 5)
    """
    if not (len(users_runs) == len(a_runs) == len(b_runs)) or not users_runs:
        raise ValueError("one list of users and two arrays per run, and at least one run")
    users = [user for run in users_runs for user in run]
    found = paired_difference(users, np.concatenate(a_runs), np.concatenate(b_runs), draws, seed)
    per_seed = tuple(float(np.mean(a) - np.mean(b)) for a, b in zip(a_runs, b_runs, strict=True) if len(a))
    return replace(found, per_seed=per_seed)
