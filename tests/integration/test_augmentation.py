"""Augmentation in the live pipeline, with a real inference worker process that is killed mid-stream.

The stream worker, the inference worker (MiniLM on the CPU; the LM is switched off to keep the
test short, its requests are covered by the unit tests of the backends) and the broker are real.
The test checks the degraded mode the README promises: when the inference worker dies, training
goes on with real samples, augmentation requests expire (counted), and when it comes back,
augmentation resumes by itself.
"""

from __future__ import annotations

import asyncio
import random
import time
import urllib.request
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from streamrec.stream.inference.client import InferenceClient
from tests.integration.conftest import free_port, settings_of
from tests.integration.test_ingestion import produce, topic_for

GENRES = ["Comedy", "Drama", "Thriller", "Animation", "Romance", "Horror", "Western", "Documentary"]


def catalogue(prefix: str, n: int, rng: random.Random) -> list[dict[str, Any]]:
    return [
        {
            "item_id": f"{prefix}{k}",
            "title": f"{rng.choice(['The', 'A'])} {rng.choice(['Long', 'Quiet', 'Last', 'Red'])} {prefix.upper()}{k}",
            "description": f"A {rng.choice(['gentle', 'dark'])} story about {rng.choice(['a town', 'a war'])}.",
            "categories": rng.sample(GENRES, 2),
        }
        for k in range(n)
    ]


def interactions(items: list[str], n: int, start: int, rng: random.Random) -> list[dict[str, Any]]:
    users = [f"user-{k}" for k in range(40)]
    return [
        {
            "event_id": f"aug-{start + k}",
            "user_id": rng.choice(users),
            "item_id": rng.choice(items),
            "ts": 1_700_000_000_000 + (start + k) * 1000,
            "type": "purchase" if rng.random() < 0.2 else "click",
        }
        for k in range(n)
    ]


def send(settings: dict[str, Any], items: list[dict[str, Any]], events: list[dict[str, Any]]) -> None:
    records = [(settings["topic_catalogue"], i["item_id"].encode(), orjson.dumps(i)) for i in items]
    records += [(topic_for(settings, e), e["user_id"].encode(), orjson.dumps(e)) for e in events]
    asyncio.run(produce(f"127.0.0.1:{settings['local_kafka_port']}", records))


def augmentation(stats: dict[str, Any]) -> dict[str, Any]:
    return stats.get("augmentation", {})


def count(stats: dict[str, Any], section: str, kind: str = "embed") -> int:
    return augmentation(stats).get("requests", {}).get(section, {}).get(kind, 0)


