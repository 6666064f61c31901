"""The model trained inside the stream worker: metrics, serving, the embeddings topic, checkpoints.

Everything runs against the real broker and real worker processes; the assertions read the
worker's HTTP API, the embeddings topic and the checkpoint files.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import orjson
import pytest

from streamrec.models.checkpoint import load_latest
from streamrec.models.embeddings import EmbeddingRecord
from streamrec.stream.kafka.admin import read_topic
from streamrec.stream.worker.publisher import SOURCE_TS_HEADER
from tests.integration.conftest import settings_of
from tests.integration.test_ingestion import produce, topic_for, valid_events


def records_for(settings: dict[str, Any], events: list[dict[str, Any]]) -> list[tuple[str, bytes, bytes]]:
    return [(topic_for(settings, e), e["user_id"].encode(), orjson.dumps(e)) for e in events]


def latest_embeddings(bootstrap: str, topic: str) -> dict[bytes, tuple[EmbeddingRecord | None, Any]]:
    """The newest record per key on the embeddings topic (what compaction keeps)."""
    latest: dict[bytes, tuple[EmbeddingRecord | None, Any]] = {}
    for r in sorted(asyncio.run(read_topic(bootstrap, topic)), key=lambda r: (r.partition, r.offset)):
        latest[r.key] = (None if r.value is None else EmbeddingRecord.decode(r.value), r)
    return latest


@pytest.fixture
def training_settings(app_settings: dict[str, Any]) -> dict[str, Any]:
    return {**app_settings, "baselines": "most_popular,biased_mf,funk_mf", "batch_size": 300,
            "evaluation_keep_events": 500}  # fmt: skip


def test_worker_scores_trains_serves_and_publishes_what_the_model_holds(training_settings, start_worker):
    settings = settings_of(training_settings)
    worker = start_worker(training_settings)
    events = valid_events(3000, seed=21)
    sent_at_ms = int(time.time() * 1000)
    asyncio.run(produce(settings.bootstrap_servers, records_for(training_settings, events)))
    worker.wait_for(lambda s: s.get("trained") == len(events), timeout_s=120)

    status, model = worker.get("/model")
    assert status == 200
    assert model["samples_trained"] == len(events) and model["stats"]["skipped_already_trained"] == 0
    metrics = model["metrics"]
    assert set(metrics) == {"streamrec", "most_popular", "biased_mf", "funk_mf"}
    # every model is scored on the same clicks, over the whole catalogue (items never seen before included)
    clicks = sum(e["type"] == "click" for e in events)
    counts = {name: table["overall"]["n"] for name, table in metrics.items()}
    assert model["reread"] == 0 and model["catalogue"] == len({e["item_id"] for e in events})
    assert len(set(counts.values())) == 1 and 0 < counts["streamrec"] == clicks - model["late"]
    # the second column: only clicks on items the model had trained on, ranked among those (how many
    # clicks are on unknown items depends on which topic is read first: purchases teach items too)
    known = {name: table["known_items"]["n"] for name, table in metrics.items()}
    assert set(known.values()) == {clicks - model["late"] - model["unknown_items"]}
    # clicks read after a later event of their user (the purchases topic read ahead) are not scored
    assert 0.0 <= metrics["streamrec"]["overall"]["hr@10"] <= 1.0
    # per-event metrics for paired comparisons: the first 500 scored clicks, the same users for every model
    status, kept = worker.get("/model/events")
    assert status == 200 and kept["keep_events"] == 500 and set(kept) - {"keep_events"} == set(metrics)
    first = kept["streamrec"]["overall"]["users"]
    assert len(first) == min(500, counts["streamrec"]) and set(first) <= {e["user_id"] for e in events}
    for name in metrics:
        assert kept[name]["overall"]["users"] == first, name
        # a hit, a miss, or between for a target tied with others (the expected value of a random tie-break)
        hits, gains = kept[name]["overall"]["hr@10"], kept[name]["overall"]["ndcg@10"]
        assert len(hits) == len(gains) == len(first) and all(
            0.0 <= g <= h <= 1.0 for h, g in zip(hits, gains, strict=True)
        ), name
    assert model["memory"]["items"]["assigned"] == len({e["item_id"] for e in events})
    assert model["memory"]["users"]["assigned"] == len({e["user_id"] for e in events})

    # --- serving ---
    user = events[-1]["user_id"]
    seen = {e["item_id"] for e in events if e["user_id"] == user}
    status, body = worker.get(f"/recommend/{user}?k=7")
    assert status == 200 and body["fallback"] is None and body["k"] == 7
    picked = [entry["item_id"] for entry in body["items"]]
    assert len(picked) == 7 and not set(picked) & seen  # already-seen items are excluded
    scores = [entry["score"] for entry in body["items"]]
    assert scores == sorted(scores, reverse=True)

    status, body = worker.get("/recommend/someone-new?k=5")
    assert status == 200 and body["fallback"] == "popular" and len(body["items"]) == 5
    for bad, message in (("0", "between 1 and 1000"), ("abc", "must be an integer"), ("5000", "between 1 and 1000")):
        status, body = worker.get(f"/recommend/{user}?k={bad}")
        assert status == 400 and message in body["error"], body

    item = events[0]["item_id"]
    status, body = worker.get(f"/similar/{item}?k=3")
    assert status == 200 and len(body["items"]) == 3 and item not in {e["item_id"] for e in body["items"]}
    assert worker.get("/similar/no-such-item")[0] == 404
    assert worker.get(f"/similar/{item}?k=-1")[0] == 400

    # --- embeddings topic: after a snapshot, the newest record per key is the model's vector ---
    status, snapshot = worker.post("/embeddings/snapshot")
    items = {e["item_id"] for e in events}
    users = {e["user_id"] for e in events}
    assert status == 200 and snapshot["published"] == len(items) + len(users)
    latest = latest_embeddings(settings.bootstrap_servers, settings.topic_embeddings)
    assert set(latest) == {f"item:{i}".encode() for i in items} | {f"user:{u}".encode() for u in users}
    version = worker.get("/model")[1]["version"]
    for key, (record, raw) in latest.items():
        kind, entity = key.decode().split(":", 1)
        status, current = worker.get(f"/embeddings/{kind}s/{entity}")
        assert status == 200
        assert record is not None and record.kind == kind and record.id == entity
        assert record.model_version == version and record.vector.shape == (settings.model_dim + 1,)
        np.testing.assert_allclose(
            record.vector, np.asarray(current["vector"], dtype=np.float32), rtol=1e-5, atol=1e-6
        )  # batch vs single-row float32 maths
        source_ts = int(dict(raw.headers)[SOURCE_TS_HEADER])
        assert raw.timestamp >= source_ts >= sent_at_ms - 60_000  # broker append time after the event


def test_killed_worker_resumes_from_its_checkpoint_and_trains_each_event_once(app_settings, start_worker, tmp_path):
    """Clean stop → checkpoint; restart → resumed; kill -9 → the events since are re-read once."""
    # only the shutdown checkpoint; a killed member leaves the group after 10 s, not 60
    values = {**app_settings, "checkpoint_interval_s": 3600, "broker_session_timeout_s": 10}
    settings = settings_of(values)
    events = valid_events(2400, seed=5)
    first, second = events[:1200], events[1200:]

    worker = start_worker(values)
    asyncio.run(produce(settings.bootstrap_servers, records_for(values, first)))
    worker.wait_for(lambda s: s.get("trained") == len(first))
    version = worker.get("/model")[1]["version"]
    status, body = worker.get("/model/events")  # off by default: a service keeps no per-event metrics
    assert status == 404 and "STREAMREC_EVALUATION_KEEP_EVENTS" in body["error"]
    assert worker.stop() == 0
    saved = load_latest(settings.checkpoint_dir)
    assert saved is not None and saved.model.samples_trained == len(first) and saved.model.version == version
    assert sum(sum(parts.values()) for parts in saved.offsets.values()) == len(first)

    resumed = start_worker(values)
    body = resumed.get("/model")[1]
    assert body["stats"]["restored_from"] == str(saved.path)
    assert body["samples_trained"] == len(first) and body["version"] == version
    asyncio.run(produce(settings.bootstrap_servers, records_for(values, second)))
    resumed.wait_for(lambda s: s.get("trained") == len(second))
    time.sleep(2.5)  # let Faust commit the offsets of the second half (every second)
    resumed.kill()  # no shutdown checkpoint: the model on disk has not seen the second half

    recovered = start_worker(values)
    stats = recovered.wait_for(
        lambda s: s.get("trained") == len(second) and s["user_state_events_total"] == len(events)
    )
    body = recovered.get("/model")[1]
    assert body["stats"]["restored_from"] == str(saved.path)
    assert sum(body["stats"]["rewound"].values()) == len(second)  # re-read from the checkpoint's offsets
    assert body["samples_trained"] == len(events)  # every event in the model's lineage exactly once
    assert stats["redelivered"] == len(second)  # the user state had them already: not applied twice
    assert stats["applied_interactions"] == 0
