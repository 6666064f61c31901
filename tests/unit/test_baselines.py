import numpy as np
import pytest

from streamrec.models.baselines import RiverMF
from streamrec.models.popularity import ItemPopularity

DAY = 86_400.0


def test_decayed_popularity_prefers_recent_interactions():
    pop = ItemPopularity(half_life_s=DAY)
    for _ in range(4):
        pop.learn_one("u", "old-hit", ts_s=0.0)
    for _ in range(3):
        pop.learn_one("u", "new-hit", ts_s=2 * DAY)
    # 4 interactions two half-lives ago weigh 1; 3 fresh ones weigh 3
    assert pop.score("old-hit", now_s=2 * DAY) == pytest.approx(1.0)
    assert pop.score("new-hit", now_s=2 * DAY) == pytest.approx(3.0)
    assert pop.top(2) == ["new-hit", "old-hit"]
    assert pop.top(5, exclude={"new-hit"}) == ["old-hit"]
    scores = pop.score_batch(["anyone", "else"], ["old-hit", "new-hit", "unknown"])
    assert scores.shape == (2, 3) and (scores[0] == scores[1]).all()
    assert list(np.argsort(-scores[0])) == [1, 0, 2] and scores[0, 2] == 0.0


def test_decayed_popularity_survives_long_streams_without_overflow():
    pop = ItemPopularity(half_life_s=1.0)
    for t in range(0, 5000, 7):
        pop.learn_one("u", "a" if t % 2 else "b", ts_s=float(t))
    assert all(np.isfinite(m) for m in pop.mass.values())
    # t runs 0, 7, ..., 4991 (odd: "a"), 4998 (even: "b"); with a 1 s half-life the newest wins
    assert pop.top(2) == ["b", "a"]
    assert pop.score("b", now_s=4998.0) == pytest.approx(1.0, rel=0.01)


@pytest.mark.parametrize("kind", ["biased", "funk"])
def test_river_mf_vectorised_scores_equal_predict_one(kind):
    mf = RiverMF(kind=kind, n_factors=4, seed=1)
    for u in range(10):
        for i in range(u, u + 5):
            mf.learn_one(f"u{u}", f"i{i}")
    users, items = ["u3", "u7"], [f"i{i}" for i in range(14)]
    vectorised = mf.score_batch(users, items)
    assert vectorised.tolist() == [pytest.approx([mf.predict_one(u, i) for i in items]) for u in users]


def test_river_mf_learns_implicit_preferences():
    mf = RiverMF(kind="biased", n_factors=8, lr=0.05, negatives=3, seed=2)
    rng = np.random.default_rng(0)
    for _ in range(4000):
        u = int(rng.integers(20))
        liked = range(0, 10) if u % 2 == 0 else range(10, 20)
        mf.learn_one(f"u{u}", f"i{rng.choice(list(liked))}")
    items = [f"i{i}" for i in range(20)]
    even = mf.score_batch(["u0"], items)[0]
    assert even[:10].mean() > even[10:].mean()


def test_river_mf_rejects_unknown_kind():
    with pytest.raises(ValueError, match="unknown kind"):
        RiverMF(kind="svd")  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["biased", "funk"])
def test_river_mf_ranks_a_user_it_has_never_seen_by_popularity(kind):
    mf = RiverMF(kind=kind, n_factors=4, seed=3)
    for n in range(30):
        mf.learn_one(f"u{n}", "hit" if n % 3 else "niche", ts_s=float(n))
    items = ["niche", "never-chosen", "hit"]
    cold, known = mf.score_batch(["stranger", "u1"], items)
    assert cold.argmax() == 2 and cold[0] > cold[1]  # 20 of "hit", 10 of "niche", none of the other
    # a known user: MF as before (on items river knows; an unknown item has zero factors, not random ones)
    assert [known[0], known[2]] == pytest.approx([mf.predict_one("u1", i) for i in ("niche", "hit")])
    plain = RiverMF(kind=kind, n_factors=4, seed=3, cold_fallback=False)
    plain.learn_one("u0", "hit")
    without = plain.score_batch(["stranger"], items)[0]
    assert without[0] == without[1]  # without the fallback, a stranger cannot tell unknown items apart
