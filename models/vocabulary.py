"""Dynamic id → embedding-row mapping for users and items that appear and vanish at any time.

A stream has no fixed vocabulary: new ids arrive all the time, most are seen once, and many never
come back. :class:`Vocabulary` therefore

* gives every id its own row only once it has been seen ``min_count`` times; rarer ids share the
  fallback row 0, so one-off ids cost no parameters (and the fallback row learns "a rare id");
* never hashes: two frequent ids never share a row;
* expires ids not seen for ``ttl_s`` seconds of event time and hands their rows to new ids, so the
  table stops growing once the active population is stable. The model must reset a reused row
  (:meth:`Vocabulary.lookup` says when a row is fresh).

Recency is kept in an ``OrderedDict`` in last-seen order, so a lookup is O(1) and expiry touches
only the ids it expires.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

FALLBACK_ROW = 0


@dataclass(frozen=True, slots=True)
class Lookup:
    row: int
    fresh: bool  # a row just allocated (new, or reused from an expired id): initialise it


@dataclass(frozen=True, slots=True)
class VocabularyReport:
    rows: int  # rows in the table, the fallback row included
    assigned: int  # ids with a row of their own
    free: int  # rows freed by expiry, waiting for reuse
    pending: int  # ids seen fewer than min_count times (counted, sharing the fallback row)


class Vocabulary:
    """Assign rows to ids on first frequent sight; expire idle ids and reuse their rows."""

    def __init__(self, min_count: int = 1, ttl_s: float | None = None) -> None:
        if min_count < 1:
            raise ValueError("min_count must be at least 1")
        if ttl_s is not None and ttl_s <= 0:
            raise ValueError("ttl_s must be positive (or None to never expire)")
        self.min_count = min_count
        self.ttl_s = ttl_s
        self._rows: OrderedDict[str, tuple[int, float]] = OrderedDict()  # id -> (row, last seen)
        self._pending: OrderedDict[str, tuple[int, float]] = OrderedDict()  # id -> (count, last seen)
        self._free: list[int] = []
        self._next_row = FALLBACK_ROW + 1
        self._key_of_row: dict[int, str] = {}  # row -> id, to name the rows a step touched

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, key: str) -> bool:
        return key in self._rows

    @property
    def num_rows(self) -> int:
        """Rows a table needs to hold every assigned row (it only grows)."""
        return self._next_row

    def row(self, key: str) -> int:
        """The id's row without counting a sighting (for scoring): its own, or the fallback."""
        entry = self._rows.get(key)
        return FALLBACK_ROW if entry is None else entry[0]

    def lookup(self, key: str, now_s: float) -> Lookup:
        """Count a sighting of ``key`` at event time ``now_s`` and return its row."""
        entry = self._rows.get(key)
        if entry is not None:
            self._rows[key] = (entry[0], max(entry[1], now_s))  # a late event does not make it older
            self._rows.move_to_end(key)
            return Lookup(entry[0], fresh=False)
        count, _ = self._pending.pop(key, (0, now_s))
        count += 1
        if count < self.min_count:
            self._pending[key] = (count, now_s)
            return Lookup(FALLBACK_ROW, fresh=False)
        row = self._free.pop() if self._free else self._allocate()
        self._rows[key] = (row, now_s)
        self._key_of_row[row] = key
        return Lookup(row, fresh=True)

    def assign(self, key: str, now_s: float) -> Lookup:
        """Give ``key`` a row now, whatever ``min_count`` says (an id another worker made frequent).

        Not a sighting: an id that already has a row keeps its last-seen time.
        """
        entry = self._rows.get(key)
        if entry is not None:
            return Lookup(entry[0], fresh=False)
        self._pending.pop(key, None)
        row = self._free.pop() if self._free else self._allocate()
        self._rows[key] = (row, now_s)
        self._key_of_row[row] = key
        return Lookup(row, fresh=True)

    def expire(self, now_s: float) -> list[tuple[str, int]]:
        """Forget ids idle for more than ``ttl_s``; return ``(id, row)`` of those that had rows."""
        if self.ttl_s is None:
            return []
        horizon = now_s - self.ttl_s
        expired = []
        while self._rows:
            key, (row, seen) = next(iter(self._rows.items()))
            if seen >= horizon:
                break
            self._rows.popitem(last=False)
            self._free.append(row)
            del self._key_of_row[row]
            expired.append((key, row))
        while self._pending and next(iter(self._pending.values()))[1] < horizon:
            self._pending.popitem(last=False)
        return expired

    def key_of(self, row: int) -> str | None:
        """The id that owns ``row`` (None for the fallback row and free rows)."""
        return self._key_of_row.get(row)

    def ids(self) -> list[str]:
        return list(self._rows)

    def assigned(self) -> tuple[list[str], list[int]]:
        """Every id with a row of its own and that row, in one pass (least recently seen first)."""
        ids = list(self._rows)
        return ids, [row for row, _ in self._rows.values()]

    def report(self) -> VocabularyReport:
        return VocabularyReport(self._next_row, len(self._rows), len(self._free), len(self._pending))

    def _allocate(self) -> int:
        row = self._next_row
        self._next_row += 1
        return row

    # --- checkpoints: plain JSON-able data, never pickle -------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "min_count": self.min_count,
            "ttl_s": self.ttl_s,
            "rows": [[k, r, t] for k, (r, t) in self._rows.items()],
            "pending": [[k, c, t] for k, (c, t) in self._pending.items()],
            "free": list(self._free),
            "next_row": self._next_row,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Vocabulary:
        vocabulary = cls(min_count=state["min_count"], ttl_s=state["ttl_s"])
        vocabulary._rows = OrderedDict((k, (int(r), float(t))) for k, r, t in state["rows"])
        vocabulary._pending = OrderedDict((k, (int(c), float(t))) for k, c, t in state["pending"])
        vocabulary._free = [int(r) for r in state["free"]]
        vocabulary._next_row = int(state["next_row"])
        vocabulary._key_of_row = {row: key for key, (row, _) in vocabulary._rows.items()}
        return vocabulary
