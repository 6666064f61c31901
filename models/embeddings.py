"""Refreshed embeddings for the output topic: the record format, what changed, and how fast to send.

Records go to a compacted topic keyed ``user:<id>`` / ``item:<id>``, so the topic always holds the
latest vector of every entity and a consumer can rebuild a vector index from it. Two encodings:

* JSON (``encoding="json"``): ``{"id", "kind", "dim", "vector": [floats], "model_version",
  "updated_at_ms"}``, readable anywhere;
* binary (``encoding="binary"``), 4× smaller for 64-dim vectors: the magic ``SREB``, then
  little-endian ``u8 format, u8 kind (0 user, 1 item), u16 dim, u64 model_version,
  i64 updated_at_ms, u16 id length``, the UTF-8 id and ``dim`` float32 values.

:class:`ChangeTracker` publishes an entity only when its vector moved by more than a relative
threshold since it was last published (records per second are capped by
:class:`streamrec.models.rate_limit.TokenBucket`). Pure, so the agent's behaviour is tested without Kafka.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

import numpy as np
import orjson

Kind = Literal["user", "item"]
MAGIC = b"SREB"
FORMAT = 1
_HEADER = struct.Struct("<4sBBHQqH")
_KINDS: tuple[Kind, Kind] = ("user", "item")


@dataclass(frozen=True)
class EmbeddingRecord:
    kind: Kind
    id: str
    vector: np.ndarray  # float32, 1-d
    model_version: int
    updated_at_ms: int

    @property
    def key(self) -> bytes:
        return f"{self.kind}:{self.id}".encode()

    def encode(self, encoding: Literal["json", "binary"] = "json") -> bytes:
        vector = np.asarray(self.vector, dtype=np.float32)
        if encoding == "binary":
            ident = self.id.encode()
            header = _HEADER.pack(
                MAGIC, FORMAT, _KINDS.index(self.kind), vector.size, self.model_version, self.updated_at_ms, len(ident)
            )
            return header + ident + vector.astype("<f4").tobytes()
        return orjson.dumps(
            {
                "id": self.id,
                "kind": self.kind,
                "dim": int(vector.size),
                "vector": vector.tolist(),
                "model_version": self.model_version,
                "updated_at_ms": self.updated_at_ms,
            }
        )

    @classmethod
    def decode(cls, raw: bytes) -> EmbeddingRecord:
        """Either encoding; the binary one is recognised by its magic bytes."""
        if raw[:4] == MAGIC:
            _, fmt, kind, dim, version, updated, id_len = _HEADER.unpack_from(raw)
            if fmt != FORMAT:
                raise ValueError(f"unknown embedding record format {fmt}")
            start = _HEADER.size
            ident = raw[start : start + id_len].decode()
            vector = np.frombuffer(raw, dtype="<f4", count=dim, offset=start + id_len).astype(np.float32)
            return cls(_KINDS[kind], ident, vector, version, updated)
        doc = orjson.loads(raw)
        vector = np.asarray(doc["vector"], dtype=np.float32)
        if vector.size != doc["dim"]:
            raise ValueError(f"vector has {vector.size} values, dim says {doc['dim']}")
        return cls(doc["kind"], doc["id"], vector, doc["model_version"], doc["updated_at_ms"])


class ChangeTracker:
    """Which entities' vectors moved by more than ``threshold`` (relative L2) since last published."""

    def __init__(self, threshold: float = 0.05) -> None:
        self.threshold = threshold
        self._published: dict[str, np.ndarray] = {}

    def changed(self, keys: list[str], vectors: np.ndarray) -> list[int]:
        """Indices of ``keys`` never published or moved beyond the threshold (one vectorised pass)."""
        last = [self._published.get(key) for key in keys]
        known = [index for index, vector in enumerate(last) if vector is not None]
        picked = [index for index, vector in enumerate(last) if vector is None]
        if known:
            before = np.stack([last[index] for index in known])
            moved = np.linalg.norm(vectors[known] - before, axis=1) / np.maximum(np.linalg.norm(before, axis=1), 1e-12)
            picked.extend(index for index, m in zip(known, moved.tolist(), strict=True) if m > self.threshold)
        return sorted(picked)

    def mark_published(self, key: str, vector: np.ndarray) -> None:
        self._published[key] = np.array(vector, dtype=np.float32, copy=True)

    def forget(self, key: str) -> None:
        self._published.pop(key, None)
