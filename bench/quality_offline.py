"""Prequential quality on MovieLens-100K, in process: the model and both baselines, one protocol.

    .venv/bin/python -m streamrec.bench.quality_offline [--limit N] [--batch 256] [--dim 64]

For model development: the same test-then-train loop (:class:`streamrec.models.learner.OnlineTrainer`)
that the service runs, without Kafka, so a change to the model is measured in a minute or two.
Events are replayed in time order with each user's history as the stream worker keeps it (the
last ``--history`` items). Prints one table: HR@10, NDCG@10 and Recall@20, overall / cold users /
long-tail, per model, plus samples/s.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import torch

from streamrec.bench.common import observation_batches
from streamrec.models.baselines import default_baselines
from streamrec.models.cooccurrence import ItemCooccurrence
from streamrec.models.evaluation import COLD_USER, LONG_TAIL, OVERALL
from streamrec.models.learner import RECOMMENDER, OnlineTrainer
from streamrec.models.prequential import Baseline
from streamrec.models.recommender import Recommender, RecommenderConfig
from streamrec.stream.tools.datasets import load_ml100k


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="events to replay (default: all 155,375)")
    parser.add_argument("--batch", type=int, default=1000, help="micro-batch size (the worker's default)")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--history", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--cooccurrence",
        action="store_true",
        help="also run the item co-occurrence baselines (untuned: item-kNN over each user's last 500 items, "
        "and co-occurrence over the last 20 with decay 0.9)",
    )
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)

    dataset = load_ml100k()
    baselines: dict[str, Baseline] = dict(default_baselines(args.seed))
    if args.cooccurrence:
        baselines["item_knn"] = ItemCooccurrence(window=500, decay=1.0, normalise="cosine")
        baselines["cooccurrence"] = ItemCooccurrence(window=20, decay=0.9, normalise="none")
    trainer = OnlineTrainer(Recommender(RecommenderConfig(dim=args.dim, seed=args.seed)), baselines)
    started = time.perf_counter()
    events = 0
    for batch in observation_batches(dataset, args.batch, args.history, args.limit):
        trainer.step(batch)
        events += len(batch)
    seconds = time.perf_counter() - started

    table = trainer.table()
    machine = f"{platform.node()} ({os.cpu_count()} cores)"
    print(f"machine: {machine}, torch {torch.__version__}, Python {platform.python_version()}")
    print("command: .venv/bin/python -m streamrec.bench.quality_offline " + " ".join(sys.argv[1:]))
    print(f"{events:,} events, {trainer.unrankable:,} unrankable (item never seen before), {seconds:.0f}s "
          f"({events / seconds:,.0f} events/s scored and trained, all models)")  # fmt: skip
    header = f"{'model':<24}" + "".join(
        f"{f'{m} {s}':>20}" for s in (OVERALL, COLD_USER, LONG_TAIL) for m in ("HR@10", "NDCG@10", "R@20")
    )
    print(header)
    for name in (RECOMMENDER, *trainer.baselines):
        row = f"{name:<24}"
        for slice_name in (OVERALL, COLD_USER, LONG_TAIL):
            values = table[name].get(slice_name, {})
            for metric in ("hr@10", "ndcg@10", "recall@20"):
                row += f"{values.get(metric, 0.0):>20.4f}"
        print(row)
    print(
        "slice sizes: "
        + ", ".join(f"{s} {table[RECOMMENDER].get(s, {}).get('n', 0):,}" for s in (OVERALL, COLD_USER, LONG_TAIL))
    )
    print(f"drift alarms: {trainer.drift.alarms}")


if __name__ == "__main__":
    main()
