"""A reservoir of past training samples, mixed into each step to limit forgetting.

Reservoir sampling (Vitter's algorithm R) keeps a uniform sample of everything seen so far in
fixed memory: after n samples each one is in the buffer with probability capacity / n. Old
behaviour therefore stays represented without storing the stream.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


class ReservoirBuffer(Generic[T]):
    def __init__(self, capacity: int, seed: int = 0) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.items: list[T] = []
        self.seen = 0
        self._rng = random.Random(seed)

    def __len__(self) -> int:
        return len(self.items)

    def add(self, item: T) -> None:
        self.seen += 1
        if len(self.items) < self.capacity:
            self.items.append(item)
            return
        slot = self._rng.randrange(self.seen)
        if slot < self.capacity:
            self.items[slot] = item

    def extend(self, items: Iterable[T]) -> None:
        for item in items:
            self.add(item)

    def sample(self, k: int) -> list[T]:
        """Up to ``k`` distinct stored samples, uniformly at random."""
        return self._rng.sample(self.items, min(k, len(self.items)))
