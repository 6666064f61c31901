"""The commands a user runs: replay and the demo, end to end against the real broker."""

from __future__ import annotations

import json
import re
import time

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
    assert "Summary: 20,000 interactions in → 20,000 in user state + 0 dead letters; lost: 0." in done.stdout
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
    assert re.search(r"6 interactions in → 3 in user state \+ 3 dead letters; lost: 0\.", done.stdout), done.stdout


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
