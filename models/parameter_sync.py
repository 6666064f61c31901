"""Item-side parameters kept consistent across stream workers, through a compacted Kafka topic.

Users are partitioned: each stream worker trains the users of its partitions. Items are not: every
worker trains every item its users touch, so without coordination the same item drifts apart on
each worker. The item-side parameters (the item's id embedding and its bias, ``dim + 1`` floats)
are therefore shared as a **state-based CRDT of per-worker contributions**:

* every worker ``w`` keeps its *cumulative contribution* ``C_w[i]`` to each item ``i``: the sum of
  every change its own training made to the item's parameters since the item was first created;
* an item's parameters on any worker are ``init(i) + Σ_w C_w[i]``, where ``init(i)`` depends only on
  the item id and the seed (:meth:`streamrec.models.recommender.Recommender.initial_item_parameters`), so
  every worker starts an item at the same point;
* every sync interval a worker publishes ``C_w[i]`` for the items it moved, keyed ``<w>/<i>`` on a
  compacted topic, with a per-worker sequence number. Compaction keeps the newest total per
  (worker, item), which is all a reader needs, so the topic's size is bounded by items × workers,
  not by history;
* a worker that reads ``C_v[i]`` from another worker ``v`` adds the difference to what it last
  applied from ``v`` (stale sequence numbers are ignored). Once every worker has read every other
  worker's newest totals, all hold the same parameters, whatever the order of delivery.

The update rule is additive (asynchronous data-parallel SGD in the spirit of Hogwild): workers
do not wait for each other, and two workers that move one item in the same interval both keep
their change. Sparse row-wise Adagrad state, the dense projections and popularity stay local
(``docs/scaling.md`` says why that is acceptable and what it costs).

Restarts: a worker's identity and its contributions are part of its checkpoint. A worker restored
from a checkpoint ignores its own records on the topic: those newer than the checkpoint describe
training it lost in the crash and will redo (the rewind re-reads those events), and its next
publish replaces them, so the others subtract the lost lineage. A worker that starts without a
checkpoint takes a new identity and reads everybody's totals, the old identity's included.

Pure (torch and numpy, no Kafka), so the convergence is tested with two models in one process.
"""

from __future__ import annotations

import struct
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from streamrec.models.recommender import Recommender

MAGIC = b"SRIP"
FORMAT = 1
_HEADER = struct.Struct("<4sBqH")  # magic, format, sequence number, width


def new_worker_id() -> str:
    """A fresh contributor identity: one per model lineage (a new one whenever training starts over)."""
    return uuid.uuid4().hex[:12]


@dataclass(frozen=True, slots=True)
class ItemContribution:
    """One worker's cumulative change to one item's parameters, as carried by the topic."""

    worker_id: str
    item_id: str
    seq: int  # increases with every publish of this worker
    total: np.ndarray  # float32 [dim + 1]: id embedding, then bias

    @property
    def key(self) -> bytes:
        return f"{self.worker_id}/{self.item_id}".encode()

    def encode(self) -> bytes:
        values = np.asarray(self.total, dtype="<f4")
        return _HEADER.pack(MAGIC, FORMAT, self.seq, values.size) + values.tobytes()

    @classmethod
    def decode(cls, key: bytes, value: bytes) -> ItemContribution:
        """Raise ``ValueError`` for a record that is not one (wrong magic, format or length)."""
        worker_id, sep, item_id = key.decode("utf-8").partition("/")
        if not sep or not worker_id or not item_id:
            raise ValueError(f"key {key[:80]!r} is not '<worker>/<item>'")
        if len(value) < _HEADER.size:
            raise ValueError(f"value of {len(value)} bytes is shorter than the header")
        magic, version, seq, width = _HEADER.unpack_from(value)
        if magic != MAGIC or version != FORMAT:
            raise ValueError(f"not an item-parameter record (magic {magic!r}, format {version})")
        if len(value) != _HEADER.size + 4 * width:
            raise ValueError(f"value of {len(value)} bytes does not hold {width} floats")
        total = np.frombuffer(value, dtype="<f4", offset=_HEADER.size).astype(np.float32)
        return cls(worker_id, item_id, seq, total)


@dataclass
class SyncStats:
    published: int = 0  # contributions handed out for publishing
    applied: int = 0  # other workers' contributions merged into the model
    stale: int = 0  # out-of-date contributions ignored (an older sequence number than one applied)
    own_ignored: int = 0  # this worker's own records read back (already in the model's lineage)
    wrong_width: int = 0  # contributions for a model of another dimension, ignored
    contributors: set[str] = field(default_factory=set)  # other workers heard from


