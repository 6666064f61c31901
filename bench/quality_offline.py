"""Prequential quality on MovieLens-100K, in process: the model against tuned baselines, several seeds.

    .venv/bin/python -m streamrec.bench.quality_offline [--seeds 5] [--sequence pooled,attention]
        [--limit N] [--batch 1000] [--out bench/results/quality_offline.json]

For model development: the same test-then-train loop (:class:`streamrec.models.learner.OnlineTrainer`)
that the service runs, without Kafka, so a change to the model is measured in minutes. The
protocol, as in the service:

* events replayed in time order, each user's history and seen items as the stream worker keeps them;
* the catalogue announced first; every click ranked over all of it (ties broken at random in
  expectation), seen items excluded; a second column ranks only items the model had trained on;
* the stream's first 10% trains every model but is never scored: the baselines were tuned there
  (:mod:`streamrec.bench.tune_baselines`);
* every model runs once per seed on the same events; the streamrec variants named by
  ``--sequence`` (the user tower's order term, :mod:`streamrec.models.recommender.sequence`) run
  side by side.

Prints, per model and slice, the mean over seeds, and the paired difference between each streamrec
variant and the best baseline (by overall NDCG@10) with its 95% interval from resampling users
(:mod:`streamrec.models.comparison`); with several variants, also each variant against the first.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from streamrec.bench.common import SLICE_NAMES, observation_batches
from streamrec.models.baselines import default_baselines
from streamrec.models.comparison import Difference, paired_over_seeds
from streamrec.models.evaluation import KEEP_ALL, METRICS, OVERALL
from streamrec.models.learner import RECOMMENDER, OnlineTrainer
from streamrec.models.recommender import Recommender, RecommenderConfig
from streamrec.stream.tools.datasets import load_ml100k

SHOWN = ("hr@10", "ndcg@10")


def overrides(pairs: list[str]) -> dict[str, Any]:
    """``["user_init_std=0", "trend_half_life_s=None"]`` as RecommenderConfig keyword arguments."""
    fields = RecommenderConfig.__dataclass_fields__
    found: dict[str, Any] = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        if name not in fields:
            raise SystemExit(f"--set {pair}: RecommenderConfig has no field {name!r}")
        try:  # a Python literal (0.05, None, False, 'gru'), else the text itself
            found[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            found[name] = value
    return found


def run_seed(dataset: Any, seed: int, sequences: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """One pass over the stream: every streamrec variant and every baseline, scored on the same events.

    Baselines run in the first variant's trainer only (they do not depend on the variant).
    """
    tuning = int(len(dataset.interactions) * args.tuning_fraction)
    trainers = {}
    fixed = {"dim": args.dim, **overrides(args.set)}
    for k, sequence in enumerate(sequences):
        config = RecommenderConfig(**{**fixed, "seed": seed, "sequence": sequence})
        baselines = dict(default_baselines(seed)) if k == 0 else {}
        trainer = OnlineTrainer(Recommender(config), baselines, keep_events=KEEP_ALL, tuning_events=tuning)
        trainer.announce(item["item_id"] for item in dataset.catalogue)
        trainers[sequence] = trainer
    seconds = dict.fromkeys(sequences, 0.0)
    for batch in observation_batches(dataset, args.batch, args.history, args.limit):
        for sequence, trainer in trainers.items():
            started = time.perf_counter()
            trainer.step(batch)
            seconds[sequence] += time.perf_counter() - started
    events: dict[str, dict[str, tuple[list[str], np.ndarray]]] = {}
    for sequence, trainer in trainers.items():
        events[f"{RECOMMENDER}[{sequence}]"] = {s: trainer.evaluator.events(s) for s in SLICE_NAMES}
    first = trainers[sequences[0]]
    for name, evaluator in first.baseline_sink.evaluators.items():
        events[name] = {s: evaluator.events(s) for s in SLICE_NAMES}
    return {
        "events": events,
        "seconds": seconds,
        "scored": first.evaluated,
        "unknown_items": first.unknown_items,
        "tuning_events": tuning,
        "catalogue": first.catalogue_size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--sequence", default="pooled", help="comma-separated user-tower order terms to compare")
    parser.add_argument("--limit", type=int, default=None, help="events to replay (default: all 155,375)")
    parser.add_argument("--batch", type=int, default=1000, help="micro-batch size (the worker's default)")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--history", type=int, default=50)
    parser.add_argument("--tuning-fraction", type=float, default=0.1, help="the stream's start, trained on, not scored")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="a RecommenderConfig field for every variant, e.g. --set user_init_std=0")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("bench/results/quality_offline.json"))
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    sequences = [s.strip() for s in args.sequence.split(",") if s.strip()]

    dataset = load_ml100k()
    runs = []
    started = time.perf_counter()
    for seed in range(args.seeds):
        runs.append(run_seed(dataset, seed, sequences, args))
        print(f"seed {seed} done, {time.perf_counter() - started:.0f}s", file=sys.stderr, flush=True)
    models = list(runs[0]["events"])
    variants = [m for m in models if m.startswith(RECOMMENDER)]
    baselines = [m for m in models if m not in variants]

    def per_event(model: str, slice_name: str, metric: str) -> tuple[list[str], list[np.ndarray]]:
        column = METRICS.index(metric)
        users = runs[0]["events"][model][slice_name][0]
        return users, [run["events"][model][slice_name][1][:, column] for run in runs]

    def per_seed(model: str, slice_name: str, metric: str) -> list[float]:
        """The metric's mean in each seed's run (0 where the slice is empty)."""
        users, values = per_event(model, slice_name, metric)
        return [float(v.mean()) if users else 0.0 for v in values]

    means = {m: {s: {metric: float(np.mean(per_seed(m, s, metric))) for metric in SHOWN} for s in SLICE_NAMES}
             for m in models}  # fmt: skip
    seed_sd = {m: {s: float(np.std(per_seed(m, s, "ndcg@10"))) for s in SLICE_NAMES} for m in models}
    best = max(baselines, key=lambda m: means[m][OVERALL]["ndcg@10"])

    def compare(a: str, b: str) -> dict[str, dict[str, Difference]]:
        out: dict[str, dict[str, Difference]] = {}
        for s in SLICE_NAMES:
            out[s] = {}
            for metric in SHOWN:
                users, a_runs = per_event(a, s, metric)
                _, b_runs = per_event(b, s, metric)
                if users:
                    out[s][metric] = paired_over_seeds(users, a_runs, b_runs)
        return out

    against_best = {v: compare(v, best) for v in variants}
    # The goal on each slice is against the baseline that is best *there* (popularity on cold users, ...).
    slice_best = {s: max(baselines, key=lambda m, s=s: means[m][s]["ndcg@10"]) for s in SLICE_NAMES}
    against_slice_best = {v: {s: compare(v, slice_best[s])[s] for s in SLICE_NAMES} for v in variants}
    against_first = {v: compare(v, variants[0]) for v in variants[1:]}

    command = ".venv/bin/python -m streamrec.bench.quality_offline " + " ".join(sys.argv[1:])
    first = runs[0]
    print(f"machine: {platform.node()} ({os.cpu_count()} cores), torch {torch.__version__}, "
          f"Python {platform.python_version()}")  # fmt: skip
    print(f"command: {command}")
    print(
        f"{args.seeds} seeds; {first['tuning_events']:,} events trained on, not scored (tuning); "
        f"{first['scored']:,} clicks scored per run over {first['catalogue']:,} catalogue items "
        f"({first['unknown_items']:,} on items the model had not trained on); "
        + ", ".join(f"{v} {np.mean([r['seconds'][v.split('[')[1][:-1]] for r in runs]):.0f}s/run" for v in variants)
    )
    print("\nmean over seeds (NDCG@10's seed-to-seed standard deviation in brackets)")
    print(f"{'model':<26}" + "".join(f"{SLICE_NAMES[s]:>34}" for s in SLICE_NAMES))
    print(f"{'':<26}" + f"{'HR@10':>11}{'NDCG@10':>11}{'(sd)':>12}" * len(SLICE_NAMES))
    for m in models:
        row = f"{m:<26}"
        for s in SLICE_NAMES:
            row += f"{means[m][s]['hr@10']:>11.4f}{means[m][s]['ndcg@10']:>11.4f}{f'({seed_sd[m][s]:.4f})':>12}"
        print(row)
    print(f"\nbest baseline by overall NDCG@10: {best}")
    for v, by_slice in against_slice_best.items():
        print(f"\n{v} vs the best baseline of each slice (paired over seeds, 95% CI from resampling users):")
        for s, by_metric in by_slice.items():
            for metric, d in by_metric.items():
                print(f"  {SLICE_NAMES[s]:<18}{metric:<9}{d.describe(v, slice_best[s])}")
    comparisons = (("vs the best baseline", against_best, best), (f"vs {variants[0]}", against_first, variants[0]))
    for title, table, other in comparisons:
        for v, by_slice in table.items():
            print(f"\n{v} {title} (paired over seeds, 95% CI from resampling users):")
            for s, by_metric in by_slice.items():
                for metric, d in by_metric.items():
                    print(f"  {SLICE_NAMES[s]:<18}{metric:<9}{d.describe(v, other)}")
    slice_sizes = {s: len(first["events"][variants[0]][s][0]) for s in SLICE_NAMES}
    report = {
        "command": command,
        "seeds": args.seeds,
        "slice_sizes": slice_sizes,
        "tuning_events": first["tuning_events"],
        "catalogue": first["catalogue"],
        "unknown_items": first["unknown_items"],
        "means": means,
        "seed_sd_ndcg": seed_sd,
        "best_baseline": best,
        "against_best": _jsonable(against_best),
        "slice_best": slice_best,
        "against_slice_best": _jsonable(against_slice_best),
        "against_first": _jsonable(against_first),
        "seconds": [r["seconds"] for r in runs],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    sizes = ", ".join(f"{SLICE_NAMES[s]} {n:,}" for s, n in slice_sizes.items())
    print(f"\nwritten: {args.out}; scored events per slice: {sizes}")


def _jsonable(table: dict[str, dict[str, dict[str, Difference]]]) -> dict[str, Any]:
    return {v: {s: {m: asdict(d) for m, d in t.items()} for s, t in by_slice.items()} for v, by_slice in table.items()}


if __name__ == "__main__":
    main()
