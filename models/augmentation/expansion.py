"""LLM-scored sample expansion for sparse users and cold items, the pure parts.

A user with a handful of events, or an item with none, gives the model little to learn from. An
LLM can guess more: shown a user's history and a candidate item, "Would this user like it?" is a
question it answers with world knowledge the interaction data lacks (LLMRec, Wei et al. 2024;
LlamaRec). The pipeline for one user:

1. :func:`candidates_by_content`: a few unseen items closest by content to the user's history
   (asking about random items would waste the LM on obvious Noes);
2. :func:`expansion_prompt` per candidate, scored by the LM as the log-odds ``log P(Yes) − log
   P(No)`` of its next token (the LM call lives in ``models/inference``; here it is just numbers);
3. :func:`pseudo_labels`: log-odds → confidences → pseudo-positive/negative samples, denoised by
   agreement with the current model and capped per user (:class:`PerUserCap`).

**Calibration.** Raw log-odds of a small LM are biased (many say "Yes" to everything) and their
scale is arbitrary, so they are z-scored within the user's (unseen) candidates:
``confidence = sigmoid(sharpness · z)``, how much more the LM likes this candidate than the
user's others (with ``sharpness`` 2, thresholds 0.8 / 0.2 mean ``|z| ≥ 0.7``). z-scoring alone
would always make some
candidates positive, so a pseudo-positive also needs raw log-odds above 0 (the LM did say Yes)
and a pseudo-negative below 0: calibration sharpens the LM's answer but never flips it. With
fewer than ``min_for_calibration`` candidates there is no set to z-score in and the raw log-odds
are used.

**Denoising by agreement** (as LLMRec prunes augmented edges that the model finds unlikely): a
pseudo-positive is kept only if the current model ranks the candidate in its top ``agree_top``
fraction of items for the user, a pseudo-negative only if in its bottom half
(``disagree_bottom``). Two noisy, fairly independent judges agreeing is much less noisy than
either; and samples the model already agrees with move it gently in the right direction instead
of fighting it with an LM's hallucination. Candidates the model cannot rank (no row yet: a truly
cold item) have no model opinion; ``keep_unscored`` decides whether the LM alone suffices for
them (off by default).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

from streamrec.models.recommender import Sample

LLM_POSITIVE = "llm_positive"
LLM_NEGATIVE = "llm_negative"


@dataclass(frozen=True)
class ExpansionConfig:
    enabled: bool = True
    candidates: int = 10  # candidates asked about per user (LM calls)
    positive_threshold: float = 0.8  # confidence at or above which a candidate is a pseudo-positive
    negative_threshold: float = 0.2  # confidence at or below which it is a pseudo-negative
    agree_top: float = 0.2  # keep a pseudo-positive only if the model ranks it in this top fraction
    disagree_bottom: float = 0.5  # keep a pseudo-negative only if the model ranks it in this bottom fraction
    keep_unscored: bool = False  # keep candidates the model cannot rank (percentile None/NaN)
    min_for_calibration: int = 3  # fewer candidates: use the raw log-odds
    sharpness: float = 2.0  # confidence = sigmoid(sharpness · z-score)
    positive_weight: float = 0.5  # weight at confidence 1
    negative_weight: float = 0.3  # weight at confidence 1 in "No"
    max_per_user: int = 10  # budget: pseudo-labels per user per window
    window_s: float = 86_400.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.negative_threshold < self.positive_threshold <= 1.0:
            raise ValueError("need 0 <= negative_threshold < positive_threshold <= 1")
        if not (0.0 < self.agree_top <= 1.0 and 0.0 < self.disagree_bottom <= 1.0):
            raise ValueError("agree_top and disagree_bottom must be in (0, 1]")


# --- 1. candidates -------------------------------------------------------------------------------


def candidates_by_content(
    history_items: Sequence[str],
    content_of: tuple[Sequence[str], np.ndarray],
    exclude: Collection[str] = (),
    k: int = 10,
) -> list[tuple[str, float]]:
    """The ``k`` items most similar (cosine) to the mean of the history's content vectors, best first.

    ``content_of`` is ``(item_ids, matrix)`` as :meth:`Recommender.item_content_matrix` returns it.
    History items without content are skipped; items with an all-zero vector, history items and
    ``exclude`` are never candidates. An empty list if no history item has content.
    """
    item_ids, matrix = content_of
    matrix = np.asarray(matrix, dtype=np.float32)
    if k <= 0 or not len(item_ids):
        return []
    norms = np.linalg.norm(matrix, axis=1)
    unit = np.divide(matrix, norms[:, None], out=np.zeros_like(matrix), where=norms[:, None] > 0)
    position = {item: n for n, item in enumerate(item_ids)}
    rows = [position[item] for item in history_items if item in position and norms[position[item]] > 0]
    if not rows:
        return []
    profile = unit[rows].mean(axis=0)
    if not np.linalg.norm(profile) > 0:
        return []
    similarity = unit @ (profile / np.linalg.norm(profile))
    blocked = {*history_items, *exclude}
    allowed = (norms > 0) & np.fromiter((item not in blocked for item in item_ids), bool, len(item_ids))
    candidates = np.flatnonzero(allowed)
    order = candidates[np.argsort(-similarity[candidates], kind="stable")][:k]
    return [(item_ids[n], float(similarity[n])) for n in order]


# --- 2. prompt -----------------------------------------------------------------------------------


def expansion_prompt(history_texts: Sequence[str], candidate_text: str, max_history: int = 10) -> str:
    """Ask whether a user with this history (the ``max_history`` most recent items) would like the candidate."""
    recent = [" ".join(text.split()) for text in history_texts[-max_history:]]
    listing = "\n".join(f"- {text}" for text in recent) or "- (nothing yet)"
    candidate = " ".join(candidate_text.split())
    return (
        f"A user recently liked these items, oldest first:\n{listing}\n"
        f"Would this user like the following item? {candidate}\nAnswer Yes or No."
    )


# --- 3. pseudo-labels ----------------------------------------------------------------------------


def rank_percentiles(
    item_ids: Sequence[str], scores: Sequence[float] | np.ndarray, candidates: Sequence[str]
) -> list[float | None]:
    """Each candidate's rank percentile under the model: 0.0 is its top item, 1.0 its bottom one.

    ``item_ids``/``scores`` are one user's row of :meth:`Recommender.score_batch`. A candidate
    the model does not score gets ``None``.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if len(item_ids) == 0:
        return [None] * len(candidates)
    position = {item: n for n, item in enumerate(item_ids)}
    denominator = max(len(item_ids) - 1, 1)
    percentiles: list[float | None] = []
    for item in candidates:
        n = position.get(item)
        percentiles.append(None if n is None else float((scores > scores[n]).sum()) / denominator)
    return percentiles


