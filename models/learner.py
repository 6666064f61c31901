"""Test-then-train on micro-batches: score every real event with every model, then learn from it.

:class:`OnlineTrainer` is the pure core of the training agent and of the quality benchmark. For
each micro-batch it

1. ranks each evaluated event's item among **every item of the catalogue**: the items announced
   (:meth:`OnlineTrainer.announce`, from the catalogue topic), every item an event has named, and
   every item the model holds, for the recommender and for every baseline, excluding the items the
   user has already interacted with. An item the model has never trained on still competes, with
   the score of an unknown item; ties are broken at random in expectation
   (:func:`streamrec.models.evaluation.expected_metrics`), so a model gains nothing from items it
   cannot tell apart, and loses nothing either;
2. records HR@10, NDCG@10, Recall@20 and MRR per model, overall and for the cold-user, cold-item
   and long-tail slices, each judged on counts from *before* the event; and, as a second column
   (``known_items``), the same events restricted to items the recommender had trained on, ranked
   among those items only (the protocol before the whole catalogue was ranked);
3. feeds the recommender's 1 − NDCG@10 (bounded, as ADWIN expects) to the drift monitor;
4. trains the recommender on the batch (scaled by the drift monitor's learning-rate multiplier)
   and every baseline on each event.

Every model is scored with its state from before the micro-batch (test-then-train at batch
granularity, as in the service), so each model's scores for a batch are one matrix product.

Only events of ``evaluate_types`` are scored. In MovieLens every purchase repeats the click on the
same item, so scoring purchases too would reward remembering the click. Two kinds of event are
trained on but never scored, because their context holds the future: ``late`` events arrived
after a later event of their user (see :mod:`streamrec.stream.worker.user_state`), and ``reread``
events were read again after a restart, when the user's state already holds what followed them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from streamrec.models.drift import DriftMonitor
from streamrec.models.evaluation import COLD_ITEM, COLD_USER, LONG_TAIL, PrequentialEvaluator
from streamrec.models.popularity import ItemPopularity
from streamrec.models.prequential import (
    Baseline,
    BaselineEvaluator,
    BaselineSink,
    Candidates,
    EvaluationBatch,
    candidate_mask,
    score_protocol,
)
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
    reread: bool = False  # read again after a restart; the user's state holds what followed: not scored


@dataclass
class StepReport:
    evaluated: int = 0
    unknown_items: int = 0  # scored events whose item the recommender had not trained on
    late: int = 0
    reread: int = 0
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
    cold_item_max: int = 5
    window: int = 1000
    drift: DriftMonitor = field(default_factory=DriftMonitor)
    popularity: ItemPopularity = field(default_factory=ItemPopularity)  # long-tail slice: scored types only
    baseline_sink: BaselineSink | None = None
    keep_events: int = 0  # scored events per slice that keep their metrics (bootstrap intervals; evaluation.py)
    # The stream's first events, trained on by every model but never scored: the benchmark tunes the
    # baselines on them (bench/tune_baselines.py), so nothing is tuned on an event it scores.
    tuning_events: int = 0
    evaluator: PrequentialEvaluator = field(init=False)
    unknown_items: int = 0
    late: int = 0
    reread: int = 0
    evaluated: int = 0
    _events_seen: int = field(default=0, init=False, repr=False)
    _columns: Candidates = field(default_factory=Candidates, init=False, repr=False)  # the whole catalogue
    _announced: list[str] = field(default_factory=list, init=False, repr=False)  # not yet sent to the baselines
    _known: set[str] = field(default_factory=set, init=False, repr=False)  # items with a row in the model

    def __post_init__(self) -> None:
        self.evaluator = PrequentialEvaluator(self.window, keep_events=self.keep_events)
        if self.baselines and self.baseline_sink is None:
            self.baseline_sink = BaselineEvaluator(self.baselines, self.window, keep_events=self.keep_events)

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

    @property
    def catalogue_size(self) -> int:
        """Items every scored event is ranked among."""
        return len(self._columns.items)

    def announce(self, item_ids: Iterable[str]) -> None:
        """Items the catalogue announced: candidates from now on, even before anyone chooses them."""
        for item in item_ids:
            self._add_candidate(item)

    def _add_candidate(self, item: str) -> None:
        if self._columns.add(item):
            self._announced.append(item)

    def _evaluate(self, batch: Sequence[Observation], report: StepReport) -> EvaluationBatch:
        """Rank each scored event with the recommender; return the protocol for the baselines."""
        held = max(0, min(len(batch), self.tuning_events - self._events_seen))  # the stream's first events
        self._events_seen += len(batch)
        of_type = [(index, o) for index, o in enumerate(batch) if o.event.type in self.evaluate_types and index >= held]
        scored = [(index, o) for index, o in of_type if not (o.late or o.reread)]
        report.late = sum(o.late for _, o in of_type)
        report.reread = sum(o.reread and not o.late for _, o in of_type)
        self.late += report.late
        self.reread += report.reread
        for _, o in scored:  # an event names an item: it exists, whether announced or not
            self._add_candidate(o.event.item_id)
        known_now = self.model.items.ids()
        for item in known_now:  # content, or another worker's training, gave it a row
            self._add_candidate(item)
        known = set(known_now)
        protocol = EvaluationBatch(
            events=[],
            scored=[index for index, _ in scored],
            candidates_added=self._announced,
            known_added=[item for item in known_now if item not in self._known],
            known_removed=list(self._known - known),
        )
        self._announced = []
        self._known = known
        self._columns.mark_known(protocol.known_added, protocol.known_removed)
        if not scored:
            return protocol
        observations = [o for _, o in scored]
        users = [o.event.user_id for o in observations]
        if self.exclude_seen:
            protocol.histories = [o.history for o in observations]
            for o in observations:  # one list per user, not per event
                if o.event.user_id not in protocol.seen:
                    protocol.seen[o.event.user_id] = list(o.seen)
        protocol.target_known = [o.event.item_id in known for o in observations]
        protocol.slices = self._slices(observations)
        items, position = self._columns.items, self._columns.position
        model_scores = self.model.score_candidates(users, [o.history for o in observations], items).numpy()
        targets = np.fromiter((position[o.event.item_id] for o in observations), dtype=np.int64, count=len(users))
        candidates = candidate_mask(position, users, protocol.seen, protocol.histories)
        values = score_protocol(self.evaluator, model_scores, targets, candidates, self._columns.known, protocol, users)
        for ndcg in values["ndcg@10"]:
            report.drift_alarm |= self.drift.update(1.0 - float(ndcg))
        report.evaluated = len(observations)
        report.unknown_items = len(observations) - sum(protocol.target_known)
        self.evaluated += report.evaluated
        self.unknown_items += report.unknown_items
        return protocol

    def _slices(self, observations: Sequence[Observation]) -> dict[str, list[bool]]:
        """Each slice's flag per scored event, from counts taken before the event.

        Cold users have fewer than ``cold_user_max`` earlier events; cold items fewer than
        ``cold_item_max`` earlier scored interactions (0 included: a brand-new item), counting the
        batch's earlier events too; the long tail is judged on counts from before the batch.
        """
        counts = self.popularity.counts
        earlier_in_batch: dict[str, int] = {}
        cold_item = []
        for o in observations:
            item = o.event.item_id
            before = counts.get(item, 0) + earlier_in_batch.get(item, 0)
            cold_item.append(before < self.cold_item_max)
            earlier_in_batch[item] = earlier_in_batch.get(item, 0) + 1
        return {
            COLD_USER: [len(o.history) < self.cold_user_max for o in observations],
            COLD_ITEM: cold_item,
            LONG_TAIL: [self.popularity.is_long_tail(o.event.item_id) for o in observations],
        }

    def table(self) -> dict[str, dict[str, dict[str, float]]]:
        """``{model: {slice: {"n": …, "hr@10": …, …}}}`` of the cumulative and rolling metrics."""
        table = {RECOMMENDER: self.evaluator.report()}
        if self.baseline_sink is not None:
            table.update(self.baseline_sink.table())
        return table

    def kept(self) -> dict[str, dict[str, dict[str, list]]]:
        """``{model: {slice: {"users": [...], "<metric>": [...]}}}``: the events kept with ``keep_events``."""
        kept = {RECOMMENDER: self.evaluator.kept()}
        if self.baseline_sink is not None:
            kept.update(self.baseline_sink.kept())
        return kept
