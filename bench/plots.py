"""The report's figures, one function per figure, each drawn from the figures of one run.

Every figure carries a footer naming the command and the machine that produced its numbers, so a
PNG copied out of its report still says where it came from. Matplotlib's Agg backend: no display.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from streamrec.bench.common import MODEL_NAMES, SLICE_NAMES, to_train
from streamrec.models.evaluation import OVERALL


@dataclass(frozen=True)
class Caption:
    """Where a figure's numbers came from."""

    command: str
    machine: str
    date: str

    @property
    def text(self) -> str:
        return f"{self.command}  ·  {self.machine}  ·  {self.date}"


def _save(fig: Figure, caption: Caption, path: Path) -> Path:
    fig.text(0.01, 0.005, caption.text, fontsize=6.5, color="0.35", ha="left", va="bottom", wrap=True)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def trailing_rates(times: Sequence[float], counts: Sequence[float], window_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Rate of a cumulative counter over the trailing ``window_s`` at each sample from the first
    full window on. The worker trains in micro-batches, so a rate between one-second samples
    swings between zero and a batch; a window of several batches shows the throughput."""
    t, c = np.asarray(times, dtype=float), np.asarray(counts, dtype=float)
    at, rate = [], []
    for i in range(len(t)):
        j = int(np.searchsorted(t, t[i] - window_s, side="right")) - 1
        if j >= 0 and t[i] > t[j]:
            at.append(t[i])
            rate.append((c[i] - c[j]) / (t[i] - t[j]))
    return np.asarray(at), np.asarray(rate)


def windowed_means(
    counts: Sequence[float], means: Sequence[float], min_count: float = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The mean over each interval between samples of a cumulative mean, Δ(mean·n) / Δn, at the
    interval's end: exact, unlike a rolling window, and every event counts in exactly one point.
    Intervals are merged until each holds at least ``min_count`` events (a few events make a noisy
    point), and one with none has no point at all."""
    n, total = np.asarray(counts, dtype=float), np.asarray(counts, dtype=float) * np.asarray(means, dtype=float)
    ends, values = [], []
    start = 0
    for i in range(1, len(n)):
        if n[i] - n[start] > 0 and n[i] - n[start] >= min_count:
            ends.append(n[i])
            values.append((total[i] - total[start]) / (n[i] - n[start]))
            start = i
    return np.asarray(ends), np.asarray(values)


def hit_rate_interval(rate: np.ndarray, counts: np.ndarray, z: float = 1.96) -> np.ndarray:
    """Half-width of the normal-approximation interval of a hit rate over ``counts`` events. For one
    arm alone: arms scored on the same events differ by less noise than this suggests."""
    return z * np.sqrt(np.clip(rate * (1 - rate), 0, None) / counts)


def ingest(section: dict[str, Any], caption: Caption, path: Path) -> Path:
    rates = section["events_per_s"]
    names = list(rates)
    fig, ax = plt.subplots(figsize=(8, 3.6))
    colours = ["0.6" if name != "faust-worker" else "tab:blue" for name in names]
    bars = ax.barh(names[::-1], [rates[n] for n in names[::-1]], color=colours[::-1])
    ax.set_xscale("log")
    ax.set_xlabel("events/s (log scale)")
    for bar, name in zip(bars, names[::-1], strict=True):
        ratio = section["worker_over"][name]
        ax.text(bar.get_width() * 1.08, bar.get_y() + bar.get_height() / 2,
                f"{rates[name]:,.0f}/s   worker ÷ this = {ratio:.2f}", va="center", fontsize=8)  # fmt: skip
    ax.set_xlim(right=max(rates.values()) * 12)
    ax.set_title(f"Ingestion: {section['events']:,} events, {section['partitions']} partitions per topic")
    return _save(fig, caption, path)


def latency(section: dict[str, Any], caption: Caption, path: Path) -> Path:
    lat = section["latency_s"]
    fig, (hist, cdf) = plt.subplots(1, 2, figsize=(10, 3.8))
    edges, counts = np.asarray(lat["histogram"]["edges"]), np.asarray(lat["histogram"]["counts"])
    hist.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="tab:blue", alpha=0.8)
    hist.set_xlabel("event → embedding published (s)")
    hist.set_ylabel("embedding records")
    cdf.plot(lat["quantiles"], lat["quantile_levels"], color="tab:blue")
    cdf.set_xlabel("event → embedding published (s)")
    cdf.set_ylabel("fraction of records")
    for ax in (hist, cdf):
        for q, style in (("p50", "--"), ("p99", ":")):
            ax.axvline(lat[q], color="tab:red", linestyle=style, label=f"{q} {lat[q]:.2f} s")
    cdf.legend(loc="lower right", fontsize=8)
    fig.suptitle(
        f"Freshness: {lat['n']:,} embeddings, replay at {section['replay_rate_achieved']:,.0f} events/s", fontsize=11
    )
    return _save(fig, caption, path)


