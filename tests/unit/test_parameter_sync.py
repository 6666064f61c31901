"""Item parameters shared between workers: two models that exchange contributions end up equal."""

import io

import numpy as np
import pytest
import torch

from streamrec.models.parameter_sync import ItemContribution, ItemParameterSync
from streamrec.models.recommender import Recommender, RecommenderConfig, Sample
from tests.unit.test_recommender import SMALL, planted_stream


class Worker:
    """A model and its sync state, trained on its own users like one stream worker."""

    def __init__(self, name: str, seed: int = 4) -> None:
        self.model = Recommender(RecommenderConfig(**SMALL, seed=seed))
        self.sync = ItemParameterSync(name)

    def train(self, samples: list[Sample]) -> None:
        for start in range(0, len(samples), 50):
            self.model.learn_many(samples[start : start + 50])
            self.sync.note_trained(self.model.take_touched()[1])

    def send(self, now_us: int | None = None) -> list[ItemContribution]:
        # through the wire format, as the topic carries them
        return [ItemContribution.decode(c.key, c.encode()) for c in self.sync.collect(self.model, now_us)]

    def receive(self, contributions: list[ItemContribution]) -> int:
        return self.sync.merge(self.model, contributions, now_s=0.0)

    def parameters(self, items: list[str]) -> np.ndarray:
        return self.model.item_parameters(items).numpy()


def split_by_user(samples: list[Sample]) -> tuple[list[Sample], list[Sample]]:
    """Users partitioned over two workers (even / odd user number); items are shared."""
    even = [s for s in samples if int(s.user_id[1:]) % 4 < 2]
    odd = [s for s in samples if int(s.user_id[1:]) % 4 >= 2]
    return even, odd


