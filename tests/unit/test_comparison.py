import numpy as np
import pytest

from streamrec.models.comparison import paired_difference, paired_over_seeds


def test_identical_models_differ_by_exactly_nothing():
    users = [f"u{n % 50}" for n in range(1000)]
    values = np.random.default_rng(0).random(1000)
    found = paired_difference(users, values, values.copy())
    assert (found.difference, found.low, found.high) == (0.0, 0.0, 0.0) and not found.excludes_zero
    assert "no winner" in found.describe("x", "y")


def test_a_consistent_gain_over_many_users_excludes_zero_and_names_the_winner():
    rng = np.random.default_rng(1)
    users = [f"u{n % 200}" for n in range(4000)]
    b = (rng.random(4000) < 0.10).astype(float)
    a = np.maximum(b, (rng.random(4000) < 0.05).astype(float))  # a hits wherever b does, and more
    found = paired_difference(users, a, b, seed=2)
    assert found.low > 0 and found.low <= found.difference <= found.high
    assert found.ratio == pytest.approx(a.mean() / b.mean()) and found.ratio_low > 1
    assert found.users == 200 and found.events == 4000
    assert found.describe("streamrec", "popularity").endswith("streamrec is better")


def test_the_interval_resamples_users_not_events():
    """The same events, concentrated in fewer users, leave more doubt: users are what varies."""
    rng = np.random.default_rng(3)
    gains = np.repeat(rng.normal(0.02, 0.2, size=20), 100)  # each user's own gain, on 100 events each
    few_users = [f"u{n // 100}" for n in range(2000)]
    each_event_a_user = [f"e{n}" for n in range(2000)]
    wide = paired_difference(few_users, gains, np.zeros(2000))
    narrow = paired_difference(each_event_a_user, gains, np.zeros(2000))
    assert wide.difference == pytest.approx(narrow.difference)
    assert (wide.high - wide.low) > 5 * (narrow.high - narrow.low)


def test_runs_over_seeds_compare_the_mean_and_keep_each_seed():
    users = ["a", "b", "c", "d"] * 25
    a_runs = [np.full(100, 0.3), np.full(100, 0.5)]
    found = paired_over_seeds(users, a_runs, [np.full(100, 0.2)])  # one run of a model without randomness
    assert found.difference == pytest.approx(0.2) and found.per_seed == pytest.approx((0.1, 0.3))


def test_values_must_pair_up_event_by_event():
    with pytest.raises(ValueError, match="one user per event"):
        paired_difference(["a", "b"], np.zeros(2), np.zeros(3))
    with pytest.raises(ValueError, match="no events"):
        paired_difference([], np.zeros(0), np.zeros(0))
