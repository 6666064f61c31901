"""Content-neighbour expansion: a user who chose item i probably likes items whose content is like i's.

For a real event (u, i) this makes up to ``n`` pseudo-positives (u, j), j among i's nearest items
by content vector (text embedding). It helps exactly where ids cannot: an item with few or no
interactions but a description gets positives from users who chose similar items, so its id
embedding and the content projection learn before real clicks arrive. The weight is
``base_weight × similarity``, so a near-duplicate counts almost as much as the base weight and a
loose match little; below ``min_similarity`` nothing is made.

Items the user has already seen are never used: the model already has (real) evidence about them,
and a pseudo-positive would only inflate it. ``neighbours`` is any callable ``(item_id, k) ->
[(item, similarity)]`` (``Recommender.content_neighbours`` in the service), so this is testable
without a model.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from streamrec.models.recommender import Sample

CONTENT_NEIGHBOUR = "content_neighbour"

Neighbours = Callable[[str, int], Sequence[tuple[str, float]]]


@dataclass(frozen=True)
class ContentNeighboursConfig:
    enabled: bool = True
    max_per_event: int = 2  # budget: at most this many pseudo-positives per real event
    base_weight: float = 0.5  # weight of a pseudo-positive at similarity 1
    min_similarity: float = 0.5  # cosine below which a neighbour is not similar enough to mean anything
    oversample: int = 4  # ask for (n + |seen|) · oversample neighbours, as seen items are filtered out

    def __post_init__(self) -> None:
        if self.max_per_event < 0 or self.base_weight < 0 or self.oversample < 1:
            raise ValueError("max_per_event, base_weight must be non-negative and oversample at least 1")


class ContentNeighbours:
    """Pseudo-positives from content similarity, for one real event at a time (deterministic)."""

    def __init__(self, neighbours: Neighbours, config: ContentNeighboursConfig | None = None) -> None:
        self.neighbours = neighbours
        self.config = config or ContentNeighboursConfig()

    def expand(
        self,
        user_id: str,
        item_id: str,
        history: Sequence[str],
        ts_s: float,
        n: int,
        seen: Collection[str] = (),
    ) -> list[Sample]:
        """Up to ``n`` samples (``user_id``, neighbour of ``item_id``) with the event's ``history``.

        ``seen`` and ``history`` are both excluded (``seen`` may be the user's full seen set, the
        history only the recent part of it); so is ``item_id`` itself.
        """
        c = self.config
        budget = min(n, c.max_per_event)
        if not c.enabled or budget <= 0:
            return []
        excluded = {item_id, *history}
        wanted = (budget + len(excluded) + len(seen)) * c.oversample
        samples = []
        for other, similarity in self.neighbours(item_id, wanted):
            if similarity < c.min_similarity or other in excluded or other in seen:
                continue
            excluded.add(other)  # a neighbour listed twice gives one sample
            weight = c.base_weight * min(float(similarity), 1.0)
            samples.append(Sample(user_id, other, tuple(history), weight, ts_s, CONTENT_NEIGHBOUR))
            if len(samples) == budget:
                break
        return samples
