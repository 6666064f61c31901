"""``streamrec``: one entry point for the broker, the workers, replay and the demo.

Every option that is also a setting reads its default from the environment through
:class:`~streamrec.stream.settings.Settings`; the command line only says what to do.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import click

from streamrec.stream.settings import Settings


def _settings() -> Settings:
    try:
        return Settings()
    except Exception as exc:  # noqa: BLE001 - pydantic's message names the bad variable
        raise click.ClickException(f"invalid configuration: {exc}") from None


@click.group()
@click.version_option(package_name="streamrec")
def main() -> None:
    """Streaming online-learning recommender on Kafka and Faust."""


# --- kafka -----------------------------------------------------------------------------------
@main.group()
def kafka() -> None:
    """The embedded single-node Kafka broker (KRaft), for machines without Docker."""


def _local_kafka():
    from streamrec.stream.kafka.local import LocalKafka

    settings = _settings()
    if not settings.uses_embedded_kafka:
        click.echo(f"KAFKA_BOOTSTRAP_SERVERS={settings.kafka_bootstrap_servers} is set: using that cluster, "
                   "nothing to start or stop locally.")  # fmt: skip
        sys.exit(0)
    return LocalKafka(settings)


def _kafka_errors(fn):
    """Turn the errors a user can act on into one-line messages instead of tracebacks."""
    from functools import wraps

    @wraps(fn)
    def wrapper(*args, **kwargs):
        from streamrec.stream.kafka.admin import KafkaUnavailable, TopicLayoutError
        from streamrec.stream.kafka.local import LocalKafkaError

        try:
            return fn(*args, **kwargs)
        except (LocalKafkaError, KafkaUnavailable, TopicLayoutError, FileNotFoundError) as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


@kafka.command("fetch")
@_kafka_errors
def kafka_fetch() -> None:
    """Download the broker jars from Maven Central into the cache (done by start if needed)."""
    local = _local_kafka()
    click.echo(f"Kafka {local.version} jars in {local.fetch()}")


@kafka.command("start")
@_kafka_errors
def kafka_start() -> None:
    """Start the local broker (fetching it on first use) and wait until it serves requests."""
    local = _local_kafka()
    status = local.start()
    click.echo(f"Kafka {status.version} running on {status.bootstrap} (pid {status.pid}); log: {status.log_file}")
    if status.security_protocol != "PLAINTEXT":
        click.echo(f"{status.security_protocol} listener: PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 for "
                   f"{', '.join(sorted(local.sasl_users))}")  # fmt: skip


@kafka.command("stop")
@_kafka_errors
def kafka_stop() -> None:
    """Stop the local broker cleanly."""
    local = _local_kafka()
    click.echo("Kafka stopped." if local.stop() else "Kafka was not running.")


@kafka.command("status")
@_kafka_errors
def kafka_status() -> None:
    """Say whether the local broker runs; exit code 0 if it does, 3 if not."""
    status = _local_kafka().status()
    if status.running:
        click.echo(f"running: Kafka {status.version} on {status.bootstrap} (pid {status.pid})")
    else:
        click.echo(f"not running (would listen on {status.bootstrap})")
        sys.exit(3)


# --- assets ------------------------------------------------------------------------------------
@main.group()
def assets() -> None:
    """Data the augmentation needs besides the Python packages."""


@assets.command("fetch")
def assets_fetch() -> None:
    """Prepare WordNet 3.0 (from Debian's wordnet-base package) in the cache, for word substitution."""
    from streamrec.models.augmentation.wordnet_data import WordNetUnavailable, ensure_wordnet

    try:
        path = ensure_wordnet(_settings().cache_dir)
    except WordNetUnavailable as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"WordNet in {path}")


# --- topics ------------------------------------------------------------------------------------
@main.group()
def topics() -> None:
    """Topic administration."""


@topics.command("create")
@_kafka_errors
def topics_create() -> None:
    """Create the service's topics with the configured partitions (existing ones are kept)."""
    from streamrec.stream.kafka.admin import ensure_topics

    created = asyncio.run(ensure_topics(_settings()))
    click.echo(f"created: {', '.join(created)}" if created else "all topics exist")


# --- workers -----------------------------------------------------------------------------------
@main.group()
def worker() -> None:
    """Long-running worker processes."""


@worker.command("stream")
@_kafka_errors
def worker_stream() -> None:
    """Run the Faust stream worker (ingestion agents, tables, web endpoints) until SIGTERM."""
    from streamrec.stream.worker.process import run_stream_worker

    run_stream_worker(_settings())


@worker.command("augment")
@_kafka_errors
def worker_augment() -> None:
    """Run the transformer inference worker (embeddings, LM scoring, paraphrases) until SIGTERM."""
    from streamrec.stream.inference.worker import run_inference_worker

    run_inference_worker(_settings())


