"""Ablation of the augmentation operators on the MovieLens-100K replay, in process.

    .venv/bin/python -m streamrec.bench.ablation [--limit N] [--arms none,sequence,text,llm,all]
                                       [--paraphrase-items 200] [--llm-prompts-per-step 48]

Same protocol and seeds as ``bench/quality_offline.py`` (the service's test-then-train loop on
micro-batches of 1,000 events in time order, clicks scored, seen items excluded), with the
augmentation stage of the service (:class:`streamrec.models.augmentation.pipeline.Augmentation`) switched
per arm. The transformer models run in this process through the inference worker's own handlers
(:class:`streamrec.stream.inference.worker.InferenceModels`), so the only difference from the service is
the transport: no Kafka, and an LLM budget counted per training step instead of per second.

Arms:

* ``none``: real samples only;
* ``sequence``: + crop/mask/reorder views of the user's history;
* ``content``: + content vectors from item texts only (MiniLM embeddings of the text, its WordNet
  rewrites and SmolLM2 paraphrases);
* ``text``: + content vectors from item texts (MiniLM embeddings of the text, its WordNet rewrites
  and SmolLM2 paraphrases) and content-neighbour pseudo-positives;
* ``llm``: + content vectors (needed for candidates) and LLM-scored pseudo-interactions for sparse
  users;
* ``all``: every operator, popularity-aware negatives included.

Prints HR@10 / NDCG@10 overall, for cold users and long-tail items, samples generated per kind
and the wall time of each arm. On a 2-core CPU the LLM arms take the longest (SmolLM2 scoring).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from streamrec.bench.common import describe_machine, observation_batches
from streamrec.models.augmentation.pipeline import Augmentation, AugmentationConfig
from streamrec.models.augmentation.wordnet_data import use_wordnet
from streamrec.models.evaluation import COLD_USER, LONG_TAIL, OVERALL
from streamrec.models.learner import RECOMMENDER, OnlineTrainer
from streamrec.models.recommender import Recommender, RecommenderConfig
from streamrec.stream.inference.worker import InferenceModels
from streamrec.stream.settings import Settings
from streamrec.stream.tools.datasets import load_ml100k
from streamrec.stream.worker.augmentation import catalogue_text, protected_words
from streamrec.stream.worker.contract import CatalogueItem

OFF = {"sequence": False, "neighbours": False, "negatives": False, "text": False, "llm": False}
ARMS: dict[str, dict[str, Any]] = {
    "none": OFF,
    "sequence": OFF | {"sequence": True},
    "content": OFF | {"text": True},
    "text": OFF | {"text": True, "neighbours": True},
    "llm": OFF | {"text": True, "llm": True},
    "all": {"sequence": True, "neighbours": True, "negatives": True, "text": True, "llm": True},
}


class InProcess:
    """The inference worker's handlers called directly (in a thread), with results kept across arms."""

    def __init__(self, models: InferenceModels, max_batch: int = 64) -> None:
        self.handlers = models.handlers()
        self.max_batch = max_batch
        self.memo: dict[tuple[str, str], Any] = {}  # generations and scores are deterministic
        self.calls: Counter[str] = Counter()
        self.seconds: Counter[str] = Counter()

    async def __call__(self, kind: str, payloads: list[dict[str, Any]]) -> list[Any]:
        keys = [(kind, json.dumps(p, sort_keys=True)) for p in payloads]
        missing = [k for k in dict.fromkeys(keys) if k not in self.memo]
        started = time.perf_counter()
        for start in range(0, len(missing), self.max_batch):
            chunk = missing[start : start + self.max_batch]
            results = await asyncio.to_thread(self.handlers[kind], [json.loads(p) for _, p in chunk])
            self.memo.update(zip(chunk, results, strict=True))
        self.calls[kind] += len(missing)
        self.seconds[kind] += time.perf_counter() - started
        return [self.memo[k] for k in keys]


class Direct:
    """Model access without a lock: the benchmark runs one thing at a time."""

    def __init__(self, model: Recommender) -> None:
        self.model = model

    async def read(self, fn: Any, *args: Any) -> Any:
        return fn(*args)