class PerUserCap:
    """At most ``max_per_user`` grants per user in any ``window_s`` of (event) time.

    Keeps one deque of grant times per user and forgets a user once the window has passed
    (:meth:`prune`, run by :meth:`take` at most once per window of event time, so it costs O(users)
    per window rather than per call), so memory follows the users active in the last two windows,
    not every sparse user ever seen. For :func:`pseudo_labels` build it as
    ``PerUserCap(config.max_per_user, config.window_s)`` and keep it across calls.

    >>> cap = PerUserCap(max_per_user=2, window_s=60.0)
    >>> [cap.take(f"u{n}", 3, now=10.0 * n) for n in range(3)]
    [2, 2, 2]
    >>> _ = [cap.take(f"u{n}", 1, now=10.0 * n) for n in range(3, 1000)]
    >>> len(cap) <= 13  # users granted in the last two windows only
    True
    """

    def __init__(self, max_per_user: int, window_s: float) -> None:
        if max_per_user < 0 or window_s <= 0:
            raise ValueError("max_per_user must be non-negative and window_s positive")
        self.max_per_user = max_per_user
        self.window_s = window_s
        self._grants: dict[str, deque[float]] = {}
        self._pruned_at = -math.inf

    def __len__(self) -> int:
        return len(self._grants)

    def used(self, user_id: str, now: float) -> int:
        grants = self._grants.get(user_id)
        if grants is None:
            return 0
        while grants and grants[0] <= now - self.window_s:
            grants.popleft()
        return len(grants)

    def take(self, user_id: str, n: int, now: float) -> int:
        """Ask for ``n`` grants for ``user_id`` at ``now``; returns how many are granted."""
        if now - self._pruned_at >= self.window_s:
            self.prune(now)
        granted = max(0, min(n, self.max_per_user - self.used(user_id, now)))
        if granted:
            self._grants.setdefault(user_id, deque()).extend([now] * granted)
        return granted

    def prune(self, now: float) -> None:
        """Forget users with no grant inside the window."""
        self._pruned_at = now
        for user_id in [u for u in self._grants if self.used(u, now) == 0]:
            del self._grants[user_id]


