"""The benchmark report: ``results.json`` (every figure of the run), one PNG per figure and
``report.md`` that shows them, all in one directory.

The Markdown is written from ``results.json`` alone (``streamrec bench --render DIR`` redraws a
report without running anything), and every sentence with a number in it computes that number from
the run: nothing is carried over from an earlier report.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streamrec.bench import plots
from streamrec.bench.common import MODEL_NAMES, SLICE_NAMES
from streamrec.bench.plots import Caption
from streamrec.models.evaluation import OVERALL

ARMS = {
    "none": "real samples only",
    "sequence": "+ crop/mask/reorder views of the history",
    "content": "+ item-text content vectors (MiniLM, WordNet rewrites, paraphrases)",
    "text": "+ content vectors and content-neighbour pseudo-positives",
    "llm": "+ content vectors and LLM-scored pseudo-interactions ({llm_prompts_per_step:g} prompts per step)",
    "all": "every operator, popularity-aware negatives included",
}
RESULTS = "results.json"
REPORT = "report.md"
# Section heading → (the results' key, figure file). The main figure goes first in the README.
FIGURES = {
    "quality": "quality.png",
    "ingest": "ingest.png",
    "latency": "latency.png",
    "training": "training.png",
    "ablation": "ablation.png",
    "inference": "inference.png",
}


def write_report(results: dict[str, Any], out_dir: Path) -> Path:
    """Write ``results.json``, the figures and ``report.md`` into ``out_dir``; return the report."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / RESULTS).write_text(json.dumps(results, indent=1) + "\n")
    return render(out_dir)


def render(out_dir: Path) -> Path:
    """(Re)draw the figures and ``report.md`` from ``out_dir/results.json``."""
    results = json.loads((out_dir / RESULTS).read_text())
    caption = Caption(results["command"], results["machine"]["summary"], results["started_at"][:10])
    parts = [_header(results)]
    for title, key, draw, figure, body in _sections(results):
        if key not in results:
            continue
        image = ""
        if draw is not None and figure is not None:
            draw(results[key], caption, out_dir / figure)
            image = f"![{title}]({figure})\n\n"
        parts.append(f"## {title}\n\n{image}*{_figure_line(results)}*\n\n{body(results[key])}")
    parts.append(_reproduce(results))
    path = out_dir / REPORT
    path.write_text(reflow("\n\n".join(p.strip() for p in parts)) + "\n")
    return path


def reflow(markdown: str, width: int = 100) -> str:
    """Plain paragraphs wrapped at ``width`` (the templates break lines wherever the code did);
    tables, code blocks, headings, images and captions kept as they are."""
    blocks, in_code = [], False
    for block in markdown.split("\n\n"):
        fenced = block.count("```") % 2 == 1
        keep = in_code or block.lstrip().startswith(("|", "```", "#", "!", "*", "-"))
        blocks.append(block if keep else textwrap.fill(" ".join(block.split()), width, break_on_hyphens=False))
        in_code = in_code != fenced
    return "\n\n".join(blocks)


Section = tuple[str, str, Callable[..., Path] | None, str | None, Callable[[Any], str]]


def _sections(results: dict[str, Any]) -> list[Section]:
    return [
        ("Quality over time", "service", plots.quality, FIGURES["quality"], _quality_text),
        ("Ingestion against a raw consumer", "ingest", plots.ingest, FIGURES["ingest"], _ingest_text),
        ("Event-to-embedding latency", "service", plots.latency, FIGURES["latency"], _latency_text),
        ("Training throughput", "service", plots.training, FIGURES["training"], _training_text),
        ("Augmentation ablation", "ablation", plots.ablation, FIGURES["ablation"], _ablation_text),
        ("Inference throughput against batch size", "inference", plots.inference, FIGURES["inference"],
         _inference_text),
        ("Delivery: every codec, both partitioners, rebalance torture", "delivery", None, None, _delivery_text),
    ]  # fmt: skip


