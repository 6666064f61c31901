"""How much to augment: per event by sparsity (:class:`AdaptiveRatio`), overall by rate (:class:`TokenBucket`).

Augmentation helps where real data is thin – users with few events, items with few interactions –
and only adds noise and cost where it is plentiful: a heavy user's own clicks already say more
than any guess. :class:`AdaptiveRatio` therefore gives an event

    round(max_per_event · max(exp(−user_events / user_scale), exp(−item_events / item_scale)))

augmented samples: the full budget for a brand-new user or item, decaying as either becomes known
(whichever is colder decides), and none at all for users with ``heavy_user_events`` or more.

Augmented samples cost training time in the same step as the real ones, and the stream must keep
up; :class:`TokenBucket` caps the total generated per second of (event or wall) time, with bursts
up to ``burst``. Both are pure: time is passed in, so tests and replays are deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class AdaptiveRatio:
    """Augmented samples per event from how sparse its user and item are (see the module docstring)."""

    max_per_event: int = 4
    user_scale: float = 10.0  # user events at which the user's share has fallen to 1/e
    item_scale: float = 20.0  # item interactions at which the item's share has fallen to 1/e
    heavy_user_events: int = 200  # from this many events on, a user's events get no augmentation

    def __post_init__(self) -> None:
        if self.max_per_event < 0 or self.user_scale <= 0 or self.item_scale <= 0:
            raise ValueError("max_per_event must be non-negative and the scales positive")

    def __call__(self, user_events: int, item_events: int) -> int:
        if user_events >= self.heavy_user_events:
            return 0
        sparsity = max(
            math.exp(-max(user_events, 0) / self.user_scale), math.exp(-max(item_events, 0) / self.item_scale)
        )
        return round(self.max_per_event * sparsity)


@dataclass
class TokenBucket:
    """Grants at most ``rate_per_s`` samples per second on average and ``burst`` at once.

    It starts full. Time that goes backwards (a late event's timestamp) refills nothing.
    """

    rate_per_s: float
    burst: float
    tokens: float = field(init=False)
    last_s: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.rate_per_s < 0 or self.burst < 0:
            raise ValueError("rate_per_s and burst must be non-negative")
        self.tokens = float(self.burst)

    def take(self, n: int, now: float) -> int:
        """Ask for ``n`` samples at time ``now`` (seconds); returns how many are granted (0..n)."""
        self._refill(now)
        granted = max(0, min(n, math.floor(self.tokens + 1e-9)))
        self.tokens -= granted
        return granted

    def take_all(self, n: int, now: float) -> bool:
        """Take ``n`` tokens if there are that many, else none (for work that is all or nothing)."""
        self._refill(now)
        if self.tokens + 1e-9 < n:
            return False
        self.tokens -= n
        return True

    def _refill(self, now: float) -> None:
        if self.last_s is not None and now > self.last_s:
            self.tokens = min(float(self.burst), self.tokens + (now - self.last_s) * self.rate_per_s)
        if self.last_s is None or now > self.last_s:
            self.last_s = now
