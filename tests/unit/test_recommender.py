import random

import numpy as np
import torch

from streamrec.models.embedding_store import EmbeddingStore
from streamrec.models.evaluation import rank_ranges
from streamrec.models.recommender import Recommender, RecommenderConfig, Sample
from streamrec.models.replay_buffer import ReservoirBuffer

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
            row = scores.numpy()[None]
            beaten, tied = rank_ranges(row, np.array([ids.index(s.item_id)]), np.ones_like(row, bool))
            ranks.append(int(beaten[0]) + 1 + int(tied[0]) / 2)  # the expected rank under a random tie-break
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


# --- labels, augmented samples, content neighbours -------------------------------------------------


def score_of(model, user, item, history=()):
    ids, scores = model.score_items(user, list(history))
    return float(scores[ids.index(item)])


def test_sample_defaults_to_a_real_positive():
    s = Sample("u", "i")
    assert (s.kind, s.label, s.is_real) == ("real", 1.0, True)
    assert not Sample("u", "i", kind="negative", label=0.0).is_real


def test_explicit_negatives_push_their_items_score_down_for_that_user():
    samples, _ = planted_stream(events=600, seed=2)
    twins = [Recommender(RecommenderConfig(**SMALL, seed=7)) for _ in range(2)]
    for model in twins:
        for i in range(0, 400, 100):
            model.learn_many(samples[i : i + 100])
    # i3 is in u0's own community: the model likes it for u0
    control, negated = twins
    start = score_of(negated, "u0", "i3")
    assert start == score_of(control, "u0", "i3")
    for i in range(400, 600, 50):
        control.learn_many(samples[i : i + 50])
        negated.learn_many([*samples[i : i + 50], *[Sample("u0", "i3", (), 1.0, 500.0, "negative", 0.0)] * 5])
    after = score_of(negated, "u0", "i3")
    assert after < start - 0.25 and after < score_of(control, "u0", "i3") - 0.4
    ids, scores = negated.score_items("u0", [])
    assert (scores > after).sum() > len(ids) // 2  # now in the bottom half of u0's ranking
    # mostly for that user: another user of the same community loses much less
    assert start - after > 2 * (score_of(control, "u2", "i3") - score_of(negated, "u2", "i3"))
    assert negated.augmented_trained == {"negative": 20} and negated.samples_trained == control.samples_trained


def test_augmented_samples_are_no_sightings_popularity_replay_or_samples_trained():
    model = Recommender(RecommenderConfig(**SMALL, item_min_count=2, user_min_count=2))
    model.learn_many([Sample("u", "a", (), 1.0, 1.0), Sample("u", "a", (), 1.0, 2.0), Sample("v", "b", (), 1.0, 3.0)])
    assert "a" in model.items and "b" not in model.items  # b seen once: still on the fallback row
    popularity = model.popularity.clone()
    augmented = [
        Sample("u", "b", (), 0.5, 4.0, "content_neighbour"),  # b has no row: dropped, and no sighting
        Sample("u", "a", ("b",), 0.5, 4.0, "seq_crop"),
        Sample("w", "a", (), 0.5, 4.0, "llm_positive"),  # w unknown: trained on the fallback user row
        Sample("u", "a", (), 0.2, 4.0, "negative", 0.0),
    ]
    for _ in range(3):
        model.learn_many(augmented)
    assert "b" not in model.items and "w" not in model.users and model.items.report().pending == 1
    assert torch.equal(model.popularity, popularity)
    assert model.samples_trained == 3 and model.replay.seen == 3
    assert all(s.is_real for s in model.replay.items)
    assert model.augmented_trained == {"seq_crop": 3, "llm_positive": 3, "negative": 3}
    assert model.augmented_dropped == {"content_neighbour": 3}
    # a real sighting still counts as one: the second real "b" gives it a row
    model.learn_many([Sample("v", "b", (), 1.0, 5.0)])
    assert "b" in model.items


