"""Recommender checkpoints: tensors and plain containers only, loadable with ``torch.load(weights_only=True)``.

A checkpoint must never be able to run code when it is loaded, so nothing here is pickled as an
object: samples become lists, counters dicts, the replay buffer's random state a tuple. Only the
rows in use are saved (tables grow in chunks), and a restored model continues exactly where the
saved one stopped, including its negative-sampling generator.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import torch

from streamrec.models.recommender.sample import Sample
from streamrec.models.vocabulary import Vocabulary

if TYPE_CHECKING:
    from streamrec.models.recommender.model import Recommender


def recommender_state(model: Recommender) -> dict[str, Any]:
    """Everything needed to continue training ``model`` elsewhere (see the module docstring)."""
    users, items = model.users.num_rows, model.items.num_rows
    return {
        "config": {**asdict(model.config), "event_weights": dict(model.config.event_weights)},
        "users": model.users.state_dict(),
        "items": model.items.state_dict(),
        "user_emb": model.user_emb.state_dict(users),
        "item_emb": model.item_emb.state_dict(items),
        "item_bias": model.item_bias.state_dict(items),
        "content": model.content[:items].clone(),
        "popularity": model.popularity[:items].clone(),
        "content_proj": model.content_proj.state_dict(),
        "history_proj": model.history_proj.state_dict(),
        "sequence": model.sequence.state_dict(),
        "trend": model.trend.state_dict(items),
        "trend_weight": model.trend_weight.detach().clone(),
        "dense_optimizer": model.dense_optimizer.state_dict(),
        "replay": {
            "items": [
                [s.user_id, s.item_id, list(s.history), s.weight, s.ts_s, s.kind, s.label] for s in model.replay.items
            ],
            "seen": model.replay.seen,
            "rng": model.replay._rng.getstate(),
        },
        "version": model.version,
        "samples_trained": model.samples_trained,
        "augmented_trained": dict(model.augmented_trained),
        "augmented_dropped": dict(model.augmented_dropped),
        "generator": model._generator.get_state(),
    }


def restore_recommender(model: Recommender, state: dict[str, Any]) -> Recommender:
    """Load ``state`` (from :func:`recommender_state`) into ``model``, freshly built from its config."""
    model.users = Vocabulary.from_state_dict(state["users"])
    model.items = Vocabulary.from_state_dict(state["items"])
    model.user_emb.load_state_dict(state["user_emb"])
    model.item_emb.load_state_dict(state["item_emb"])
    model.item_bias.load_state_dict(state["item_bias"])
    model._grow()
    rows = state["content"].shape[0]
    model.content[:rows] = state["content"].to(model.device)
    model.popularity[:rows] = state["popularity"].to(model.device)
    model.content_proj.load_state_dict(state["content_proj"])
    model.history_proj.load_state_dict(state["history_proj"])
    model.sequence.load_state_dict(state.get("sequence", {}))  # checkpoints from before the order term: none
    if "trend" in state:  # checkpoints from before the trend prior start it afresh
        model.trend.load_state_dict(state["trend"])
        with torch.no_grad():
            model.trend_weight.copy_(state["trend_weight"])
    try:
        model.dense_optimizer.load_state_dict(state["dense_optimizer"])
    except ValueError:  # a checkpoint from before the trend prior has fewer dense parameters: Adam starts afresh
        pass
    replay = state["replay"]
    # entries are [user, item, history, weight, ts, kind] (older checkpoints) or [..., label]
    model.replay.items = [Sample(u, i, tuple(h), w, t, *rest) for u, i, h, w, t, *rest in replay["items"]]
    model.replay.seen = replay["seen"]
    model.replay._rng.setstate(_as_rng_state(replay["rng"]))
    model.version = state["version"]
    model.samples_trained = state["samples_trained"]
    model.augmented_trained = Counter(state.get("augmented_trained", {}))
    model.augmented_dropped = Counter(state.get("augmented_dropped", {}))
    model._generator.set_state(state["generator"])
    return model


def _as_rng_state(state: Any) -> tuple[Any, ...]:
    """``random.Random`` state, rebuilt as tuples (a checkpoint round trip may turn them into lists)."""
    version, internal, gauss = state
    return (version, tuple(internal), gauss)
