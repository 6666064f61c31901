"""What the benchmark scripts share: an isolated environment (ports, topics, state) on the local broker."""

from __future__ import annotations

import socket
import tempfile
import uuid


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
