"""The baselines in their own process, fed the recommender's evaluation protocol.

river's models learn one event at a time in Python. In the stream worker that would compete with
the Kafka consumer for the interpreter (both need the GIL), so the baselines run in a spawned
process instead: the training thread sends each :class:`streamrec.models.prequential.EvaluationBatch` through
a bounded queue (a full queue blocks the training thread, not the event loop: backpressure, and
no batch is skipped, which would make the comparison unfair), and ``table()`` asks for the metrics,
answered after every batch sent before it.

If the process dies the worker goes on without baselines and says so in ``/model``; it never takes
the stream down. The process exits by itself when its parent disappears (even after ``kill -9``).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import threading
from typing import Any

from streamrec.models.prequential import EvaluationBatch

log = logging.getLogger(__name__)


class BaselineProcess:
    """A :class:`streamrec.models.prequential.BaselineSink` whose baselines live in a child process."""

    def __init__(self, names: list[str], seed: int, window: int, max_pending: int = 8, keep_events: int = 0) -> None:
        context = multiprocessing.get_context("spawn")  # no fork of a process with threads and a loop
        self._requests: Any = context.Queue(maxsize=max_pending)
        self._replies: Any = context.Queue()
        self._process = context.Process(
            target=_serve,
            args=(names, seed, window, keep_events, self._requests, self._replies, os.getpid()),
            name="streamrec-baselines",
            daemon=True,
        )
        self._process.start()
        self._table_lock = threading.Lock()
        self.failed: str | None = None
        self.sent = 0

    def step(self, batch: EvaluationBatch) -> None:
        """Queue a batch; blocks while the queue is full (called from the training thread)."""
        while self.failed is None:
            try:
                self._requests.put(("step", batch), timeout=1.0)
                self.sent += 1
                return
            except queue.Full:
                self._check_alive()

    def table(self, timeout_s: float = 120.0) -> dict[str, dict[str, dict[str, float]]]:
        """The baselines' metrics after every batch queued so far (blocking: call it from a thread)."""
        return self._ask("table", timeout_s)

    def kept(self, timeout_s: float = 120.0) -> dict[str, dict[str, dict[str, list]]]:
        """The baselines' kept per-event metrics after every batch queued so far (blocking)."""
        return self._ask("kept", timeout_s)

    def _ask(self, kind: str, timeout_s: float) -> Any:
        if self.failed is not None:
            return {}
        with self._table_lock:  # one question at a time, so each reply answers its own question
            try:
                self._requests.put((kind, None), timeout=timeout_s)
                while True:  # a reply to a question that timed out earlier is stale: skip it
                    answered, reply = self._replies.get(timeout=timeout_s)
                    if answered == kind:
                        return reply
            except (queue.Full, queue.Empty):
                self._check_alive()
                return {}

    def close(self, timeout_s: float = 10.0) -> None:
        if self._process.is_alive():
            try:
                self._requests.put(("stop", None), timeout=1.0)
            except queue.Full:
                pass
            self._process.join(timeout_s)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(timeout_s)

    def _check_alive(self) -> None:
        if not self._process.is_alive():
            self.failed = f"baseline process exited with code {self._process.exitcode}"
            log.error("%s; training and serving go on without baselines", self.failed)


def _serve(
    names: list[str], seed: int, window: int, keep_events: int, requests: Any, replies: Any, parent_pid: int
) -> None:
    from streamrec.models.baselines import default_baselines
    from streamrec.models.prequential import BaselineEvaluator

    available = default_baselines(seed=seed)
    evaluator = BaselineEvaluator({name: available[name] for name in names}, window, keep_events)
    while True:
        try:
            kind, payload = requests.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != parent_pid:  # orphaned: the worker is gone
                return
            continue
        if kind == "step":
            evaluator.step(payload)
        elif kind == "table":
            replies.put((kind, evaluator.table()))
        elif kind == "kept":
            replies.put((kind, evaluator.kept()))
        elif kind == "stop":
            return
