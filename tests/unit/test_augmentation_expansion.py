import math

import numpy as np
import pytest

from streamrec.models.augmentation.expansion import (
    LLM_NEGATIVE,
    LLM_POSITIVE,
    ExpansionConfig,
    PerUserCap,
    calibrated_confidences,
    candidates_by_content,
    expansion_prompt,
    pseudo_labels,
    rank_percentiles,
)

ITEM_IDS = ["a", "b", "c", "d", "e", "f"]
CONTENT = np.array(
    [
        [1.0, 0.0, 0.0],  # a
        [0.0, 1.0, 0.0],  # b
        [1.0, 1.0, 0.0],  # c: between a and b
        [2.0, 0.1, 0.0],  # d: close to a
        [0.0, 0.0, 0.0],  # e: no content
        [0.0, 0.0, 1.0],  # f: unrelated
    ]
)


def test_candidates_are_unseen_items_nearest_the_history_profile():
    candidates = candidates_by_content(["a", "b", "e"], (ITEM_IDS, CONTENT), exclude={"x"}, k=10)
    assert [item for item, _ in candidates] == ["c", "d", "f"]  # a, b in the history; e has no content
    assert math.isclose(candidates[0][1], 1.0, abs_tol=1e-6)
    assert [i for i, _ in candidates_by_content(["a"], (ITEM_IDS, CONTENT), exclude={"d"}, k=1)] == ["c"]
    assert candidates_by_content(["e", "unknown"], (ITEM_IDS, CONTENT), k=3) == []  # nothing to go by
    assert candidates_by_content(["a"], ([], np.zeros((0, 3))), k=3) == []


def test_expansion_prompt_lists_the_recent_history_and_asks_yes_or_no():
    prompt = expansion_prompt([f"Movie {n}." for n in range(15)], "Toy Story (1995).\nAnimation.")
    assert "- Movie 14." in prompt and "- Movie 4." not in prompt  # the 10 most recent
    assert "Would this user like the following item? Toy Story (1995). Animation." in prompt
    assert prompt.endswith("Answer Yes or No.")
    assert "(nothing yet)" in expansion_prompt([], "X")


def test_rank_percentiles_put_the_models_top_item_at_zero():
    percentiles = rank_percentiles(["a", "b", "c", "d", "e"], [5.0, 1.0, 3.0, 4.0, 2.0], ["a", "b", "c", "zz"])
    assert percentiles == [0.0, 1.0, 0.5, None]
    assert rank_percentiles([], [], ["a"]) == [None]


def test_calibration_z_scores_within_the_set_and_falls_back_to_raw_log_odds():
    confidences = calibrated_confidences([4.0, 5.0, 6.0], sharpness=1.0)  # a yes-sayer: all log-odds > 0
    assert confidences[1] == 0.5 and confidences[0] < 0.5 < confidences[2]
    z = 1 / np.std([4.0, 5.0, 6.0])
    assert confidences[2] == pytest.approx(1 / (1 + math.exp(-z)))
    assert calibrated_confidences([4.0, 5.0, 6.0], sharpness=2.0)[2] == pytest.approx(1 / (1 + math.exp(-2 * z)))
    assert calibrated_confidences([2.0, -2.0]) == pytest.approx([1 / (1 + math.exp(-2)), 1 / (1 + math.exp(2))])
    assert calibrated_confidences([3.0, 3.0, 3.0]) == [0.5, 0.5, 0.5]


CANDIDATES = ["p1", "p2", "n1", "n2", "m1", "m2"]
SCORES = [6.0, 5.0, -6.0, -5.0, 0.5, 0.0]
AGREE = [0.05, 0.1, 0.9, 0.7, 0.3, 0.5]  # the model likes p1, p2 and dislikes n1, n2


def config(**overrides):
    base = {"positive_threshold": 0.8, "negative_threshold": 0.2, "agree_top": 0.2, "max_per_user": 10}
    return ExpansionConfig(**{**base, **overrides})