def calibrated_confidences(
    llm_scores: Sequence[float], min_for_calibration: int = 3, sharpness: float = 2.0
) -> list[float]:
    """``sigmoid(sharpness · z)`` of the log-odds z-scored within the set; ``sigmoid(raw)`` for small sets.

    Sets smaller than ``min_for_calibration`` have no meaningful mean and spread, and all-equal
    scores give 0.5 (the LM does not tell the candidates apart).
    """
    scores = np.asarray(llm_scores, dtype=np.float64)
    if len(scores) >= min_for_calibration:
        std = scores.std()
        scores = sharpness * (scores - scores.mean()) / std if std > 1e-9 else np.zeros_like(scores)
    return [1.0 / (1.0 + math.exp(-float(z))) for z in scores]


def pseudo_labels(
    user_id: str,
    history: Sequence[str],
    candidates: Sequence[str],
    llm_scores: Sequence[float],
    model_percentiles: Sequence[float | None],
    config: ExpansionConfig | None = None,
    ts_s: float = 0.0,
    cap: PerUserCap | None = None,
) -> list[Sample]:
    """Pseudo-positive (label 1) and pseudo-negative (label 0) samples for one user's candidates.

    ``llm_scores`` are the LM's log-odds (Yes − No) and ``model_percentiles`` the model's rank
    percentiles (:func:`rank_percentiles`), both aligned with ``candidates``. Weights are
    ``positive_weight × confidence`` and ``negative_weight × (1 − confidence)``. Candidates in
    ``history`` are skipped (before calibration). At most ``max_per_user`` per call, fewer if
    ``cap`` allows fewer; the most confident are kept. See the module docstring.
    """
    c = config or ExpansionConfig()
    if not (len(candidates) == len(llm_scores) == len(model_percentiles)):
        raise ValueError("candidates, llm_scores and model_percentiles must have the same length")
    seen = set(history)
    unseen = [n for n, item in enumerate(candidates) if item not in seen]
    if not c.enabled or not unseen:
        return []
    raws = [float(llm_scores[n]) for n in unseen]
    confidences = calibrated_confidences(raws, c.min_for_calibration, c.sharpness)
    picked: list[tuple[float, Sample]] = []  # (certainty, sample)
    for n, raw, confidence in zip(unseen, raws, confidences, strict=True):
        item, percentile = candidates[n], model_percentiles[n]
        unscored = percentile is None or math.isnan(percentile)
        if confidence >= c.positive_threshold and raw > 0:
            if (unscored and c.keep_unscored) or (not unscored and percentile <= c.agree_top):
                sample = Sample(user_id, item, tuple(history), c.positive_weight * confidence, ts_s, LLM_POSITIVE, 1.0)
                picked.append((confidence, sample))
        elif confidence <= c.negative_threshold and raw < 0:
            if (unscored and c.keep_unscored) or (not unscored and percentile >= 1.0 - c.disagree_bottom):
                weight = c.negative_weight * (1.0 - confidence)
                picked.append(
                    (1.0 - confidence, Sample(user_id, item, tuple(history), weight, ts_s, LLM_NEGATIVE, 0.0))
                )
    picked.sort(key=lambda pair: -pair[0])
    budget = min(len(picked), c.max_per_user)
    if cap is not None:
        budget = cap.take(user_id, budget, ts_s)
    return [sample for _, sample in picked[:budget]]
