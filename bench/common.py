"""What the benchmark scripts share: an isolated environment on the local broker, the in-process
replay, and a description of the machine that every printed figure names."""

from __future__ import annotations

import os
import platform
import re
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from importlib import metadata
from typing import Any
from unittest import mock

from streamrec.models.evaluation import COLD_ITEM, COLD_USER, KNOWN_ITEMS, LONG_TAIL, OVERALL
from streamrec.models.learner import Event, Observation
from streamrec.stream.settings import Settings

# How the reports and scripts name the models and the evaluation's slices.
MODEL_NAMES = {
    "streamrec": "streamrec",
    "most_popular": "most-popular (decayed)",
    "cooccurrence": "item co-occurrence",
    "item_knn": "item-kNN (cosine)",
    "biased_mf": "river BiasedMF",
    "funk_mf": "river FunkMF",
}
SLICE_NAMES = {
    OVERALL: "overall",
    COLD_USER: "cold users",
    COLD_ITEM: "cold items",
    LONG_TAIL: "long-tail items",
    KNOWN_ITEMS: "known items only",
}

# What a section started on another section's broker must share with it.
BROKER_VARIABLES = ("STREAMREC_LOCAL_KAFKA_PORT", "STREAMREC_LOCAL_KAFKA_CONTROLLER_PORT")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_env(partitions: int = 4, broker: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """Environment for one benchmark run: its own broker ports, state directory, app id and topics.

    With ``broker`` (another run's environment) the run uses that run's broker, so several sections
    of one report share a broker but never a topic, consumer group or web port.
    """
    tag = f"bench-{uuid.uuid4().hex[:6]}"
    env = {
        "STREAMREC_STATE_DIR": tempfile.mkdtemp(prefix="streamrec-bench-"),
        "STREAMREC_LOCAL_KAFKA_PORT": str(free_port()),
        "STREAMREC_LOCAL_KAFKA_CONTROLLER_PORT": str(free_port()),
        "STREAMREC_WEB_PORT": str(free_port()),
        "STREAMREC_INFERENCE_WEB_PORT": str(free_port()),
        "STREAMREC_APP_ID": tag,
        "STREAMREC_TOPIC_CLICKS": f"{tag}.clicks",
        "STREAMREC_TOPIC_PURCHASES": f"{tag}.purchases",
        "STREAMREC_TOPIC_CATALOGUE": f"{tag}.catalogue",
        "STREAMREC_TOPIC_DEAD_LETTERS": f"{tag}.dead-letters",
        "STREAMREC_TOPIC_EMBEDDINGS": f"{tag}.embeddings",
        "STREAMREC_TOPIC_ITEM_PARAMETERS": f"{tag}.item-parameters",
        "STREAMREC_TOPIC_INFERENCE_REQUESTS": f"{tag}.inference.requests",
        "STREAMREC_TOPIC_INFERENCE_RESULTS": f"{tag}.inference.results",
        "STREAMREC_TOPIC_PARTITIONS": str(partitions),
        "STREAMREC_LOG_LEVEL": "warning",
        "PYTHONUNBUFFERED": "1",
    }
    if broker is not None:
        env.update({name: broker[name] for name in BROKER_VARIABLES})
    env.update({f"STREAMREC_{k.upper()}": v for k, v in extra.items()})
    return env


def remove_state(env: Mapping[str, str]) -> None:
    """Delete a finished run's state directory (RocksDB tables, the broker's log: hundreds of MB
    after a full replay). Runs that failed keep theirs, with the workers' logs in it."""
    shutil.rmtree(env["STREAMREC_STATE_DIR"], ignore_errors=True)


def to_train(replayed: int, stats: Mapping[str, Any]) -> int:
    """Of ``replayed`` events, how many the worker trains on: not the dead letters, nor the duplicates
    its event-id dedupe dropped. ``stats``: the worker's ``/stats`` (``dead_letters_total``), or a
    progress point taken from it (``dead_letters``); a point recorded before either was kept has neither.
    Waiting for all ``replayed`` to be trained would wait for ever on a replay with either."""
    dead = stats["dead_letters_total"] if "dead_letters_total" in stats else stats.get("dead_letters", 0)
    return replayed - stats.get("duplicates", 0) - dead


def settings_from(env: Mapping[str, str]) -> Settings:
    """The settings a worker started with ``os.environ | env`` reads (this process's environment
    is left as it was)."""
    with mock.patch.dict(os.environ, env):
        return Settings()


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def describe_machine(name: str | None = None) -> dict[str, Any]:
    """The machine a run is on, as every figure and report names it.

    ``name`` (default: host name, core count and GPU) is the short form used in directory names.
    """
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    cpu = _cpu_model()
    cores = os.cpu_count() or 1
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    if name is None:
        name = f"{platform.node() or 'host'}-{cores}cpu" + (f"-{gpu}" if gpu else "")
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    summary = f"{slug}: {cores}-core {cpu}, {memory:.0f} GiB" + (f", {gpu}" if gpu else ", no GPU")
    return {
        "name": slug,
        "summary": summary,
        "hostname": platform.node(),
        "cpu": cpu,
        "cores": cores,
        "memory_gib": round(memory, 1),
        "gpu": gpu,
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            p: _version(p) for p in ("torch", "faust-streaming", "aiokafka", "river", "transformers", "streamrec")
        },
    }


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