def test_pseudo_labels_pick_confident_candidates_the_model_agrees_with():
    samples = pseudo_labels("u", ("h1", "h2"), CANDIDATES, SCORES, AGREE, config(), ts_s=9.0)
    by_item = {s.item_id: s for s in samples}
    assert set(by_item) == {"p1", "p2", "n1", "n2"}  # m1, m2: the LM is unsure
    confidences = dict(zip(CANDIDATES, calibrated_confidences(SCORES), strict=True))
    for item in ("p1", "p2"):
        s = by_item[item]
        assert (s.kind, s.label, s.user_id, s.history, s.ts_s) == (LLM_POSITIVE, 1.0, "u", ("h1", "h2"), 9.0)
        assert s.weight == pytest.approx(0.5 * confidences[item])
    for item in ("n1", "n2"):
        s = by_item[item]
        assert (s.kind, s.label) == (LLM_NEGATIVE, 0.0)
        assert s.weight == pytest.approx(0.3 * (1 - confidences[item]))
    assert [s.item_id for s in samples] == ["n1", "p1", "n2", "p2"]  # most confident first


def test_disagreement_with_the_model_prunes_a_pseudo_label():
    disagree = [0.6, 0.15, 0.1, 0.45, 0.3, 0.5]  # p1 ranked low, n1 and n2 ranked high by the model
    samples = pseudo_labels("u", (), CANDIDATES, SCORES, disagree, config())
    assert [s.item_id for s in samples] == ["p2"]
    unscored = [None, None, float("nan"), None, None, None]  # the model cannot rank them (no row)
    assert pseudo_labels("u", (), CANDIDATES, SCORES, unscored, config()) == []
    kept = pseudo_labels("u", (), CANDIDATES, SCORES, unscored, config(keep_unscored=True))
    assert {s.item_id for s in kept} == {"p1", "p2", "n1", "n2"}


def test_calibration_never_flips_the_lms_answer():
    # every candidate gets a Yes; z-scoring makes the weakest Yes look like a No, but it is not one
    samples = pseudo_labels("u", (), ["a", "b", "c"], [2.0, 8.0, 9.0], [0.9, 0.0, 0.1], config())
    assert [(s.item_id, s.label) for s in samples] == [("c", 1.0)]


def test_seen_items_budget_and_switch():
    samples = pseudo_labels("u", ("p1",), CANDIDATES, SCORES, AGREE, config(max_per_user=2))
    assert [s.item_id for s in samples] == ["p2", "n1"]  # p1 seen; the two most confident of the rest
    assert pseudo_labels("u", (), CANDIDATES, SCORES, AGREE, config(enabled=False)) == []
    with pytest.raises(ValueError):
        pseudo_labels("u", (), CANDIDATES, SCORES[:2], AGREE, config())


def test_per_user_cap_is_a_sliding_window():
    cap = PerUserCap(max_per_user=3, window_s=100.0)
    assert cap.take("u", 2, now=0.0) == 2 and cap.take("u", 5, now=10.0) == 1 and cap.take("u", 1, now=50.0) == 0
    assert cap.take("v", 3, now=50.0) == 3  # per user
    assert cap.take("u", 5, now=100.0) == 2  # the two from t=0 left the window
    assert cap.used("u", 110.0) == 2  # the one from t=10 left too
    cap.prune(now=1_000.0)
    assert len(cap) == 0


def test_per_user_cap_forgets_users_by_itself_so_memory_follows_the_active_users():
    """Nothing calls prune() from outside: take() does, once per window of event time."""
    cap = PerUserCap(max_per_user=2, window_s=60.0)
    for n in range(10_000):  # one new sparse user every 10 s of event time
        assert cap.take(f"u{n}", 1, now=10.0 * n) == 1
        assert len(cap) <= 13  # the users granted in the last two windows, never all 10,000
    assert cap.take("u9999", 5, now=99_990.0) == 1  # the live user's own grants are kept


def test_pseudo_labels_respect_the_cap_across_calls():
    cap = PerUserCap(max_per_user=3, window_s=3600.0)
    first = pseudo_labels("u", (), CANDIDATES, SCORES, AGREE, config(), ts_s=0.0, cap=cap)
    second = pseudo_labels("u", (), CANDIDATES, SCORES, AGREE, config(), ts_s=60.0, cap=cap)
    later = pseudo_labels("u", (), CANDIDATES, SCORES, AGREE, config(), ts_s=7200.0, cap=cap)
    assert (len(first), len(second), len(later)) == (3, 0, 3)
    assert len(pseudo_labels("w", (), CANDIDATES, SCORES, AGREE, config(), ts_s=60.0, cap=cap)) == 3


def test_config_rejects_inverted_thresholds():
    with pytest.raises(ValueError):
        ExpansionConfig(positive_threshold=0.2, negative_threshold=0.8)
