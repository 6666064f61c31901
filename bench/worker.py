"""Inference worker batching efficiency: a realistic mixed request stream against ideal static batches.

    .venv/bin/python -m streamrec.bench.worker [--device cpu|cuda] [--random-weights] [--seconds 30]
                                     [--mix embed=0.9,yes_no=0.1] [--max-batch 64] [--max-wait-ms 10]

Runs the inference worker's own models and :class:`~streamrec.models.inference.batcher.DynamicBatcher` in
process (the Kafka shell adds a constant per request that is not what this measures):

1. **Ideal**: for each request kind, the throughput of static full batches (``--max-batch``) of
   realistic payloads (MovieLens item texts, expansion prompts), after a warm-up.
2. **Stream**: requests arrive one by one, mixed by ``--mix``, from many concurrent clients (as
   stream workers send them), with lengths as they come; the batcher forms dynamic batches.
   Throughput at saturation (``--concurrency`` requests always outstanding) and latency
   p50/p99, and latency at half that load (open-loop Poisson arrivals).

Prints the stream's throughput over the ideal mixed throughput (the harmonic mix of the static
figures: ``1 / Σ share_k / ideal_k``); the goal is at least 0.5. ``--random-weights`` builds the
same architectures from the packages' configs (speed does not depend on weight values), for a
GPU machine that cannot carry the weights.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from streamrec.models.augmentation.expansion import expansion_prompt
from streamrec.models.augmentation.text import item_text, paraphrase_prompt
from streamrec.models.inference import CausalLM, DynamicBatcher, TextEncoder
from streamrec.stream.inference.protocol import length_of
from streamrec.stream.tools.datasets import load_ml100k


def payloads(kind: str, texts: list[str], rng: random.Random) -> Any:
    if kind == "embed":
        return {"text": rng.choice(texts)}
    if kind == "yes_no":
        return {"prompt": expansion_prompt(rng.sample(texts, 5), rng.choice(texts), max_history=5)}
    return {"prompt": paraphrase_prompt(rng.choice(texts)), "max_new_tokens": 32}


def catalogue_texts() -> list[str]:
    """MovieLens-100K's item texts as the augmentation embeds them: realistic lengths."""
    return [item_text(e["title"], e["categories"], e.get("attributes")) for e in load_ml100k().catalogue]


def handlers(encoder: TextEncoder, lm: CausalLM | None) -> dict[str, Any]:
    found: dict[str, Any] = {"embed": lambda ps: list(encoder.embed([p["text"] for p in ps]))}
    if lm is not None:
        found["yes_no"] = lambda ps: list(lm.yes_no([lm.chat_prompt(p["prompt"]) for p in ps]))
        found["generate"] = lambda ps: lm.generate([p["prompt"] for p in ps], max_new_tokens=32)
    return found


def ideal(handler: Any, kind: str, texts: list[str], batch: int, seconds: float, rng: random.Random) -> float:
    """Requests/s of static full batches (after one warm-up batch)."""
    handler([payloads(kind, texts, rng) for _ in range(batch)])
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds or done == 0:
        handler([payloads(kind, texts, rng) for _ in range(batch)])
        done += batch
    return done / (time.perf_counter() - started)


