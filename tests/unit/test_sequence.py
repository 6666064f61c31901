"""The user tower's order term: it starts as the pooled model, and sees what the pooled model cannot."""

import random

import pytest
import torch

from streamrec.models.recommender import Recommender, RecommenderConfig, Sample
from streamrec.models.recommender.sequence import SEQUENCE_ENCODERS, sequence_encoder
from tests.unit.test_recommender import SMALL


def cycle_stream(events: int, n_users: int = 60, pairs: int = 6, seed: int = 0) -> list[Sample]:
    """Users alternate between a random "cue" item and that cue's own "answer" item.

    After cue ``c3`` comes ``a3``, always; after an answer comes any cue. A history of 5 holds two or
    three cues: which answer comes next is said by the newest cue alone, so only the order tells
    (the pooled tower's recency weights differ by a few percent between neighbouring positions).
    """
    rng = random.Random(seed)
    pending: dict[str, str | None] = {f"u{u}": None for u in range(n_users)}
    histories: dict[str, list[str]] = {user: [] for user in pending}
    samples = []
    for t in range(events):
        user = f"u{rng.randrange(n_users)}"
        cue = pending[user]
        if cue is None:
            item = f"c{rng.randrange(pairs)}"
            pending[user] = item
        else:
            item = "a" + cue[1:]
            pending[user] = None
        samples.append(Sample(user, item, tuple(histories[user][-5:]), 1.0, float(t)))
        histories[user].append(item)
    return samples


def next_item_hit_rate(model: Recommender, samples: list[Sample]) -> float:
    """Share of samples whose item is the model's top-ranked one (history items not excluded)."""
    hits = 0
    for s in samples:
        item_ids, scores = model.score_items(s.user_id, s.history)
        hits += item_ids[int(scores.argmax())] == s.item_id
    return hits / len(samples)


@pytest.mark.parametrize("kind", [kind for kind in SEQUENCE_ENCODERS if kind != "pooled"])
def test_every_order_term_starts_at_zero_so_a_new_model_scores_as_the_pooled_one(kind):
    samples = cycle_stream(1000)
    items = sorted({s.item_id for s in samples})
    full = [s for s in samples if len(s.history) == 5][:10]  # the order term reads whole histories
    histories, users = [s.history for s in full], [s.user_id for s in full]
    pooled = Recommender(RecommenderConfig(**SMALL, seed=3))
    ordered = Recommender(RecommenderConfig(**SMALL, seed=3, sequence=kind))
    for model in (pooled, ordered):
        for item in items:  # rows for every item, untrained (their initial vectors come from the item id)
            model.set_content(item, torch.zeros(SMALL["content_dim"]))
    assert len(full) == 10
    assert torch.allclose(
        pooled.score_candidates(users, histories, items), ordered.score_candidates(users, histories, items), atol=1e-6
    )


@pytest.mark.parametrize("kind", ["transition", "attention", "gru"])
def test_an_order_term_learns_what_comes_next_where_the_pooled_tower_cannot(kind):
    samples = cycle_stream(6000)
    scores = {}
    for sequence in ("pooled", kind):
        torch.manual_seed(0)
        model = Recommender(RecommenderConfig(**SMALL, seed=1, sequence=sequence, lr_dense=1e-2))
        for start in range(0, 5000, 100):
            model.learn_many(samples[start : start + 100])
        answers = [s for s in samples[5000:5600] if s.item_id.startswith("a") and len(s.history) == 5]
        scores[sequence] = next_item_hit_rate(model, answers)
    assert scores[kind] > 0.8 and scores[kind] > scores["pooled"] + 0.2, scores


def test_the_order_term_is_checkpointed_with_the_model():
    model = Recommender(RecommenderConfig(**SMALL, sequence="attention"))
    model.learn_many(cycle_stream(300))
    restored = Recommender.from_state_dict(model.state_dict())
    sample = cycle_stream(300)[-1]
    assert torch.equal(
        model.score_candidates([sample.user_id], [sample.history], ["i0", "i1", "i2"]),
        restored.score_candidates([sample.user_id], [sample.history], ["i0", "i1", "i2"]),
    )


def test_an_unknown_encoder_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="pooled, transition, attention, gru"):
        sequence_encoder("lstm", dim=8, length=5)
