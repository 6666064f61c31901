import math

import pytest

from streamrec.models.augmentation.budget import AdaptiveRatio
from streamrec.models.rate_limit import TokenBucket


def test_cold_users_and_items_get_the_most_heavy_users_none():
    ratio = AdaptiveRatio(max_per_event=4, user_scale=10, item_scale=20, heavy_user_events=100)
    assert ratio(0, 0) == 4 and ratio(0, 10_000) == 4 and ratio(50, 0) == 4  # the colder side decides
    assert ratio(10, 10_000) == round(4 * math.exp(-1)) == 1
    assert ratio(60, 1_000) == 0  # both well known
    assert ratio(100, 0) == 0 and ratio(5_000, 0) == 0  # heavy user: never, even on a new item
    counts = [ratio(n, 10_000) for n in range(0, 40)]
    assert counts == sorted(counts, reverse=True)  # fewer as the user becomes known


def test_adaptive_ratio_rejects_bad_scales():
    with pytest.raises(ValueError):
        AdaptiveRatio(user_scale=0)


def test_token_bucket_grants_a_burst_then_the_rate():
    bucket = TokenBucket(rate_per_s=10, burst=5)
    assert bucket.take(3, now=0.0) == 3 and bucket.take(3, now=0.0) == 2 and bucket.take(3, now=0.0) == 0
    assert bucket.take(10, now=0.3) == 3  # 0.3 s at 10/s
    assert bucket.take(10, now=100.0) == 5  # refills only up to the burst
    granted = sum(bucket.take(4, now=100.0 + t / 10) for t in range(1, 101))  # 10 s more, asking 40/s
    assert granted == 100  # the rate, not the demand


def test_token_bucket_ignores_time_going_backwards_and_is_deterministic():
    def run():
        bucket = TokenBucket(rate_per_s=2, burst=2)
        return [bucket.take(2, now) for now in (10.0, 9.0, 10.5, 11.0, 11.0, 20.0)]

    assert run() == run() == [2, 0, 1, 1, 0, 2]


def test_token_bucket_rejects_negative_rates():
    with pytest.raises(ValueError):
        TokenBucket(rate_per_s=-1, burst=1)


def test_take_all_is_all_or_nothing():
    bucket = TokenBucket(rate_per_s=4, burst=8)
    assert bucket.take_all(8, now=0.0)
    assert not bucket.take_all(8, now=1.0)  # 4 tokens back: not enough, and none spent
    assert bucket.take_all(8, now=2.0)


def test_an_llm_budget_below_the_candidates_per_expansion_still_lets_expansions_through():
    from streamrec.models.augmentation.pipeline import Augmentation, AugmentationConfig

    augmentation = Augmentation(AugmentationConfig(llm_budget_per_s=4, llm_candidates=8))
    assert augmentation.llm_bucket.take_all(8, now=0.0)
