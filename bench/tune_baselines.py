"""Tune the baselines on the first 10% of the MovieLens-100K stream, and only there.

    .venv/bin/python -m streamrec.bench.tune_baselines [--fraction 0.1] [--out bench/results/tuning.json]

A baseline is only a fair opponent once it is tuned; a tuned baseline is only fair if it was
never tuned on the events it is scored on. This script replays the stream's first ``--fraction``
of events (time order) through the same prequential protocol as every comparison
(:class:`streamrec.models.learner.OnlineTrainer`: every click ranked over the whole catalogue,
test then train) with every candidate configuration side by side, and picks, per family, the
configuration with the best NDCG@10 on those events. :func:`streamrec.models.baselines.default_baselines`
holds the choices; the comparisons (``bench.quality_offline``, ``streamrec bench``) then train on
these events but score only what follows them (``OnlineTrainer(tuning_events=...)``).

The grid, per family:

* ``cooccurrence``: window 10, 20, 50, 100, 200 items; decay 1.0, 0.9, 0.7 per step back; directed
  or not; normalised (cosine) or raw counts (a first grid with windows 5 to 50 and decays down to
  0.5 chose the largest window and no decay, so the grid was moved up);
* ``item_knn``: cosine over the items' user vectors (each user's last 50, 200 or 1,000 items,
  no decay, undirected);
* ``biased_mf`` and ``funk_mf`` (river): 16 or 64 factors, SGD 0.01 or 0.05, 2 or 8 sampled
  negatives per positive, L2 1e-4, unknown users ranked by popularity;
* ``most_popular``: half-life 1, 7, 30 or 365 days.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from streamrec.bench.common import observation_batches
from streamrec.models.baselines import RiverMF
from streamrec.models.cooccurrence import ItemCooccurrence
from streamrec.models.learner import OnlineTrainer
from streamrec.models.popularity import ItemPopularity
from streamrec.models.prequential import Baseline
from streamrec.models.recommender import Recommender, RecommenderConfig
from streamrec.stream.tools.datasets import load_ml100k

DAY_S = 86_400.0


def candidates(seed: int = 0) -> dict[str, tuple[str, dict[str, Any], Baseline]]:
    """``{name: (family, parameters, baseline)}`` for every configuration in the grid."""
    grid: dict[str, tuple[str, dict[str, Any], Baseline]] = {}
    for window, decay, directed, normalise in itertools.product((10, 20, 50, 100, 200), (1.0, 0.9, 0.7), (False, True),
                                                                ("cosine", "none")):  # fmt: skip
        params = {"window": window, "decay": decay, "directed": directed, "normalise": normalise}
        grid[f"cooccurrence w{window} d{decay} {'dir' if directed else 'sym'} {normalise}"] = (
            "cooccurrence", params, ItemCooccurrence(**params)
        )  # fmt: skip
    for window in (50, 200, 1000):
        params = {"window": window, "decay": 1.0, "directed": False, "normalise": "cosine"}
        grid[f"item_knn w{window}"] = ("item_knn", params, ItemCooccurrence(**params))
    for kind, n_factors, lr, negatives in itertools.product(("biased", "funk"), (16, 64), (0.01, 0.05), (2, 8)):
        params = {"kind": kind, "n_factors": n_factors, "lr": lr, "negatives": negatives, "l2": 1e-4}
        grid[f"{kind}_mf f{n_factors} lr{lr} neg{negatives}"] = (f"{kind}_mf", params, RiverMF(**params, seed=seed))
    for days in (1, 7, 30, 365):
        grid[f"most_popular {days}d"] = ("most_popular", {"half_life_s": days * DAY_S}, ItemPopularity(days * DAY_S))
    return grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fraction", type=float, default=0.1, help="share of the stream to tune on (its start)")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path("bench/results/tuning.json"))
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)

    dataset = load_ml100k()
    total = len(dataset.interactions)
    limit = int(total * args.fraction)
    grid = candidates()
    trainer = OnlineTrainer(
        Recommender(RecommenderConfig()), {name: baseline for name, (_, _, baseline) in grid.items()}
    )
    trainer.announce(item["item_id"] for item in dataset.catalogue)
    started = time.perf_counter()
    for batch in observation_batches(dataset, args.batch, 50, limit):
        trainer.step(batch)
    seconds = time.perf_counter() - started

    table = trainer.table()
    rows = []
    for name, (family, params, _) in grid.items():
        overall = table[name].get("overall", {})
        rows.append({"name": name, "family": family, "params": params, "n": overall.get("n", 0),
                     "ndcg@10": overall.get("ndcg@10", 0.0), "hr@10": overall.get("hr@10", 0.0)})  # fmt: skip
    chosen = {}
    for family in dict.fromkeys(row["family"] for row in rows):
        ranked = sorted((row for row in rows if row["family"] == family), key=lambda row: -row["ndcg@10"])
        chosen[family] = ranked[0]
    command = ".venv/bin/python -m streamrec.bench.tune_baselines " + " ".join(sys.argv[1:])
    print(f"machine: {platform.node()} ({os.cpu_count()} cores); command: {command}")
    print(
        f"tuned on the first {limit:,} of {total:,} events ({args.fraction:.0%}), {trainer.evaluated:,} clicks "
        f"scored over {trainer.catalogue_size:,} catalogue items, {len(grid)} configurations, {seconds:.0f}s"
    )
    print(f"{'configuration':<44}{'NDCG@10':>9}{'HR@10':>9}")
    for row in sorted(rows, key=lambda row: (row["family"], -row["ndcg@10"])):
        mark = "  <- chosen" if chosen[row["family"]] is row else ""
        print(f"{row['name']:<44}{row['ndcg@10']:>9.4f}{row['hr@10']:>9.4f}{mark}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": command, "events": limit, "chosen": chosen, "rows": rows}, indent=1))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
