"""The stream worker process: how it runs, and how other processes start and stop it.

``run_stream_worker`` runs the Faust worker until SIGTERM/SIGINT. Faust's worker handles the
signals itself: it stops the agents, flushes the producer, commits the acknowledged offsets and
closes the tables, so a clean stop loses nothing and re-reads nothing.

:class:`WorkerProcess` is the one supervisor of such a process, used by the demo, the integration
tests and the benchmarks: start it with its log in a file, wait until it serves ``/health``, read
its JSON endpoints, stop it with SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from streamrec.stream.kafka.local import port_open
from streamrec.stream.settings import Settings

EARLY_LOG_FORMAT = "[%(asctime)s] [%(process)s] [%(levelname)s]: %(message)s"  # as Faust's own lines


def run_stream_worker(settings: Settings) -> None:
    import faust

    from streamrec.stream.kafka.admin import ensure_topics
    from streamrec.stream.kafka.supervision import back_off_failed_metadata_updates
    from streamrec.stream.worker.app import build_app
    from streamrec.stream.worker.learner import Learner

    # What happens before Faust's worker configures logging (topics, the checkpoint restored, and
    # its "resumed model version ..." line) would otherwise reach no handler below WARNING. Faust
    # clears the root handlers when it sets up its own, so nothing is logged twice.
    logging.basicConfig(level=settings.log_level.upper(), format=EARLY_LOG_FORMAT)
    back_off_failed_metadata_updates()  # no busy loop while the broker is away (see stream/kafka/supervision.py)
    # Topics first, with the configured partition count, before Faust or a producer can auto-create them.
    asyncio.run(ensure_topics(settings))
    settings.state_dir.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level
    # The model is restored before Faust starts, so the first assignment can rewind to its offsets.
    learner = Learner.from_settings(settings) if settings.train else None
    built = build_app(settings, learner)
    worker = faust.Worker(built.app, loglevel=settings.log_level.upper(), quiet=True)
    # Faust's terminal spinner sets the root logger to DEBUG so that it can spin on every record:
    # every library's debug() then builds a record (aiokafka logs each message sent), which cost
    # about 4% of the worker's CPU under load. Logs are files and journals here, not a terminal.
    worker.spinner = None
    worker.execute_from_commandline()


class WorkerProcess:
    """A ``streamrec worker stream`` (or ``worker augment``, with ``role="augment"``) child process.

    ``env`` is the child's whole environment (default: this process's); ``settings`` must describe
    the same configuration, since it gives the web address and the default log path.
    """

    def __init__(
        self,
        settings: Settings,
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
        role: str = "stream",
    ) -> None:
        self.settings = settings
        self.role = role
        self.env = dict(os.environ if env is None else env)
        self.log_path = log_path or settings.state_dir / "logs" / f"{role}-worker.log"
        self.process: subprocess.Popen[bytes] | None = None
        port = settings.web_port if role == "stream" else settings.inference_web_port
        self.web_url = f"http://{settings.web_host}:{port}"

    def start(self) -> None:
        host, port = self.web_url.removeprefix("http://").rsplit(":", 1)
        if port_open(host, int(port)):
            variable = "STREAMREC_WEB_PORT" if self.role == "stream" else "STREAMREC_INFERENCE_WEB_PORT"
            raise RuntimeError(
                f"{self.web_url} is already in use (another {self.role} worker?); stop it or set {variable}"
            )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streamrec.stream", "worker", self.role],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env,
                start_new_session=True,
            )  # fmt: skip

    def get_json(self, path: str, timeout_s: float = 10) -> tuple[int, Any]:
        """``(status, body)`` of a GET on the worker's web server; error statuses are returned too."""
        try:
            with urllib.request.urlopen(self.web_url + path, timeout=timeout_s) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def wait_healthy(self, timeout_s: float = 120) -> None:
        """Block until ``/health`` answers; raise with the log's tail if the worker dies or hangs."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"the {self.role} worker exited; log {self.log_path}:\n{self.log_tail()}")
            try:
                if self.get_json("/health", timeout_s=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"the {self.role} worker did not answer on {self.web_url} in {timeout_s:.0f}s")

    def stop(self, timeout_s: float = 60.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout_s``; the exit code (None if never started)."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def wait(self) -> int | None:
        return None if self.process is None else self.process.wait()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
