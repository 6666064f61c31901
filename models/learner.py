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
``unrankable`` and left out of the metrics for every model alike. So are events that arrived after
a later event of their user (``late``, see :mod:`streamrec.stream.worker.user_state`): scoring them would use the
future.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from streamrec.models.drift import DriftMonitor
from streamrec.models.evaluation import COLD_USER, LONG_TAIL, PrequentialEvaluator, ranks_of_targets
from streamrec.models.popularity import ItemPopularity
from streamrec.models.prequential import Baseline, BaselineEvaluator, BaselineSink, EvaluationBatch, candidate_mask
from streamrec.models.recommender import Recommender, Sample

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


@dataclass(frozen=True, slots=True)
class Observation:
    """A real event with what was known about its user just before it.

    Ranking excludes ``seen | history``: ``seen`` may be one set shared by a user's events in a
    batch (what was known before the batch), the history adds the events since.
    """

    event: InteractionLike
    history: tuple[str, ...] = ()
    seen: frozenset[str] = frozenset()
    late: bool = False  # a later event of the user was already known: not scored, only trained on


@dataclass
class StepReport:
    evaluated: int = 0
    unrankable: int = 0
    late: int = 0
    trained: int = 0
    augmented: int = 0
    loss: float = 0.0
    drift_alarm: bool = False
    expired_users: list[str] = field(default_factory=list)
    expired_items: list[str] = field(default_factory=list)


@dataclass
class OnlineTrainer:
    """The recommender's test-then-train loop; ``baselines`` run beside it on the same protocol.

    Baselines given as a mapping are evaluated in this process; ``baseline_sink`` sends the
    protocol elsewhere instead (the stream worker runs them in their own process, so river's
    per-event Python never competes with the consumer for the interpreter).
    """

    model: Recommender
    baselines: Mapping[str, Baseline] = field(default_factory=dict)
    evaluate_types: tuple[str, ...] = ("click",)
    exclude_seen: bool = True
    cold_user_max: int = 5
    window: int = 1000
    drift: DriftMonitor = field(default_factory=DriftMonitor)
    popularity: ItemPopularity = field(default_factory=ItemPopularity)  # long-tail slice: scored types only
    baseline_sink: BaselineSink | None = None
    evaluator: PrequentialEvaluator = field(init=False)
    unrankable: int = 0
    late: int = 0
    evaluated: int = 0
    _candidates: set[str] = field(default_factory=set, init=False, repr=False)

    def __post_init__(self) -> None:
        self.evaluator = PrequentialEvaluator(self.window)
        if self.baselines and self.baseline_sink is None:
            self.baseline_sink = BaselineEvaluator(self.baselines, self.window)

    def step(self, batch: Sequence[Observation], augmented: Sequence[Sample] = ()) -> StepReport:
        """Score, then train on ``batch`` (real events, oldest first) and ``augmented`` samples.

        Augmented samples are trained on in the same step as the real ones but never scored, and
        the baselines never see them: the protocol compares models on real events only.
        """
        report = StepReport()
        if not batch:
            return report
        protocol = self._evaluate(batch, report)
        samples = [
            Sample(
                o.event.user_id, o.event.item_id, o.history, self.model.sample_weight(o.event.type), o.event.ts / 1000.0
            )
            for o in batch
        ]
        self.model.set_lr_multiplier(self.drift.lr_multiplier())
        report.loss = self.model.learn_many([*samples, *augmented])
        report.augmented = len(augmented)
        for observation in batch:
            if observation.event.type in self.evaluate_types:
                event = observation.event
                self.popularity.learn_one(event.user_id, event.item_id, event.ts / 1000.0)
        if self.model.config.ttl_s is not None:
            report.expired_users, report.expired_items = self.model.expire(max(s.ts_s for s in samples))
        if self.baseline_sink is not None:
            protocol.events = [(s.user_id, s.item_id, s.ts_s, s.weight) for s in samples]
            self.baseline_sink.step(protocol)
        report.trained = len(samples)
        return report

    def _evaluate(self, batch: Sequence[Observation], report: StepReport) -> EvaluationBatch:
        """Rank each scored event with the recommender; return the protocol for the baselines."""
        protocol = EvaluationBatch([], [], [], {}, {COLD_USER: [], LONG_TAIL: []}, [], [])
        of_type = [(index, o) for index, o in enumerate(batch) if o.event.type in self.evaluate_types]
        scored = [(index, o) for index, o in of_type if not o.late]
        report.late = len(of_type) - len(scored)
        self.late += report.late
        rankable = [(index, o) for index, o in scored if o.event.item_id in self.model.items]
        report.unrankable = len(scored) - len(rankable)
        self.unrankable += report.unrankable
        item_ids, model_scores = self.model.score_batch(
            [o.event.user_id for _, o in rankable], [o.history for _, o in rankable]
        )
        current = set(item_ids)
        protocol.candidates_added = [item for item in item_ids if item not in self._candidates]
        protocol.candidates_removed = list(self._candidates - current)
        self._candidates = current
        if not rankable:
            return protocol
        observations = [o for _, o in rankable]
        protocol.rankable = [index for index, _ in rankable]
        if self.exclude_seen:
            protocol.histories = [o.history for o in observations]
            for o in observations:  # one list per user, not per event
                if o.event.user_id not in protocol.seen:
                    protocol.seen[o.event.user_id] = list(o.seen)
        protocol.slices = {
            COLD_USER: [len(o.history) < self.cold_user_max for o in observations],
            LONG_TAIL: [self.popularity.is_long_tail(o.event.item_id) for o in observations],
        }
        position = {item: k for k, item in enumerate(item_ids)}
        targets = np.fromiter((position[o.event.item_id] for o in observations), dtype=np.int64, count=len(rankable))
        users = [o.event.user_id for o in observations]
        candidates = candidate_mask(position, users, protocol.seen, protocol.histories)
        masks = {name: np.asarray(flags, dtype=bool) for name, flags in protocol.slices.items()}
        ranks = ranks_of_targets(model_scores.numpy(), targets, candidates)
        values = self.evaluator.update_many(ranks, masks)
        for ndcg in values["ndcg@10"]:
            report.drift_alarm |= self.drift.update(1.0 - float(ndcg))
        report.evaluated = len(rankable)
        self.evaluated += len(rankable)
        return protocol

    def table(self) -> dict[str, dict[str, dict[str, float]]]:
        """``{model: {slice: {"n": …, "hr@10": …, …}}}`` of the cumulative and rolling metrics."""
        table = {RECOMMENDER: self.evaluator.report()}
        if self.baseline_sink is not None:
            table.update(self.baseline_sink.table())
        return table
