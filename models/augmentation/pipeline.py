"""The augmentation stage as the service runs it: which operator makes what, for whom, how much.

Data flows events → samples → **augmentation** → training. :class:`Augmentation` is shared by the
stream worker and the ablation benchmark, so both run the same code:

* **In the training step** (:meth:`Augmentation.step_samples`, called with the model lock held):
  the cheap operators — sequence views, content neighbours, popularity-aware negatives — make
  samples for each real event, as many as :class:`~streamrec.models.augmentation.budget.AdaptiveRatio`
  allows for the user's and item's sparsity, within a per-second :class:`TokenBucket`. The
  step also collects the LLM pseudo-interactions that arrived since the last step.
* **Beside the stream** (async, through an :data:`Infer` callable: the Kafka inference client in
  the service, the models in-process in the benchmark):
  :meth:`add_items` turns new catalogue texts into content vectors (the text, its WordNet
  rewrites and LM paraphrases, embedded and averaged) so a new item is recommendable from its
  text alone; :meth:`expand_sparse` asks the LM to score content-similar candidates for sparse
  users' events and turns the scores into pseudo-positives and pseudo-negatives, denoised by
  agreement with the current model and capped per user.

Nothing here waits for the inference worker on the training path: a failed or expired request
just yields no samples (counted), which is the degraded mode.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from streamrec.models.augmentation.budget import AdaptiveRatio
from streamrec.models.augmentation.expansion import (
    ExpansionConfig,
    PerUserCap,
    candidates_by_content,
    expansion_prompt,
    pseudo_labels,
    rank_percentiles,
)
from streamrec.models.augmentation.negatives import PopularityNegatives, PopularityNegativesConfig
from streamrec.models.augmentation.neighbours import ContentNeighbours, ContentNeighboursConfig
from streamrec.models.augmentation.sequence import SequenceViews, SequenceViewsConfig
from streamrec.models.augmentation.text import WordNetSubstitution, clean_generation, content_vector, paraphrase_prompt
from streamrec.models.rate_limit import TokenBucket
from streamrec.models.recommender import Recommender, Sample

# (kind, payloads) -> one result per payload, None where the request failed, expired or was dropped
Infer = Callable[[str, list[dict[str, Any]]], Awaitable[list[Any]]]


class ModelAccess(Protocol):
    """How async code reaches the shared model: ``await access.read(fn, *args)`` runs under its lock."""

    model: Recommender

    async def read(self, fn: Callable[..., Any], *args: Any) -> Any: ...


@dataclass(frozen=True)
class AugmentationConfig:
    sequence: bool = True
    sequence_weight: float = 0.3
    neighbours: bool = True
    neighbours_weight: float = 0.2
    neighbours_min_similarity: float = 0.8
    negatives: bool = True
    negatives_weight: float = 0.2
    text: bool = True
    paraphrases: int = 1
    substitutions: int = 2
    llm: bool = True
    llm_candidates: int = 8
    llm_weight: float = 0.5
    llm_sparse_user_events: int = 20  # users with fewer events get LLM-scored pseudo-interactions
    llm_max_per_user: int = 10  # pseudo-labels per user per day of event time
    max_per_event: int = 4
    user_scale: float = 10.0
    item_scale: float = 20.0
    heavy_user_events: int = 50
    budget_per_s: float = 5000.0
    llm_budget_per_s: float = 1.0
    seed: int = 0

    @property
    def any_local(self) -> bool:
        return self.sequence or self.neighbours or self.negatives


class Augmentation:
    def __init__(
        self, config: AugmentationConfig, infer: Infer | None = None, clock: Callable[[], float] = time.monotonic
    ):
        self.config = c = config
        self.infer = infer
        self.clock = clock
        self.ratio = AdaptiveRatio(c.max_per_event, c.user_scale, c.item_scale, c.heavy_user_events)
        self.bucket = TokenBucket(c.budget_per_s, burst=c.budget_per_s)
        # An expansion asks about llm_candidates items at once: the burst must hold at least that.
        self.llm_bucket = TokenBucket(c.llm_budget_per_s, burst=max(c.llm_budget_per_s, c.llm_candidates))
        self.views = SequenceViews(SequenceViewsConfig(enabled=c.sequence, weight=c.sequence_weight, seed=c.seed))
        self._model: Recommender | None = None  # the step's model, while step_samples runs
        self._popularity_cache: tuple[list[str], np.ndarray] | None = None  # per step
        self._turn = 0  # which operator gets an event's first share (rotates)
        self.neighbours = ContentNeighbours(
            lambda item, k: self._model.content_neighbours(item, k) if self._model is not None else [],
            ContentNeighboursConfig(
                enabled=c.neighbours, base_weight=c.neighbours_weight, min_similarity=c.neighbours_min_similarity
            ),
        )
        self.negatives = PopularityNegatives(
            self._popularity, PopularityNegativesConfig(enabled=c.negatives, weight=c.negatives_weight, seed=c.seed)
        )
        self.substitution: WordNetSubstitution | None = (
            WordNetSubstitution(seed=c.seed) if c.text and c.substitutions else None
        )
        self.expansion = ExpansionConfig(
            enabled=c.llm,
            candidates=c.llm_candidates,
            positive_weight=c.llm_weight,
            negative_weight=c.llm_weight * 0.6,
            max_per_user=c.llm_max_per_user,
        )
        self.cap = PerUserCap(c.llm_max_per_user, self.expansion.window_s)
        self.llm_skipped: Counter[str] = Counter()
        self._to_paraphrase: deque[tuple[str, str, tuple[str, ...]]] = deque(maxlen=100_000)
        self.texts: dict[str, str] = {}  # item id -> its catalogue text (prompts for LLM expansion)
        self.items_with_content = 0
        self.rewrites: Counter[str] = Counter()  # text rewrites embedded, by source
        self.generated: Counter[str] = Counter()  # samples made, by kind
        self.requests_failed: Counter[str] = Counter()  # inference results that never came, by kind
        self._pending: deque[Sample] = deque(maxlen=100_000)  # async samples for the next steps

    # --- in the training step ----------------------------------------------------------------------
    def step_samples(self, model: Recommender, events: Sequence[Any]) -> list[Sample]:
        """Augmented samples for a step's real ``events`` (Observations), plus the async ones ready.

        Called with the model lock held (the operators read the model's content and popularity).
        """
        samples = self.take_pending()
        if not self.config.any_local:
            return samples
        self._model = model
        self._popularity_cache = None
        now = self.clock()
        for o in events:
            event = o.event
            item_events = model.item_count(event.item_id)
            wanted = self.ratio(len(o.history), item_events)
            granted = self.bucket.take(wanted, now) if wanted else 0
            if not granted:
                continue
            ts_s = event.ts / 1000.0
            shares = self._shares(granted)
            made: list[Sample] = []
            if shares.get("sequence"):
                made += self.views.expand(event.user_id, event.item_id, o.history, ts_s, shares["sequence"])
            if shares.get("neighbours"):
                made += self.neighbours.expand(
                    event.user_id, event.item_id, o.history, ts_s, shares["neighbours"], seen=o.seen
                )
            if shares.get("negatives"):
                made += self.negatives.sample(
                    event.user_id, o.history, ts_s, shares["negatives"], seen=o.seen, positive=event.item_id
                )
            for sample in made:
                self.generated[sample.kind] += 1
            samples += made
        self._model = None
        return samples

    def _shares(self, granted: int) -> dict[str, int]:
        """Split an event's budget over the enabled operators in turns (the first turn rotates)."""
        c = self.config
        operators = [name for name, on in (("sequence", c.sequence), ("neighbours", c.neighbours),
                                           ("negatives", c.negatives)) if on]  # fmt: skip
        shares = dict.fromkeys(operators, 0)
        for k in range(granted):
            shares[operators[(self._turn + k) % len(operators)]] += 1
        self._turn += 1
        return shares

    def take_pending(self) -> list[Sample]:
        taken = list(self._pending)
        self._pending.clear()
        return taken

    def _popularity(self) -> tuple[list[str], np.ndarray]:
        if self._popularity_cache is None:
            assert self._model is not None
            item_ids, counts = self._model.item_popularity()
            self._popularity_cache = (item_ids, counts.numpy())
        return self._popularity_cache

    # --- beside the stream: content vectors from item texts -----------------------------------------
    async def add_items(
        self,
        items: Sequence[tuple[str, str]],
        model: ModelAccess,
        keep: Mapping[str, Collection[str]] | None = None,
    ) -> int:
        """Give ``(item_id, text)`` items content vectors: the text and its WordNet rewrites, embedded and averaged.

        This is the fast pass, so that a new item is recommendable as soon as its text is embedded;
        items that got a vector are queued for :meth:`paraphrase_some`, the slow pass (LM
        paraphrases, expensive on a CPU) that refines the same vector later. ``keep`` holds, per
        item, words the WordNet rewrites must not replace (names, categories). Returns how many
        items got a vector.
        """
        c = self.config
        if not c.text or self.infer is None or not items:
            return 0
        items = list(dict(items).items())  # the latest text per item
        self.texts.update(items)
        rewrites: dict[str, list[str]] = {item: [] for item, _ in items}
        if self.substitution is not None:
            # WordNet lookups are pure Python (and the first one loads the corpus): off the event loop.
            rewrites = await asyncio.to_thread(self._substitute, items, keep or {})
        originals = await self._embed_items(items, rewrites, model)
        if c.paraphrases:
            self._to_paraphrase.extend((item, text, tuple(rewrites[item])) for item, text in items if item in originals)
        return len(originals)

    def _substitute(
        self, items: Sequence[tuple[str, str]], keep: Mapping[str, Collection[str]]
    ) -> dict[str, list[str]]:
        assert self.substitution is not None
        rewrites = {item: self.substitution.augment(text, self.config.substitutions, keep=keep.get(item, ()))
                    for item, text in items}  # fmt: skip
        self.rewrites["wordnet"] += sum(map(len, rewrites.values()))
        return rewrites

    @property
    def paraphrases_waiting(self) -> int:
        return len(self._to_paraphrase)

    async def paraphrase_some(self, model: ModelAccess, n: int) -> int:
        """Paraphrase up to ``n`` queued items with the LM and re-embed them with all their rewrites.

        Returns how many items were refined. Items whose paraphrases failed keep their first vector.
        """
        c = self.config
        if self.infer is None or not self._to_paraphrase:
            return 0
        batch = [self._to_paraphrase.popleft() for _ in range(min(n, len(self._to_paraphrase)))]
        wanted = [(item, text) for item, text, _ in batch for _ in range(c.paraphrases)]
        prompts = [{"prompt": paraphrase_prompt(text), "max_new_tokens": 48} for _, text in wanted]
        generated = await self.infer("generate", prompts)
        paraphrased: dict[str, list[str]] = {}
        for (item, text), output in zip(wanted, generated, strict=True):
            cleaned = clean_generation(output, text) if isinstance(output, str) else None
            if cleaned is None:
                self.requests_failed["paraphrase_unusable" if output is not None else "generate"] += 1
                continue
            paraphrased.setdefault(item, []).append(cleaned)
        if not paraphrased:
            return 0
        self.rewrites["paraphrase"] += sum(map(len, paraphrased.values()))
        refined = [(item, text) for item, text, _ in batch if item in paraphrased]
        both = {item: [*rewrites, *paraphrased[item]] for item, _, rewrites in batch if item in paraphrased}
        await self._embed_items(refined, both, model)
        return len(refined)

    async def _embed_items(
        self, items: Sequence[tuple[str, str]], rewrites: dict[str, list[str]], model: ModelAccess
    ) -> dict[str, np.ndarray]:
        assert self.infer is not None
        texts = [(item, text) for item, text in items] + [(item, r) for item, _ in items for r in rewrites[item]]
        vectors = await self.infer("embed", [{"text": text} for _, text in texts])
        originals: dict[str, np.ndarray] = {}
        augmented: dict[str, list[np.ndarray]] = {}
        for k, ((item, _), vector) in enumerate(zip(texts, vectors, strict=True)):
            if vector is None:
                self.requests_failed["embed"] += 1
                continue
            if k < len(items):
                originals[item] = np.asarray(vector, dtype=np.float32)
            else:
                augmented.setdefault(item, []).append(np.asarray(vector, dtype=np.float32))
        contents = {item: content_vector(vector, augmented.get(item, ())) for item, vector in originals.items()}
        if contents:
            await model.read(self._set_contents, model.model, contents)
        return originals

    # --- beside the stream: LLM-scored pseudo-interactions for sparse users -----------------------------
    async def expand_sparse(self, events: Sequence[Any], model: ModelAccess) -> int:
        """Ask the LM about content-similar candidates for the sparse users in ``events`` (Observations).

        One expansion per user (their latest event in the batch), as many as the per-second LLM
        budget allows. Candidates come from content similarity to the user's history, so items
        need content vectors (the text operator) first; the resulting samples join a later step.
        Returns how many samples were made.
        """
        c = self.config
        if not c.llm or self.infer is None or not events:
            return 0
        latest: dict[str, Any] = {}
        for o in events:
            latest[o.event.user_id] = o
        now = self.clock()
        chosen = []
        for user_id, o in latest.items():
            if len(o.history) + 1 >= c.llm_sparse_user_events:
                continue
            if self.cap.used(user_id, o.event.ts / 1000.0) >= c.llm_max_per_user:
                self.llm_skipped["user_cap"] += 1
                continue
            if not self.llm_bucket.take_all(c.llm_candidates, now):
                self.llm_skipped["budget"] += len(latest) - len(chosen)
                break
            chosen.append(o)
        if not chosen:
            return 0
        plans = await model.read(self._plan_expansions, model.model, chosen)
        prompts = [
            {
                "prompt": expansion_prompt(
                    [self.texts[i] for i in history if i in self.texts], self.texts[candidate], max_history=5
                )
            }
            for _, history, candidates in plans
            for candidate in candidates
        ]
        if not prompts:
            self.llm_skipped["no_candidates"] += len(chosen)
            return 0
        scores = await self.infer("yes_no", prompts)
        percentiles = await model.read(self._percentiles, model.model, plans)
        made = 0
        offset = 0
        for (o, history, candidates), percentile in zip(plans, percentiles, strict=True):
            lm = scores[offset : offset + len(candidates)]
            offset += len(candidates)
            answered = [k for k, score in enumerate(lm) if score is not None]
            self.requests_failed["yes_no"] += len(candidates) - len(answered)
            if not answered:
                continue
            samples = pseudo_labels(
                o.event.user_id,
                history,
                [candidates[k] for k in answered],
                [float(lm[k]) for k in answered],
                [percentile[k] for k in answered],
                self.expansion,
                ts_s=o.event.ts / 1000.0,
                cap=self.cap,
            )
            for sample in samples:
                self.generated[sample.kind] += 1
            self._pending.extend(samples)
            made += len(samples)
        return made

    def _plan_expansions(
        self, model: Recommender, chosen: Sequence[Any]
    ) -> list[tuple[Any, tuple[str, ...], list[str]]]:
        """``(observation, history incl. the event, candidate items with texts)`` per chosen user."""
        item_ids, content = model.item_content_matrix()
        matrix = content.numpy()
        plans = []
        for o in chosen:
            history = (*o.history, o.event.item_id)
            found = candidates_by_content(history, (item_ids, matrix), exclude=o.seen, k=self.config.llm_candidates)
            candidates = [item for item, _ in found if item in self.texts]
            if candidates and any(item in self.texts for item in history):
                plans.append((o, history, candidates))
        return plans

    def _percentiles(self, model: Recommender, plans: Sequence[tuple[Any, tuple[str, ...], list[str]]]):
        """The current model's rank percentile of each candidate, for the agreement filter."""
        if not plans:
            return []
        item_ids, scores = model.score_batch([o.event.user_id for o, _, _ in plans], [h for _, h, _ in plans])
        return [rank_percentiles(item_ids, scores[k].numpy(), candidates) for k, (_, _, candidates) in enumerate(plans)]

    def _set_contents(self, model: Recommender, contents: dict[str, np.ndarray]) -> None:
        for item, vector in contents.items():
            if not model.has_content(item):
                self.items_with_content += 1
            model.set_content(item, torch.from_numpy(np.ascontiguousarray(vector)))

    def report(self) -> dict[str, Any]:
        return {
            "items_with_content": self.items_with_content,
            "rewrites": dict(self.rewrites),
            "generated": dict(self.generated),
            "requests_failed": dict(self.requests_failed),
            "llm_skipped": dict(self.llm_skipped),
            "pending": len(self._pending),
            "paraphrases_waiting": len(self._to_paraphrase),
        }
