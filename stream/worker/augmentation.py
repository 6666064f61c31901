"""Augmentation in the stream worker: the thin async shell around :mod:`streamrec.models.augmentation.pipeline`.

The training step calls :meth:`Augmentation.step_samples` itself (local operators, in the step's
thread). This shell runs what needs the inference worker, off the training path:

* new catalogue entries go into a bounded queue; one task turns them into content vectors;
* after each training step, a bounded number of LLM expansions run for the step's sparse users;
  their samples join a later step.

Every request goes through :class:`~streamrec.stream.inference.client.InferenceClient`, with a deadline and a
bound on requests in flight. If the inference worker is down, requests expire, nothing here
waits for them on the training path, and the figures in :meth:`report` say so (``degraded``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from streamrec.models.augmentation.pipeline import Augmentation, AugmentationConfig, ModelAccess
from streamrec.models.augmentation.text import item_text
from streamrec.models.learner import Observation
from streamrec.stream.inference.client import InferenceClient, Send
from streamrec.stream.settings import Settings
from streamrec.stream.worker.contract import CatalogueItem

log = logging.getLogger(__name__)


def augmentation_config(settings: Settings) -> AugmentationConfig:
    return AugmentationConfig(
        sequence=settings.augment_sequence,
        sequence_weight=settings.augment_sequence_weight,
        neighbours=settings.augment_neighbours,
        neighbours_weight=settings.augment_neighbours_weight,
        negatives=settings.augment_negatives,
        negatives_weight=settings.augment_negatives_weight,
        text=settings.augment_text,
        paraphrases=settings.augment_text_paraphrases,
        substitutions=settings.augment_text_substitutions,
        llm=settings.augment_llm,
        llm_candidates=settings.augment_llm_candidates,
        llm_weight=settings.augment_llm_weight,
        llm_sparse_user_events=settings.augment_llm_sparse_user_events,
        llm_max_per_user=settings.augment_llm_max_per_user,
        max_per_event=settings.augment_max_per_event,
        user_scale=settings.augment_user_scale,
        item_scale=settings.augment_item_scale,
        heavy_user_events=settings.augment_heavy_user_events,
        budget_per_s=settings.augment_budget_per_s,
        llm_budget_per_s=settings.augment_llm_budget_per_s,
        seed=settings.model_seed,
    )


def catalogue_text(item: CatalogueItem) -> str:
    return item_text(item.title, item.categories, item.attributes, item.description)


def protected_words(item: CatalogueItem) -> set[str]:
    """Words a rewrite must keep: the title's (a name, not a description) and the categories'."""
    return {word.lower() for text in (item.title, *item.categories) for word in text.split()}


class StreamAugmenter:
    MAX_QUEUED_ITEMS = 50_000
    MAX_EXPANSIONS = 4  # LLM expansions running at once; more are skipped (counted)
    ITEM_CHUNK = 64
    PARAPHRASE_CHUNK = 8  # paraphrases are slow on a CPU: small chunks keep the worker's batches short

    def __init__(self, settings: Settings, send: Send, model: ModelAccess) -> None:
        self.settings = settings
        self.client = InferenceClient(settings, send)
        self.model = model
        self.augmentation = Augmentation(augmentation_config(settings), infer=self._infer)
        if settings.augment_text and settings.augment_text_substitutions:
            self._load_wordnet()
        self.skipped: Counter[str] = Counter()
        self._items: asyncio.Queue[tuple[str, str, set[str]]] = asyncio.Queue(self.MAX_QUEUED_ITEMS)
        self._expansions: set[asyncio.Task[None]] = set()
        self._content_task: asyncio.Task[None] | None = None
        self._paraphrase_task: asyncio.Task[None] | None = None

    def _load_wordnet(self) -> None:
        """Use the WordNet prepared by ``streamrec assets fetch``; never download at run time."""
        from streamrec.models.augmentation.wordnet_data import use_wordnet, wordnet_ready

        if not wordnet_ready(self.settings.cache_dir):
            # Word substitution is one of several rewrites: go on without it, loudly.
            log.error("WordNet is not in %s: word substitution is off (run `streamrec assets fetch`)",
                      self.settings.cache_dir)  # fmt: skip
            self.augmentation.substitution = None
            return
        use_wordnet(self.settings.cache_dir)

    async def start(self) -> None:
        if self.augmentation.substitution is not None:
            # NLTK reads WordNet on first use (10 s or more): in a thread, not on the event loop.
            from nltk.corpus import wordnet

            await asyncio.to_thread(wordnet.ensure_loaded)
        await self.client.start()
        self._content_task = asyncio.ensure_future(self._content_loop())
        self._paraphrase_task = asyncio.ensure_future(self._paraphrase_loop())

    async def stop(self) -> None:
        tasks = [t for t in (self._content_task, self._paraphrase_task, *self._expansions) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.client.stop()

    async def _infer(self, kind: str, payloads: list[dict[str, Any]]) -> list[Any]:
        timeout = self.settings.inference_lm_timeout_s if kind in ("generate", "yes_no") else None
        return await self.client.request_many(kind, payloads, timeout)

    # --- catalogue → content vectors ------------------------------------------------------------------
    def note_items(self, items: Sequence[CatalogueItem]) -> None:
        if not self.settings.augment_text:
            return
        for item in items:
            try:
                self._items.put_nowait((item.item_id, catalogue_text(item), protected_words(item)))
            except asyncio.QueueFull:
                self.skipped["item_queue_full"] += 1

    async def _content_loop(self) -> None:
        while True:
            chunk = [await self._items.get()]
            while len(chunk) < self.ITEM_CHUNK and not self._items.empty():
                chunk.append(self._items.get_nowait())
            try:
                keep = {item: words for item, _, words in chunk}
                await self.augmentation.add_items([(item, text) for item, text, _ in chunk], self.model, keep)
            except Exception:
                log.exception("content vectors for %d items failed", len(chunk))

    async def _paraphrase_loop(self) -> None:
        """Refine content vectors with LM paraphrases, a few items at a time, behind the fast pass.

        Paced at ``augment_paraphrases_per_s``: generation is the most expensive request there is,
        and a CPU inference worker must keep time for embeddings and scoring.
        """
        while True:
            started = time.monotonic()
            waiting = self.augmentation.paraphrases_waiting
            try:
                await self.augmentation.paraphrase_some(self.model, self.PARAPHRASE_CHUNK)
            except Exception:
                log.exception("paraphrasing failed")
            taken = min(waiting, self.PARAPHRASE_CHUNK)
            pause = max(1.0, taken / self.settings.augment_paraphrases_per_s) - (time.monotonic() - started)
            await asyncio.sleep(max(pause, 0.0))

    # --- sparse users → LLM pseudo-interactions ----------------------------------------------------------
    def note_step(self, observations: Sequence[Observation]) -> None:
        if not self.settings.augment_llm or not observations:
            return
        if len(self._expansions) >= self.MAX_EXPANSIONS:
            self.skipped["llm_expansions_busy"] += 1
            return
        task = asyncio.ensure_future(self._expand(list(observations)))
        self._expansions.add(task)
        task.add_done_callback(self._expansions.discard)

    async def _expand(self, observations: list[Observation]) -> None:
        try:
            await self.augmentation.expand_sparse(observations, self.model)
        except Exception:
            log.exception("LLM expansion failed")

    def report(self) -> dict[str, Any]:
        return {
            "degraded": not self.client.available(),
            "items_queued": self._items.qsize(),
            "expansions_running": len(self._expansions),
            "skipped": dict(self.skipped),
            "requests": self.client.stats.as_dict(),
            "in_flight": self.client.in_flight,
            **self.augmentation.report(),
        }