def batch_sweep(
    device: str,
    embed_batches: list[int],
    lm_batches: list[int],
    seconds: float,
    threads: int = 1,
    seed: int = 0,
    random_weights: bool = False,
    dynamic_seconds: float = 0.0,
    batcher: BatcherConfig | None = None,
) -> dict[str, Any]:
    """Throughput of static batches of each size, per model, on ``device``: what dynamic batching
    can win at most. MiniLM embeds item texts; SmolLM2 scores expansion prompts (``yes_no``), the
    LM's most frequent request. ``threads`` is torch's CPU thread count (the inference worker's
    default is one). With ``dynamic_seconds``, also :func:`dynamic_batching` of embeddings with
    ``batcher``'s knobs against the best static batch, the same models loaded once."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        loaded = time.perf_counter()
        encoder = TextEncoder(device=device, random_weights=random_weights)
        lm = CausalLM(device=device, random_weights=random_weights) if lm_batches else None
        load_s = time.perf_counter() - loaded
        texts = catalogue_texts()
        found = handlers(encoder, lm)
        rng = random.Random(seed)
        curves = {
            kind: [{"batch": b, "per_s": ideal(found[kind], kind, texts, b, seconds, rng)} for b in sizes]
            for kind, sizes in (("embed", embed_batches), ("yes_no", lm_batches))
            if sizes
        }
        dynamic = None
        if dynamic_seconds > 0 and curves.get("embed"):
            best = max(curves["embed"], key=lambda point: point["per_s"])
            dynamic = dynamic_batching(found, texts, best, dynamic_seconds, config=batcher, seed=seed)
    finally:
        torch.set_num_threads(previous)
    name = torch.cuda.get_device_name() if device.startswith("cuda") else f"CPU, {threads} thread(s)"
    sweep = {"device": device, "device_name": name, "load_seconds": load_s, "curves": curves}
    return sweep | ({"dynamic": dynamic} if dynamic else {})


async def stream(
    batcher: Any,
    mix: dict[str, float],
    texts: list[str],
    seconds: float,
    concurrency: int | None,
    rate: float | None,
    rng: random.Random,
) -> dict[str, Any]:
    """Closed loop (``concurrency`` outstanding) or open loop (Poisson at ``rate``); latencies in seconds."""
    kinds, weights = list(mix), list(mix.values())
    latencies: list[float] = []
    done: dict[str, int] = dict.fromkeys(kinds, 0)
    stop_at = time.perf_counter() + seconds

    async def one() -> None:
        kind = rng.choices(kinds, weights)[0]
        started = time.perf_counter()
        await batcher.submit(kind, payloads(kind, texts, rng))
        if time.perf_counter() <= stop_at:
            latencies.append(time.perf_counter() - started)
            done[kind] += 1

    started = time.perf_counter()
    if concurrency is not None:

        async def client() -> None:
            while time.perf_counter() < stop_at:
                await one()

        await asyncio.gather(*(client() for _ in range(concurrency)))
    else:
        assert rate is not None
        tasks = []
        while time.perf_counter() < stop_at:
            tasks.append(asyncio.ensure_future(one()))
            await asyncio.sleep(rng.expovariate(rate))
        await asyncio.gather(*tasks)
    elapsed = min(time.perf_counter(), stop_at) - started
    ordered = np.sort(np.asarray(latencies))
    return {
        "seconds": elapsed,
        "requests_per_s": len(latencies) / elapsed,
        "by_kind": done,
        "p50_ms": float(np.quantile(ordered, 0.5) * 1000) if len(ordered) else None,
        "p99_ms": float(np.quantile(ordered, 0.99) * 1000) if len(ordered) else None,
    }


@dataclass(frozen=True)
class BatcherConfig:
    """The batcher's knobs, as the inference worker sets them (``STREAMREC_INFERENCE_*``)."""

    max_batch: int = 64
    lm_max_batch: int = 16
    max_wait_ms: float = 10.0


class Router:
    """One batcher per model, as the inference worker runs them (embeddings never wait behind the LM)."""

    def __init__(self, found: dict[str, Any], config: BatcherConfig) -> None:
        self.by_kind: dict[str, DynamicBatcher] = {}
        for kinds, max_batch in ((("embed",), config.max_batch), (("yes_no", "generate"), config.lm_max_batch)):
            handlers = {kind: found[kind] for kind in kinds if kind in found}
            if handlers:
                batcher = DynamicBatcher(
                    handlers, max_batch=max_batch, max_wait_s=config.max_wait_ms / 1000.0, max_queue=100_000,
                    length_of=length_of, bucket_width=16,
                )  # fmt: skip
                self.by_kind |= dict.fromkeys(handlers, batcher)

    async def submit(self, kind: str, payload: Any) -> Any:
        return await self.by_kind[kind].submit(kind, payload)

    @property
    def batchers(self) -> list[DynamicBatcher]:
        return list({id(b): b for b in self.by_kind.values()}.values())


