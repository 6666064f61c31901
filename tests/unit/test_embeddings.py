import numpy as np
import pytest
import torch

from streamrec.models.embeddings import ChangeTracker, EmbeddingRecord
from streamrec.models.rate_limit import TokenBucket
from streamrec.models.recommender import Recommender, RecommenderConfig
from tests.unit.test_recommender import SMALL, planted_stream


@pytest.mark.parametrize("encoding", ["json", "binary"])
def test_records_round_trip_in_both_encodings(encoding):
    record = EmbeddingRecord("item", "sku-ß9", np.array([0.5, -1.25, 3.0], dtype=np.float32), 42, 1_714_557_600_000)
    decoded = EmbeddingRecord.decode(record.encode(encoding))
    assert (decoded.kind, decoded.id, decoded.model_version, decoded.updated_at_ms) == (
        "item",
        "sku-ß9",
        42,
        1_714_557_600_000,
    )
    assert decoded.vector.tolist() == [0.5, -1.25, 3.0] and decoded.vector.dtype == np.float32
    assert record.key == "item:sku-ß9".encode()


def test_binary_encoding_is_compact():
    record = EmbeddingRecord("user", "u1", np.random.default_rng(0).normal(size=64).astype(np.float32), 7, 0)
    assert len(record.encode("binary")) == 4 + 1 + 1 + 2 + 8 + 8 + 2 + 2 + 64 * 4
    assert len(record.encode("binary")) * 3 < len(record.encode("json"))


def test_json_record_with_a_wrong_dim_is_rejected():
    raw = b'{"id":"u","kind":"user","dim":3,"vector":[1.0],"model_version":1,"updated_at_ms":0}'
    with pytest.raises(ValueError, match="dim says 3"):
        EmbeddingRecord.decode(raw)


def test_change_tracker_publishes_new_and_moved_vectors_only():
    tracker = ChangeTracker(threshold=0.1)
    vectors = np.array([[1.0, 0.0], [0.0, 2.0]])
    assert tracker.changed(["a", "b"], vectors) == [0, 1]
    tracker.mark_published("a", vectors[0])
    tracker.mark_published("b", vectors[1])
    moved = np.array([[1.05, 0.0], [0.0, 2.5]])  # a moved 5%, b moved 25%
    assert tracker.changed(["a", "b"], moved) == [1]
    tracker.forget("a")
    assert tracker.changed(["a"], moved[:1]) == [0]


def test_token_bucket_caps_the_rate():
    bucket = TokenBucket(rate_per_s=100, burst=50)
    assert bucket.take(80, now=0.0) == 50  # the burst
    assert bucket.take(80, now=0.1) == 10  # 0.1 s later: 10 more
    granted = sum(bucket.take(1000, now=0.1 + t / 10) for t in range(1, 11))
    assert granted == 100  # one more second: 100


def test_exported_vectors_are_the_ones_the_model_scores_with():
    samples, histories = planted_stream(events=500, seed=3)
    model = Recommender(RecommenderConfig(**SMALL))
    for i in range(0, 500, 100):
        model.learn_many(samples[i : i + 100])
    items = model.items.ids()
    history = histories["u2"][-5:]
    user = model.user_embeddings(["u2"], [history])[0]  # [user tower, 1]
    expected = model.item_embeddings(items) @ user  # [item tower, bias + trend prior]
    assert float(model.trend_weight.detach()) != 0.0  # the trend prior is in play
    ids, scores = model.score_items("u2", history)
    assert ids == items and torch.allclose(scores, expected, atol=1e-5)
