"""A token bucket: at most ``rate_per_s`` on average, bursts up to ``burst``.

One implementation for every rate limit in the service (embedding records per second,
augmented samples and LM prompts per second). Pure: time is passed in, so tests and replays are
deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


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
