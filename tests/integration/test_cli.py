"""The commands a user runs: replay and the demo, end to end against the real broker."""

from __future__ import annotations

import json
import re
import time

from streamrec.stream.tools.datasets import load_ml100k
from tests.integration.conftest import streamrec


def test_replay_ml100k_at_a_given_rate(app_settings):
    started = time.monotonic()
    done = streamrec(["replay", "--dataset", "ml-100k", "--limit", "1500", "--rate", "1000"], app_settings, timeout=120)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["catalogue"] == 1682 and report["interactions"] == 1500
    assert (
        report["by_topic"][app_settings["topic_clicks"]] + report["by_topic"][app_settings["topic_purchases"]] == 1500
    )
    assert report["seconds"] >= 1.4 and elapsed >= 1.4  # 1,500 events at 1,000/s


def test_replay_needs_exactly_one_source(app_settings):
    done = streamrec(["replay"], app_settings, timeout=60)
    assert done.returncode == 2 and "give exactly one of --dataset or --from-csv" in done.stderr


def test_demo_replays_ml100k_with_zero_loss(app_settings):
    done = streamrec(["demo", "--limit", "20000"], app_settings, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (
        "Summary: 20,000 interactions in → 20,000 in user state + 0 dead letters + 0 duplicates "
        "(dropped by the event-id dedupe); lost: 0." in done.stdout
    )
    assert "Zero loss" in done.stdout
    assert "20,000 samples trained" in done.stdout  # the model trained on every event
    assert "Embeddings published:" in done.stdout
    assert "Stream worker stopped (exit code 0)." in done.stdout


def test_demo_from_csv_dead_letters_bad_rows(app_settings, tmp_path):
    log = tmp_path / "shop.csv"
    log.write_text(
        "customer,product,when,what\n"
        "c1,p1,2024-05-01T10:00:00Z,click\n"
        "c1,p2,2024-05-01T10:01:00Z,purchase\n"
        "c2,p1,2024-05-01T10:02:00Z,click\n"
        ",p3,2024-05-01T10:03:00Z,click\n"  # no user: empty id
        "c3,p4,2024-05-01T10:04:00Z,wishlist\n"  # unknown event type
        "c4,p5,not a time,click\n"  # wrong type
    )
    args = ["demo", "--from-csv", str(log), "--user-col", "customer", "--item-col", "product", "--ts-col", "when",
            "--ts-unit", "iso", "--type-col", "what"]  # fmt: skip
    done = streamrec(args, app_settings, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (
        "6 interactions in → 3 in user state + 3 dead letters + 0 duplicates (dropped by the event-id dedupe); lost: 0."
        in done.stdout
    ), done.stdout


DUPLICATES = "(dropped by the event-id dedupe)"
DAY_MS = 86_400_000


def _summary(stdout: str) -> str:
    found = re.search(r"^Summary: (.*?)\. Users: ", stdout, re.MULTILINE)
    assert found, stdout[-3000:]
    return found[1]


def _prequential(stdout: str) -> tuple[int, int, int]:
    """Clicks late and re-read (not scored), and clicks scored over the catalogue, from the demo's training report."""
    found = re.search(r"([\d,]+) late and ([\d,]+) re-read clicks not scored", stdout)
    scored = re.search(r"^  streamrec\s+[\d.]+\s+[\d.]+\s+([\d,]+) ", stdout, re.MULTILINE)
    assert found and scored, stdout[-3000:]
    return tuple(int(n.replace(",", "")) for n in (found[1], found[2], scored[1]))  # type: ignore[return-value]


def test_a_second_demo_in_the_same_state_is_new_events_by_the_same_users(app_settings):
    """The state directory kept, the demo again: no loss, every event applied, and not one of them late."""
    frame = load_ml100k().interactions.iloc[:2000]
    clicks = int((frame["type"] == "click").sum())
    args = ["demo", "--limit", "2000", "--rate", "2000"]
    first = streamrec(args, app_settings, timeout=300)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert (
        _summary(first.stdout)
        == f"2,000 interactions in → 2,000 in user state + 0 dead letters + 0 duplicates {DUPLICATES}; lost: 0"
    )
    run_1 = re.search(r"^Run (\S+): event ids end in @\1; times as in the dataset\.", first.stdout, re.MULTILINE)
    assert run_1, first.stdout[:2000]
    users = re.search(r"Users: ([\d,]+)", first.stdout)[1]

    second = streamrec(args, app_settings, timeout=300)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert (
        _summary(second.stdout)
        == f"2,000 interactions in → 2,000 in user state + 0 dead letters + 0 duplicates {DUPLICATES}; lost: 0"
    )
    assert "Zero loss" in second.stdout
    # Its times start the day after the first run's last event: the same users, coming back.
    days = (int(frame["ts"].iloc[-1]) - int(frame["ts"].iloc[0])) // DAY_MS + 1
    moved = rf"times moved {days:,} days later, past the newest event already on the topics\."
    run_2 = re.search(rf"^Run (\S+): event ids end in @\1; {moved}", second.stdout, re.MULTILINE)
    assert run_2 and run_2[1] != run_1[1], second.stdout[:2000]
    assert re.search(r"Users: ([\d,]+)", second.stdout)[1] == users
    assert "4,000 samples trained" in second.stdout  # the model went on from its checkpoint, on the new events
    late, reread, scored = _prequential(second.stdout)
    # Unmoved, every click of the second run would be late (older than its user's newest event): never scored.
    assert reread == 0 and late + scored == clicks and scored > 0, (late, reread, scored)


def test_demo_continue_replays_the_last_run_and_counts_what_it_applied_as_duplicates(app_settings):
    # The first 2,000 events include a user with 558: the dedupe window must hold them all.
    settings = {**app_settings, "dedupe_window": 1000}
    first = streamrec(["demo", "--limit", "1000"], settings, timeout=300)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert (
        _summary(first.stdout)
        == f"1,000 interactions in → 1,000 in user state + 0 dead letters + 0 duplicates {DUPLICATES}; lost: 0"
    )
    run_id = re.search(r"^Run (\S+):", first.stdout, re.MULTILINE)[1]

    # An interrupted run, finished: what it applied is dropped, the rest applied.
    rest = streamrec(["demo", "--continue", "--limit", "2000"], settings, timeout=300)
    assert rest.returncode == 0, rest.stdout[-3000:] + rest.stderr[-3000:]
    assert f"Continuing run {run_id} (started " in rest.stdout and "Note:" not in rest.stdout
    assert (
        _summary(rest.stdout)
        == f"2,000 interactions in → 1,000 in user state + 0 dead letters + 1,000 duplicates {DUPLICATES}; lost: 0"
    )
    assert "2,000 samples trained" in rest.stdout  # duplicates are not trained on

    again = streamrec(["demo", "--continue", "--limit", "2000"], settings, timeout=300)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert (
        _summary(again.stdout)
        == f"2,000 interactions in → 0 in user state + 0 dead letters + 2,000 duplicates {DUPLICATES}; lost: 0"
    )
    assert "Zero loss" in again.stdout and "2,000 samples trained" in again.stdout


def test_demo_continue_without_an_earlier_run_is_a_usage_error(app_settings):
    done = streamrec(["demo", "--continue", "--limit", "10"], app_settings, timeout=120)
    runs = app_settings["state_dir"] / "demo-runs.jsonl"
    assert done.returncode == 2, done.stdout + done.stderr
    assert (
        f"--continue: no earlier demo run of app {app_settings['app_id']!r} is recorded in {runs}; "
        "run the demo without --continue" in done.stderr
    )
    assert "Using the Kafka cluster" not in done.stdout and "Stream worker" not in done.stdout  # nothing was started


def test_topics_create_refuses_a_source_topic_with_the_wrong_partition_count(app_settings):
    import asyncio

    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    async def create_one_partition_topic() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=app_settings["kafka_bootstrap_servers"])
        await admin.start()
        try:
            await admin.create_topics([NewTopic(app_settings["topic_clicks"], 1, 1)])
        finally:
            await admin.close()

    asyncio.run(create_one_partition_topic())
    done = streamrec(["topics", "create"], app_settings, timeout=60)
    assert done.returncode == 1
    assert f"topic {app_settings['topic_clicks']} has 1 partition(s) but STREAMREC_TOPIC_PARTITIONS=4" in done.stderr
    assert "Set STREAMREC_TOPIC_PARTITIONS=1, or recreate the topic." in done.stderr
