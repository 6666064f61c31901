import math
import random

import pytest

from streamrec.models.augmentation.sequence import (
    MASK_ITEM,
    SEQ_CROP,
    SEQ_MASK,
    SEQ_REORDER,
    SequenceViews,
    SequenceViewsConfig,
    crop,
    mask,
    reorder,
)

HISTORY = tuple(f"i{n}" for n in range(10))


def test_crop_is_a_contiguous_run_of_ceil_eta_l():
    rng = random.Random(0)
    for _ in range(50):
        view = crop(HISTORY, 0.6, rng)
        assert len(view) == math.ceil(0.6 * 10)
        start = HISTORY.index(view[0])
        assert view == HISTORY[start : start + len(view)]


def test_mask_replaces_a_fraction_by_the_reserved_token_and_keeps_positions():
    view = mask(HISTORY, 0.3, random.Random(1))
    assert len(view) == len(HISTORY) and view.count(MASK_ITEM) == 3
    assert all(v == h for v, h in zip(view, HISTORY, strict=True) if v != MASK_ITEM)
    assert mask(("a", "b"), 1.0, random.Random(1)).count(MASK_ITEM) == 1  # never masks everything
    assert MASK_ITEM != MASK_ITEM.strip()  # the contract strips ids: no real id can equal it


def test_reorder_shuffles_one_stretch_and_keeps_the_rest():
    rng = random.Random(2)
    for _ in range(50):
        view = reorder(HISTORY, 0.4, rng)
        assert sorted(view) == sorted(HISTORY)
        moved = [n for n, (v, h) in enumerate(zip(view, HISTORY, strict=True)) if v != h]
        if moved:
            assert moved[-1] - moved[0] < math.ceil(0.4 * 10)


def test_expand_makes_one_of_each_view_for_a_budget_of_three():
    views = SequenceViews(SequenceViewsConfig(weight=0.4))
    samples = views.expand("u", "target", HISTORY, 12.0, n=3)
    assert sorted(s.kind for s in samples) == sorted([SEQ_CROP, SEQ_MASK, SEQ_REORDER])
    for s in samples:
        assert (s.user_id, s.item_id, s.ts_s, s.weight, s.label) == ("u", "target", 12.0, 0.4, 1.0)
        assert s.history != HISTORY and not s.is_real


def test_budget_switch_and_min_length():
    assert len(SequenceViews().expand("u", "t", HISTORY, 0.0, n=10)) == 3  # max_per_event
    assert len(SequenceViews(SequenceViewsConfig(max_per_event=5)).expand("u", "t", HISTORY, 0.0, n=2)) == 2
    assert SequenceViews().expand("u", "t", HISTORY, 0.0, n=0) == []
    assert SequenceViews(SequenceViewsConfig(enabled=False)).expand("u", "t", HISTORY, 0.0, n=3) == []
    assert SequenceViews(SequenceViewsConfig(min_length=4)).expand("u", "t", HISTORY[:3], 0.0, n=3) == []
    only_crops = SequenceViews(SequenceViewsConfig(operations=(SEQ_CROP,)))
    assert {s.kind for s in only_crops.expand("u", "t", HISTORY, 0.0, n=3)} == {SEQ_CROP}


def test_views_identical_to_the_history_are_not_made():
    # reordering a history of one repeated item changes nothing
    views = SequenceViews(SequenceViewsConfig(operations=(SEQ_REORDER,)))
    assert views.expand("u", "t", ("a", "a", "a", "a"), 0.0, n=3) == []


def test_same_seed_same_views():
    def run(seed):
        views = SequenceViews(SequenceViewsConfig(seed=seed))
        return [views.expand("u", "t", HISTORY, 0.0, n=3) for _ in range(5)]

    assert run(3) == run(3) and run(3) != run(4)


def test_bad_ratios_are_rejected():
    with pytest.raises(ValueError):
        SequenceViewsConfig(crop_ratio=0.0)
    with pytest.raises(ValueError):
        SequenceViewsConfig(operations=("seq_rotate",))
