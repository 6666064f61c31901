"""The README's main job: local broker → stream worker → live replay of a dataset → zero-loss check.

It runs the same pieces a deployment runs: the worker is a separate ``streamrec worker stream``
process, the broker is real, and the numbers printed come from the worker's ``/stats`` endpoint
and the dead-letter topic's offsets, not from the producer's own count. Every replayed event ends
up in one of three places: the user state, the dead-letter topic, or the duplicates the worker's
event-id dedupe dropped; whatever is in none of them is lost (:class:`Tally`).

Every run is a run of its own (:class:`DemoRun`): its event ids carry the run's id and its times
come after the newest event already on the topics, so running the demo again in the same state
directory adds new events by the same users, as a live stream would, instead of re-sending the
first run (which the dedupe would drop). ``--continue`` replays the last run again, with its ids
and times: what it already applied is dropped as duplicates, the rest is applied.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from tqdm import tqdm

from streamrec.stream.kafka.admin import end_offsets, ensure_topics, read_topic
from streamrec.stream.kafka.local import LocalKafka
from streamrec.stream.settings import Settings
from streamrec.stream.tools.datasets import Dataset
from streamrec.stream.tools.replay import DAY_MS, Pacing, ReplayReport, RunStamp, new_run_id, replay, shift_past
from streamrec.stream.worker.process import WorkerProcess

RUNS_FILE = "demo-runs.jsonl"
NEWEST_SCAN = 100  # records read back from the end of each input partition to find the newest event time


async def fetch_stats(session: aiohttp.ClientSession, settings: Settings, totals: bool = False) -> dict[str, Any]:
    url = f"{settings.web_url}/stats" + ("?totals=1" if totals else "")
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=10)) as response:
        response.raise_for_status()
        return await response.json()


async def fetch_model(session: aiohttp.ClientSession, settings: Settings) -> dict[str, Any]:
    # /model waits for the baselines' process to score every batch sent so far: slow while it catches up.
    async with session.get(f"{settings.web_url}/model", timeout=aiohttp.ClientTimeout(total=300)) as response:
        response.raise_for_status()
        return await response.json()


# --- runs --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DemoRun:
    """One run of the demo: its id (stamped on every event id), its dataset, how far it moved the
    dataset's clock, and the app (consumer group and tables) it ran against.

    Runs are recorded in ``<state_dir>/demo-runs.jsonl``, next to the broker's log and the tables
    they describe, so that ``--continue`` can replay the last one with the same ids and times.
    """

    run_id: str
    dataset: str
    shift_ms: int
    app_id: str
    started_at: str

    def stamp(self, settings: Settings) -> RunStamp:
        return RunStamp(self.run_id, self.shift_ms, settings.min_event_ms)


class NoRunToContinue(RuntimeError):
    """``--continue`` without a recorded run to continue (or one of another dataset)."""


def runs_path(settings: Settings) -> Path:
    return settings.state_dir / RUNS_FILE


def record_run(path: Path, run: DemoRun) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as file:
        file.write(json.dumps(asdict(run)) + "\n")


def last_run(path: Path, app_id: str) -> DemoRun | None:
    """The newest run recorded for ``app_id`` (lines that do not parse are skipped)."""
    if not path.exists():
        return None
    found = None
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            run = DemoRun(**json.loads(line))
        except (ValueError, TypeError):
            continue
        if run.app_id == app_id:
            found = run
    return found


def run_to_continue(path: Path, app_id: str, dataset: str) -> DemoRun:
    run = last_run(path, app_id)
    if run is None:
        raise NoRunToContinue(
            f"--continue: no earlier demo run of app {app_id!r} is recorded in {path}; run the demo without --continue"
        )
    if run.dataset != dataset:
        raise NoRunToContinue(
            f"--continue: the last run ({run.run_id}) replayed {run.dataset}, not {dataset}; "
            f"continue it with the same dataset, or run the demo without --continue"
        )
    return run


def newest_event_time(values: Iterable[bytes | None], min_ms: int, max_ms: int) -> int | None:
    """The newest ``ts`` among raw interaction records (epoch ms), counting only times the worker
    accepts (``min_ms`` to ``max_ms``): a record it dead-letters as too far ahead says nothing about
    what the user states hold."""
    newest = None
    for value in values:
        try:
            ts = orjson.loads(value or b"").get("ts")
        except (orjson.JSONDecodeError, AttributeError):
            continue
        if isinstance(ts, int) and not isinstance(ts, bool) and min_ms <= ts <= max_ms:
            newest = ts if newest is None else max(newest, ts)
    return newest


async def newest_on_topics(settings: Settings, now_ms: int) -> int | None:
    """The newest event time on the input topics (the end of each partition, read back)."""
    values: list[bytes | None] = []
    for topic in settings.interaction_topics:
        values += [record.value for record in await read_topic(settings, topic, last=NEWEST_SCAN)]
    return newest_event_time(values, settings.min_event_ms, now_ms + int(settings.max_future_skew_s * 1000))


async def new_run(settings: Settings, dataset: Dataset, limit: int | None, now: datetime) -> tuple[DemoRun, str]:
    """A fresh run: a new id, and times moved past the newest event on the topics; with what to print."""
    now_ms = int(now.timestamp() * 1000)
    newest = await newest_on_topics(settings, now_ms)
    span = dataset.time_range(limit, settings.min_event_ms)
    first, last = span if span is not None else (None, None)
    shift = shift_past(newest, first, last, now_ms)
    run = DemoRun(new_run_id(now), dataset.name, shift, settings.app_id, now.isoformat(timespec="seconds"))
    said = f"Run {run.run_id}: event ids end in @{run.run_id}"
    if shift:
        said += f"; times moved {shift // DAY_MS:,} days later, past the newest event already on the topics"
    else:
        said += "; times as in the dataset"
    if newest is not None and first is not None and first + shift <= newest:
        said += (" (they cannot all come after the newest event on the topics without going into the future: "
                 "events older than their user's newest are late, trained on but not scored)")  # fmt: skip
    return run, said + ". `streamrec demo --continue` replays this run again."


def dedupe_window_note(dataset: Dataset, limit: int | None, window: int) -> str | None:
    """What ``--continue`` cannot drop: the worker keeps each user's ``window`` newest event ids."""
    if window == 0:
        return ("Note: STREAMREC_DEDUPE_WINDOW=0 turns the event-id dedupe off: every event the run applied "
                "is applied again.")  # fmt: skip
    counts = dataset.interactions["user_id"].iloc[:limit].value_counts()
    over = counts[counts > window]
    if over.empty:
        return None
    return (
        f"Note: {len(over):,} users have more than {window:,} events in this replay, and the worker keeps each "
        f"user's {window:,} newest event ids (STREAMREC_DEDUPE_WINDOW): their events are applied again, not "
        f"dropped as duplicates. STREAMREC_DEDUPE_WINDOW={int(over.max())} for both runs drops them all."
    )


