"""The benchmark suite behind ``streamrec bench``: every section measured in one run, on this machine.

Sections, in the order they run (each reuses its standalone script's measuring function, so the
report and the scripts cannot drift apart):

* ``ingest`` (``bench/ingest.py``): the stream worker's events/s against raw aiokafka loops and an
  empty Faust agent over the same topics;
* ``service`` (``bench/quality.py``): the service as ``streamrec demo`` runs it, fed a live
  replay; progress and the prequential table are sampled as the replay goes, which gives training
  samples/s and quality over time, and the event-to-embedding latency of every embedding published;
* ``ablation`` (``bench/ablation.py``): the augmentation operators switched per arm, in process;
* ``inference`` (``bench/worker.py``): the inference models' throughput against batch size, on the
  CPU and, when there is one, on the GPU; and on each, the dynamic batcher (the worker's settings)
  fed embedding requests one at a time, against the best static batch;
* ``delivery`` (``bench/external_producers.py``, ``bench/torture.py``): a librdkafka producer with
  every codec and both partitioners through a worker, each cell checked by a ledger; and a
  rebalance torture run (workers joining, leaving and killed with -9 under a busy loop per core),
  its ledger's checks. The 20-run torture series is ``bench/torture.py --runs 20`` (about
  2.5 hours); ``make test`` runs a one-minute form (tests/integration/test_torture.py).

The Kafka sections share one embedded broker (or the cluster in ``KAFKA_BOOTSTRAP_SERVERS``) but
never a topic or a consumer group. Nothing is read from an earlier run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from streamrec.bench.ablation import ArmConfig, run_ablation
from streamrec.bench.common import bench_env, describe_machine, remove_state, settings_from
from streamrec.bench.external_producers import as_dicts as producer_dicts
from streamrec.bench.external_producers import run_matrix
from streamrec.bench.external_producers import summary as producer_summary
from streamrec.bench.ingest import run_ingest
from streamrec.bench.quality import run_service_seeds
from streamrec.bench.torture import TortureConfig
from streamrec.bench.torture import run_once as run_torture
from streamrec.bench.worker import BatcherConfig, batch_sweep
from streamrec.stream.kafka.local import LocalKafka
from streamrec.stream.settings import Settings
from streamrec.stream.tools.datasets import load_ml100k

SECTIONS = ("ingest", "service", "ablation", "inference", "delivery")


@dataclass(frozen=True)
class SuiteConfig:
    """How much of each section to run. ``quick()`` fits in under five minutes on a 2-core machine;
    ``full()`` replays all of MovieLens-100K (about 18 minutes there)."""

    mode: str
    partitions: int = 4
    ingest_events: int | None = None
    service_events: int | None = None
    service_rate: float = 1000.0
    service_seeds: int = 5  # service runs compared paired (bench/quality.py --seeds)
    service_sample_every_s: float = 5.0
    ablation_arms: tuple[str, ...] = ("none", "sequence", "text", "llm", "all")
    ablation: ArmConfig = field(default_factory=ArmConfig)
    embed_batches: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128)
    lm_batches: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    seconds_per_batch_size: float = 4.0
    dynamic_seconds: float = 15.0  # per load (saturated, half load)
    producer_events: int = 2000  # per cell of the external-producer matrix
    producer_settings: tuple[str, ...] = ("murmur2", "crc32")  # STREAMREC_PARTITIONER values tried
    torture_producers: tuple[str, ...] = ("crc32",)  # one torture run per entry (bench/torture.py --producer)
    torture_minutes: float = 5.0

    @classmethod
    def full(cls) -> SuiteConfig:
        return cls(mode="full", ablation=ArmConfig(paraphrase_items=50, llm_prompts_per_step=4.0))

    @classmethod
    def quick(cls) -> SuiteConfig:
        # The LLM arms are left out: SmolLM2 scores about 1.5 prompts/s on a 2-core CPU.
        return cls(
            mode="quick",
            ingest_events=20_000,
            service_events=15_000,
            service_sample_every_s=3.0,
            service_seeds=1,  # one run: its interval covers the users drawn, not the seed
            ablation_arms=("none", "sequence", "text"),
            ablation=ArmConfig(limit=20_000, paraphrase_items=0),
            embed_batches=(1, 4, 16, 64),
            lm_batches=(1, 4),
            seconds_per_batch_size=1.0,
            dynamic_seconds=2.0,
            # Fewer events, no torture run: make test runs its one-minute form.
            producer_events=200,
            torture_producers=(),
        )

    def with_overrides(self, **changes: Any) -> SuiteConfig:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def run_delivery(config: SuiteConfig, broker_env: dict[str, str], say: Callable[[str], None]) -> dict[str, Any]:
    """The external-producer matrix, then the torture runs, on the broker of ``broker_env``."""
    cells = run_matrix(broker_env, config.producer_events, users=40, settings=config.producer_settings)
    say("  " + producer_summary(cells))
    runs = []
    for k, producer in enumerate(config.torture_producers):
        torture = TortureConfig(seconds=config.torture_minutes * 60, producer=producer, seed=k)
        result = run_torture(torture, broker_env, say=lambda line: None)
        say("  torture: " + result.summary().splitlines()[-1])
        runs.append({
            "config": result.config, "ok": result.ok, "figures": result.figures,
            "checks": [asdict(c) for c in result.checks], "workdir": None if result.ok else result.workdir,
        })  # fmt: skip
    return {"producers": producer_dicts(cells), "torture": runs}


def run_suite(
    config: SuiteConfig,
    command: str,
    sections: Sequence[str] = SECTIONS,
    machine: dict[str, Any] | None = None,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run ``sections`` and return every figure (JSON-ready), with the command and ``machine``
    (default: :func:`~streamrec.bench.common.describe_machine`)."""
    import torch

    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise ValueError(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    started = time.monotonic()
    results: dict[str, Any] = {
        "command": command,
        "machine": machine or describe_machine(),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": asdict(config),
        "seconds": {},
    }
    dataset = load_ml100k()

    def timed(name: str, fn: Callable[[], Any]) -> None:
        say(f"[{name}] running…")
        began = time.monotonic()
        results[name] = fn()
        results["seconds"][name] = round(time.monotonic() - began, 1)
        say(f"[{name}] done in {results['seconds'][name]:.0f}s")

    if {"ingest", "service", "delivery"} & set(sections):
        base = bench_env(config.partitions)
        base_settings = settings_from(base)
        broker = LocalKafka(base_settings) if base_settings.uses_embedded_kafka else None
        results["kafka"] = broker.version if broker else base_settings.bootstrap_servers
        if broker:
            say(f"starting the embedded Kafka {broker.version} broker on {broker.bootstrap}")
            broker.start()
        try:
            if "ingest" in sections:
                # Ingestion alone: training is the service section's.
                env = bench_env(config.partitions, broker=base, train="false")
                timed("ingest", lambda: run_ingest(env, settings_from(env), dataset, config.ingest_events))
                remove_state(env)
            if "service" in sections:
                timed("service", lambda: run_service_seeds(
                    base, dataset, config.service_rate, config.service_events, config.service_seeds,
                    config.partitions, every_s=config.service_sample_every_s, say=say,
                ))  # fmt: skip
            if "delivery" in sections:
                timed("delivery", lambda: run_delivery(config, base, say))
        finally:
            if broker:
                broker.stop()
        remove_state(base)
    # In process, after the broker and the workers are gone: they would share the cores.
    if "ablation" in sections:
        timed("ablation", lambda: run_ablation(
            list(config.ablation_arms), config.ablation, Settings(), dataset
        ))  # fmt: skip
    if "inference" in sections:
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        s = Settings()
        batcher = BatcherConfig(s.inference_max_batch, s.inference_lm_max_batch, s.inference_max_wait_ms)
        timed("inference", lambda: [
            batch_sweep(
                device, list(config.embed_batches), list(config.lm_batches), config.seconds_per_batch_size,
                dynamic_seconds=config.dynamic_seconds, batcher=batcher,
            )
            for device in devices
        ])  # fmt: skip
    results["total_seconds"] = round(time.monotonic() - started, 1)
    return results