def test_two_workers_that_exchange_contributions_hold_the_same_item_parameters():
    samples, _ = planted_stream(events=1200, seed=2)
    mine, theirs = split_by_user(samples)
    a, b = Worker("a"), Worker("b")
    for round_ in range(3):  # train, exchange, train again: merges interleave with training
        third = slice(round_ * len(mine) // 3, (round_ + 1) * len(mine) // 3)
        a.train(mine[third])
        b.train(theirs[round_ * len(theirs) // 3 : (round_ + 1) * len(theirs) // 3])
        from_a, from_b = a.send(), b.send()
        assert from_a and from_b
        b.receive(from_a)
        a.receive(from_b)
    items = sorted({s.item_id for s in samples})
    assert set(a.model.items.ids()) == set(b.model.items.ids()) == set(items)
    np.testing.assert_allclose(a.parameters(items), b.parameters(items), rtol=1e-5, atol=1e-6)

    # each holds both workers' learning: not what either would have learned alone
    alone = Worker("alone")
    alone.train(mine)
    assert np.abs(alone.parameters(items) - a.parameters(items)).max() > 1e-3
    # and the sum of the contributions is exactly the change from the common starting point
    init = np.stack([a.model.initial_item_parameters(i).numpy() for i in items])
    total = np.stack([a.sync.own[i] + b.sync.own[i] for i in items])
    np.testing.assert_allclose(a.parameters(items), init + total, rtol=1e-5, atol=1e-5)


def test_contributions_are_idempotent_and_stale_ones_are_ignored():
    samples, _ = planted_stream(events=300, seed=3)
    a, b = Worker("a"), Worker("b")
    a.train(samples[:150])
    first = a.send(now_us=1_000)
    a.train(samples[150:])
    second = a.send(now_us=2_000)
    assert b.receive(second) == len(second)
    after = b.parameters(sorted(b.model.items.ids()))
    # the older totals arrive late, then the newest again: nothing moves
    assert b.receive(first) == 0 and b.sync.stats.stale >= len({c.item_id for c in first} & {c.item_id for c in second})
    assert b.receive(second) == 0
    np.testing.assert_array_equal(b.parameters(sorted(b.model.items.ids())), after)
    # a worker never applies its own records read back from the topic
    assert a.receive(second) == 0 and a.sync.stats.own_ignored == len(second)


def test_an_item_only_another_worker_saw_gets_a_row_even_below_min_count():
    a = Worker("a")
    b = Worker("b")
    b.model = Recommender(RecommenderConfig(**{**SMALL, "item_min_count": 3}, seed=4))
    a.train([Sample("u1", "rare", (), 1.0, 1.0), Sample("u2", "common", (), 1.0, 2.0)])
    assert b.receive(a.send()) == 2
    assert "rare" in b.model.items
    np.testing.assert_allclose(b.parameters(["rare"]), a.parameters(["rare"]), rtol=1e-6)
    assert b.model.samples_trained == 0 and b.model.item_popularity()[1].tolist() == [0.0, 0.0]
    assert b.model.items.row("rare") != 0  # its own row, not the shared fallback  # not a sighting


def test_a_worker_restored_from_an_older_checkpoint_replaces_what_it_published_since():
    """The crash loses training; the rewind redoes it; the others end up with the redone lineage only."""
    samples, _ = planted_stream(events=600, seed=4)
    mine, theirs = split_by_user(samples)
    a, b = Worker("a"), Worker("b")
    a.train(mine[: len(mine) // 2])
    b.train(theirs)
    b.receive(a.send(now_us=1_000))
    saved_model, saved_sync = a.model.state_dict(), a.sync.state_dict()
    buffer = io.BytesIO()
    torch.save({"model": saved_model, "sync": saved_sync}, buffer)
    a.train(mine[len(mine) // 2 :])
    b.receive(a.send(now_us=2_000))  # published, then the worker dies before its next checkpoint

    buffer.seek(0)
    payload = torch.load(buffer, weights_only=True)  # a checkpoint holds tensors and plain data only
    restored = Worker("a")
    restored.model = Recommender.from_state_dict(payload["model"])
    restored.sync = ItemParameterSync.from_state_dict(payload["sync"])
    assert restored.sync.worker_id == "a" and restored.sync.seq == 1_000
    restored.train(mine[len(mine) // 2 : len(mine) * 3 // 4])  # redoes part of the lost training
    redone = restored.send(now_us=3_000)
    assert all(c.seq == 3_000 for c in redone)
    b.receive(redone)
    restored.receive(b.send(now_us=3_500))
    items = sorted(set(restored.model.items.ids()) | set(b.model.items.ids()))
    np.testing.assert_allclose(restored.parameters(items), b.parameters(items), rtol=1e-5, atol=1e-6)


def test_the_wire_format_round_trips_and_rejects_other_records():
    c = ItemContribution("w1", "item/with/slashes", 42, np.arange(5, dtype=np.float32))
    back = ItemContribution.decode(c.key, c.encode())
    assert (back.worker_id, back.item_id, back.seq) == ("w1", "item/with/slashes", 42)
    np.testing.assert_array_equal(back.total, c.total)
    for key, value, message in (
        (b"no-slash", c.encode(), "is not '<worker>/<item>'"),
        (c.key, b"SREB" + c.encode()[4:], "not an item-parameter record"),
        (c.key, c.encode()[:-4], "does not hold 5 floats"),
        (c.key, b"xx", "shorter than the header"),
    ):
        with pytest.raises(ValueError, match=message):
            ItemContribution.decode(key, value)


def test_new_item_rows_start_from_their_id_whatever_the_arrival_order():
    first = Recommender(RecommenderConfig(**SMALL, seed=4))
    second = Recommender(RecommenderConfig(**SMALL, seed=4))
    first._register([Sample("u", item, ts_s=1.0) for item in ("x", "y", "z")])
    second._register([Sample("u", item, ts_s=1.0) for item in ("z", "x")])
    assert first.items.row("x") != second.items.row("x")
    for item in ("x", "z"):
        np.testing.assert_array_equal(first.item_parameters([item]), second.item_parameters([item]))
        np.testing.assert_array_equal(first.item_parameters([item])[0], first.initial_item_parameters(item))
    assert not torch.equal(first.initial_item_parameters("x"), first.initial_item_parameters("y"))
    other_seed = Recommender(RecommenderConfig(**SMALL, seed=5))
    assert not torch.equal(other_seed.initial_item_parameters("x"), first.initial_item_parameters("x"))