async def measure(
    found: dict[str, Any],
    texts: list[str],
    mix: dict[str, float],
    ideal_mixed: float,
    seconds: float,
    concurrency: int,
    config: BatcherConfig,
    seed: int = 0,
) -> dict[str, Any]:
    """The dynamic batcher fed one request at a time: saturated (``concurrency`` outstanding), then
    open loop at half of ``ideal_mixed``."""
    rng = random.Random(seed)
    results = {}
    for name, outstanding, rate in (("saturated", concurrency, None), ("half_load", None, 0.5 * ideal_mixed)):
        router = Router(found, config)
        for batcher in router.batchers:
            batcher.start()
        results[name] = await stream(router, mix, texts, seconds, outstanding, rate, rng)
        results[name]["mean_batch"] = {
            "/".join(k for k, b in router.by_kind.items() if b is batcher): round(batcher.stats.mean_batch_size, 1)
            for batcher in router.batchers
        }
        for batcher in router.batchers:
            await batcher.stop()
    return results


def dynamic_batching(
    found: dict[str, Any],
    texts: list[str],
    best_static: dict[str, float],
    seconds: float,
    concurrency: int = 256,
    config: BatcherConfig | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Embedding requests, one at a time, through the worker's dynamic batcher, against the best
    static batch of the sweep (``best_static``: ``{"batch": n, "per_s": r}``). ``efficiency`` is
    saturated requests/s over that best: what the batcher keeps of what batching can win."""
    config = config or BatcherConfig()
    embed = {"embed": found["embed"]}
    ideal_per_s = best_static["per_s"]
    results = asyncio.run(measure(embed, texts, {"embed": 1.0}, ideal_per_s, seconds, concurrency, config, seed))
    return {
        "config": asdict(config),
        "concurrency": concurrency,
        "best_static": best_static,
        "efficiency": results["saturated"]["requests_per_s"] / best_static["per_s"],
        **results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--random-weights", action="store_true")
    parser.add_argument("--seconds", type=float, default=30.0, help="per measurement")
    parser.add_argument("--mix", default="embed=0.9,yes_no=0.1", help="request kinds and shares")
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--lm-max-batch", type=int, default=16)
    parser.add_argument("--max-wait-ms", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=256, help="outstanding requests when saturated")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    mix = {kind: float(share) for kind, share in (part.split("=") for part in args.mix.split(","))}
    total = sum(mix.values())
    mix = {kind: share / total for kind, share in mix.items()}

    loaded = time.perf_counter()
    encoder = TextEncoder(device=args.device, random_weights=args.random_weights)
    lm = CausalLM(device=args.device, random_weights=args.random_weights) if set(mix) - {"embed"} else None
    load_s = time.perf_counter() - loaded
    texts = catalogue_texts()
    found = handlers(encoder, lm)
    rng = random.Random(args.seed)
    batch_of = {"embed": args.max_batch, "yes_no": args.lm_max_batch, "generate": args.lm_max_batch}
    ideals = {kind: ideal(found[kind], kind, texts, batch_of[kind], args.seconds / 2, rng) for kind in mix}
    ideal_mixed = 1.0 / sum(share / ideals[kind] for kind, share in mix.items())
    config = BatcherConfig(args.max_batch, args.lm_max_batch, args.max_wait_ms)
    results = asyncio.run(measure(found, texts, mix, ideal_mixed, args.seconds, args.concurrency, config, args.seed))

    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU ({os.cpu_count()} cores)"
    print(f"machine: {platform.node()}, {device}, torch {torch.__version__}, {args.threads} thread(s)")
    print("command: .venv/bin/python -m streamrec.bench.worker " + " ".join(sys.argv[1:]))
    print(f"models loaded in {load_s:.0f}s; weights: {'random' if args.random_weights else 'from the packages'}")
    print("ideal static batches: " + ", ".join(f"{k} {v:,.1f}/s (batch {batch_of[k]})" for k, v in ideals.items()))
    print(f"ideal for the mix {mix}: {ideal_mixed:,.1f} requests/s")
    for name, r in results.items():
        # Per model: completed requests/s over its static-batch ideal. (A closed loop completes the
        # fast kind far more often than its share, so the mixed total is not comparable.)
        ratios = {k: n / r["seconds"] / ideals[k] for k, n in r["by_kind"].items()}
        r["ratio_by_kind"] = ratios
        print(f"{name:>10}: {r['requests_per_s']:,.1f} requests/s, p50 {r['p50_ms']:,.0f} ms, "
              f"p99 {r['p99_ms']:,.0f} ms; of ideal: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items())
              + f"; mean batch {r['mean_batch']}, completed {r['by_kind']}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"ideal": ideals, "ideal_mixed": ideal_mixed, "stream": results}, indent=2))


if __name__ == "__main__":
    main()
