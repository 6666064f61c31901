"""Test-then-train on micro-batches: score every real event with every model, then learn from it.

:class:`OnlineTrainer` is the pure core of the training agent and of the quality benchmark. For
each micro-batch it

1. ranks each evaluated event's item among all items the recommender knows, for the recommender
   and for every baseline, excluding the items the user has already interacted with;
2. records HR@10, NDCG@10, Recall@20 and MRR per model, overall and for the cold-user and
   long-tail slices (judged on what was known *before* the event);
3. feeds the recommender's 1 − NDCG@10 (bounded, as ADWIN expects) to the drift monitor;
4. trains the recommender on the batch (scaled by the drift monitor's learning-rate multiplier)
   and every baseline on each event.

Every model is scored with its state from before the micro-batch (test-then-train at batch
granularity, as in the service), so each model's scores for a batch are one matrix product.

Only events of ``evaluate_types`` are scored. In MovieLens every purchase repeats the click on the
same item, so scoring purchases too would reward remembering the click. Events whose item the
recommender has never seen cannot be ranked by an id-based model; they are counted as
``unrankable`` and left out of the metrics for every model alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from models.drift import DriftMonitor
from models.evaluation import PopularityTracker, PrequentialEvaluator, rank_of_target, slices_for
from models.recommender import Recommender, Sample

RECOMMENDER = "streamrec"


class InteractionLike(Protocol):
    user_id: str
    item_id: str
    type: str
    ts: int  # epoch milliseconds


@dataclass(frozen=True, slots=True)
class Event:
    """A plain interaction (what the stream's contract validates), for callers outside the stream."""

    user_id: str
    item_id: str
    type: str
    ts: int  # epoch milliseconds


class Baseline(Protocol):
    def learn_one(self, user_id: str, item_id: str, ts_s: float, weight: float = 1.0) -> None: ...

    def score_batch(self, user_ids: Sequence[str], item_ids: Sequence[str], now_s: float = 0.0) -> np.ndarray: ...


@dataclass
class StepReport:
    evaluated: int = 0
    unrankable: int = 0
    trained: int = 0
    loss: float = 0.0
    drift_alarm: bool = False


@dataclass
class OnlineTrainer:
    model: Recommender
    baselines: Mapping[str, Baseline] = field(default_factory=dict)
    evaluate_types: tuple[str, ...] = ("click",)
    exclude_seen: bool = True
    cold_user_max: int = 5
    window: int = 1000
    drift: DriftMonitor = field(default_factory=DriftMonitor)
    popularity: PopularityTracker = field(default_factory=PopularityTracker)
    evaluators: dict[str, PrequentialEvaluator] = field(init=False)
    unrankable: int = 0

    def __post_init__(self) -> None:
        self.evaluators = {name: PrequentialEvaluator(self.window) for name in (RECOMMENDER, *self.baselines)}

    def step(self, batch: Sequence[tuple[InteractionLike, Sequence[str]]]) -> StepReport:
        """``batch`` holds ``(event, history before the event)`` pairs, oldest first."""
        report = StepReport()
        self._evaluate(batch, report)
        samples = [
            Sample(e.user_id, e.item_id, tuple(history), self.model.sample_weight(e.type), e.ts / 1000.0)
            for e, history in batch
        ]
        self.model.set_lr_multiplier(self.drift.lr_multiplier())
        report.loss = self.model.learn_many(samples)
        for event, sample in zip((e for e, _ in batch), samples, strict=True):
            for baseline in self.baselines.values():
                baseline.learn_one(event.user_id, event.item_id, sample.ts_s, sample.weight)
            if event.type in self.evaluate_types:
                self.popularity.update(event.item_id)
        report.trained = len(samples)
        return report

    def _evaluate(self, batch: Sequence[tuple[InteractionLike, Sequence[str]]], report: StepReport) -> None:
        scored = [(e, h) for e, h in batch if e.type in self.evaluate_types]
        rankable = [(e, h) for e, h in scored if e.item_id in self.model.items]
        report.unrankable = len(scored) - len(rankable)
        self.unrankable += report.unrankable
        if not rankable:
            return
        users = [e.user_id for e, _ in rankable]
        item_ids, model_scores = self.model.score_batch(users, [h for _, h in rankable])
        now_s = rankable[-1][0].ts / 1000.0
        scores = {RECOMMENDER: model_scores.numpy()}
        scores.update({name: b.score_batch(users, item_ids, now_s) for name, b in self.baselines.items()})
        position = {item: k for k, item in enumerate(item_ids)}
        for b, (event, history) in enumerate(rankable):
            target = position[event.item_id]
            exclude = [position[i] for i in set(history) if i in position] if self.exclude_seen else []
            slices = slices_for(len(history), event.item_id, self.popularity, self.cold_user_max)
            for name, matrix in scores.items():
                values = self.evaluators[name].update(rank_of_target(matrix[b], target, exclude), slices)
                if name == RECOMMENDER:
                    report.drift_alarm |= self.drift.update(1.0 - values["ndcg@10"])
        report.evaluated = len(rankable)

    def table(self) -> dict[str, dict[str, dict[str, float]]]:
        """``{model: {slice: {"n": …, "hr@10": …, …}}}`` of the cumulative and rolling metrics."""
        return {name: evaluator.report() for name, evaluator in self.evaluators.items()}