# --- accounting --------------------------------------------------------------------------------------
@dataclass
class Accounting:
    """Where the worker has put events so far.

    ``applied`` (events in user state) is summed from the changelog-backed table and
    ``dead_letters`` is the dead-letter topic's size: both survive a restart. ``duplicates`` is
    the worker process's own counter: the demo compares readings of the one worker it started.
    """

    applied: int
    dead_letters: int
    duplicates: int
    users: int
    items: int

    @property
    def total(self) -> int:
        return self.applied + self.dead_letters + self.duplicates


@dataclass(frozen=True)
class Tally:
    """A run's events: in user state, dead-lettered, dropped as duplicates, and the rest: lost."""

    produced: int
    applied: int
    dead_letters: int
    duplicates: int

    @property
    def lost(self) -> int:
        return self.produced - self.applied - self.dead_letters - self.duplicates

    def line(self) -> str:
        return (
            f"{self.produced:,} interactions in → {self.applied:,} in user state + {self.dead_letters:,} dead letters "
            f"+ {self.duplicates:,} duplicates (dropped by the event-id dedupe); lost: {self.lost:,}"
        )


def tally(produced: int, before: Accounting, now: Accounting) -> Tally:
    """What the worker did with the ``produced`` events of a run, from readings before and after it."""
    return Tally(
        produced,
        now.applied - before.applied,
        now.dead_letters - before.dead_letters,
        now.duplicates - before.duplicates,
    )


async def accounting(session: aiohttp.ClientSession, settings: Settings) -> Accounting:
    stats = await fetch_stats(session, settings, totals=True)
    dlq = sum((await end_offsets(settings, settings.topic_dead_letters)).values())
    return Accounting(stats["user_state_events_total"], dlq, stats["duplicates"], stats["users"], stats["items"])