def test_masked_history_positions_use_the_fallback_row():
    from streamrec.models.augmentation.sequence import MASK_ITEM

    model = Recommender(RecommenderConfig(**SMALL))
    model.learn_many([Sample("u", "a", (), 1.0, 1.0), Sample("u", "b", ("a",), 1.0, 2.0)])
    rows, weights = model._history_rows([("a", MASK_ITEM, "b")])
    assert rows[0, -2].item() == 0 and weights[0, -2].item() > 0  # counted, on the fallback row
    assert model.learn_many([Sample("u", "b", ("a", MASK_ITEM), 0.5, 3.0, "seq_mask")]) > 0
    assert MASK_ITEM not in model.items


def test_checkpoint_round_trip_keeps_labels_counters_and_reads_old_replay_entries():
    import io

    samples, _ = planted_stream(events=300, seed=3)
    model = Recommender(RecommenderConfig(**SMALL, replay_capacity=50, seed=4))
    for i in range(0, 300, 100):
        model.learn_many([*samples[i : i + 100], Sample("u1", "i30", (), 0.3, float(i), "negative", 0.0)])
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert all(len(entry) == 7 for entry in state["replay"]["items"])
    twin = Recommender.from_state_dict(state)
    assert twin.replay.items == model.replay.items
    assert twin.augmented_trained == model.augmented_trained == {"negative": 3}
    batch = [Sample("u1", "i3", ("i4",), 1.0, 400.0), Sample("u2", "i5", (), 0.3, 400.0, "negative", 0.0)]
    assert twin.learn_many(batch) == model.learn_many(batch)

    old = model.state_dict()  # a checkpoint from before labels: 6-field replay entries, no counters
    old["replay"]["items"] = [entry[:6] for entry in old["replay"]["items"]]
    del old["augmented_trained"], old["augmented_dropped"]
    restored = Recommender.from_state_dict(old)
    assert restored.replay.items == model.replay.items and not restored.augmented_trained


def test_content_neighbours_rank_by_content_cosine_and_skip_items_without_content():
    model = Recommender(RecommenderConfig(**SMALL))
    model.learn_many([Sample("u", item, (), 1.0, 1.0) for item in "abcde"])
    vectors = {"a": [1, 0, 0, 0, 0, 0, 0, 0], "b": [2, 1, 0, 0, 0, 0, 0, 0], "c": [0, 1, 0, 0, 0, 0, 0, 0]}
    vectors["d"] = [-1, 0, 0, 0, 0, 0, 0, 0]
    for item, vector in vectors.items():
        model.set_content(item, torch.tensor(vector, dtype=torch.float32))
    assert model.has_content("a") and not model.has_content("e") and not model.has_content("unknown")
    ids, content = model.item_content_matrix()
    assert sorted(ids) == list("abcde") and content.shape == (5, 8)
    assert content[ids.index("e")].abs().sum() == 0
    neighbours = model.content_neighbours("a", 10)
    assert [item for item, _ in neighbours] == ["b", "c", "d"]  # e has no content; a is not its own
    assert abs(neighbours[0][1] - 2 / 5**0.5) < 1e-6 and abs(neighbours[2][1] + 1) < 1e-6
    assert model.content_neighbours("a", 1) == neighbours[:1]
    assert model.content_neighbours("e", 3) == [] and model.content_neighbours("unknown", 3) == []
    model.set_content("c", torch.tensor([1, 0, 0, 0, 0, 0, 0, 0], dtype=torch.float32))  # the cache follows
    assert model.content_neighbours("a", 1)[0][0] == "c"


def test_item_popularity_counts_real_interactions_only():
    model = Recommender(RecommenderConfig(**SMALL))
    model.learn_many([Sample("u", "a"), Sample("v", "a"), Sample("u", "b"), Sample("u", "b", kind="seq_crop")])
    item_ids, counts = model.item_popularity()
    assert dict(zip(item_ids, counts.tolist(), strict=True)) == {"a": 2.0, "b": 1.0}
    assert (model.item_count("a"), model.item_count("b"), model.item_count("never-seen")) == (2, 1, 0)
