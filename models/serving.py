"""What the HTTP API answers, as plain functions of the model (tested without a worker).

* :func:`recommend_for` – the user's top-k unseen items; users the model cannot personalise (never
  seen, no history) get the most popular items instead, and the answer says so.
* :func:`parse_k` – the ``k`` query parameter, validated with a message a client can act on.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

from streamrec.models.recommender import Recommender

MAX_K = 1000


@dataclass(frozen=True)
class Recommendation:
    items: list[tuple[str, float]] = field(default_factory=list)
    fallback: str | None = None  # "popular" when the list is not personalised
    model_version: int = 0


def parse_k(raw: str | None, default: int = 20, maximum: int = MAX_K) -> int:
    """``k`` from a query string: an integer in ``1..maximum``; ValueError says what was wrong."""
    if raw is None or raw == "":
        return default
    try:
        k = int(raw)
    except ValueError:
        raise ValueError(f"k must be an integer between 1 and {maximum}, got {raw!r}") from None
    if not 1 <= k <= maximum:
        raise ValueError(f"k must be between 1 and {maximum}, got {k}")
    return k


def recommend_for(
    model: Recommender,
    user_id: str,
    history: Sequence[str],
    seen: Collection[str],
    k: int,
    popular: Callable[[int, Collection[str]], list[tuple[str, float]]],
) -> Recommendation:
    """Top ``k`` items for ``user_id``, excluding ``seen``; popular items when it cannot be personal.

    A user with a history but no row of its own (rare ids share the fallback row) is still
    personalised through the history; only a user with neither falls back.
    """
    if user_id not in model.users and not history:
        return Recommendation(popular(k, seen), fallback="popular", model_version=model.version)
    return Recommendation(model.recommend(user_id, history, k, exclude=set(seen)), model_version=model.version)