# --- replay and demo -----------------------------------------------------------------------------
def _dataset_options(fn):
    options = [
        click.option("--dataset", type=click.Choice(["ml-100k"]), default=None, help="A dataset shipped in a package."),
        click.option("--from-csv", "csv_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     default=None, help="Replay your own interaction log instead."),
        click.option("--user-col", default="user_id", show_default=True),
        click.option("--item-col", default="item_id", show_default=True),
        click.option("--ts-col", default="ts", show_default=True),
        click.option("--ts-unit", type=click.Choice(["ms", "s", "iso"]), default="ms", show_default=True),
        click.option("--type-col", default=None, help="Column with click/purchase; else --default-type."),
        click.option("--default-type", type=click.Choice(["click", "purchase"]), default="click", show_default=True),
        click.option("--event-id-col", default=None, help="Column with event ids; else generated."),
        click.option("--sep", default=",", show_default=True, help="CSV field separator."),
        click.option("--purchase-min-rating", type=float, default=4.0, show_default=True,
                     help="ML-100K: ratings at or above this are also purchases."),
        click.option("--rate", type=float, default=None, help="Events per second (default: as fast as possible)."),
        click.option("--speedup", type=float, default=None, help="Replay the dataset's clock N times faster."),
        click.option("--limit", type=int, default=None, help="Stop after this many interactions."),
    ]  # fmt: skip
    for option in reversed(options):
        fn = option(fn)
    return fn


def _load_dataset(kw: dict):
    from streamrec.stream.tools.datasets import load_csv, load_ml100k

    if (kw["dataset"] is None) == (kw["csv_path"] is None):
        raise click.UsageError("give exactly one of --dataset or --from-csv")
    try:
        if kw["dataset"] == "ml-100k":
            return load_ml100k(purchase_min_rating=kw["purchase_min_rating"])
        return load_csv(
            kw["csv_path"], user_col=kw["user_col"], item_col=kw["item_col"], ts_col=kw["ts_col"],
            ts_unit=kw["ts_unit"], type_col=kw["type_col"], default_type=kw["default_type"],
            event_id_col=kw["event_id_col"], sep=kw["sep"],
        )  # fmt: skip
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None


def _pacing(kw: dict):
    from streamrec.stream.tools.replay import Pacing

    try:
        return Pacing(rate=kw["rate"], speedup=kw["speedup"])
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


@main.command("replay")
@_dataset_options
@click.option("--no-catalogue", is_flag=True, help="Send interactions only.")
@_kafka_errors
def replay_cmd(no_catalogue: bool, **kw) -> None:
    """Produce a dataset into Kafka as a live stream (catalogue first, then interactions in time order)."""
    from tqdm import tqdm

    from streamrec.stream.kafka.admin import ensure_topics
    from streamrec.stream.tools.replay import replay

    settings = _settings()
    dataset = _load_dataset(kw)
    pacing = _pacing(kw)
    asyncio.run(ensure_topics(settings))
    total = len(dataset.interactions) if kw["limit"] is None else min(kw["limit"], len(dataset.interactions))
    with tqdm(total=total, unit="ev", desc=f"replay {dataset.name}") as bar:

        def progress(report):
            bar.n = report.interactions
            bar.refresh()

        report = asyncio.run(
            replay(
                settings, dataset, pacing, limit=kw["limit"], include_catalogue=not no_catalogue, on_progress=progress
            )
        )
    click.echo(json.dumps({"catalogue": report.catalogue, "interactions": report.interactions,
                           "by_topic": dict(report.produced), "seconds": round(report.seconds, 2),
                           "events_per_s": round(report.events_per_s)}))  # fmt: skip


@main.command("demo")
@_dataset_options
@click.option("--keep-running", is_flag=True, help="Leave the broker and worker running after the replay.")
@click.option(
    "--continue",
    "continue_run",
    is_flag=True,
    help="Replay the last run again, with its event ids and times: what it applied is dropped as duplicates, "
    "the rest is applied (finishes an interrupted run). Without it, every run is new events.",
)
@_kafka_errors
def demo_cmd(keep_running: bool, continue_run: bool, **kw) -> None:
    """Start the local broker and a stream worker, replay a dataset live, check nothing was lost.

    Each run stamps its event ids with a run id and moves the dataset's times past the newest event
    already on the topics: run again in the same state directory, it adds new events by the same users.
    """
    from streamrec.stream.tools.demo import NoRunToContinue, run_demo

    if kw["dataset"] is None and kw["csv_path"] is None:
        kw["dataset"] = "ml-100k"
    settings = _settings()
    dataset = _load_dataset(kw)
    try:
        ok = asyncio.run(
            run_demo(
                settings, dataset, _pacing(kw), limit=kw["limit"], keep_running=keep_running, continue_run=continue_run
            )
        )
    except NoRunToContinue as exc:
        raise click.UsageError(str(exc)) from None
    except RuntimeError as exc:  # the worker failed to start; the message carries its log tail
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        ok = True
    sys.exit(0 if ok else 1)


# --- benchmarks ----------------------------------------------------------------------------------
@main.command("bench")
@click.option("--quick", is_flag=True, help="A short run (under five minutes on 2 cores) that checks the suite.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Report directory (default: bench/results/<date>-<machine> under the current directory, with -quick and "
    "-custom suffixes).",
)
@click.option("--machine", default=None, help="Machine name in the directory and figures (default: host, cores, GPU).")
@click.option("--sections", default=None, help="Comma-separated sections to run (default: all).")
@click.option(
    "--events",
    type=click.IntRange(min=1),
    default=None,
    help="Events replayed by the ingest and service sections (default: all; fewer with --quick).",
)
@click.option("--rate", type=click.FloatRange(min=1), default=None, help="Service replay rate, events/s [1000].")
@click.option(
    "--seeds",
    type=click.IntRange(min=1),
    default=None,
    help="Service runs (model seeds) compared paired with intervals [5; 1 with --quick].",
)
@click.option(
    "--render",
    "render_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Redraw the figures and report.md in DIR from its results.json; runs nothing.",
)
@_kafka_errors
def bench_cmd(quick: bool, out: Path | None, machine: str | None, sections: str | None, events: int | None,
              rate: float | None, seeds: int | None, render_dir: Path | None) -> None:  # fmt: skip
    """Run the benchmark suite and write a report with plots (JSON, Markdown, PNG)."""
    import shlex
    from datetime import UTC, datetime

    # The suite is imported only here: the product does not load benchmark code otherwise.
    from streamrec.bench.common import describe_machine
    from streamrec.bench.report import RESULTS, render, write_report
    from streamrec.bench.suite import SECTIONS, SuiteConfig, run_suite

    if render_dir is not None:
        if not (render_dir / RESULTS).is_file():
            raise click.ClickException(f"no {RESULTS} in {render_dir}: --render redraws a report from a run's figures")
        click.echo(render(render_dir))
        return
    chosen = SECTIONS if sections is None else [s.strip() for s in sections.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown or not chosen:
        raise click.BadParameter(f"unknown {unknown}; choose from {', '.join(SECTIONS)}", param_hint="--sections")
    config = (SuiteConfig.quick() if quick else SuiteConfig.full()).with_overrides(
        ingest_events=events, service_events=events, service_rate=rate, service_seeds=seeds
    )
    command = "streamrec " + shlex.join(sys.argv[1:])
    described = describe_machine(machine)
    if out is None:
        # A run with fewer sections or other replay figures never takes a full report's place.
        custom = set(chosen) != set(SECTIONS) or any(v is not None for v in (events, rate, seeds))
        suffix = ("-quick" if quick else "") + ("-custom" if custom else "")
        out = Path("bench") / "results" / f"{datetime.now(UTC).date().isoformat()}-{described['name']}{suffix}"
    results = run_suite(config, command, chosen, machine=described, say=click.echo)
    report = write_report(results, out)
    click.echo(f"report: {report} ({results['total_seconds']:.0f} s)")


# --- contract ------------------------------------------------------------------------------------
@main.command("schemas")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("schemas"), show_default=True)
@click.option(
    "--from-code",
    is_flag=True,
    help="Generate them from the contract's models instead of copying the packaged files (for maintainers).",
)
def schemas_cmd(out: Path, from_code: bool) -> None:
    """Write the event contract's JSON Schema files (the ones packaged with streamrec)."""
    from streamrec.stream.worker.contract import json_schemas, packaged_schemas

    out.mkdir(parents=True, exist_ok=True)
    for name, schema in (json_schemas() if from_code else packaged_schemas()).items():
        (out / name).write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        click.echo(out / name)


@main.command("dashboard")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="File (default: stdout).")
def dashboard_cmd(out: Path | None) -> None:
    """The Grafana dashboard for streamrec's metrics, as JSON to import (compose and Helm provision it)."""
    from importlib import resources

    text = resources.files("streamrec.stream").joinpath("dashboards", "streamrec.json").read_text()
    if out is None:
        click.echo(text, nl=False)
    else:
        out.write_text(text)
        click.echo(out)


@main.command("dead-letters")
@click.option("--limit", type=int, default=20, show_default=True)
@_kafka_errors
def dead_letters_cmd(limit: int) -> None:
    """Print the newest dead letters: reason, source position and the start of the original bytes."""
    from streamrec.stream.worker.dead_letters import read_dead_letters

    settings = _settings()
    for letter in asyncio.run(read_dead_letters(settings, settings.topic_dead_letters, last=limit)):
        preview = letter.value[:80].decode("utf-8", "replace")
        click.echo(f"{letter.source.topic}[{letter.source.partition}]@{letter.source.offset} "
                   f"{letter.reason}: {letter.detail} | {preview!r}")  # fmt: skip


if __name__ == "__main__":
    main()
