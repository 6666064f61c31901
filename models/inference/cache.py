"""An LRU cache of text embeddings, so that a text embedded once is not embedded again.

Item texts (titles, descriptions) recur on every event that mentions the item, while the catalogue
changes slowly: with a cache in front of the encoder, the model only sees texts it has not seen
recently. Keys include the model id, because vectors from two models (or from the same
architecture with random weights) live in different spaces and must never be mixed.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np


class EmbeddingCache:
    """Least-recently-used map ``(model_id, text) -> vector`` with hit and miss counts.

    Stored vectors are read-only copies: a caller that normalises or edits a returned vector in
    place would otherwise corrupt every later hit. A lock makes it safe to share between the event
    loop and the batcher's worker thread.
    """

    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: tuple[str, str]) -> bool:
        """Membership without touching recency or the counts."""
        return key in self._entries

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def stats(self) -> dict[str, float | int]:
        """Entries, capacity, hits, misses and hit rate, JSON-ready."""
        return {
            "entries": len(self),
            "max_entries": self.max_entries,
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": round(self.hit_rate, 4),
        }

    def get(self, model_id: str, text: str) -> np.ndarray | None:
        """The cached vector (marked most recently used), or None; counts a hit or a miss."""
        key = (model_id, text)
        with self._lock:
            vector = self._entries.get(key)
            if vector is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return vector

    def put(self, model_id: str, text: str, vector: np.ndarray) -> None:
        """Store a copy of ``vector``; evicts the least recently used entry beyond ``max_entries``."""
        stored = np.array(vector, dtype=np.float32, copy=True)
        stored.setflags(write=False)
        key = (model_id, text)
        with self._lock:
            self._entries[key] = stored
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def get_or_compute(
        self, model_id: str, texts: Sequence[str], compute: Callable[[list[str]], np.ndarray]
    ) -> np.ndarray:
        """Vectors for ``texts`` (``[n, dim]`` float32), calling ``compute`` once on the distinct misses.

        ``compute`` is typically ``TextEncoder.embed``; duplicates inside ``texts`` are embedded once.
        """
        texts = list(texts)
        found: dict[str, np.ndarray] = {}
        missing: dict[str, None] = {}  # ordered set
        for text in texts:
            if text in found or text in missing:
                continue
            vector = self.get(model_id, text)
            if vector is None:
                missing[text] = None
            else:
                found[text] = vector
        if missing:
            computed = np.asarray(compute(list(missing)), dtype=np.float32)
            if computed.shape[0] != len(missing):
                raise ValueError(f"compute returned {computed.shape[0]} vectors for {len(missing)} texts")
            for text, vector in zip(missing, computed, strict=True):
                self.put(model_id, text, vector)
                found[text] = vector
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([found[text] for text in texts]).astype(np.float32, copy=False)

    def clear(self) -> None:
        """Drop every entry (the counts are kept: they describe the cache's history)."""
        with self._lock:
            self._entries.clear()
