"""Sequence views: CL4SRec-style crops, masks and reorders of a user's history as extra samples.

A sparse user has few (history → next item) examples. CL4SRec (Xie et al., 2022) showed that
*views* of a history (a contiguous crop, some items masked, a stretch reordered) keep most of its
signal, because short-range order and the set of recent items matter more than exact positions.
Here a view becomes one more training sample: the input is the augmented history, the target is
the real event's item. The model thus learns to predict the event from partial or slightly
shuffled contexts, which is what a cold user's short, noisy history looks like.

Masked positions are replaced by :data:`MASK_ITEM`, an id no real item can have: the stream's
contract strips whitespace from ids, and this one starts and ends with a space. The recommender
never gives it a row (augmented samples are not sightings and it is never a target), so
``Recommender._history_rows`` maps it to the fallback row: the masked position still counts and
still has its recency weight, and reads as "some item we know nothing about", like BERT's [MASK].
Dropping the masked items instead would just be another crop.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from streamrec.models.recommender import Sample

MASK_ITEM = " [mask] "  # never a real item id: ids are stripped of whitespace by the contract

SEQ_CROP = "seq_crop"
SEQ_MASK = "seq_mask"
SEQ_REORDER = "seq_reorder"
KINDS = (SEQ_CROP, SEQ_MASK, SEQ_REORDER)


@dataclass(frozen=True)
class SequenceViewsConfig:
    """Switch, budget and weight of the sequence views, and CL4SRec's three proportions."""

    enabled: bool = True
    max_per_event: int = 3  # budget: at most this many views per real event, whatever n asks
    weight: float = 0.5  # sample weight of each view (a real click weighs 1)
    crop_ratio: float = 0.6  # η: a crop keeps ⌈η·L⌉ consecutive items
    mask_ratio: float = 0.3  # γ: ⌈γ·L⌉ items (at most L − 1) are masked
    reorder_ratio: float = 0.6  # β: a stretch of ⌈β·L⌉ items is shuffled
    min_length: int = 3  # shorter histories give no views (too little to cut)
    operations: tuple[str, ...] = KINDS
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("crop_ratio", "mask_ratio", "reorder_ratio"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1]")
        unknown = set(self.operations) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown operations {sorted(unknown)}; choose from {KINDS}")
        if self.max_per_event < 0 or self.weight < 0 or self.min_length < 1:
            raise ValueError("max_per_event and weight must be non-negative, min_length at least 1")


def crop(history: Sequence[str], ratio: float, rng: random.Random) -> tuple[str, ...]:
    """A random contiguous sub-sequence of length ⌈ratio·L⌉."""
    length = min(len(history), math.ceil(ratio * len(history)))
    start = rng.randrange(len(history) - length + 1)
    return tuple(history[start : start + length])


def mask(history: Sequence[str], ratio: float, rng: random.Random, token: str = MASK_ITEM) -> tuple[str, ...]:
    """``history`` with ⌈ratio·L⌉ random positions (at most L − 1) replaced by ``token``."""
    count = min(len(history) - 1, math.ceil(ratio * len(history)))
    masked = set(rng.sample(range(len(history)), max(count, 0)))
    return tuple(token if n in masked else item for n, item in enumerate(history))


def reorder(history: Sequence[str], ratio: float, rng: random.Random) -> tuple[str, ...]:
    """``history`` with a random stretch of ⌈ratio·L⌉ items (at least 2) shuffled."""
    length = min(len(history), max(2, math.ceil(ratio * len(history))))
    start = rng.randrange(len(history) - length + 1)
    stretch = list(history[start : start + length])
    rng.shuffle(stretch)
    return (*history[:start], *stretch, *history[start + length :])


class SequenceViews:
    """Makes up to ``n`` view samples per real event; reproducible for a given seed and call order."""

    def __init__(self, config: SequenceViewsConfig | None = None) -> None:
        self.config = config or SequenceViewsConfig()
        self._rng = random.Random(self.config.seed)
        c = self.config
        self._operations: dict[str, Callable[[Sequence[str]], tuple[str, ...]]] = {
            SEQ_CROP: lambda h: crop(h, c.crop_ratio, self._rng),
            SEQ_MASK: lambda h: mask(h, c.mask_ratio, self._rng),
            SEQ_REORDER: lambda h: reorder(h, c.reorder_ratio, self._rng),
        }

    def expand(self, user_id: str, item_id: str, history: Sequence[str], ts_s: float, n: int) -> list[Sample]:
        """Views of ``history`` (oldest first, before the event) as samples whose target is ``item_id``.

        Operations take turns from a random starting one, so a budget of 3 gives one of each. A
        view identical to the history (e.g. a reorder of repeated items) is skipped: it would be
        a copy of the real sample under another name.
        """
        c = self.config
        budget = min(n, c.max_per_event)
        if not c.enabled or budget <= 0 or not c.operations or len(history) < c.min_length:
            return []
        original = tuple(history)
        first = self._rng.randrange(len(c.operations))
        samples = []
        for k in range(budget):
            kind = c.operations[(first + k) % len(c.operations)]
            view = self._operations[kind](original)
            if view != original:
                samples.append(Sample(user_id, item_id, view, c.weight, ts_s, kind))
        return samples
