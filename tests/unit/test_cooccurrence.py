import math
import random

import numpy as np
import pytest

from streamrec.models.cooccurrence import ItemCooccurrence
from streamrec.models.popularity import ItemPopularity
from streamrec.models.prequential import BaselineEvaluator, EvaluationBatch


def learn(model: ItemCooccurrence, events: list[tuple[str, str]]) -> ItemCooccurrence:
    for user, item in events:
        model.learn_one(user, item, ts_s=0.0)
    return model


def test_with_a_long_window_and_no_decay_it_is_item_knn_cosine():
    events = [("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b"), ("u2", "c"), ("u3", "c"), ("u3", "a"), ("u4", "b")]
    model = learn(ItemCooccurrence(window=100, decay=1.0, normalise="cosine", epsilon=0.0), events)
    users = {"a": {"u1", "u2", "u3"}, "b": {"u1", "u2", "u4"}, "c": {"u2", "u3"}}

    def cosine(x: str, y: str) -> float:
        return len(users[x] & users[y]) / math.sqrt(len(users[x]) * len(users[y]))

    # u4 chose only b: its scores are b's cosine to every item (b itself never pairs with b)
    scores = model.score_batch(["u4"], ["a", "b", "c"])[0]
    np.testing.assert_allclose(scores, [cosine("b", "a"), 0.0, cosine("b", "c")])


def test_undirected_pairs_count_both_ways_and_directed_only_forwards():
    events = [("u", "x"), ("u", "y")]
    both = learn(ItemCooccurrence(normalise="none", epsilon=0.0), events)
    forward = learn(ItemCooccurrence(directed=True, normalise="none", epsilon=0.0), events)
    learn(both, [("v", "y")]), learn(forward, [("v", "y")])
    assert both.score_batch(["v"], ["x"])[0, 0] == 1.0  # y → x learned from x → y
    assert forward.score_batch(["v"], ["x"])[0, 0] == 0.0


def test_the_order_of_the_candidates_and_the_batch_do_not_change_a_users_scores():
    rng = random.Random(3)
    events = [(f"u{rng.randrange(30)}", f"i{rng.randrange(40)}") for _ in range(2000)]
    model = learn(ItemCooccurrence(window=4, decay=0.7), events)
    items = [f"i{n}" for n in range(45)]  # five the model never saw
    shuffled = rng.sample(items, len(items))
    alone = dict(zip(items, model.score_batch(["u7"], items)[0], strict=True))
    in_batch = model.score_batch(["u1", "u7", "u7", "nobody"], shuffled)
    assert dict(zip(shuffled, in_batch[1], strict=True)) == pytest.approx(alone)
    assert np.array_equal(in_batch[1], in_batch[2])
    assert all(alone[f"i{n}"] == 0.0 for n in range(40, 45))


def test_a_user_without_history_gets_popularity():
    model = learn(ItemCooccurrence(), [("a", "x"), ("b", "x"), ("c", "x"), ("a", "y"), ("b", "y"), ("c", "z")])
    scores = model.score_batch(["stranger"], ["z", "y", "x"])[0]
    assert list(np.argsort(-scores)) == [2, 1, 0]


def test_directed_cooccurrence_learns_what_comes_next_where_popularity_cannot():
    """Each user walks a cycle of 10 items from a random start: the next item is determined by the last."""
    rng = random.Random(0)
    cycle = [f"i{n}" for n in range(10)]
    evaluator = BaselineEvaluator(
        {"cooccurrence": ItemCooccurrence(window=3, directed=True), "most_popular": ItemPopularity()}
    )
    position = {user: rng.randrange(10) for user in (f"u{n}" for n in range(50))}
    evaluator.step(EvaluationBatch(candidates_added=cycle))
    for step in range(40):
        events = []
        for user in position:
            events.append((user, cycle[position[user] % 10], float(step), 1.0))
            position[user] += 1
        scored = list(range(len(events))) if step >= 20 else []
        batch = EvaluationBatch(events, scored, histories=[() for _ in scored])
        evaluator.step(batch)
    table = evaluator.table()
    assert table["cooccurrence"]["overall"]["n"] == 1000 and table["cooccurrence"]["overall"]["mrr"] > 0.95
    assert table["most_popular"]["overall"]["mrr"] < 0.5


@pytest.mark.parametrize(
    "kwargs", [{"window": 0}, {"decay": 0.0}, {"decay": 1.5}, {"normalise": "l2"}, {"epsilon": -1.0}]
)
def test_invalid_parameters_are_refused(kwargs):
    with pytest.raises(ValueError, match="window >= 1"):
        ItemCooccurrence(**kwargs)