async def settled_accounting(
    session: aiohttp.ClientSession, settings: Settings, quiet_s: float = 3.0, assignment_timeout_s: float = 300.0
) -> Accounting:
    """Accounting once the worker owns every input partition and has stopped moving.

    Its tables hold nothing until the consumer group assigns it their partitions, which comes a
    few seconds after ``/health`` answers: a reading taken before would count the earlier runs'
    events as this run's. After that it may still be catching up on an earlier run.
    """
    wanted = len(settings.interaction_topics) * settings.topic_partitions
    deadline = time.monotonic() + assignment_timeout_s
    while len((await fetch_stats(session, settings)).get("assigned", ())) < wanted:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the stream worker was not assigned all {wanted} input partitions in {assignment_timeout_s:.0f}s "
                f"(is another worker of app {settings.app_id!r} running?)"
            )
        await asyncio.sleep(0.5)
    previous = await accounting(session, settings)
    while True:
        await asyncio.sleep(quiet_s)
        current = await accounting(session, settings)
        if current.total == previous.total:
            return current
        previous = current


def untrained(ends: Mapping[str, int], trained: Mapping[str, int]) -> int:
    """Offsets of the input partitions (``topic:partition`` → log end) the model has not trained past."""
    return sum(max(0, end - trained.get(tp, 0)) for tp, end in ends.items())


