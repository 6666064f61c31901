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
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from streamrec.models.evaluation import PrequentialEvaluator, ranks_of_targets


class Baseline(Protocol):
    def learn_one(self, user_id: str, item_id: str, ts_s: float, weight: float = 1.0) -> None: ...

    def score_batch(self, user_ids: Sequence[str], item_ids: Sequence[str], now_s: float = 0.0) -> np.ndarray: ...


@dataclass
class EvaluationBatch:
    """One micro-batch of the shared protocol, as plain picklable data.

    The recommender's trainer builds it, so every baseline is scored on the same events, against
    the same candidates (the items the recommender could rank), with the same exclusions and
    slices, and then trains on the same events in the same order, wherever it runs.
    """

    events: list[tuple[str, str, float, float]]  # (user, item, ts_s, weight) of every real event
    rankable: list[int]  # indices into ``events`` that are scored
    histories: list[tuple[str, ...]]  # per scored event: its history (excluded from the ranking)
    seen: dict[str, list[str]]  # per user: items seen before the batch (excluded too)
    slices: dict[str, list[bool]]  # per scored event
    candidates_added: list[str]  # items rankable from this batch on
    candidates_removed: list[str]  # items expired before this batch


class BaselineSink(Protocol):
    """Where evaluation batches go: :class:`BaselineEvaluator` here, or one in another process."""

    def step(self, batch: EvaluationBatch) -> None: ...

    def table(self) -> dict[str, dict[str, dict[str, float]]]: ...


class BaselineEvaluator:
    """Test-then-train of the baselines on :class:`EvaluationBatch` es (no torch needed)."""

    def __init__(self, baselines: Mapping[str, Baseline], window: int = 1000) -> None:
        self.baselines = dict(baselines)
        self.evaluators = {name: PrequentialEvaluator(window) for name in self.baselines}
        self.candidates: list[str] = []
        self._position: dict[str, int] = {}

    def step(self, batch: EvaluationBatch) -> None:
        self._update_candidates(batch.candidates_added, batch.candidates_removed)
        if batch.rankable and self.candidates:
            scored = [batch.events[i] for i in batch.rankable]
            users = [user for user, *_ in scored]
            targets = np.fromiter((self._position[item] for _, item, *_ in scored), dtype=np.int64, count=len(scored))
            candidates = candidate_mask(self._position, users, batch.seen, batch.histories)
            masks = {name: np.asarray(flags, dtype=bool) for name, flags in batch.slices.items()}
            now_s = scored[-1][2]
            for name, baseline in self.baselines.items():
                scores = baseline.score_batch(users, self.candidates, now_s)
                self.evaluators[name].update_many(ranks_of_targets(scores, targets, candidates), masks)
        for user, item, ts_s, weight in batch.events:
            for baseline in self.baselines.values():
                baseline.learn_one(user, item, ts_s, weight)

    def _update_candidates(self, added: Sequence[str], removed: Sequence[str]) -> None:
        for item in removed:
            index = self._position.pop(item, None)
            if index is None:
                continue
            last = self.candidates.pop()
            if index < len(self.candidates):  # move the last candidate into the hole
                self.candidates[index] = last
                self._position[last] = index
        for item in added:
            if item not in self._position:
                self._position[item] = len(self.candidates)
                self.candidates.append(item)

    def table(self) -> dict[str, dict[str, dict[str, float]]]:
        return {name: evaluator.report() for name, evaluator in self.evaluators.items()}


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
