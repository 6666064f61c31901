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
from dataclasses import dataclass


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
