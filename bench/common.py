"""What the benchmark scripts share: an isolated environment on the local broker, the in-process replay."""

from __future__ import annotations

import socket
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any

from models.training import Event, Observation


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_env(partitions: int = 4, **extra: str) -> dict[str, str]:
    """Environment for one benchmark run: its own broker ports, state directory, app id and topics."""
    tag = f"bench-{uuid.uuid4().hex[:6]}"
    env = {
        "STREAMREC_STATE_DIR": tempfile.mkdtemp(prefix="streamrec-bench-"),
        "STREAMREC_LOCAL_KAFKA_PORT": str(free_port()),
        "STREAMREC_LOCAL_KAFKA_CONTROLLER_PORT": str(free_port()),
        "STREAMREC_WEB_PORT": str(free_port()),
        "STREAMREC_APP_ID": tag,
        "STREAMREC_TOPIC_CLICKS": f"{tag}.clicks",
        "STREAMREC_TOPIC_PURCHASES": f"{tag}.purchases",
        "STREAMREC_TOPIC_CATALOGUE": f"{tag}.catalogue",
        "STREAMREC_TOPIC_DEAD_LETTERS": f"{tag}.dead-letters",
        "STREAMREC_TOPIC_EMBEDDINGS": f"{tag}.embeddings",
        "STREAMREC_TOPIC_PARTITIONS": str(partitions),
        "STREAMREC_LOG_LEVEL": "warning",
        "PYTHONUNBUFFERED": "1",
    }
    env.update({f"STREAMREC_{k.upper()}": v for k, v in extra.items()})
    return env


def observation_batches(dataset: Any, batch_size: int, history_length: int, limit: int | None = None
                        ) -> Iterator[list[Observation]]:  # fmt: skip
    """A dataset's events in time order, in micro-batches, each with the user's history (the last
    ``history_length`` items) and seen items from just before it, as the stream worker's user state
    keeps them (clicks and purchases alike)."""
    histories: dict[str, list[str]] = {}
    seen: dict[str, set[str]] = {}
    batch: list[Observation] = []
    for events, raw in enumerate(dataset.interaction_events()):
        if limit is not None and events >= limit:
            break
        event = Event(raw["user_id"], raw["item_id"], raw["type"], raw["ts"])
        history = histories.setdefault(event.user_id, [])
        user_seen = seen.setdefault(event.user_id, set())
        batch.append(Observation(event, tuple(history[-history_length:]), frozenset(user_seen)))
        history.append(event.item_id)
        user_seen.add(event.item_id)
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch
