"""The benchmark report's maths and rendering, from a hand-made set of results (no Kafka, no models).

The end-to-end run of ``streamrec bench --quick`` is in tests/integration/test_bench_report.py.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from streamrec.bench.common import to_train
from streamrec.bench.plots import hit_rate_interval, trailing_rates, until_done, windowed_means
from streamrec.bench.report import FIGURES, render, write_report
from streamrec.stream.tools.cli import main

COMMAND = "streamrec bench --quick --out /tmp/x"
MACHINE = "box-2cpu: 2-core Test CPU, 8 GiB, no GPU"
# What a reader of any report finds, in this order.
SECTIONS = [
    "Quality over time",
    "Ingestion against a raw consumer",
    "Event-to-embedding latency",
    "Training throughput",
    "Augmentation ablation",
    "Inference throughput against batch size",
    "Delivery: every codec, both partitioners, rebalance torture",
    "Reproduce",
]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def metrics(hr: float) -> dict[str, dict[str, float]]:
    return {
        s: {"n": n, "hr@10": hr * f, "ndcg@10": hr * f / 2}
        for s, n, f in (("overall", 900, 1.0), ("cold_user", 40, 2.0), ("long_tail", 300, 0.5))
    }


def results(mode: str = "quick") -> dict[str, Any]:
    models = {"streamrec": 0.12, "most_popular": 0.08, "biased_mf": 0.06, "funk_mf": 0.02}
    quality = [
        {"t": 2.0 * i, "augmented_trained": 300 * i,
         "models": {m: {"n": 150 * i, "hr@10": hr * (0.5 + i / 12), "ndcg@10": hr / 2}
                    for m, hr in models.items()}}
        for i in range(6)
    ]  # fmt: skip
    return {
        "command": COMMAND,
        "machine": {
            "name": "box-2cpu",
            "summary": MACHINE,
            "hostname": "box",
            "cpu": "Test CPU",
            "cores": 2,
            "memory_gib": 8.0,
            "gpu": None,
            "os": "Linux",
            "python": "3.11.7",
            "versions": {"torch": "2.15.0"},
        },
        "started_at": "2026-12-01T10:00:00+00:00",
        "config": {"mode": mode},
        "seconds": {"ingest": 10.0, "service": 60.0, "ablation": 40.0, "inference": 30.0},
        "total_seconds": 140.0,
        "kafka": "4.3.1",
        "ingest": {
            "events": 1000,
            "partitions": 4,
            "events_per_s": {
                "raw-consume": 500_000.0,
                "raw-same-work": 40_000.0,
                "faust-empty-agent": 6000.0,
                "faust-worker": 5000.0,
            },
            "worker_over": {
                "raw-consume": 0.01,
                "raw-same-work": 0.125,
                "faust-empty-agent": 0.8333,
                "faust-worker": 1.0,
            },
        },
        "service": {
            "events": 1500,
            "replay_rate_target": 1000.0,
            "replay_rate_achieved": 990.0,
            "all_trained_after_s": 12.0,
            "inference_worker": True,
            "inference_stats": {},
            "trained": 1500,
            "augmented_trained": {"seq_crop": 200, "negative": 700},
            "samples_per_s_wall": 800.0,
            "samples_per_s_in_step": 1100.0,
            "all_samples_per_s_wall": 1400.0,
            "embedding_records": 1200,
            "latency_s": {
                "n": 1200,
                "mean": 2.0,
                "p50": 1.8,
                "p90": 3.0,
                "p99": 4.5,
                "max": 5.0,
                "quantile_levels": np.linspace(0, 1, 201).tolist(),
                "quantiles": np.linspace(0.1, 5, 201).tolist(),
                "histogram": {"edges": np.linspace(0.1, 5, 61).tolist(), "counts": [20] * 60},
            },
            "drift_alarms": 1,
            "unrankable": 12,
            "late": 30,
            "metrics": {m: metrics(hr) for m, hr in models.items()},
            "progress": [
                {"t": float(t), "applied": min(150 * t, 1500), "trained": min(130 * t, 1500)} for t in range(16)
            ],
            "quality": quality,
        },
        "ablation": {
            "config": {"limit": 2000, "batch": 1000, "seed": 0, "paraphrase_items": 0, "llm_prompts_per_step": 48.0},
            "arms": ["none", "sequence"],
            "load_seconds": 3.0,
            "lm_loaded": False,
            "results": [
                {"arm": "none", "seconds": 2.0, "metrics": metrics(0.07), "generated": {}},
                {"arm": "sequence", "seconds": 3.0, "metrics": metrics(0.075), "generated": {"seq_crop": 500}},
            ],
        },
        "inference": [
            {
                "device": "cpu",
                "device_name": "CPU, 1 thread(s)",
                "load_seconds": 5.0,
                "curves": {
                    "embed": [{"batch": 1, "per_s": 70.0}, {"batch": 16, "per_s": 175.0}],
                    "yes_no": [{"batch": 1, "per_s": 2.5}, {"batch": 4, "per_s": 2.4}],
                },
                "dynamic": {
                    "config": {"max_batch": 64, "lm_max_batch": 16, "max_wait_ms": 10.0},
                    "concurrency": 256,
                    "best_static": {"batch": 16, "per_s": 175.0},
                    "efficiency": 0.8,
                    "saturated": {"requests_per_s": 140.0, "p50_ms": 1500.0, "mean_batch": {"embed": 64.0}},
                    "half_load": {"requests_per_s": 87.0, "p50_ms": 40, "p99_ms": 120, "mean_batch": {"embed": 3.5}},
                },
            },
        ],
        "delivery": {
            "producers": [
                {
                    "setting": "murmur2",
                    "codec": "gzip",
                    "producer_partitioner": "murmur2_random",
                    "produced": 200,
                    "applied": 200,
                    "forwarded": 0,
                    "expected_forwards": 0,
                    "duplicates": 0,
                    "dead_letters": 0,
                    "wrong_users": 0,
                    "lost": 0,
                    "ok": True,
                }
            ],
            "torture": [],
        },
    }


def test_windowed_means_are_exact_per_interval() -> None:
    # 100 events at HR 0.1, then 200 at 0.3: the cumulative mean is 0.2333 after 300.
    end, window = windowed_means([0, 100, 300], [0.0, 0.1, (10 + 60) / 300])
    assert end.tolist() == [100, 300]
    assert window == pytest.approx([0.1, 0.3])
    # An interval in which nothing was scored has no point (no division by zero).
    end, window = windowed_means([0, 100, 100, 200], [0.0, 0.1, 0.1, 0.15])
    assert end.tolist() == [100, 200] and window == pytest.approx([0.1, 0.2])
    # Short intervals are merged until each holds min_count events: 100 + 200 events, then 300.
    end, window = windowed_means([0, 100, 300, 600], [0.0, 0.1, 0.7 / 3, 1.6 / 6], min_count=250)
    assert end.tolist() == [300, 600] and window == pytest.approx([0.7 / 3, 0.3])


def test_trailing_rates_span_the_window() -> None:
    # Micro-batches of 100 every other second: a 1 s rate swings between 0 and 100, a 4 s one is 50.
    times = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    counts = [0, 100, 100, 200, 200, 300, 300]
    at, rate = trailing_rates(times, counts, window_s=1.0)
    assert at.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0] and rate.tolist() == [100, 0, 100, 0, 100, 0]
    at, rate = trailing_rates(times, counts, window_s=4.0)
    assert at.tolist() == [4.0, 5.0, 6.0] and rate.tolist() == [50.0, 50.0, 50.0]
    # Two samples at the same time give no point rather than a division by zero.
    at, rate = trailing_rates([0.0, 0.0, 2.0], [0, 0, 10], window_s=1.0)
    assert at.tolist() == [2.0] and rate.tolist() == [5.0]


def test_hit_rate_interval_shrinks_with_the_square_root_of_the_events() -> None:
    half = hit_rate_interval(np.array([0.1, 0.1, 0.0]), np.array([100, 10_000, 50]))
    assert half[0] == pytest.approx(1.96 * 0.03) and half[1] == pytest.approx(half[0] / 10)
    assert half[2] == 0.0


def test_training_curve_stops_once_every_event_is_trained() -> None:
    points = [{"t": t, "trained": n} for t, n in ((0, 0), (1, 50), (2, 100), (3, 100), (4, 100))]
    assert [p["t"] for p in until_done(points, 100)] == [0, 1, 2]
    assert until_done(points, 1000) == points


def test_training_curve_counts_dead_letters_and_duplicates_as_done() -> None:
    # 100 replayed: 10 dead letters and 20 duplicates are never trained on, so 70 trained is all of it.
    points = [{"t": t, "trained": n, "dead_letters": 10, "duplicates": 20} for t, n in ((0, 0), (1, 70), (2, 70))]
    assert [p["t"] for p in until_done(points, 100)] == [0, 1]
    assert to_train(100, points[0]) == 70
    # The worker's own /stats: dead_letters is by reason there, the total is dead_letters_total.
    assert to_train(100, {"dead_letters": {"malformed_json": 10}, "dead_letters_total": 10, "duplicates": 5}) == 85
    assert to_train(100, {"trained": 3}) == 100  # a point recorded before either was kept


def test_the_report_says_where_the_replayed_events_went(tmp_path: Path) -> None:
    figures = results()
    figures["service"] |= {"applied": 1_470, "dead_letters": 10, "duplicates": 20}
    prose = " ".join(write_report(figures, tmp_path).read_text().split())
    assert (
        "1,500 events replayed: 1,470 applied to user state, 10 dead letters, 20 duplicates (dropped by the "
        "event-id dedupe). Every event to train on was trained on 12 s after the replay started." in prose
    )
    del figures["service"]["applied"]  # results.json of a run before it was kept
    prose = " ".join(write_report(figures, tmp_path).read_text().split())
    assert "events replayed:" not in prose and "Every event to train on was trained on 12 s" in prose


def test_report_has_every_section_figure_and_caption(tmp_path: Path) -> None:
    report = write_report(results(), tmp_path).read_text()
    assert json.loads((tmp_path / "results.json").read_text())["command"] == COMMAND
    headings = [line[3:] for line in report.splitlines() if line.startswith("## ")]
    assert headings == SECTIONS
    for figure in FIGURES.values():
        width, height = png_size(tmp_path / figure)
        assert width >= 600 and height >= 300, figure
        assert f"]({figure})" in report
    # Each figure's caption names the command and the machine.
    captions = [line for line in report.splitlines() if line.startswith("*Command: ")]
    assert len(captions) == 7  # six figures and the delivery tables
    assert all(f"`{COMMAND}`" in c and MACHINE in c for c in captions)
    assert "A `--quick` run" in report


def test_report_numbers_come_from_the_results(tmp_path: Path) -> None:
    report = write_report(results(mode="full"), tmp_path).read_text()
    assert "| `raw-consume` | 500,000 | 0.01 |" in report
    assert "| `faust-empty-agent` | 6,000 | 0.83 |" in report
    prose = " ".join(report.split())  # paragraphs are wrapped at 100 columns
    assert "p50 1.80 s" in prose and "p99 4.50 s" in prose
    assert "streamrec's HR@10 is 1.50× the best baseline's (most-popular (decayed))" in prose
    assert "trained 800 real samples/s against a replay of 990 events/s, so a backlog built up" in prose
    assert "| **streamrec** | 0.1200 | 0.0600 | 900 |" in report
    assert "| sequence | 0.0750 | 0.0375 |" in report
    assert "The best arm overall is `sequence` (HR@10 0.0750, ×1.071 of `none`)" in prose
    assert "1: 70.0/s (×1.0), 16: 175.0/s (×2.5)" in report
    assert "| CPU, 1 thread(s) | 140.0/s | 64.0 | 0.80 of batch 16 (175.0/s) | 87.5/s | 40 / 120 ms | 3.5 |" in report
    assert "max batch 64, max wait 10 ms" in prose
    assert "This run had no GPU." in prose
    assert "`quick`" not in report and "A `--quick` run" not in report


def test_the_delivery_section_shows_every_cell_and_every_torture_check(tmp_path: Path) -> None:
    figures = results(mode="full")
    cell = {"setting": "murmur2", "codec": "zstd", "producer_partitioner": "consistent_random", "produced": 2000,
            "applied": 2000, "forwarded": 1650, "expected_forwards": 1650, "duplicates": 0, "dead_letters": 0,
            "wrong_users": 0, "lost": 0, "ok": True}  # fmt: skip
    figures["delivery"] = {
        "producers": [cell, cell | {"codec": "lz4", "applied": 1999, "lost": 1, "ok": False}],
        "torture": [{
            "config": {"seconds": 300.0, "partitions": 6, "producer": "crc32", "rate": 100.0, "busy_loops": 2,
                       "seed": 0},
            "ok": False, "workdir": "/tmp/kept",
            "figures": {"events_acked": 30000, "slots": 7},
            "checks": [{"name": "applied-once", "ok": True, "detail": "750 users hold their 30,000 events once each"},
                       {"name": "trained-once-per-lineage", "ok": False, "detail": "w2: +1"}],
        }],
    }  # fmt: skip
    report = write_report(figures, tmp_path).read_text()
    assert "| murmur2 | zstd | consistent_random | 2,000 | 2,000 | 1,650 (1,650) | 0 | 0 | ok |" in report
    assert "| murmur2 | lz4 | consistent_random | 2,000 | 1,999 | 1,650 (1,650) | 0 | 1 | **failed** |" in report
    prose = " ".join(report.split())
    assert "2 cells, 4,000 events: 1 failed." in prose
    assert (
        "crc32 producer at 100 events/s, 2 busy loops, seed 0: 30,000 events, 7 state directories, verdict **fail**"
        in prose
    )
    assert "| applied-once | ok | 750 users hold their 30,000 events once each |" in report
    assert "| trained-once-per-lineage | **failed** | w2: +1 |" in report


def test_sections_not_run_are_left_out_and_render_redraws_from_json(tmp_path: Path) -> None:
    partial = results()
    del partial["ablation"], partial["inference"]
    write_report(partial, tmp_path)
    report = (tmp_path / "report.md").read_text()
    assert "## Augmentation ablation" not in report and "## Inference throughput" not in report
    assert not (tmp_path / "ablation.png").exists() and not (tmp_path / "inference.png").exists()
    (tmp_path / "quality.png").unlink()
    (tmp_path / "report.md").unlink()
    render(tmp_path)
    assert png_size(tmp_path / "quality.png")[0] >= 600
    assert "## Quality over time" in (tmp_path / "report.md").read_text()


def test_bench_command_refuses_unknown_sections_and_a_directory_without_results(tmp_path: Path) -> None:
    runner = CliRunner()
    done = runner.invoke(main, ["bench", "--sections", "ingest,bogus"])
    assert (
        done.exit_code == 2
        and "unknown ['bogus']; choose from ingest, service, ablation, inference, delivery" in done.output
    )
    done = runner.invoke(main, ["bench", "--render", str(tmp_path)])
    assert done.exit_code == 1 and f"no results.json in {tmp_path}" in done.output
    assert list(tmp_path.iterdir()) == []


def kept_run(users: list[str], hits: dict[str, list[float]]) -> dict[str, Any]:
    """One run's ``GET /model/events`` body: every model scored ``users``' clicks, overall only."""
    return {"keep_events": 200_000} | {
        model: {"overall": {"users": users, "hr@10": h, "ndcg@10": [v / 2 for v in h]}} for model, h in hits.items()
    }


def test_service_runs_pool_into_one_paired_comparison_against_the_best_baseline() -> None:
    from streamrec.bench.quality import compare_runs

    users = [f"u{k}" for k in range(40)]
    run_a = kept_run(users, {"streamrec": [1.0] * 30 + [0.0] * 10, "most_popular": [1.0] * 10 + [0.0] * 30,
                             "funk_mf": [0.0] * 40})  # fmt: skip
    run_b = kept_run(
        users[:20], {"streamrec": [1.0] * 20, "most_popular": [0.0] * 20, "funk_mf": [1.0] * 5 + [0.0] * 15}
    )
    found = compare_runs([run_a, run_b])
    overall = found["slices"]["overall"]
    assert found["seeds"] == 2 and overall["events"] == 60 and overall["best"] == "most_popular"
    assert overall["means"]["streamrec"]["hr@10"] == pytest.approx(50 / 60)
    hr = overall["hr@10"]
    assert hr["difference"] == pytest.approx(50 / 60 - 10 / 60)
    assert hr["per_seed"] == pytest.approx([0.5, 1.0])
    assert hr["low"] > 0 and hr["excludes_zero"] and "streamrec is better" in hr["described"]
    assert set(found["slices"]) == {"overall"}  # slices no run scored are left out


def test_service_runs_pair_the_common_prefix_and_refuse_events_that_do_not_match() -> None:
    from streamrec.bench.quality import paired_columns

    kept = kept_run(["a", "b", "c"], {"streamrec": [1.0, 0.0, 1.0], "most_popular": [0.0, 0.0, 1.0]})
    kept["most_popular"]["overall"] = {"users": ["a", "b"], "hr@10": [0.0, 0.0], "ndcg@10": [0.0, 0.0]}
    users, values = paired_columns(kept, ["streamrec", "most_popular"], "overall")
    assert users == ["a", "b"] and values["streamrec"]["hr@10"].tolist() == [1.0, 0.0]
    kept["most_popular"]["overall"]["users"] = ["a", "x"]
    with pytest.raises(ValueError, match="most_popular's overall events are not the recommender's"):
        paired_columns(kept, ["streamrec", "most_popular"], "overall")


def test_the_quality_section_shows_the_paired_comparison_per_slice(tmp_path: Path) -> None:
    from streamrec.bench.quality import compare_runs

    users = [f"u{k}" for k in range(40)]
    figures = results(mode="full")
    figures["service"]["comparison"] = compare_runs(
        [kept_run(users, {"streamrec": [1.0] * 21 + [0.0] * 19, "most_popular": [1.0] * 20 + [0.0] * 20})] * 5
    )
    prose = " ".join(write_report(figures, tmp_path).read_text().split())
    assert "pooled over 5 runs (`STREAMREC_MODEL_SEED` 0..4, fresh topics each)" in prose
    assert "| overall | HR@10 | most-popular (decayed) | 0.5250 | 0.5000 | +0.0250 (" in prose
    assert "| no winner (interval includes 0) |" in prose  # one user's hit in 40 proves nothing
    assert "Overall, in this one run" not in prose  # the single-run ratio gives way to the comparison
