"""The shared prequential protocol, and the baselines' side of it (no torch: it runs in its own process).

The recommender's trainer (:class:`streamrec.models.learner.OnlineTrainer`) turns each micro-batch into an
:class:`EvaluationBatch`: the events, which of them are scored, the candidates (the items the
recommender could rank), each scored event's exclusions (items already seen) and slices.
:class:`BaselineEvaluator` replays exactly that on every baseline, test then train, so the
comparison is fair wherever the baselines run: in the same process for the offline benchmark and
the tests, in a separate process in the stream worker (:mod:`streamrec.stream.worker.baselines`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from streamrec.models.evaluation import KNOWN_ITEMS, PrequentialEvaluator, expected_metrics, rank_ranges


class Baseline(Protocol):
    def learn_one(self, user_id: str, item_id: str, ts_s: float, weight: float = 1.0) -> None: ...

    def score_batch(self, user_ids: Sequence[str], item_ids: Sequence[str], now_s: float = 0.0) -> np.ndarray: ...


@dataclass
class EvaluationBatch:
    """One micro-batch of the shared protocol, as plain picklable data.

    The recommender's trainer builds it, so every baseline is scored on the same events, against
    the same candidates (the whole catalogue), with the same exclusions and slices, and then
    trains on the same events in the same order, wherever it runs. Candidates only grow; which of
    them the recommender knows (the ``known_items`` column) travels as changes.
    """

    events: list[tuple[str, str, float, float]] = field(default_factory=list)  # (user, item, ts_s, weight)
    scored: list[int] = field(default_factory=list)  # indices into ``events`` that are scored
    histories: list[tuple[str, ...]] = field(default_factory=list)  # per scored event (excluded from ranking)
    seen: dict[str, list[str]] = field(default_factory=dict)  # per user: items seen before the batch (excluded)
    slices: dict[str, list[bool]] = field(default_factory=dict)  # per scored event
    target_known: list[bool] = field(default_factory=list)  # per scored event: the recommender knew its item
    candidates_added: list[str] = field(default_factory=list)  # new catalogue items, appended as columns
    known_added: list[str] = field(default_factory=list)  # items the recommender has trained on since
    known_removed: list[str] = field(default_factory=list)  # items the recommender has forgotten (expiry)


class Candidates:
    """The ranking's columns: every catalogue item in the order it became a candidate, and which of
    them the recommender has trained on (the ``known_items`` column).

    Columns only grow: an announced item stays a candidate. The known flags move both ways (a
    forgotten item loses its row). The trainer and the baselines' evaluator each keep one, fed the
    same changes, so their columns agree wherever the baselines run.
    """

    def __init__(self) -> None:
        self.items: list[str] = []
        self.position: dict[str, int] = {}
        self.known = np.zeros(0, dtype=bool)

    def add(self, item: str) -> bool:
        """Make ``item`` a candidate; False if it was one already."""
        if item in self.position:
            return False
        self.position[item] = len(self.items)
        self.items.append(item)
        return True

    def mark_known(self, added: Iterable[str], removed: Iterable[str]) -> None:
        """Flag items the recommender now has rows for, unflag those it forgot (all candidates already)."""
        if len(self.known) < len(self.items):
            self.known = np.concatenate([self.known, np.zeros(len(self.items) - len(self.known), dtype=bool)])
        self.known[[self.position[item] for item in removed]] = False
        self.known[[self.position[item] for item in added]] = True


class BaselineSink(Protocol):
    """Where evaluation batches go: :class:`BaselineEvaluator` here, or one in another process."""

    def step(self, batch: EvaluationBatch) -> None: ...

    def table(self) -> dict[str, dict[str, dict[str, float]]]: ...

    def kept(self) -> dict[str, dict[str, dict[str, list]]]: ...


class BaselineEvaluator:
    """Test-then-train of the baselines on :class:`EvaluationBatch` es (no torch needed)."""

    def __init__(self, baselines: Mapping[str, Baseline], window: int = 1000, keep_events: int = 0) -> None:
        self.baselines = dict(baselines)
        self.evaluators = {name: PrequentialEvaluator(window, keep_events=keep_events) for name in self.baselines}
        self.columns = Candidates()

    def step(self, batch: EvaluationBatch) -> None:
        for item in batch.candidates_added:
            self.columns.add(item)
        self.columns.mark_known(batch.known_added, batch.known_removed)
        if batch.scored and self.columns.items:
            scored = [batch.events[i] for i in batch.scored]
            users = [user for user, *_ in scored]
            position = self.columns.position
            targets = np.fromiter((position[item] for _, item, *_ in scored), dtype=np.int64, count=len(scored))
            candidates = candidate_mask(position, users, batch.seen, batch.histories)
            now_s = scored[-1][2]
            for name, baseline in self.baselines.items():
                scores = baseline.score_batch(users, self.columns.items, now_s)
                score_protocol(self.evaluators[name], scores, targets, candidates, self.columns.known, batch, users)
        for user, item, ts_s, weight in batch.events:
            for baseline in self.baselines.values():
                baseline.learn_one(user, item, ts_s, weight)

    def table(self) -> dict[str, dict[str, dict[str, float]]]:
        return {name: evaluator.report() for name, evaluator in self.evaluators.items()}

    def kept(self) -> dict[str, dict[str, dict[str, list]]]:
        """Every baseline's kept per-event metrics (:meth:`PrequentialEvaluator.kept`)."""
        return {name: evaluator.kept() for name, evaluator in self.evaluators.items()}


def score_protocol(
    evaluator: PrequentialEvaluator,
    scores: np.ndarray,
    targets: np.ndarray,
    candidates: np.ndarray,
    known: np.ndarray,
    batch: EvaluationBatch,
    users: Sequence[str],
) -> dict[str, np.ndarray]:
    """Record one model's metrics for a batch: over the whole catalogue, and over known items only.

    ``scores[B, N]`` over the catalogue, ``candidates[B, N]`` the rows' exclusions, ``known[N]`` the
    items the recommender has trained on. Returns the whole-catalogue metrics per scored event.
    """
    values = expected_metrics(*rank_ranges(scores, targets, candidates))
    masks = {name: np.asarray(flags, dtype=bool) for name, flags in batch.slices.items()}
    evaluator.update_many(values, masks, users)
    rows = np.flatnonzero(np.asarray(batch.target_known, dtype=bool))
    if rows.size:
        known_values = expected_metrics(*rank_ranges(scores[rows], targets[rows], candidates[rows] & known))
        evaluator.update_slice(KNOWN_ITEMS, known_values, [users[r] for r in rows])
    return values


def candidate_mask(
    position: Mapping[str, int],
    users: Sequence[str],
    seen: Mapping[str, Iterable[str]],
    histories: Sequence[Iterable[str]],
) -> np.ndarray:
    """``[rows, candidates]``, False where the row's user has seen the item (before or in the batch).

    Each user's ``seen`` columns are looked up once per batch, however many events the user has.
    """
    mask = np.ones((len(users), len(position)), dtype=bool)
    columns_of: dict[str, list[int]] = {}
    for row, user in enumerate(users):
        if user not in columns_of:
            columns_of[user] = [position[i] for i in seen.get(user, ()) if i in position]
        mask[row, columns_of[user]] = False
        if row < len(histories):
            mask[row, [position[i] for i in histories[row] if i in position]] = False
    return mask
