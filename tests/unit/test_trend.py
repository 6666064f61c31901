"""The trend prior: what is popular now, learned into the score for users the model knows little about."""

import random

import torch

from streamrec.models.recommender import Recommender, RecommenderConfig, Sample
from tests.unit.test_recommender import SMALL

DAY = 86_400.0


def shifting_fashion(days: int = 24, per_day: int = 30, seed: int = 0) -> list[Sample]:
    """Every day a different item is in fashion (half the day's choices); every user is new."""
    rng = random.Random(seed)
    samples = []
    for day in range(days):
        for n in range(per_day):
            item = f"i{day % 20}" if rng.random() < 0.5 else f"i{rng.randrange(20)}"
            samples.append(Sample(f"d{day}u{n}", item, (), 1.0, day * DAY + n * 60.0))
    return samples


def hit_rate_at_1(model: Recommender, samples: list[Sample]) -> float:
    items = [f"i{n}" for n in range(20)]
    scores = model.score_candidates([s.user_id for s in samples], [s.history for s in samples], items)
    return sum(items[int(row.argmax())] == s.item_id for row, s in zip(scores, samples, strict=True)) / len(samples)


def test_the_trend_prior_ranks_what_is_in_fashion_now_for_new_users():
    samples = shifting_fashion()
    results = {}
    for half_life in (None, 0.25 * DAY):
        model = Recommender(RecommenderConfig(**SMALL, seed=1, trend_half_life_s=half_life, lr_dense=0.05))
        hits, scored = 0.0, 0
        for start in range(0, len(samples), 5):  # test then train, a sixth of a day's choices at a time
            batch = samples[start : start + 5]
            if start >= len(samples) // 2:
                hits += hit_rate_at_1(model, batch) * len(batch)
                scored += len(batch)
            model.learn_many(batch)
        results[half_life] = (hits / scored, float(model.trend_weight.detach()))
    without, with_trend = results[None][0], results[0.25 * DAY][0]
    # Today's item is half the choices; all-time biases cannot know which one it is. The best a
    # model can do is about 5/6 × 0.525 (each day's first batch is scored before its fashion shows).
    assert with_trend > 0.3 and with_trend > without + 0.2, results
    assert results[0.25 * DAY][1] > 0  # the weight learned to follow the trend


def test_published_vectors_still_give_exactly_the_score():
    model = Recommender(RecommenderConfig(**SMALL, trend_half_life_s=DAY))
    model.learn_many(shifting_fashion(days=3))
    with torch.no_grad():
        model.trend_weight.fill_(0.7)
    items = ["i0", "i1", "i2", "i5"]
    users, histories = ["d2u1", "new"], [("i1", "i2"), ()]
    expected = model.score_candidates(users, histories, items)
    published = model.user_embeddings(users, histories) @ model.item_embeddings(items).T
    assert torch.allclose(published, expected, atol=1e-5)


def test_the_trend_is_checkpointed_with_the_model():
    model = Recommender(RecommenderConfig(**SMALL, trend_half_life_s=DAY))
    model.learn_many(shifting_fashion(days=3))
    restored = Recommender.from_state_dict(model.state_dict())
    rows = torch.arange(1, 6)
    assert torch.equal(restored.trend.feature(rows), model.trend.feature(rows))
    assert float(restored.trend_weight.detach()) == float(model.trend_weight.detach())


def test_a_checkpoint_from_before_the_trend_prior_still_loads():
    model = Recommender(RecommenderConfig(**SMALL))
    model.learn_many(shifting_fashion(days=2))
    state = model.state_dict()
    del state["trend"], state["trend_weight"]
    state["dense_optimizer"]["param_groups"][0]["params"] = state["dense_optimizer"]["param_groups"][0]["params"][:-1]
    restored = Recommender.from_state_dict(state)
    assert restored.trend.clock_s is None and float(restored.trend_weight.detach()) == 0.0