def _figure_line(results: dict[str, Any]) -> str:
    return f"Command: `{results['command']}` · machine: {results['machine']['summary']} · {results['started_at']}"


def _header(results: dict[str, Any]) -> str:
    m = results["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    took = ", ".join(f"{k} {v:.0f} s" for k, v in results["seconds"].items())
    mode = results["config"]["mode"]
    note = (
        " A `--quick` run: fewer events, arms and batch sizes than the full suite, for checking that the "
        "suite works, not for comparing figures with a full run."
        if mode == "quick"
        else ""
    )
    return f"""# streamrec benchmark report: {results["started_at"][:10]}, {m["name"]}

Produced by `{results["command"]}` ({mode} mode) in {results["total_seconds"]:.0f} s ({took}).{note}
Every figure below was measured by this one command; comparisons (the worker against a raw
consumer, the model against the baselines, the ablation arms, batch sizes) are side by side on the
same events, on the same machine, and the model against the baselines over several seeded service
runs where the quality section says so.

| machine | |
|---|---|
| host | {m["hostname"]} ({m["name"]}) |
| CPU | {m["cores"]} cores, {m["cpu"]} |
| memory | {m["memory_gib"]} GiB |
| GPU | {m["gpu"] or "none"} |
| OS, Python | {m["os"]}, Python {m["python"]} |
| Kafka | {results.get("kafka", "not used")} |
| packages | {versions} |"""


def _quality_text(s: dict[str, Any]) -> str:
    rows = []
    for model in MODEL_NAMES:
        table = s["metrics"].get(model)
        if table is None:
            continue
        cells = []
        for slice_name in SLICE_NAMES:
            v = table.get(slice_name, {})
            cells += [f"{v.get('hr@10', 0.0):.4f}", f"{v.get('ndcg@10', 0.0):.4f}", f"{int(v.get('n', 0)):,}"]
        name = f"**{MODEL_NAMES[model]}**" if model == "streamrec" else MODEL_NAMES[model]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    head = " | ".join(f"HR@10 {n} | NDCG@10 {n} | scored {n}" for n in SLICE_NAMES.values())
    best = max((m for m in MODEL_NAMES if m in s["metrics"] and m != "streamrec"),
               key=lambda m: s["metrics"][m][OVERALL]["hr@10"], default=None)  # fmt: skip
    comparison = ""
    if "comparison" not in s and best is not None and s["metrics"][best][OVERALL]["hr@10"] > 0:  # older results
        ratio = s["metrics"]["streamrec"][OVERALL]["hr@10"] / s["metrics"][best][OVERALL]["hr@10"]
        comparison = (
            f" Overall, in this one run, streamrec's HR@10 is {ratio:.2f}× the best baseline's ({MODEL_NAMES[best]})."
        )
    samples = len(s["quality"])
    return f"""The service as `streamrec demo` runs it (stream worker, baselines in their own process
{"and the inference worker" if s["inference_worker"] else "without the inference worker"}), fed
MovieLens-100K as a live stream at {s["replay_rate_target"]:,.0f} events/s. Every click is scored
by every model *before* any of them trains on it (prequential evaluation); the worker's
`GET /model` was sampled {samples} times as the replay went. Left: the cumulative HR@10;
right: HR@10 of the clicks scored between samples (merged so that each point holds at least 1/40
of them).{comparison}

| model | {head} |
|---|{"---:|" * 3 * len(SLICE_NAMES)}
{chr(10).join(rows)}

Every click is ranked among all {s.get("catalogue", 0):,} items of the catalogue (ties broken at random in
expectation). Cold users have fewer than 5 earlier events, cold items fewer than 5 earlier clicks;
long-tail items are outside the top 20% by popularity; "known items only" ranks the clicks on items
the model had trained on among those items. {s.get("unknown_items", 0):,} clicks were on items the
model had not trained on; {s["late"]:,} events were read after a later event of their user and not
scored; {s["drift_alarms"]} drift alarms.{_comparison_text(s)}"""


_METRIC_NAMES = {"hr@10": "HR@10", "ndcg@10": "NDCG@10"}


def _comparison_text(s: dict[str, Any]) -> str:
    """The paired comparison over the service runs (bench/quality.py run_service_seeds)."""
    found = s.get("comparison")
    if not found:
        return ""
    seeds = found["seeds"]
    rows = []
    for slice_name, row in found["slices"].items():
        if "best" not in row:
            continue
        for metric in ("hr@10", "ndcg@10"):
            d = row[metric]
            verdict = "no winner (interval includes 0)" if not d["excludes_zero"] else (
                "**streamrec**" if d["low"] > 0 else MODEL_NAMES.get(row["best"], row["best"]))  # fmt: skip
            rows.append(
                f"| {SLICE_NAMES[slice_name]} | {_METRIC_NAMES[metric]} | {MODEL_NAMES.get(row['best'], row['best'])} "
                f"| {d['a']:.4f} | {d['b']:.4f} | {d['difference']:+.4f} ({d['low']:+.4f}..{d['high']:+.4f}) "
                f"| {d['ratio']:.2f} ({d['ratio_low']:.2f}..{d['ratio_high']:.2f}) | {verdict} |"
            )
    runs = "one run" if seeds == 1 else f"{seeds} runs (`STREAMREC_MODEL_SEED` 0..{seeds - 1}, fresh topics each)"
    spread = "" if seeds == 1 else (
        " Each run's own overall HR@10 difference: "
        + ", ".join(f"{v:+.4f}" for v in found["slices"][OVERALL]["hr@10"]["per_seed"]) + "."
    )  # fmt: skip
    return f"""

The table above is the first run. Streamrec against the best baseline *of each slice* (highest
NDCG@10 there), pooled over {runs}; every model scored the same clicks within a run, and the 95%
interval comes from resampling users (each user's clicks from every run together). A winner is
named only where the interval excludes 0.{spread}

| slice | metric | best baseline | streamrec | baseline | difference (95% CI) | ratio (95% CI) | winner |
|---|---|---|---:|---:|---:|---:|---|
{chr(10).join(rows)}"""


def _ingest_text(s: dict[str, Any]) -> str:
    rows = "\n".join(
        f"| `{name}` | {rate:,.0f} | {s['worker_over'][name]:.2f} |" for name, rate in s["events_per_s"].items()
    )
    return f"""{s["events"]:,} clicks and purchases produced once into {s["partitions"]} partitions per topic,
then read from the beginning by each loop in turn: `raw-consume` is an aiokafka loop that only counts
records (the ceiling), `raw-same-work` does the agent's per-event work in plain Python,
`faust-empty-agent` is a Faust agent that only counts, and `faust-worker` is a real
`streamrec worker stream` process (tables with changelogs, dead letters, commits).

| loop | events/s | worker ÷ loop |
|---|---:|---:|
{rows}"""


def _latency_text(s: dict[str, Any]) -> str:
    lat = s["latency_s"]
    if not lat["n"]:
        return "No embedding was published."
    return f"""Read back from the embeddings topic: each record's broker append time minus the timestamp
of the oldest event it reflects. {lat["n"]:,} records: mean {lat["mean"]:.2f} s, p50 {lat["p50"]:.2f} s,
p90 {lat["p90"]:.2f} s, p99 {lat["p99"]:.2f} s, max {lat["max"]:.2f} s. {_backlog(s)}"""


def _backlog(s: dict[str, Any]) -> str:
    replay, trained = s["replay_rate_achieved"], s["samples_per_s_wall"]
    if trained < 0.95 * replay:
        return (f"The worker trained {trained:,.0f} real samples/s against a replay of {replay:,.0f} events/s, so a "
                "backlog built up and most of the latency is that queue, not the training step.")  # fmt: skip
    return f"The worker kept up with the replay ({trained:,.0f} samples/s trained, {replay:,.0f} events/s replayed)."


def _accounting_text(s: dict[str, Any]) -> str:
    """Where the replayed events went (runs recorded before the service section kept it say nothing)."""
    if "applied" not in s:
        return ""
    return (f"{s['events']:,} events replayed: {s['applied']:,} applied to user state, {s['dead_letters']:,} "
            f"dead letters, {s['duplicates']:,} duplicates (dropped by the event-id dedupe). ")  # fmt: skip


def _training_text(s: dict[str, Any]) -> str:
    augmented = ", ".join(f"{k} {v:,}" for k, v in sorted(s["augmented_trained"].items())) or "none"
    return f"""Rates over a trailing window, from samples of the worker's `/stats` (every second) and
`/model`. {s["trained"]:,} real samples trained at
{s["samples_per_s_wall"]:,.0f}/s over the worker's wall clock (first to last batch) and
{s["samples_per_s_in_step"]:,.0f}/s inside the training step; with augmented samples,
{s["all_samples_per_s_wall"]:,.0f}/s. {_accounting_text(s)}Every event to train on was trained on
{s["all_trained_after_s"]:.0f} s after the replay started. Augmented samples trained, by kind: {augmented}."""


def _ablation_text(s: dict[str, Any]) -> str:
    rows = []
    for r in s["results"]:
        cells = [f"{r['metrics'].get(n, {}).get(m, 0.0):.4f}" for n in SLICE_NAMES for m in ("hr@10", "ndcg@10")]
        generated = sum(r["generated"].values())
        rows.append(f"| {r['arm']} | " + " | ".join(cells) + f" | {generated:,} | {r['seconds']:.0f} |")
    head = " | ".join(f"HR@10 {n} | NDCG@10 {n}" for n in SLICE_NAMES.values())
    c = s["config"]
    arms = "Arms: " + "; ".join(f"`{a}` {ARMS[a].format(**c)}" for a in s["arms"]) + "."
    events = "all events" if c["limit"] is None else f"the first {c['limit']:,} events"
    by_arm = {r["arm"]: r["metrics"].get(OVERALL, {}).get("hr@10", 0.0) for r in s["results"]}
    best = max(by_arm, key=by_arm.__getitem__)
    versus = (f" The best arm overall is `{best}` (HR@10 {by_arm[best]:.4f}, ×{by_arm[best] / by_arm['none']:.3f} of "
              f"`none`)." if "none" in by_arm and by_arm["none"] > 0 and best != "none" else "")  # fmt: skip
    return f"""The service's test-then-train loop in process on {events} (micro-batches of {c["batch"]:,}, seed
{c["seed"]}), with the augmentation operators switched per arm; the transformer models run through the
inference worker's own handlers on the CPU (loaded in {s["load_seconds"]:.0f} s; LM loaded: {s["lm_loaded"]}).
{arms}
{c["paraphrase_items"]} items paraphrased by the LM.{versus} The figure's error bars are 95% intervals of each
arm's HR@10 alone; every arm scores the same events, so a difference between arms is less noisy than
the bars suggest.

| arm | {head} | samples generated | wall s |
|---|{"---:|" * (2 * len(SLICE_NAMES) + 2)}
{chr(10).join(rows)}"""


def _inference_text(sweeps: list[dict[str, Any]]) -> str:
    rows = []
    for sweep in sweeps:
        for kind, curve in sweep["curves"].items():
            base = curve[0]["per_s"]
            cells = ", ".join(f"{p['batch']}: {p['per_s']:,.1f}/s (×{p['per_s'] / base:.1f})" for p in curve)
            rows.append(f"| {sweep['device_name']} | {kind} | {cells} |")
    gpu = "" if any(s["device"].startswith("cuda") for s in sweeps) else " This run had no GPU."
    dynamic = [_dynamic_row(s) for s in sweeps if s.get("dynamic")]
    dynamic_text = ""
    if dynamic:
        d = next(s["dynamic"] for s in sweeps if s.get("dynamic"))
        dynamic_text = f"""

The stars: the worker's own dynamic batcher (`DynamicBatcher`, max batch {d["config"]["max_batch"]}, max wait
{d["config"]["max_wait_ms"]:g} ms, as `STREAMREC_INFERENCE_*` set it) fed embedding requests one at a time, saturated
({d["concurrency"]} outstanding) and open loop at half the best static rate. *Efficiency* is its saturated
throughput over the best static batch's: what it keeps of what batching can win.

| device | saturated | mean batch | efficiency | half load offered | half load p50 / p99 | mean batch |
|---|---:|---:|---:|---:|---:|---:|
{chr(10).join(dynamic)}"""
    return f"""Static batches of realistic payloads (MovieLens item texts; expansion prompts for the LM) through
the inference worker's models, after a warm-up batch: the most dynamic batching can win.{gpu}

| device | request | batch size: throughput (× batch 1) |
|---|---|---|
{chr(10).join(rows)}{dynamic_text}"""


def _dynamic_row(sweep: dict[str, Any]) -> str:
    d = sweep["dynamic"]
    sat, half, best = d["saturated"], d["half_load"], d["best_static"]
    return (
        f"| {sweep['device_name']} | {sat['requests_per_s']:,.1f}/s | {sat['mean_batch']['embed']:.1f} "
        f"| {d['efficiency']:.2f} of batch {best['batch']} ({best['per_s']:,.1f}/s) "
        f"| {0.5 * best['per_s']:,.1f}/s | {half['p50_ms']:,.0f} / {half['p99_ms']:,.0f} ms "
        f"| {half['mean_batch']['embed']:.1f} |"
    )


def _delivery_text(s: dict[str, Any]) -> str:
    cells = s["producers"]
    rows = "\n".join(
        f"| {c['setting']} | {c['codec']} | {c['producer_partitioner']} | {c['produced']:,} | {c['applied']:,} | "
        f"{c['forwarded']:,} ({c['expected_forwards']:,}) | {c['duplicates']} | {c['lost']} | "
        f"{'ok' if c['ok'] else '**failed**'} |"
        for c in cells
    )
    failed = sum(not c["ok"] for c in cells)
    text = f"""A librdkafka producer (confluent-kafka) writes interactions with each codec and each of its
partitioners into a running worker (training off), one worker per `STREAMREC_PARTITIONER` setting;
each cell has users of its own, and its ledger reads every user's state back through the worker's
HTTP API. Forwarded: records re-sent to their home partition (expected: those whose key the two
partitioners place apart, where producer and setting disagree; none where they agree).
{len(cells)} cells, {sum(c["produced"] for c in cells):,} events: {failed} failed.

| setting | codec | producer partitioner | produced | applied | forwarded (expected) | duplicates | lost | |
|---|---|---|---:|---:|---:|---:|---:|---|
{rows}"""
    if not s["torture"]:
        return (
            text
            + """

No torture run in this report (`--quick`); `make test` runs a one-minute form, and
`bench/torture.py --runs 20` the full series."""
        )
    runs = []
    for run in s["torture"]:
        c, f = run["config"], run["figures"]
        checks = "\n".join(
            f"| {k['name']} | {'ok' if k['ok'] else '**failed**'} | {k['detail']} |" for k in run["checks"]
        )
        runs.append(f"""Torture run: {c["seconds"]:.0f} s of chaos, {c["partitions"]} partitions per topic,
{c["producer"]} producer at {c["rate"]:.0f} events/s, {c["busy_loops"]} busy loops, seed {c["seed"]}:
{f["events_acked"]:,} events, {f["slots"]} state directories, verdict **{"pass" if run["ok"] else "fail"}**.

| check | | detail |
|---|---|---|
{checks}""")
    return text + "\n\n" + "\n\n".join(runs)


def _reproduce(results: dict[str, Any]) -> str:
    return f"""## Reproduce

```bash
make setup kafka-fetch
.venv/bin/{results["command"]}
```

The raw figures are in [`{RESULTS}`]({RESULTS}); `streamrec bench --render <this directory>`
redraws the figures and this page from them."""
