"""``streamrec bench --quick`` end to end: the real suite on its own embedded broker, real worker
processes and the packaged models, then the report, its plots and its raw figures checked.

The suite starts its broker itself (as a user's run does), on free ports; it does not use the
session broker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.unit.test_bench_report import SECTIONS, png_size

# The module fixture runs the whole quick suite (about 4 minutes on 2 cores) inside the first test:
# the subprocess's own 600 s limit, not the project's 300 s per test, bounds it.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
ROOT = Path(__file__).resolve().parents[2]
FIGURES = ["quality.png", "ingest.png", "latency.png", "training.png", "ablation.png", "inference.png"]


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, str, float]:
    out = tmp_path_factory.mktemp("bench") / "report"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_") and k != "KAFKA_BOOTSTRAP_SERVERS"}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "streamrec.stream", "bench", "--quick", "--out", str(out), "--machine", "ci-box"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    seconds = time.monotonic() - started
    assert done.returncode == 0, f"streamrec bench failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    print(f"streamrec bench --quick took {seconds:.0f} s")
    assert f"report: {out / 'report.md'}" in done.stdout
    return out, json.loads((out / "results.json").read_text()), (out / "report.md").read_text(), seconds


def test_quick_report_has_every_section_and_plot(quick_report: tuple[Path, dict, str, float]) -> None:
    out, results, report, _ = quick_report
    assert [line[3:] for line in report.splitlines() if line.startswith("## ")] == SECTIONS
    for figure in FIGURES:
        width, height = png_size(out / figure)
        assert width >= 600 and height >= 300, figure
        assert f"]({figure})" in report
    captions = [line for line in report.splitlines() if line.startswith("*Command: ")]
    assert len(captions) == len(FIGURES) + 1  # the delivery section has tables, no figure
    machine = results["machine"]
    assert machine["name"] == "ci-box" and machine["cores"] == os.cpu_count()
    for caption in captions:
        assert f"`{results['command']}`" in caption and machine["summary"] in caption
    assert results["command"].startswith("streamrec bench --quick --out ")
    assert results["config"]["mode"] == "quick"


def test_quick_report_figures_were_measured_in_this_run(quick_report: tuple[Path, dict, str, float]) -> None:
    _, results, report, seconds = quick_report
    assert results["total_seconds"] <= seconds

    ingest = results["ingest"]
    assert ingest["events"] == 20_000
    rates = ingest["events_per_s"]
    assert set(rates) == {"raw-consume", "raw-same-work", "faust-empty-agent", "faust-worker"}
    assert all(rate > 0 for rate in rates.values())
    for loop, rate in rates.items():  # the ratios are of this run's rates
        assert ingest["worker_over"][loop] == pytest.approx(rates["faust-worker"] / rate)
        assert f"| `{loop}` | {rate:,.0f} | {ingest['worker_over'][loop]:.2f} |" in report
    # Counting records is cheaper than doing the work on them, in the same run.
    assert rates["raw-consume"] > rates["raw-same-work"] > rates["faust-worker"]

    service = results["service"]
    assert service["events"] == 15_000 and service["trained"] == 15_000
    assert set(service["metrics"]) == {"streamrec", "most_popular", "cooccurrence", "item_knn", "biased_mf", "funk_mf"}
    assert len(service["quality"]) >= 2
    for model in service["metrics"]:
        scored = [point["models"][model]["n"] for point in service["quality"] if model in point["models"]]
        assert scored == sorted(scored) and scored[-1] <= service["metrics"][model]["overall"]["n"]
    assert service["metrics"]["streamrec"]["overall"]["n"] > 1000
    # the paired comparison, from the worker's per-event metrics (GET /model/events): every scored click
    overall = service["comparison"]["slices"]["overall"]
    assert service["comparison"]["seeds"] == 1 and overall["events"] == service["metrics"]["streamrec"]["overall"]["n"]
    assert overall["best"] in set(service["metrics"]) - {"streamrec"}
    assert overall["means"]["streamrec"]["hr@10"] == pytest.approx(service["metrics"]["streamrec"]["overall"]["hr@10"])
    assert overall["hr@10"]["low"] <= overall["hr@10"]["difference"] <= overall["hr@10"]["high"]
    assert "pooled over one run" in " ".join(report.split())
    lat = service["latency_s"]
    assert lat["n"] == service["embedding_records"] > 0
    assert 0 <= lat["p50"] <= lat["p99"] <= lat["max"]
    assert sum(lat["histogram"]["counts"]) == lat["n"]
    trained = [point["trained"] for point in service["progress"]]
    assert trained == sorted(trained) and trained[-1] == 15_000
    assert service["samples_per_s_wall"] > 0 and service["samples_per_s_in_step"] > 0

    ablation = results["ablation"]
    assert [r["arm"] for r in ablation["results"]] == ["none", "sequence", "text"]
    scored = {r["arm"]: r["metrics"]["overall"]["n"] for r in ablation["results"]}
    assert len(set(scored.values())) == 1, f"every arm scores the same events: {scored}"
    generated = {r["arm"]: sum(r["generated"].values()) for r in ablation["results"]}
    assert generated["none"] == 0 and generated["sequence"] > 0 and generated["text"] > 0

    delivery = results["delivery"]
    cells = delivery["producers"]
    assert len(cells) == 16 and all(c["ok"] for c in cells), [c for c in cells if not c["ok"]]
    assert sum(c["applied"] for c in cells) == sum(c["produced"] for c in cells) == 16 * 200
    assert {(c["setting"], c["codec"]) for c in cells} == {
        (s, codec) for s in ("murmur2", "crc32") for codec in ("gzip", "snappy", "lz4", "zstd")
    }
    # Forwarded only where producer and setting disagree, each record once.
    agree = {("murmur2", "murmur2_random"), ("crc32", "consistent_random")}
    for c in cells:
        if (c["setting"], c["producer_partitioner"]) in agree:
            assert c["forwarded"] == 0
        else:
            assert c["forwarded"] == c["expected_forwards"] > 0
    assert delivery["torture"] == [] and "No torture run in this report (`--quick`)" in " ".join(report.split())

    (cpu, *gpus) = results["inference"]
    assert cpu["device"] == "cpu" and len(gpus) == (1 if results["machine"]["gpu"] else 0)
    assert [p["batch"] for p in cpu["curves"]["embed"]] == [1, 4, 16, 64]
    assert [p["batch"] for p in cpu["curves"]["yes_no"]] == [1, 4]
    assert all(p["per_s"] > 0 for curve in cpu["curves"].values() for p in curve)
    # The dynamic batcher against the best static batch of the same sweep, the worker's settings.
    for sweep in results["inference"]:
        dynamic, best = sweep["dynamic"], max(sweep["curves"]["embed"], key=lambda p: p["per_s"])
        assert dynamic["best_static"] == best and dynamic["config"]["max_batch"] == 64
        saturated, half = dynamic["saturated"], dynamic["half_load"]
        assert dynamic["efficiency"] == pytest.approx(saturated["requests_per_s"] / best["per_s"])
        assert saturated["by_kind"]["embed"] > 0 and half["by_kind"]["embed"] > 0
        # Saturated, the batcher forms bigger batches than at half load.
        assert saturated["mean_batch"]["embed"] > half["mean_batch"]["embed"] >= 1
        assert f"| {dynamic['efficiency']:.2f} of batch {best['batch']} " in report