class StepClock:
    """The LLM budget is per second in the service; here one training step counts as one second."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class ArmConfig:
    """What every arm of one ablation shares (the command-line flags of the same names)."""

    limit: int | None = None
    batch: int = 1000
    dim: int = 64
    history: int = 50
    seed: int = 0
    paraphrase_items: int = 200
    llm_prompts_per_step: float = 48.0
    samples_per_step: float = 5000.0


async def run_arm(name: str, switches: dict[str, Any], args: ArmConfig, dataset: Any, infer: InProcess):
    torch.manual_seed(args.seed)
    model = Recommender(RecommenderConfig(dim=args.dim, seed=args.seed))
    trainer = OnlineTrainer(model)
    clock = StepClock()
    config = AugmentationConfig(
        **switches,
        paraphrases=1 if args.paraphrase_items else 0,
        llm_budget_per_s=args.llm_prompts_per_step,
        budget_per_s=args.samples_per_step,
        seed=args.seed,
    )
    augmentation = Augmentation(config, infer=infer, clock=clock)
    access = Direct(model)
    started = time.perf_counter()
    # Every arm knows the whole catalogue from the start (the replay sends it first), so every arm
    # ranks the same candidates and scores the same events; only the text arms fill in content.
    entries = [CatalogueItem(**entry) for entry in dataset.catalogue]
    for item in entries:
        model.set_content(item.item_id, torch.zeros(model.config.content_dim))
    if config.text:
        items = [(item.item_id, catalogue_text(item)) for item in entries]
        await augmentation.add_items(items, access, keep={item.item_id: protected_words(item) for item in entries})
        await augmentation.paraphrase_some(access, args.paraphrase_items)
    for batch in observation_batches(dataset, args.batch, args.history, args.limit):
        await step(trainer, augmentation, access, batch, clock)
    seconds = time.perf_counter() - started
    table = trainer.table()[RECOMMENDER]
    return {
        "arm": name,
        "seconds": seconds,
        "metrics": table,
        "generated": dict(augmentation.generated),
        "trained": dict(model.augmented_trained),
        "rewrites": dict(augmentation.rewrites),
        "items_with_content": augmentation.items_with_content,
        "llm_skipped": dict(augmentation.llm_skipped),
    }


async def step(trainer: OnlineTrainer, augmentation: Augmentation, access: Direct, batch, clock: StepClock) -> None:
    augmented = augmentation.step_samples(trainer.model, batch)
    trainer.step(batch, augmented)
    await augmentation.expand_sparse(batch, access)  # its samples join the next step, as in the service
    clock.now += 1.0


def run_ablation(arms: list[str], config: ArmConfig, settings: Settings, dataset: Any) -> dict[str, Any]:
    """Every arm in turn on the same events, with the transformer models loaded once (CPU, one
    thread: on a small shared CPU torch's spinning OpenMP threads slow each other down; MiniLM was
    ~20x slower with 2 threads than with 1 on the 2-core VM)."""
    unknown = set(arms) - set(ARMS)
    if unknown:
        raise ValueError(f"unknown arms {sorted(unknown)}; choose from {', '.join(ARMS)}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        use_wordnet(settings.cache_dir)
        needs_lm = any(ARMS[a]["llm"] for a in arms) or (
            config.paraphrase_items > 0 and any(ARMS[a]["text"] for a in arms)
        )
        loaded = time.perf_counter()
        models = InferenceModels(
            settings.model_copy(update={"inference_enable_lm": needs_lm, "inference_device": "cpu"})
        )
        load_seconds = time.perf_counter() - loaded
        infer = InProcess(models)
        results = [asyncio.run(run_arm(name, ARMS[name], config, dataset, infer)) for name in arms]
    finally:
        torch.set_num_threads(threads)
    return {
        "config": asdict(config),
        "arms": arms,
        "load_seconds": load_seconds,
        "lm_loaded": needs_lm,
        "model_calls": dict(infer.calls),
        "model_seconds": dict(infer.seconds),
        "results": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="events to replay (default: all 155,375)")
    parser.add_argument("--arms", default="none,sequence,text,llm,all", help=f"comma-separated, from {','.join(ARMS)}")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--history", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--paraphrase-items", type=int, default=200, help="items paraphrased by the LM (0: none)")
    parser.add_argument("--llm-prompts-per-step", type=float, default=48.0, help="LM scoring budget per step")
    parser.add_argument("--samples-per-step", type=float, default=5000.0, help="local augmentation budget per step")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    config = ArmConfig(**{k: v for k, v in vars(args).items() if k not in ("arms", "json")})
    try:
        found = run_ablation(arms, config, Settings(), load_ml100k())
    except ValueError as error:
        parser.error(str(error))
    results = found["results"]

    print(f"machine: {describe_machine()['summary']}, torch {torch.__version__}, CPU")
    print("command: .venv/bin/python -m streamrec.bench.ablation " + " ".join(sys.argv[1:]))
    print(f"models loaded in {found['load_seconds']:.0f}s (LM: {found['lm_loaded']}); LM calls {found['model_calls']}, "
          f"model seconds { {k: round(v) for k, v in found['model_seconds'].items()} }")  # fmt: skip
    header = f"{'arm':<10}" + "".join(
        f"{f'{m} {s}':>22}" for s in (OVERALL, COLD_USER, LONG_TAIL) for m in ("HR@10", "NDCG@10")
    )
    print(header + f"{'wall s':>9}")
    for r in results:
        row = f"{r['arm']:<10}"
        for slice_name in (OVERALL, COLD_USER, LONG_TAIL):
            values = r["metrics"].get(slice_name, {})
            row += "".join(f"{values.get(m, 0.0):>22.4f}" for m in ("hr@10", "ndcg@10"))
        print(row + f"{r['seconds']:>9.0f}")
    print("samples generated per kind (trained):")
    for r in results:
        kinds = ", ".join(f"{k} {v:,} ({r['trained'].get(k, 0):,})" for k, v in sorted(r["generated"].items()))
        extra = f"; items with content {r['items_with_content']:,}, rewrites {r['rewrites']}" if r["rewrites"] else ""
        print(f"  {r['arm']:<10}{kinds or '-'}{extra}")
    print("scored events (overall / cold users / long tail) per arm: " + "; ".join(
        f"{r['arm']} " + " / ".join(f"{r['metrics'].get(s, {}).get('n', 0):,}" for s in (OVERALL, COLD_USER, LONG_TAIL))
        for r in results
    ))  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(found, indent=2))


if __name__ == "__main__":
    main()
