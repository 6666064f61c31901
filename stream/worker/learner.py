"""Training inside the stream worker: test-then-train every micro-batch, checkpoint, rewind after a crash.

:class:`Learner` is the thin async shell around :class:`streamrec.models.learner.OnlineTrainer`. The
ingestion agent hands it each micro-batch of valid events, each with the user's history from just
before it (:mod:`streamrec.stream.worker.user_state`); one step is in flight while the next batch is ingested, so
the learner's own offsets (not Faust's commits) say what the model has trained on.

Exactly-once training across crashes, without transactions
---------------------------------------------------------
The model remembers, per source partition, the offset up to which it has trained
(``trained``); checkpoints store those offsets with the weights. Faust commits offsets on its own
schedule (every second), checkpoints are rarer, so after a crash the committed offsets are usually
*ahead* of the checkpoint. On every partition assignment the worker therefore seeks each
interaction partition back to the restored model's offset (:meth:`Learner.rewind`). The events
between the two are read again: the user state recognises them as already applied (its per-topic
``applied`` offsets) and does not apply them twice; the model, which lost them with the crash,
trains on them once more. Events below ``trained`` (a checkpoint written after the last commit)
are not trained again. So every event is in the user state once and in the model's lineage once;
what a crash costs is re-reading at most ``checkpoint_interval_s`` of events.

The model is shared with the publisher and the HTTP views; :class:`GuardedModel` serialises them
with one asyncio lock, and the step itself runs in a thread so the event loop keeps consuming.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch

from streamrec.models.augmentation.pipeline import Augmentation
from streamrec.models.baselines import default_baselines
from streamrec.models.checkpoint import Checkpoint, CheckpointError, load_latest, save_checkpoint
from streamrec.models.learner import RECOMMENDER, Observation, OnlineTrainer, StepReport
from streamrec.models.parameter_sync import ItemParameterSync
from streamrec.models.popularity import ItemPopularity
from streamrec.models.recommender import Recommender, RecommenderConfig
from streamrec.stream.metrics import LATENCY_BOUNDS_S, Histogram, jsonable
from streamrec.stream.settings import Settings
from streamrec.stream.worker.baselines import BaselineProcess
from streamrec.stream.worker.ingest import TrainingEvent

log = logging.getLogger(__name__)
T = TypeVar("T")
Offsets = dict[str, dict[int, int]]  # topic -> partition -> next offset (the checkpoint format)


class GuardedModel:
    """The worker's one model and the lock that every writer (training) and reader takes."""

    def __init__(self, model: Recommender) -> None:
        self.model = model
        self.lock = asyncio.Lock()

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` under the lock, inline: for small reads such as one recommendation."""
        async with self.lock:
            return fn(*args)


def recommender_config(settings: Settings) -> RecommenderConfig:
    return RecommenderConfig(
        dim=settings.model_dim,
        history_length=settings.model_history_length,
        sequence=settings.model_sequence,
        num_negatives=settings.model_num_negatives,
        replay_capacity=settings.model_replay_capacity,
        user_min_count=settings.model_user_min_count,
        item_min_count=settings.model_item_min_count,
        ttl_s=settings.model_ttl_s,
        seed=settings.model_seed,
    )


def make_trainer(settings: Settings, model: Recommender) -> OnlineTrainer:
    """The recommender's trainer, with the configured baselines in their own process."""
    names = settings.baseline_names
    unknown = set(names) - set(default_baselines())
    if unknown:
        raise ValueError(f"unknown baselines {sorted(unknown)}; choose from {sorted(default_baselines())}")
    keep = settings.evaluation_keep_events
    sink = BaselineProcess(names, settings.model_seed, settings.evaluation_window, keep_events=keep) if names else None
    return OnlineTrainer(
        model,
        baseline_sink=sink,
        window=settings.evaluation_window,
        tuning_events=settings.evaluation_tuning_events,
        keep_events=keep,
    )


@dataclass
class LearnerStats:
    steps: int = 0
    trained: int = 0
    skipped_already_trained: int = 0
    last_loss: float = 0.0
    train_seconds: float = 0.0
    checkpoints: int = 0
    checkpoint_errors: int = 0
    last_checkpoint_at: float | None = None
    last_checkpoint_path: str | None = None
    restored_from: str | None = None
    rewound: dict[str, int] = field(default_factory=dict)  # "topic:partition" -> events re-read
    # Offsets between what the model had trained to and where a batch started: never trained.
    # Transaction markers of a transactional producer are counted here too (one per transaction).
    offsets_jumped: dict[str, int] = field(default_factory=dict)  # "topic:partition" -> offsets
    # From the Kafka record's timestamp to the training step that takes it (queueing included).
    event_to_sample: Histogram = field(default_factory=lambda: Histogram(LATENCY_BOUNDS_S))


class Learner:
    def __init__(self, settings: Settings, checkpoint: Checkpoint | None = None) -> None:
        self.settings = settings
        torch.set_num_threads(settings.torch_threads)
        # torch's optimisers import torch._dynamo on their first step (about 3 s here): pay it now,
        # before the first batch, not as latency on the first events.
        importlib.import_module("torch._dynamo")
        model = checkpoint.model if checkpoint else Recommender(recommender_config(settings))
        self.guarded = GuardedModel(model)
        self.trainer = make_trainer(settings, model)
        # Serving's fallback for users the model cannot personalise: recency-decayed popularity.
        self.trending = ItemPopularity(half_life_s=7 * 86_400.0)
        self._announced: list[str] = []  # catalogue items not yet handed to the trainer (the next step takes them)
        self.latest_event_s = 0.0  # event time of the newest event trained on
        self.trained: dict[tuple[str, int], int] = {}
        self.stats = LearnerStats()
        # Set by the app when augmentation is on: the step asks it for augmented samples.
        self.augmentation: Augmentation | None = None
        self._saving: asyncio.Task[None] | None = None
        # The baselines' prequential table as last fetched from their process (for /metrics).
        self.baseline_metrics: dict[str, dict[str, dict[str, float]]] = {}
        self._last_checkpoint = time.monotonic()
        # Item parameters shared with the other workers (models/parameter_sync.py). The identity
        # and contributions belong to the model's lineage: restored with it, new without it.
        self.sync: ItemParameterSync | None = None
        if settings.param_sync:
            saved = checkpoint.parameter_sync if checkpoint is not None else None
            self.sync = ItemParameterSync.from_state_dict(saved) if saved else ItemParameterSync()
        if checkpoint is not None:
            self.trained = {(t, p): o for t, parts in checkpoint.offsets.items() for p, o in parts.items()}
            self.stats.restored_from = str(checkpoint.path)
            log.info(
                "resumed model version %d (%d samples) from %s", model.version, model.samples_trained, checkpoint.path
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> Learner:
        return cls(settings, load_latest(settings.checkpoint_dir))

    @property
    def model(self) -> Recommender:
        return self.guarded.model

    # --- training --------------------------------------------------------------------------------
    async def learn(self, events: Sequence[TrainingEvent], batch: dict[tuple[str, int], range]) -> StepReport:
        """Test-then-train on ``events``; ``batch`` is the offsets each partition's records in the batch span.

        Shielded: if the agent is cancelled (shutdown) while the step runs in its thread, the step
        still finishes and records its offsets before anything else may touch the model.
        """
        return await asyncio.shield(asyncio.ensure_future(self._learn(events, batch)))

    async def _learn(self, events: Sequence[TrainingEvent], batch: dict[tuple[str, int], range]) -> StepReport:
        self._note_jumps(batch)
        fresh, positions_met = [], set()
        for e in events:
            # A record fetched twice around a seek may appear twice in one batch: train on it once.
            if (
                e.offset >= self.trained.get((e.topic, e.partition), 0)
                and (e.topic, e.partition, e.offset) not in positions_met
            ):
                positions_met.add((e.topic, e.partition, e.offset))
                fresh.append(e)
        observations = [e.observation() for e in fresh]
        async with self.guarded.lock:
            now_s = time.time()
            for e in fresh:
                self.stats.event_to_sample.observe(max(0.0, now_s - e.timestamp_ms / 1000.0))
            started = time.perf_counter()
            announced, self._announced = self._announced, []
            report = await asyncio.to_thread(self._step, observations, announced)
            self.stats.train_seconds += time.perf_counter() - started
            for tp, offsets in batch.items():
                self.trained[tp] = max(self.trained.get(tp, 0), offsets.stop)
        self.stats.steps += 1
        self.stats.trained += report.trained
        self.stats.skipped_already_trained += len(events) - len(fresh)
        self.stats.last_loss = report.loss
        return report

    def _note_jumps(self, batch: dict[tuple[str, int], range]) -> None:
        """Count and log a batch that starts past the model's offset: the offsets between were never trained.

        Batches reach the learner in order and the rewind seeks to ``trained``, so a partition's
        next batch starts at or below it; a jump means records were skipped upstream.
        """
        for (topic, partition), offsets in batch.items():
            trained = self.trained.get((topic, partition))
            if trained is not None and offsets.start > trained:
                key = f"{topic}:{partition}"
                self.stats.offsets_jumped[key] = self.stats.offsets_jumped.get(key, 0) + offsets.start - trained
                log.warning(
                    "%s: the batch starts at offset %d but the model has trained up to %d: %d offsets never "
                    "trained (records lost upstream, or transaction markers)",
                    key, offsets.start, trained, offsets.start - trained,
                )  # fmt: skip

    def note_catalogue(self, item_ids: Sequence[str]) -> None:
        """Catalogue entries applied: from the next step on, every scored click is ranked among them too."""
        self._announced.extend(item_ids)

    def _step(self, observations: list[Observation], announced: Sequence[str] = ()) -> StepReport:
        self.trainer.announce(announced)
        augmented = self.augmentation.step_samples(self.model, observations) if self.augmentation else []
        report = self.trainer.step(observations, augmented)
        for o in observations:
            self.trending.learn_one(o.event.user_id, o.event.item_id, o.event.ts / 1000.0)
            self.latest_event_s = max(self.latest_event_s, o.event.ts / 1000.0)
        return report

    # --- checkpoints -----------------------------------------------------------------------------
    def checkpoint_due(self) -> bool:
        return time.monotonic() - self._last_checkpoint >= self.settings.checkpoint_interval_s

    async def checkpoint(self, wait: bool = False, starting: dict[tuple[str, int], int] | None = None) -> None:
        """Snapshot the model under the lock, then write it in a thread while training goes on.

        One write at a time: if the previous one is still running, this one is skipped (unless
        ``wait``, as at shutdown, which waits for it and writes a fresh one). ``starting``: partitions
        about to be recorded, with where their training starts, written with the trained ones.
        """
        if self._saving is not None and not self._saving.done():
            if not wait:
                return
            # Shielded: a caller cancelled while waiting (a rewind cut short by a rebalance) must not
            # cancel the write's task, whose thread runs on regardless; a cancelled task would look
            # done, and the next checkpoint would write beside it into the same directory.
            await asyncio.shield(self._saving)
        async with self.guarded.lock:
            state = await asyncio.to_thread(self.model.state_dict)
            sync = self.sync.state_dict() if self.sync is not None else None
            offsets = self._offsets(starting)
        self._last_checkpoint = time.monotonic()
        self._saving = asyncio.ensure_future(asyncio.to_thread(self._write, state, offsets, sync))
        if wait:
            await asyncio.shield(self._saving)

    def _offsets(self, starting: dict[tuple[str, int], int] | None = None) -> Offsets:
        offsets: Offsets = {}
        for (topic, partition), offset in {**self.trained, **(starting or {})}.items():  # a recreated topic restarts
            offsets.setdefault(topic, {})[partition] = offset
        return offsets

    def _write(self, state: dict[str, Any], offsets: Offsets, sync: dict[str, Any] | None = None) -> None:
        directory: Path = self.settings.checkpoint_dir
        try:
            path = save_checkpoint(state, directory, offsets, keep=self.settings.checkpoint_keep, parameter_sync=sync)
        except CheckpointError as error:
            # Training goes on: the previous checkpoints are intact, and the next attempt may succeed.
            self.stats.checkpoint_errors += 1
            log.error("%s", error)
            return
        self.stats.checkpoints += 1
        self.stats.last_checkpoint_at = time.time()
        self.stats.last_checkpoint_path = str(path)

    # --- partition assignment ----------------------------------------------------------------------
    async def rewind(self, consumer: Any, positions: dict[Any, int]) -> dict[Any, int]:
        """Where the interaction partitions start reading: back to what the model has trained on.

        ``positions`` are where the assignment starts (the committed offsets, or the log start):
        the consumer calls this from its seek (:meth:`streamrec.stream.kafka.consumer.BatchConsumer.perform_seek`)
        and seeks to what it returns. Partitions the model has never seen start where the group
        starts; they are recorded and checkpointed at once, so that a crash before the first
        periodic checkpoint still re-reads from there.
        """
        topics = self.settings.interaction_topics
        assigned = [tp for tp in positions if tp.topic in topics]
        if not assigned:
            return {}
        ends = await consumer.highwaters(*assigned)
        rewound: dict[Any, int] = {}
        new: dict[tuple[str, int], int] = {}
        for tp in assigned:
            trained = self.trained.get((tp.topic, tp.partition))
            position = positions[tp]
            if trained is not None and trained > ends.get(tp, trained):
                # The log is shorter than the checkpoint says: the topic was recreated or truncated.
                log.warning(
                    "checkpoint offset %d for %s:%d is past the end of the log (%d): the topic was "
                    "recreated; training from where the consumer group starts",
                    trained, tp.topic, tp.partition, ends[tp],
                )  # fmt: skip
                trained = None
            if trained is None:
                new[(tp.topic, tp.partition)] = position
            elif position > trained:
                log.info("rewinding %s:%d from %d to %d (trained by the checkpoint)", *tp, position, trained)
                self.stats.rewound[f"{tp.topic}:{tp.partition}"] = position - trained
                rewound[tp] = trained
        if new:
            # Recorded only once a checkpoint holds them: a rewind cancelled mid-way (a rebalance
            # interrupting the table recovery that called it) used to leave them recorded but never
            # checkpointed, so the next rewind took them as known and the lineage's first checkpoint
            # of those partitions came after training had started (its start lost; bench/torture.py).
            await self.checkpoint(wait=True, starting=new)
            self.trained.update(new)
        return rewound

    async def report(self) -> dict[str, Any]:
        """What ``GET /model`` shows: progress, checkpoints, memory and the prequential table.

        The baselines' part is asked for outside the model lock: it waits for their process to
        finish every batch sent so far.
        """
        async with self.guarded.lock:
            model = self.model
            body = {
                "version": model.version,
                "samples_trained": model.samples_trained,
                "stats": {k: jsonable(v) for k, v in vars(self.stats).items()},
                "trained_offsets": {f"{t}:{p}": o for (t, p), o in sorted(self.trained.items())},
                "memory": model.memory_report(),
                "drift": {"alarms": self.trainer.drift.alarms, "loss_estimate": self.trainer.drift.estimate},
                "augmented_trained": dict(self.model.augmented_trained),
                "late": self.trainer.late,
                "reread": self.trainer.reread,
                "unknown_items": self.trainer.unknown_items,
                "catalogue": self.trainer.catalogue_size,
                "metrics": {RECOMMENDER: self.trainer.evaluator.report()},
            }
        sink = self.trainer.baseline_sink
        if sink is not None:
            body["metrics"].update(await self.refresh_baseline_metrics())
            body["baselines_failed"] = getattr(sink, "failed", None)
        return body

    async def kept_events(self) -> dict[str, dict[str, dict[str, list]]]:
        """What ``GET /model/events`` shows: every model's kept per-event metrics, with their users.

        The recommender's part is copied under the model lock; the baselines' part waits for their
        process to finish every batch sent so far. Training may step in between, so while events
        flow a baseline's columns can be longer than the recommender's; each slice is in scoring
        order, so a reader pairs the common prefix (``bench/quality.py`` reads a quiet worker).
        """
        async with self.guarded.lock:
            kept = {RECOMMENDER: self.trainer.evaluator.kept()}
        sink = self.trainer.baseline_sink
        if sink is not None:
            kept.update(await asyncio.to_thread(sink.kept))
        return kept

    async def refresh_baseline_metrics(self) -> dict[str, dict[str, dict[str, float]]]:
        """Ask the baselines' process for its table (after every batch sent so far) and keep it."""
        sink = self.trainer.baseline_sink
        if sink is not None:
            self.baseline_metrics = await asyncio.to_thread(sink.table)
        return self.baseline_metrics

    def close(self) -> None:
        sink = self.trainer.baseline_sink
        if isinstance(sink, BaselineProcess):
            sink.close()
