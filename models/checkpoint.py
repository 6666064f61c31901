"""Atomic model checkpoints with the Kafka offsets they reflect.

A checkpoint is written to a temporary file in the same directory, flushed to disk, then renamed
over its final name: a crash or a full disk leaves either the complete new checkpoint or none,
never a torn one, and the previous checkpoints stay as they were. Each checkpoint carries the
consumer offsets its model state includes, so a restarted worker resumes training exactly there.

Loading uses ``torch.load(weights_only=True)``: a checkpoint holds tensors and plain containers
only, and nothing in it can run code. A checkpoint that does not load (truncated by a disk error,
say) is skipped in favour of the next older one, and the skip is reported.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from streamrec.models.recommender import Recommender

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
_NAME = re.compile(r"^checkpoint-(\d{12})\.pt$")

Offsets = dict[str, dict[int, int]]  # topic -> partition -> next offset to consume


class CheckpointError(RuntimeError):
    """A checkpoint could not be written; the message says where and why."""


@dataclass(frozen=True)
class Checkpoint:
    model: Recommender
    offsets: Offsets
    path: Path
    saved_at: float
    parameter_sync: dict[str, Any] | None = None  # streamrec.models.parameter_sync state taken with the model


def save_checkpoint(
    model: Recommender | dict[str, Any],
    directory: Path,
    offsets: Offsets,
    keep: int = 3,
    parameter_sync: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` (or a ``state_dict`` taken earlier) and ``offsets`` atomically; keep the newest ``keep``.

    Taking the state dict is the only part that must not overlap training; the stream worker
    takes it under the model's lock and writes it here in a thread while training goes on.
    """
    state = model if isinstance(model, dict) else model.state_dict()
    final = directory / f"checkpoint-{state['version']:012d}.pt"
    tmp = directory / f".{final.name}.{os.getpid()}.tmp"
    payload = {
        "format": FORMAT_VERSION,
        "model": state,
        "offsets": {topic: {int(p): int(o) for p, o in parts.items()} for topic, parts in offsets.items()},
        "saved_at": time.time(),
    }
    if parameter_sync is not None:
        payload["parameter_sync"] = parameter_sync
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        _fsync_directory(directory)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()  # whatever went wrong, no torn temporary file stays behind
        os_error = _os_error_behind(exc)
        if os_error is None:
            raise  # not the file system: a bug, not a disk to report
        cause = os_error.strerror or str(os_error)
        if isinstance(os_error, FileExistsError) and not directory.is_dir():
            cause = "Not a directory"  # what mkdir(exist_ok=True) means when it says "File exists"
        raise CheckpointError(f"cannot write checkpoint to {directory}: {cause}") from exc
    for old in list_checkpoints(directory)[keep:]:
        with contextlib.suppress(OSError):
            old.unlink()
    return final


def list_checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoints in ``directory``, newest first."""
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if _NAME.match(p.name)]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)), reverse=True)  # type: ignore[union-attr]


def load_latest(directory: Path, device: str | None = None) -> Checkpoint | None:
    """The newest checkpoint that loads, or None when there is none."""
    for path in list_checkpoints(directory):
        try:
            payload: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
            if payload.get("format") != FORMAT_VERSION:
                raise ValueError(f"format {payload.get('format')!r}, expected {FORMAT_VERSION}")
            model = Recommender.from_state_dict(payload["model"], device=device)
        except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint: fall back to an older one
            log.warning("skipping unreadable checkpoint %s: %s", path, exc)
            continue
        offsets = {topic: {int(p): int(o) for p, o in parts.items()} for topic, parts in payload["offsets"].items()}
        return Checkpoint(model, offsets, path, float(payload["saved_at"]), payload.get("parameter_sync"))
    return None


def _os_error_behind(error: BaseException) -> OSError | None:
    """The OSError that ``error`` is, or that it was raised while handling.

    torch's zip writer turns a write that fails part-way (ENOSPC on a full disk) into a
    ``RuntimeError("[enforce fail at inline_container.cc] ... unexpected pos ...")``, raised while
    the ``OSError`` is being handled: the disk's error is in the exception's context.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX: the directory entry lives in the directory)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
