"""The augmentation stage as the service runs it, with a fake inference function instead of the worker."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import torch

from streamrec.models.augmentation.pipeline import Augmentation, AugmentationConfig
from streamrec.models.learner import Event, Observation, OnlineTrainer
from streamrec.models.recommender import Recommender, RecommenderConfig
from tests.unit.test_recommender import SMALL

OFF = {"sequence": False, "neighbours": False, "negatives": False, "text": False, "llm": False}


class Access:
    def __init__(self, model: Recommender) -> None:
        self.model = model

    async def read(self, fn: Any, *args: Any) -> Any:
        return fn(*args)


class FakeWorker:
    """Embeds a text by its genre word, answers Yes to the user's favourite genre; records calls."""

    GENRES = ("comedy", "horror", "western")

    def __init__(self, down: bool = False) -> None:
        self.down = down
        self.calls: list[tuple[str, int]] = []

    async def __call__(self, kind: str, payloads: list[dict[str, Any]]) -> list[Any]:
        self.calls.append((kind, len(payloads)))
        if self.down:
            return [None] * len(payloads)
        if kind == "embed":
            return [self.vector(p["text"]) for p in payloads]
        if kind == "generate":
            return [f"A retelling: {p['prompt'].rsplit(':', 1)[-1].strip()} (new words)" for p in payloads]
        # yes_no: the candidate's genre against the history's (the prompt lists history, then the candidate)
        answers = []
        for p in payloads:
            history, candidate = p["prompt"].split("Would this user like")
            liked = max(self.GENRES, key=history.lower().count)
            answers.append(4.0 if liked in candidate.lower() else -4.0)
        return answers

    def vector(self, text: str) -> list[float]:
        rng = np.random.default_rng(sum(map(ord, text)))
        base = np.array([float(g in text.lower()) for g in self.GENRES] + [0.0] * (SMALL["content_dim"] - 3))
        return (base + 0.05 * rng.standard_normal(len(base))).tolist()


def items() -> list[tuple[str, str]]:
    return [(f"{g}{k}", f"Film {g}{k} (1990). {g.title()}.") for g in FakeWorker.GENRES for k in range(6)]


def model_with_catalogue(augmentation: Augmentation) -> Recommender:
    model = Recommender(RecommenderConfig(**SMALL, seed=3))
    for item, _ in items():
        model.set_content(item, torch.zeros(SMALL["content_dim"]))
    asyncio.run(augmentation.add_items(items(), Access(model)))
    return model


def observation(user: str, item: str, history: tuple[str, ...], ts: int) -> Observation:
    return Observation(Event(user, item, "click", ts), history, frozenset(history))


def test_item_texts_become_content_vectors_refined_by_paraphrases_and_wordnet_rewrites_are_kept_apart():
    worker = FakeWorker()
    augmentation = Augmentation(AugmentationConfig(**OFF | {"text": True}, substitutions=0, paraphrases=1), worker)
    model = model_with_catalogue(augmentation)
    assert augmentation.items_with_content == 18 and all(model.has_content(i) for i, _ in items())
    # similar texts are neighbours by content
    assert {n for n, _ in model.content_neighbours("comedy0", 5)} <= {f"comedy{k}" for k in range(1, 6)}
    assert augmentation.paraphrases_waiting == 18
    assert asyncio.run(augmentation.paraphrase_some(Access(model), 10)) == 10
    assert augmentation.paraphrases_waiting == 8 and augmentation.rewrites["paraphrase"] == 10


def test_local_operators_follow_the_adaptive_ratio_and_leave_heavy_users_alone():
    augmentation = Augmentation(AugmentationConfig(**OFF | {"sequence": True, "negatives": True}, max_per_event=4))
    model = Recommender(RecommenderConfig(**SMALL, seed=3))
    OnlineTrainer(model).step([observation(f"u{k}", f"i{k}", (), 1000 + k) for k in range(10)])
    cold = observation("new", "i1", ("i2", "i3", "i4"), 5000)
    heavy = observation("old", "i1", tuple(f"i{k % 10}" for k in range(60)), 5000)
    samples = augmentation.step_samples(model, [cold, heavy])
    assert samples and {s.user_id for s in samples} == {"new"}
    assert {s.kind for s in samples} <= {"seq_crop", "seq_mask", "seq_reorder", "negative"}
    assert all(s.label == 0.0 for s in samples if s.kind == "negative")
    assert all(s.weight < 1.0 for s in samples) and len(samples) <= 4


def test_llm_expansion_makes_pseudo_labels_the_model_agrees_with_for_sparse_users_only():
    worker = FakeWorker()
    config = AugmentationConfig(
        **OFF | {"text": True, "llm": True}, substitutions=0, paraphrases=0, llm_candidates=6, llm_budget_per_s=6
    )
    augmentation = Augmentation(config, worker, clock=lambda: 0.0)  # time stands still: no refill
    model = model_with_catalogue(augmentation)
    # teach the model that comedy users like comedies, so that it agrees with the LM
    trainer = OnlineTrainer(model)
    for step in range(30):
        trainer.step(
            [observation(f"c{u}", f"comedy{(u + step) % 6}", ("comedy0",), 10_000 * step + u) for u in range(8)]
        )
    sparse = observation("c1", "comedy1", ("comedy0", "comedy2"), 10**7)
    heavy = observation("c2", "comedy1", tuple(f"comedy{k % 6}" for k in range(40)), 10**7)
    made = asyncio.run(augmentation.expand_sparse([sparse, heavy], Access(model)))
    pending = augmentation.take_pending()
    assert made == len(pending) > 0
    assert {s.user_id for s in pending} == {"c1"}  # the heavy user gets none
    positives = [s for s in pending if s.kind == "llm_positive"]
    assert all(s.item_id.startswith("comedy") and s.label == 1.0 for s in positives)
    assert all(not s.item_id.startswith("comedy") and s.label == 0.0 for s in pending if s.kind == "llm_negative")
    assert ("yes_no", 6) in worker.calls
    # the LM budget (6 prompts a second) is spent: the next expansion is skipped
    assert asyncio.run(augmentation.expand_sparse([sparse], Access(model))) == 0
    assert augmentation.llm_skipped["budget"] == 1


def test_a_dead_inference_worker_costs_augmented_samples_not_training():
    worker = FakeWorker(down=True)
    config = AugmentationConfig(**OFF | {"text": True, "llm": True, "sequence": True}, substitutions=0)
    augmentation = Augmentation(config, worker)
    model = model_with_catalogue(augmentation)
    assert augmentation.items_with_content == 0 and augmentation.requests_failed["embed"] == 18
    assert asyncio.run(augmentation.expand_sparse([observation("u", "comedy1", ("comedy0",), 1)], Access(model))) == 0
    batch = [observation("u", "comedy1", ("comedy0", "comedy2", "comedy3"), 1000)]
    report = OnlineTrainer(model).step(batch, augmentation.step_samples(model, batch))
    assert report.trained == 1 and report.augmented > 0  # local views still made, training unaffected
