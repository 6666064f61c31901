"""The training example every stage passes on: events → samples → augmentation → the recommender.

A sample is the unit the whole pipeline agrees on, so it lives apart from the model that learns
from it: augmentation makes samples, the replay buffer keeps them, the learner batches them.
"""

from __future__ import annotations

from dataclasses import dataclass

REAL = "real"


@dataclass(frozen=True, slots=True)
class Sample:
    """One training example: ``user_id`` chose ``item_id`` after ``history`` (oldest first).

    ``label`` 1 is a positive (the user chose the item); 0 an explicit negative (the user would not
    choose it), which only augmentation produces. ``kind`` is ``"real"`` for observed events and
    names the augmentation operator otherwise (see :mod:`streamrec.models.augmentation`).
    """

    user_id: str
    item_id: str
    history: tuple[str, ...] = ()
    weight: float = 1.0
    ts_s: float = 0.0
    kind: str = REAL  # "real", or the augmentation that produced it
    label: float = 1.0  # 1 = positive, 0 = negative

    @property
    def is_real(self) -> bool:
        return self.kind == REAL