def until_done(points: list[dict[str, Any]], total: int) -> list[dict[str, Any]]:
    """``points`` up to the first one at which every one of ``total`` events was trained on (but the
    dead letters and duplicates, which never are): after that the rates are zero and say nothing
    about throughput."""
    for index, point in enumerate(points):
        if point["trained"] >= to_train(total, point):
            return points[: index + 1]
    return points


def training(section: dict[str, Any], caption: Caption, path: Path) -> Path:
    progress = until_done(section["progress"], section["events"])
    end = progress[-1]["t"] if progress else 0.0
    quality = [q for q in section["quality"] if q["t"] <= end + 1e-9]
    fig, ax = plt.subplots(figsize=(9, 3.8))
    series = (
        (progress, "applied", "events applied to user state", "0.55"),
        (progress, "trained", "real samples trained", "tab:blue"),
        (quality, "augmented_trained", "augmented samples trained", "tab:green"),
    )
    window = max(5.0, end / 30)
    for points, key, label, colour in series:
        at, rate = trailing_rates([p["t"] for p in points], [p[key] for p in points], window)
        ax.plot(at, rate, label=label, color=colour, marker=".", markersize=3, linewidth=1.2)
    ax.axhline(section["samples_per_s_wall"], color="tab:blue", linestyle="--", linewidth=0.8,
               label=f"mean real samples/s {section['samples_per_s_wall']:,.0f}")  # fmt: skip
    ax.axhline(section["replay_rate_achieved"], color="0.3", linestyle=":", linewidth=0.8,
               label=f"replay rate {section['replay_rate_achieved']:,.0f}/s")  # fmt: skip
    ax.set_xlabel("seconds since the replay started")
    ax.set_ylabel(f"per second, over the last {window:.0f} s")
    ax.set_ylim(bottom=0)
    ax.set_title(f"Training throughput ({section['events']:,} events replayed live)")
    ax.legend(fontsize=8)
    return _save(fig, caption, path)


def quality(section: dict[str, Any], caption: Caption, path: Path) -> Path:
    """The report's main figure: prequential HR@10 of the model and the baselines as the replay goes."""
    points = section["quality"]
    fig, (cum, win) = plt.subplots(1, 2, figsize=(11, 4.2), sharey=False)
    models = [m for m in MODEL_NAMES if m in section["metrics"]]
    for index, model in enumerate(models):
        rows = [p["models"][model] for p in points if model in p["models"]]
        final = section["metrics"][model][OVERALL]
        n = [r["n"] for r in rows] + [final["n"]]
        hr = [r["hr@10"] for r in rows] + [final["hr@10"]]
        colour = f"C{index}"
        width = 2.2 if model == "streamrec" else 1.3
        cum.plot(n, hr, color=colour, linewidth=width, label=f"{MODEL_NAMES[model]} ({final['hr@10']:.4f})")
        end, window = windowed_means(n, hr, min_count=max(200, n[-1] / 40))
        win.plot(end, window, color=colour, linewidth=width, marker=".", markersize=3, label=MODEL_NAMES[model])
    cum.set_title("cumulative HR@10 (final value in the legend)")
    win.set_title("HR@10 between samples (at least 1/40 of the clicks each)")
    for ax in (cum, win):
        ax.set_xlabel("clicks scored (each before it is trained on)")
        ax.set_ylabel("HR@10")
        ax.set_ylim(0, ax.get_ylim()[1] * 1.3)
        ax.grid(alpha=0.3)
    cum.legend(fontsize=8, ncol=2, loc="upper center")
    fig.suptitle(f"Prequential quality on the live MovieLens-100K replay ({section['events']:,} events)", fontsize=11)
    return _save(fig, caption, path)