class ProgressDeadline:
    """Expires ``stall_s`` after the watched count last grew.

    The demo waits for the worker to account for every event it replayed. A fixed deadline called
    a worker that was still catching up on a slow machine a loss; this one waits as long as the
    worker makes progress, and gives up only on one that has stopped.
    """

    def __init__(self, stall_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_s = stall_s
        self.clock = clock
        self.count: int | None = None
        self.expires_at = clock() + stall_s

    def note(self, count: int) -> None:
        if self.count is None or count > self.count:
            self.count = count
            self.expires_at = self.clock() + self.stall_s

    def expired(self) -> bool:
        return self.clock() >= self.expires_at


def demo_worker_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The stream worker's environment in the demo: event-time alignment on unless the user says otherwise.

    The demo replays a dataset many times faster than the worker trains, so both topics build a
    backlog; without alignment a user's purchase is often applied before the click it followed, and
    such clicks cannot be scored (most of them, in a full replay). Its ingestion cost does not
    matter here: training, not ingestion, sets the demo's pace (docs/settings.md).
    """
    return {"STREAMREC_EVENT_TIME_ALIGNMENT": "true", **environ}


async def run_demo(
    settings: Settings,
    dataset: Dataset,
    pacing: Pacing,
    *,
    limit: int | None,
    keep_running: bool,
    continue_run: bool = False,
    drain_timeout_s: float = 300.0,
    out: Any = sys.stdout,
) -> bool:
    """Run the demo; return True when every replayed interaction is accounted for.

    ``continue_run``: replay the last recorded run again (its ids and times) instead of a new one.
    ``drain_timeout_s``: how long the worker may go without accounting for one more event (and,
    after, without training past one more offset) before the demo stops waiting.
    """
    # Checked before anything starts: --continue without a run to continue is a usage error.
    continued = run_to_continue(runs_path(settings), settings.app_id, dataset.name) if continue_run else None
    broker = LocalKafka(settings) if settings.uses_embedded_kafka else None
    started_broker = False
    if broker is not None:
        if not broker.status().running:
            print(f"Starting local Kafka {broker.version} on {broker.bootstrap} (first run downloads it)…", file=out)
            started_broker = True
        await asyncio.to_thread(broker.start)  # blocking: waits for the JVM
    else:
        print(f"Using the Kafka cluster at {settings.bootstrap_servers}", file=out)

    inference = None
    if settings.train and settings.augment:
        # The transformer inference worker (CPU here): item texts → content vectors, LM scoring.
        inference = WorkerProcess(settings, role="augment")
    worker = WorkerProcess(settings, env=demo_worker_env(os.environ))
    ok = False
    try:
        await ensure_topics(settings)
        if continued is not None:
            run = continued
            print(f"Continuing run {run.run_id} (started {run.started_at}): the same event ids and times; what it "
                  "applied is dropped as duplicates, the rest is applied.", file=out)  # fmt: skip
            note = dedupe_window_note(dataset, limit, settings.dedupe_window)
            if note:
                print(note, file=out)
        else:
            run, said = await new_run(settings, dataset, limit, datetime.now(UTC))
            record_run(runs_path(settings), run)  # before the replay: an interrupted run can be continued
            print(said, file=out)
        if inference is not None:
            inference.start()
        worker.start()
        async with aiohttp.ClientSession() as session:
            if inference is not None:
                print("Inference worker loading MiniLM and SmolLM2 on the CPU…", file=out)
                await asyncio.to_thread(inference.wait_healthy, 300)
                print(f"Inference worker up ({inference.web_url}); log: {inference.log_path}", file=out)
            await asyncio.to_thread(worker.wait_healthy)
            print(f"Stream worker up ({settings.web_url}); log: {worker.log_path}", file=out)
            before = await settled_accounting(session, settings, quiet_s=2.0)
            ok = await _replay_and_check(
                session, settings, dataset, pacing, limit, run.stamp(settings), before, worker, drain_timeout_s, out
            )
            if ok and settings.train:
                await _report_training(session, settings, worker, drain_timeout_s, out)
            if keep_running:
                print("Keeping the broker and worker running; press Ctrl-C to stop.", file=out)
                await asyncio.to_thread(worker.wait)
    finally:
        if not keep_running or not worker.alive():
            if worker.process is not None:
                print(f"Stream worker stopped (exit code {worker.stop()}).", file=out)
            if inference is not None and inference.process is not None:
                print(f"Inference worker stopped (exit code {inference.stop()}).", file=out)
            if broker is not None and started_broker:
                broker.stop()
                print("Local Kafka stopped.", file=out)
    return ok


async def _replay_and_check(
    session: aiohttp.ClientSession,
    settings: Settings,
    dataset: Dataset,
    pacing: Pacing,
    limit: int | None,
    stamp: RunStamp,
    before: Accounting,
    worker: WorkerProcess,
    drain_timeout_s: float,
    out: Any,
) -> bool:
    total = len(dataset.interactions) if limit is None else min(limit, len(dataset.interactions))
    bar = tqdm(total=total, unit="ev", desc=f"replay {dataset.name}", file=out, dynamic_ncols=True)
    live: dict[str, Any] = {}
    rate = _Rate()

    async def poll() -> None:
        while True:
            try:
                stats = await fetch_stats(session, settings)
                live.update(stats)
                rate.update(stats["consumed_total"])
            except (TimeoutError, aiohttp.ClientError):
                pass
            bar.set_postfix_str(_summary(live, rate.per_s), refresh=True)
            await asyncio.sleep(1.0)

    def progress(report: ReplayReport) -> None:
        bar.n = report.interactions
        bar.refresh()

    poller = asyncio.create_task(poll())
    try:
        report = await replay(settings, dataset, pacing, limit=limit, on_progress=progress, stamp=stamp)
        bar.close()
        print(
            f"Produced {report.interactions:,} interactions and {report.catalogue:,} catalogue items "
            f"in {report.seconds:.1f}s ({report.events_per_s:,.0f} events/s).",
            file=out,
        )
        deadline = ProgressDeadline(drain_timeout_s)
        now = before
        while not deadline.expired() and worker.alive():
            now = await accounting(session, settings)
            done = now.total - before.total
            deadline.note(done)
            print(f"\r  worker: {done:,}/{report.interactions:,} accounted for · {_summary(live, rate.per_s)}   ",
                  end="", file=out, flush=True)  # fmt: skip
            if done >= report.interactions:
                break
            await asyncio.sleep(1.0)
        print(file=out)
    finally:
        poller.cancel()
    counted = tally(report.interactions, before, now)
    print(
        f"Summary: {counted.line()}. Users: {now.users:,}, items: {now.items:,}. "
        f"Worker ingestion {live.get('consumed_total', 0) / max(live.get('uptime_s', 1), 1e-9):,.0f} events/s "
        f"over its uptime.",
        file=out,
    )
    if counted.lost == 0:
        print("Zero loss: every event is in user state, in the dead-letter topic or a duplicate of one applied "
              "before.", file=out)  # fmt: skip
    elif counted.lost > 0:
        why = "the worker exited" if not worker.alive() else f"no progress for {drain_timeout_s:.0f}s"
        print(f"LOSS: {counted.lost:,} events are unaccounted for ({why}); see {worker.log_path}", file=out)
    else:
        print(f"MISCOUNT: the worker accounted for {-counted.lost:,} events more than this run produced (another "
              f"producer on the topics?), so the run's own cannot be told apart; see {worker.log_path}",
              file=out)  # fmt: skip
    return counted.lost == 0


async def _report_training(
    session: aiohttp.ClientSession, settings: Settings, worker: WorkerProcess, timeout_s: float, out: Any
) -> None:
    """Wait until the model has trained past every offset of the input topics, then print its prequential table.

    The learner's offsets, not a count, say what the model has trained on: its counters restart
    with the process (a second run's worker has trained on none of the first run's events), and
    duplicates and dead letters are never trained on, yet their offsets are passed.
    """
    ends = {
        f"{topic}:{partition}": end
        for topic in settings.interaction_topics
        for partition, end in (await end_offsets(settings, topic)).items()
    }
    deadline = ProgressDeadline(timeout_s)
    model: dict[str, Any] | None = None
    while not deadline.expired() and worker.alive():
        try:
            model = await fetch_model(session, settings)
        except (TimeoutError, aiohttp.ClientError):
            await asyncio.sleep(1.0)
            continue
        behind = untrained(ends, model["trained_offsets"])
        deadline.note(sum(ends.values()) - behind)
        print(f"\r  training: {model['samples_trained']:,} samples, {behind:,} offsets to go   ",
              end="", file=out, flush=True)  # fmt: skip
        if behind == 0:
            break
        await asyncio.sleep(1.0)
    print(file=out)
    if model is None:
        print(f"No training report: the worker's /model did not answer; see {worker.log_path}", file=out)
        return
    print(
        f"Model version {model['version']:,}: {model['samples_trained']:,} samples trained; "
        f"prequential (scored before training over all {model['catalogue']:,} catalogue items, seen items "
        f"excluded; {model['late']:,} late and {model['reread']:,} re-read clicks not scored; "
        f"{model['unknown_items']:,} scored on items the model had not trained on), "
        f"{model['drift']['alarms']} drift alarms:",
        file=out,
    )
    print(f"  {'model':<14}{'HR@10':>9}{'NDCG@10':>9}{'scored':>9}   known items only: {'HR@10':>7}{'scored':>9}",
          file=out)  # fmt: skip
    for name, table in model["metrics"].items():
        overall, known = table.get("overall", {}), table.get("known_items", {})
        print(f"  {name:<14}{overall.get('hr@10', 0):>9.4f}{overall.get('ndcg@10', 0):>9.4f}{overall.get('n', 0):>9,}"
              f"{'':>21}{known.get('hr@10', 0):>7.4f}{known.get('n', 0):>9,}", file=out)  # fmt: skip
    augmentation = model.get("augmentation")
    if augmentation:
        requests = augmentation.get("requests", {})
        generated = ", ".join(f"{kind} {n:,}" for kind, n in sorted(augmentation.get("generated", {}).items()))
        print(f"Augmented samples generated: {generated or 'none'}; trained: "
              f"{sum(model.get('augmented_trained', {}).values()):,}.", file=out)  # fmt: skip
        print(f"Item texts turned into content vectors: {augmentation.get('items_with_content', 0):,} "
              f"(rewrites {augmentation.get('rewrites', {})}); inference requests completed "
              f"{requests.get('completed', {})}, expired {requests.get('expired', {})}.", file=out)  # fmt: skip
    published = model.get("embeddings", {})
    print(
        f"Embeddings published: {published.get('published_users', 0):,} user and "
        f"{published.get('published_items', 0):,} item records to {settings.topic_embeddings}.",
        file=out,
    )


class _Rate:
    """Events per second between the two latest readings of a counter."""

    def __init__(self) -> None:
        self.last: tuple[float, int] | None = None
        self.per_s = 0.0

    def update(self, count: int) -> None:
        now = time.monotonic()
        if self.last is not None and now > self.last[0]:
            self.per_s = (count - self.last[1]) / (now - self.last[0])
        self.last = (now, count)


def _summary(stats: dict[str, Any], per_s: float) -> str:
    if not stats:
        return "waiting for worker stats"
    return (
        f"{per_s:,.0f} ev/s · users {stats.get('users', 0):,} · items {stats.get('items', 0):,} · "
        f"dead letters {stats.get('dead_letters_total', 0):,} · duplicates {stats.get('duplicates', 0):,}"
    )
