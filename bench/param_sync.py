"""What item-parameter sync costs a worker, per record, and what that means for a cluster of N workers.

    .venv/bin/python -m streamrec.bench.param_sync [--items 1682] [--dim 64] [--rounds 20]

Trains a model (the worker's default configuration) on ML-100K micro-batches as the stream worker
would, collects its contributions every ``--batches-per-round`` steps as the publishing timer
does, and merges them into a second model as another worker's reader would. Prints the cost of a
collect and of a merge per contribution, the contributions a worker emits per training step, and
the sync CPU a worker spends in a cluster of N workers (its own collect, and N - 1 peers' rounds
to merge) at a publish interval, as a share of one core. Everything is measured in this process, side by side.
"""

from __future__ import annotations

import argparse
import sys
import time

from streamrec.bench.common import observation_batches
from streamrec.models.learner import OnlineTrainer
from streamrec.models.parameter_sync import ItemContribution, ItemParameterSync
from streamrec.models.recommender import Recommender, RecommenderConfig
from streamrec.stream.tools.datasets import load_ml100k


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--batch-size", type=int, default=1000, help="the worker's micro-batch")
    parser.add_argument("--batches-per-round", type=int, default=1, help="training steps per publish round")
    parser.add_argument("--interval-s", type=float, default=1.0, help="the publish interval to project for")
    args = parser.parse_args()

    dataset = load_ml100k()
    config = RecommenderConfig()
    a, b = Recommender(config), Recommender(config)
    trainer = OnlineTrainer(a)
    sync_a, sync_b = ItemParameterSync("a"), ItemParameterSync("b")
    train_s = collect_s = encode_s = merge_s = 0.0
    steps = contributions = events = 0
    for n, batch in enumerate(observation_batches(dataset, args.batch_size, config.history_length, args.events)):
        started = time.perf_counter()
        trainer.step(batch)
        train_s += time.perf_counter() - started
        steps += 1
        events += len(batch)
        sync_a.note_trained(a.take_touched()[1])
        if (n + 1) % args.batches_per_round:
            continue
        started = time.perf_counter()
        out = sync_a.collect(a)
        collect_s += time.perf_counter() - started
        started = time.perf_counter()
        wire = [(c.key, c.encode()) for c in out]
        decoded = [ItemContribution.decode(k, v) for k, v in wire]
        encode_s += time.perf_counter() - started
        started = time.perf_counter()
        sync_b.merge(b, decoded, now_s=0.0)
        merge_s += time.perf_counter() - started
        contributions += len(out)

    per_step = contributions / (steps / args.batches_per_round)
    train_per_event = train_s / events
    per_record = (collect_s + encode_s + merge_s) / contributions
    merge_per_record = (encode_s / 2 + merge_s) / contributions
    print("command: .venv/bin/python -m streamrec.bench.param_sync " + " ".join(sys.argv[1:]))
    print(f"{events:,} events in {steps} steps of {args.batch_size}; {contributions:,} contributions published")
    print(f"training: {train_per_event * 1e3:.3f} ms/event in the step ({1 / train_per_event:,.0f} events/s)")
    print(f"contributions per publish round: {per_step:,.0f} (of {len(a.items):,} items)")
    print(
        f"per contribution: collect {collect_s / contributions * 1e6:.1f} us, encode+decode "
        f"{encode_s / contributions * 1e6:.1f} us, merge {merge_s / contributions * 1e6:.1f} us"
    )
    own_ms = per_step * (per_record - merge_per_record) * 1e3
    peer_ms = per_step * merge_per_record * 1e3
    print(
        f"per publish round: own collect + encode {own_ms:.1f} ms; merging one peer's round {peer_ms:.1f} ms "
        f"(a round moves {per_step:,.0f} items, whatever its length)"
    )
    print(f"sync CPU of one worker with N - 1 peers, at a {args.interval_s:g} s publish interval:")
    for n in (1, 2, 4, 8, 16, 32, 64):
        share = (own_ms + (n - 1) * peer_ms) / (args.interval_s * 1e3)
        print(f"  N={n:>2}: {share:6.1%} of one core")


if __name__ == "__main__":
    main()