def ablation(section: dict[str, Any], caption: Caption, path: Path) -> Path:
    results = section["results"]
    arms = [r["arm"] for r in results]
    slices = [s for s in SLICE_NAMES if any(s in r["metrics"] for r in results)]
    fig, axes = plt.subplots(1, len(slices), figsize=(4 * len(slices), 3.8))
    for ax, slice_name in zip(np.atleast_1d(axes), slices, strict=True):
        x = np.arange(len(arms))
        rows = [r["metrics"].get(slice_name, {}) for r in results]
        hr = np.array([row.get("hr@10", 0.0) for row in rows])
        ndcg = [row.get("ndcg@10", 0.0) for row in rows]
        counts = np.array([max(row.get("n", 0), 1) for row in rows])
        ax.bar(x - 0.2, hr, width=0.4, label="HR@10 (95% interval)", color="tab:blue",
               yerr=hit_rate_interval(hr, counts), capsize=3, error_kw={"linewidth": 0.8})  # fmt: skip
        ax.bar(x + 0.2, ndcg, width=0.4, label="NDCG@10", color="tab:orange")
        ax.set_xticks(x, arms, rotation=30, ha="right")
        ax.set_title(SLICE_NAMES[slice_name])
        if len(hr):
            ax.set_ylim(0, hr.max() * 1.4)
            for xi, value in zip(x, hr, strict=True):
                ax.text(xi - 0.2, value * 0.5, f"{value:.3f}", ha="center", va="center", fontsize=6.5,
                        color="white", rotation=90)  # fmt: skip
    np.atleast_1d(axes)[0].legend(fontsize=8, ncol=2, loc="upper left")
    events = results[0]["metrics"].get(OVERALL, {}).get("n", 0) if results else 0
    fig.suptitle(f"Augmentation ablation ({events:,} clicks scored per arm, same events and seeds)", fontsize=11)
    return _save(fig, caption, path)


def inference(sweeps: list[dict[str, Any]], caption: Caption, path: Path) -> Path:
    kinds = {"embed": "MiniLM embed (texts/s)", "yes_no": "SmolLM2 yes/no scoring (prompts/s)"}
    present = [k for k in kinds if any(k in s["curves"] for s in sweeps)]
    fig, axes = plt.subplots(1, len(present), figsize=(5.5 * len(present), 3.8))
    for ax, kind in zip(np.atleast_1d(axes), present, strict=True):
        ax.set_xscale("log", base=2)
        for sweep in sweeps:
            curve = sweep["curves"].get(kind)
            if not curve:
                continue
            batches = [p["batch"] for p in curve]
            rates = [p["per_s"] for p in curve]
            ax.plot(batches, rates, marker="o", label=sweep["device_name"])
            best = int(np.argmax(rates))
            ax.annotate(f"×{rates[best] / rates[0]:.1f} of batch 1", (batches[best], rates[best]),
                        textcoords="offset points", xytext=(0, -16), ha="center", fontsize=7,
                        bbox={"boxstyle": "round", "fc": "white", "ec": "none", "alpha": 0.8})  # fmt: skip
            ax.set_xticks(batches, [str(b) for b in batches])
            dynamic = sweep.get("dynamic")
            if kind == "embed" and dynamic:
                for load, marker in (("saturated", "*"), ("half_load", "P")):
                    point = dynamic[load]
                    ax.plot(point["mean_batch"]["embed"], point["requests_per_s"], marker=marker, markersize=11,
                            linestyle="none", color=ax.lines[-1].get_color(), markeredgecolor="black",
                            label=f"dynamic batcher, {load.replace('_', ' ')} ({sweep['device']})")  # fmt: skip
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_ylim(0, ax.get_ylim()[1] * 1.1)
        ax.set_xlabel("batch size (static; the batcher's mean)")
        ax.set_title(kinds[kind])
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle("Inference worker models: throughput against batch size", fontsize=11)
    return _save(fig, caption, path)