def test_augmentation_runs_live_degrades_when_the_inference_worker_dies_and_recovers(app_settings, start_worker):
    settings = {
        **app_settings,
        "augment": True,
        "inference_enable_lm": False,
        "augment_llm": False,
        "augment_text_paraphrases": 0,
        "inference_timeout_s": 3,
        "batch_size": 200,
        "checkpoint_interval_s": 3600,
    }
    rng = random.Random(5)
    inference = start_worker(settings, role="augment")
    stream = start_worker(settings)

    # 1. Both workers up: item texts become content vectors, local operators make samples.
    first = catalogue("a", 12, rng)
    send(settings, first, [])  # the catalogue first, as a replay sends it
    stream.wait_for(lambda s: augmentation(s).get("items_with_content") == 12, timeout_s=120)
    send(settings, [], interactions([i["item_id"] for i in first], 800, 0, rng))
    stats = stream.wait_for(lambda s: s.get("trained") == 800, timeout_s=120)
    generated = augmentation(stats)["generated"]
    trained = augmentation(stats)["trained"]
    assert {"seq_crop", "seq_mask", "seq_reorder", "content_neighbour", "negative"} <= set(generated)
    assert sum(trained.values()) > 0 and set(trained) <= set(generated)
    assert count(stats, "completed") >= 12 and count(stats, "expired") == 0
    assert inference.get("/stats")[1]["batchers"]["embed"]["completed"] >= 12

    # 2. Inference worker killed: training goes on with real samples; the new items' requests expire.
    inference.kill()
    second = catalogue("b", 8, rng)
    send(settings, second, interactions([i["item_id"] for i in first + second], 800, 800, rng))
    stats = stream.wait_for(lambda s: s.get("trained") == 1600 and count(s, "expired") >= 8, timeout_s=120)
    assert augmentation(stats)["items_with_content"] == 12  # nothing new without the worker
    assert augmentation(stats)["generated"]["seq_crop"] > generated["seq_crop"]  # local operators go on

    # 3. Inference worker back: augmentation resumes by itself, without restarting the stream worker.
    completed_before = count(stats, "completed")
    start_worker(settings, role="augment")
    third = catalogue("c", 6, rng)
    send(settings, third, interactions([i["item_id"] for i in first + second + third], 400, 1600, rng))
    stats = stream.wait_for(
        lambda s: s.get("trained") == 2000 and augmentation(s).get("items_with_content") == 18, timeout_s=180
    )
    assert count(stats, "completed") >= completed_before + 6
    status, model = stream.get("/model")
    assert status == 200 and model["samples_trained"] == 2000  # every real event, despite the outage

    # 4. The same figures on /metrics, as Prometheus scrapes them.
    samples = scrape(stream.web_url)
    assert samples[("streamrec_training_samples_total", ())] == 2000
    assert samples[("streamrec_items_with_content", ())] == 18
    assert samples[("streamrec_augmented_samples_generated_total", (("kind", "seq_crop"),))] > 0
    expired = samples[("streamrec_inference_requests_total", (("kind", "embed"), ("outcome", "expired")))]
    assert expired == count(stats, "expired") >= 8
    assert samples[("streamrec_events_consumed_total", (("topic", settings["topic_clicks"]),))] > 0
    assert ("streamrec_prequential_hr_at_10", (("model", "streamrec"), ("slice", "overall"))) in samples
    stats_requests = (("method", "GET"), ("route", "/stats"), ("status", "200"))
    assert samples[("streamrec_http_requests_total", stats_requests)] > 10  # this test polled /stats
    assert samples[("streamrec_http_request_duration_seconds_count", (("route", "/stats"),))] > 10
    published = samples[("streamrec_event_to_embedding_seconds_count", ())]
    assert published > 0 and samples[("streamrec_event_to_embedding_seconds_bucket", (("le", "+Inf"),))] == published
    revived = scrape(f"http://127.0.0.1:{settings['inference_web_port']}")
    assert revived[("streamrec_inference_handled_total", (("outcome", "answered"),))] >= 6
    assert revived[("streamrec_inference_ready", ())] == 1.0


def scrape(base_url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(sample name, sorted labels): value}`` from a ``/metrics`` endpoint, parsed by prometheus_client."""
    with urllib.request.urlopen(base_url + "/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_inference_workers_share_the_requests_as_a_consumer_group(app_settings, start_worker):
    settings = {**app_settings, "inference_enable_lm": False, "inference_timeout_s": 60}
    workers = [start_worker(settings, role="augment")]
    workers.append(start_worker({**settings, "inference_web_port": free_port()}, role="augment"))
    bootstrap = f"127.0.0.1:{settings['local_kafka_port']}"

    async def ask() -> list[Any]:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        client = InferenceClient(settings_of(settings), lambda topic, key, value: producer.send(topic, value, key=key))
        await client.start()
        try:
            texts = [{"text": f"Film number {k}, a comedy"} for k in range(120)]
            return await client.request_many("embed", texts)
        finally:
            await client.stop()
            await producer.stop()

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # both members joined and own partitions
        if all(w.get("/stats")[1].get("ready") for w in workers):
            break
        time.sleep(0.5)
    results = asyncio.run(ask())
    assert all(r is not None and len(r) == 384 for r in results)
    answered = [w.get("/stats")[1]["answered"] for w in workers]
    assert sum(answered) == 120 and min(answered) > 0  # each worker took its partitions' share
