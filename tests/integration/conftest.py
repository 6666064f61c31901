"""Fixtures for tests against a real Apache Kafka broker and real worker processes.

One broker runs for the whole session, started and stopped through ``streamrec kafka`` on free
ports in a temporary state directory (the jars come from the shared cache). Each test gets its
own topics and application id, so tests never see each other's events or consumer offsets.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from streamrec.stream.kafka.admin import end_offsets
from streamrec.stream.settings import Settings
from streamrec.stream.worker.process import WorkerProcess

pytestmark = pytest.mark.integration
_counter = itertools.count()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_for(settings: dict[str, Any]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_") and k != "KAFKA_BOOTSTRAP_SERVERS"}
    env.update({f"STREAMREC_{k.upper()}": str(v) for k, v in settings.items()})
    env["PYTHONUNBUFFERED"] = "1"
    return env


def streamrec(args: list[str], settings: dict[str, Any], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamrec.stream", *args],
        env=env_for(settings),
        capture_output=True,
        text=True,
        **kwargs,
    )


@contextlib.contextmanager
def local_broker(state_dir: Path, **extra: Any) -> Iterator[tuple[dict[str, Any], str]]:
    """A broker of our own, started and stopped with ``streamrec kafka``, on free ports in ``state_dir``.

    Yields its settings and what ``kafka start`` printed. Tests that stop the broker or need SASL
    get one of their own this way, so the session's broker is never disturbed.
    """
    base = {
        "state_dir": state_dir,
        "local_kafka_port": free_port(),
        "local_kafka_controller_port": free_port(),
        "local_kafka_heap": "512m",
        **extra,
    }
    started = streamrec(["kafka", "start"], base, timeout=300)
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        yield base, started.stdout + started.stderr
    finally:
        stopped = streamrec(["kafka", "stop"], base, timeout=120)
        assert stopped.stdout.strip() == "Kafka stopped."


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The session's broker settings."""
    with local_broker(tmp_path_factory.mktemp("broker")) as (base, output):
        assert "running on 127.0.0.1:" in output
        yield base


@pytest.fixture
def app_settings(broker: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """Settings for one test: its own topics, app id, state directory and web port."""
    n = next(_counter)
    prefix = f"t{n}-{os.getpid()}"
    return {
        **broker,
        "kafka_bootstrap_servers": f"127.0.0.1:{broker['local_kafka_port']}",
        "app_id": prefix,
        "topic_clicks": f"{prefix}.clicks",
        "topic_purchases": f"{prefix}.purchases",
        "topic_catalogue": f"{prefix}.catalogue",
        "topic_dead_letters": f"{prefix}.dead-letters",
        "topic_embeddings": f"{prefix}.embeddings",
        "topic_inference_requests": f"{prefix}.inference.requests",
        "topic_inference_results": f"{prefix}.inference.results",
        "topic_item_parameters": f"{prefix}.item-parameters",
        "inference_web_port": free_port(),
        "topic_partitions": 4,
        "state_dir": tmp_path / "state",
        "web_port": free_port(),
        "log_level": "warning",
        "baselines": "",  # the training tests turn them on
        "augment": False,  # so does the augmentation test
    }


def wait_until(condition: Callable[[], Any], timeout_s: float, what: str, poll_s: float = 0.3) -> Any:
    """Poll ``condition`` until it returns something truthy (returned); fail after ``timeout_s`` showing the last value.

    A falsy value that explains itself (see :class:`Mismatch`) makes the failure say what was still wrong.
    """
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(poll_s)
    raise AssertionError(f"{what}: not within {timeout_s:.0f}s (last: {last})")


class Mismatch(str):
    """A falsy explanation: :func:`wait_until` keeps polling and shows the last one if time runs out."""

    def __bool__(self) -> bool:
        return False


def settings_of(values: dict[str, Any]) -> Settings:
    return Settings(**values)


def input_log_ends(settings: Settings) -> dict[str, int]:
    """Log end offset of every input partition, keyed ``topic:partition`` as ``/model``'s ``trained_offsets``."""
    return {
        f"{topic}:{partition}": end
        for topic in settings.interaction_topics
        for partition, end in asyncio.run(end_offsets(settings.bootstrap_servers, topic)).items()
    }


class Worker(WorkerProcess):
    """A started, healthy stream (or inference) worker for one test, with polling helpers for its endpoints."""

    def __init__(
        self, settings: dict[str, Any], log_path: Path, role: str = "stream", extra_env: dict[str, str] | None = None
    ) -> None:
        env = env_for(settings) | (extra_env or {})
        super().__init__(settings_of(settings), env=env, log_path=log_path, role=role)
        self.start()
        self.wait_healthy(timeout_s=180)

    def get(self, path: str) -> tuple[int, Any]:
        return self.get_json(path)

    def post(self, path: str, timeout_s: float = 60) -> tuple[int, Any]:
        request = urllib.request.Request(self.web_url + path, method="POST", data=b"")
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def kill(self) -> None:
        """``kill -9``: no shutdown handlers, no final commit or checkpoint."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def wait_for(self, condition: Callable[[dict[str, Any]], bool], timeout_s: float = 90) -> dict[str, Any]:
        """Poll ``/stats?totals=1`` until ``condition`` holds; fail with the last stats otherwise."""
        deadline = time.monotonic() + timeout_s
        stats: dict[str, Any] = {}
        while time.monotonic() < deadline:
            assert self.alive(), f"worker exited:\n{self.log_tail()}"
            try:
                status, stats = self.get("/stats?totals=1")
            except urllib.error.URLError:  # it died between the check and the request: say why
                assert self.alive(), f"worker exited:\n{self.log_tail()}"
                raise
            if status == 200 and condition(stats):
                return stats
            time.sleep(0.3)
        raise AssertionError(f"condition not met in {timeout_s}s; last stats {stats}\n{self.log_tail()}")


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    workers: list[Worker] = []

    def start(settings: dict[str, Any], role: str = "stream", extra_env: dict[str, str] | None = None) -> Worker:
        log_path = tmp_path / "logs" / f"{role}-worker-{len(workers)}.log"
        worker = Worker(settings, log_path, role=role, extra_env=extra_env)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()