class ItemParameterSync:
    """One worker's side of the CRDT: what it contributed, what it has applied from each other worker."""

    def __init__(self, worker_id: str | None = None, min_change: float = 1e-7) -> None:
        self.worker_id = worker_id or new_worker_id()
        self.min_change = min_change  # a contribution that moved less than this (max abs) is not sent
        self.seq = 0
        self.own: dict[str, np.ndarray] = {}  # item -> this worker's cumulative contribution
        self.base: dict[str, np.ndarray] = {}  # item -> its parameters when last synced (init until then)
        self.applied: dict[tuple[str, str], tuple[int, np.ndarray]] = {}  # (worker, item) -> (seq, total)
        self.pending: set[str] = set()  # items this worker's training moved since the last collect
        self.stats = SyncStats()

    def note_trained(self, item_ids: Iterable[str]) -> None:
        """Items a training step moved; their change goes out with the next :meth:`collect`."""
        self.pending.update(item_ids)

    def collect(self, model: Recommender, now_us: int | None = None) -> list[ItemContribution]:
        """This worker's new totals for the items it moved since the last call (call under the model lock).

        The sequence number is the wall clock in microseconds (or one more than the last): a worker
        restored from an older checkpoint must still out-number what it published before the crash.
        """
        items = [item for item in self.pending if item in model.items]
        self.pending = set()
        if not items:
            return []
        current = model.item_parameters(items).numpy()
        clock = time.time_ns() // 1000 if now_us is None else now_us
        self.seq = max(self.seq + 1, clock)
        out = []
        for item, now in zip(items, current, strict=True):
            base = self.base.get(item)
            if base is None:
                base = model.initial_item_parameters(item).numpy()
            change = now - base
            if not np.abs(change).max() > self.min_change:
                continue
            total = self.own.get(item, 0.0) + change
            self.own[item] = total
            self.base[item] = now.copy()
            out.append(ItemContribution(self.worker_id, item, self.seq, total.astype(np.float32)))
        self.stats.published += len(out)
        return out

    def merge(self, model: Recommender, contributions: Sequence[ItemContribution], now_s: float) -> int:
        """Apply other workers' totals to ``model`` (call under the model lock); returns how many moved it.

        Items the model has not seen get a row (initialised like everywhere else) and are then
        rankable here too: another worker's users made them known.
        """
        width = model.config.dim + 1
        items: list[str] = []
        deltas: list[np.ndarray] = []
        for c in contributions:
            if c.worker_id == self.worker_id:
                self.stats.own_ignored += 1
                continue
            if c.total.shape != (width,):
                self.stats.wrong_width += 1
                continue
            key = (c.worker_id, c.item_id)
            previous = self.applied.get(key)
            if previous is not None and previous[0] >= c.seq:
                self.stats.stale += 1
                continue
            delta = c.total - (previous[1] if previous is not None else 0.0)
            self.applied[key] = (c.seq, c.total)
            self.stats.contributors.add(c.worker_id)
            items.append(c.item_id)
            deltas.append(delta)
        if not items:
            return 0
        # Base moves with the merge: the next collect must send only this worker's own change.
        for item in set(items):
            if item not in self.base:
                self.base[item] = model.initial_item_parameters(item).numpy()
        for item, delta in zip(items, deltas, strict=True):
            self.base[item] = self.base[item] + delta
        model.add_item_parameters(items, torch.from_numpy(np.stack(deltas).astype(np.float32)), now_s)
        self.stats.applied += len(items)
        return len(items)

    def forget(self, item_ids: Iterable[str]) -> None:
        """Items the model expired: their row is gone, so is the local base (contributions stay)."""
        for item in item_ids:
            self.base.pop(item, None)
            self.pending.discard(item)

    # --- checkpoints: tensors and plain containers (loadable with weights_only=True) ------------
    def state_dict(self) -> dict[str, Any]:
        applied = sorted(self.applied.items())
        return {
            "worker_id": self.worker_id,
            "seq": self.seq,
            "own": _table(self.own),
            "base": _table(self.base),
            "applied_keys": [[w, i, s] for (w, i), (s, _) in applied],
            "applied_totals": torch.from_numpy(np.stack([t for _, (_, t) in applied]))
            if applied
            else torch.zeros(0, 0),
            "pending": sorted(self.pending),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> ItemParameterSync:
        sync = cls(state["worker_id"])
        sync.seq = int(state["seq"])
        sync.own = _untable(state["own"])
        sync.base = _untable(state["base"])
        totals = state["applied_totals"].numpy()
        sync.applied = {(w, i): (int(s), totals[n].copy()) for n, (w, i, s) in enumerate(state["applied_keys"])}
        sync.pending = set(state["pending"])
        return sync


def _table(rows: dict[str, np.ndarray]) -> dict[str, Any]:
    ids = sorted(rows)
    values = torch.from_numpy(np.stack([rows[i] for i in ids]).astype(np.float32)) if ids else torch.zeros(0, 0)
    return {"ids": ids, "values": values}


def _untable(table: dict[str, Any]) -> dict[str, np.ndarray]:
    values = table["values"].numpy()
    return {item: values[n].copy() for n, item in enumerate(table["ids"])}
