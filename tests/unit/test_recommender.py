import random

import torch

from models.embedding_store import EmbeddingStore
from models.evaluation import rank_of_target
from models.recommender import Recommender, RecommenderConfig, Sample
from models.replay_buffer import ReservoirBuffer

SMALL = {"dim": 16, "content_dim": 8, "num_negatives": 16, "history_length": 5}


def test_embedding_store_grows_and_updates_only_touched_rows():
    store = EmbeddingStore(dim=4, initial_rows=2, lr=0.1)
    store.ensure_rows(5)
    assert store.capacity == 5  # max(5, 2 * 2)
    before = store.weight.clone()
    rows, leaf, inverse = store.gather(torch.tensor([3, 1, 3]))
    assert rows.tolist() == [1, 3] and inverse.tolist() == [1, 0, 1]
    leaf[inverse].sum().backward()
    assert leaf.grad.tolist() == [[1.0] * 4, [2.0] * 4]  # row 3 used twice: gradients add up
    store.apply_gradients(rows, leaf.grad)
    changed = (store.weight != before).any(dim=1).tolist()
    assert changed == [False, True, False, True, False]
    # Adagrad's first step moves each coordinate by lr, whatever the gradient's size
    assert torch.allclose(before[3] - store.weight[3], torch.full((4,), 0.1), atol=1e-6)


def test_reset_rows_clears_the_old_ids_state():
    store = EmbeddingStore(dim=3, initial_rows=4)
    store.accumulator[2] = 5.0
    old = store.weight[2].clone()
    store.reset_rows([2])
    assert store.accumulator[2].tolist() == [0.0, 0.0, 0.0] and not torch.equal(store.weight[2], old)


def test_reservoir_keeps_a_uniform_sample_in_bounded_memory():
    buffer = ReservoirBuffer(capacity=100, seed=1)
    buffer.extend(range(10_000))
    assert len(buffer) == 100 and buffer.seen == 10_000
    assert 3_000 < sum(buffer.items) / 100 < 7_000  # not just the first or last items
    assert len(set(buffer.sample(50))) == 50


def planted_stream(n_users=40, n_items=40, events=3000, seed=0):
    """Two communities: even users choose among items 0-19, odd users among items 20-39."""
    rng = random.Random(seed)
    histories = {f"u{u}": [] for u in range(n_users)}
    samples = []
    for t in range(events):
        u = rng.randrange(n_users)
        low = 0 if u % 2 == 0 else n_items // 2
        item = f"i{rng.randrange(low, low + n_items // 2)}"
        samples.append(Sample(f"u{u}", item, tuple(histories[f"u{u}"][-5:]), 1.0, float(t)))
        histories[f"u{u}"].append(item)
    return samples, histories


def test_learns_the_planted_communities():
    samples, histories = planted_stream()
    model = Recommender(RecommenderConfig(**SMALL, seed=3))
    losses = [model.learn_many(samples[i : i + 100]) for i in range(0, len(samples), 100)]
    assert sum(losses[-5:]) / 5 < 0.85 * sum(losses[:5]) / 5
    hits = 0
    for u in range(0, 40):
        top = [item for item, _ in model.recommend(f"u{u}", histories[f"u{u}"], k=10, exclude=set())]
        own = {f"i{i}" for i in (range(0, 20) if u % 2 == 0 else range(20, 40))}
        hits += sum(item in own for item in top)
    assert hits / 400 > 0.9  # almost every recommendation comes from the user's own community


def test_prequential_rank_improves_with_training():
    samples, _ = planted_stream(events=2000, seed=5)
    model = Recommender(RecommenderConfig(**SMALL, seed=1))

    def mean_rank(batch):
        ranks = []
        for s in batch:
            ids, scores = model.score_items(s.user_id, s.history)
            ranks.append(rank_of_target(scores.numpy(), ids.index(s.item_id)))
        return sum(ranks) / len(ranks)

    model.learn_many(samples[:200])  # every item known
    early = mean_rank(samples[200:400])
    for i in range(200, 1800, 100):
        model.learn_many(samples[i : i + 100])
    # Random ranking gives a mean rank of 20.5 among 40 items; knowing the community (picks are
    # uniform within its 20 items) gives about 10.5, the best any model can do here.
    late = mean_rank(samples[1800:2000])
    assert late < 12.5 and late < early - 3


def test_tables_grow_with_new_ids_and_versions_count_steps():
    model = Recommender(RecommenderConfig(**SMALL))
    for step in range(3):
        batch = [Sample(f"user-{step}-{j}", f"item-{step}-{j}", (), 1.0, float(step)) for j in range(700)]
        model.learn_many(batch)
    assert len(model.users) == 2100 and len(model.items) == 2100
    assert model.user_emb.capacity >= 2101 and model.content.shape[0] == model.item_emb.capacity
    assert model.version == 3 and model.samples_trained == 2100


def test_purchases_weigh_more_than_clicks():
    model = Recommender(RecommenderConfig(**SMALL))
    assert model.sample_weight("purchase") > model.sample_weight("click") == 1.0


def test_content_vector_reaches_the_item_tower():
    model = Recommender(RecommenderConfig(**SMALL))
    model.learn_many([Sample("u", "a", (), 1.0), Sample("u", "b", (), 1.0)])
    with torch.no_grad():
        model.content_proj.weight.fill_(0.1)
    before = dict(zip(*model.score_items("u", []), strict=True))
    model.set_content("a", torch.ones(8))
    after = dict(zip(*model.score_items("u", []), strict=True))
    assert after["a"] != before["a"] and after["b"] == before["b"]
