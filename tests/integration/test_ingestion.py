"""Valid and malformed events through a real broker and a real worker process.

Events are produced with a plain aiokafka producer, as any client of the service would; the
assertions read the worker's tables over HTTP and the dead-letter topic from Kafka.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from streamrec.stream.worker.contract import Reason
from streamrec.stream.worker.dead_letters import read_dead_letters
from tests.integration.conftest import settings_of

BASE_TS = 874_724_710_000
USERS = [f"u{i}" for i in range(40)]


def valid_events(n: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    events = []
    for i in range(n):
        kind = "purchase" if rng.random() < 0.3 else "click"
        events.append(
            {
                "event_id": f"ev-{i}",
                "user_id": rng.choice(USERS),
                "item_id": f"item-{rng.randrange(200)}",
                "ts": BASE_TS + i * 1000,
                "type": kind,
            }
        )
    return events


BAD_EVENTS: list[tuple[bytes, Reason]] = [
    (b'{"event_id": "x1", "user_id": "u1", ', Reason.MALFORMED_JSON),
    (b"\xc3\x28\xa0\xa1 not utf-8", Reason.NON_UTF8),
    (b'"just a string"', Reason.NOT_AN_OBJECT),
    (orjson.dumps({"event_id": "x2", "item_id": "i", "ts": BASE_TS, "type": "click"}), Reason.MISSING_FIELD),
    (orjson.dumps({"event_id": "x3", "user_id": "", "item_id": "i", "ts": BASE_TS, "type": "click"}), Reason.EMPTY_ID),
    (orjson.dumps({"event_id": "x4", "user_id": "u1", "item_id": {"a": 1}, "ts": BASE_TS, "type": "click"}),
     Reason.WRONG_TYPE),
    (orjson.dumps({"event_id": "x5", "user_id": "u1", "item_id": "i", "ts": BASE_TS, "type": "like"}),
     Reason.UNKNOWN_EVENT_TYPE),
    (orjson.dumps({"event_id": "x6", "user_id": "u1", "item_id": "i", "ts": BASE_TS, "type": "click",
                   "context": {"blob": "z" * 70_000}}), Reason.PAYLOAD_TOO_LARGE),
    (orjson.dumps({"event_id": "x7", "user_id": "u1", "item_id": "i", "ts": 4_102_444_800_000, "type": "click"}),
     Reason.TS_OUT_OF_RANGE),
    (orjson.dumps({"event_id": "x8", "user_id": "u1", "item_id": "i", "ts": "1989-12-31T23:59:59Z", "type": "click"}),
     Reason.TS_OUT_OF_RANGE),
]  # fmt: skip


async def produce(bootstrap: str, records: list[tuple[str, bytes | None, bytes]]) -> list[Any]:
    """Send ``(topic, key, value)`` records; return the broker's metadata (partition, offset) for each."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=2_000_000, linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for topic, key, value in records]
        return list(await asyncio.gather(*futures))
    finally:
        await producer.stop()


def topic_for(settings: dict[str, Any], event: dict[str, Any]) -> str:
    return settings["topic_purchases"] if event["type"] == "purchase" else settings["topic_clicks"]


def expected_state(events: list[dict[str, Any]], history_length: int = 50) -> dict[str, dict[str, Any]]:
    states: dict[str, dict[str, Any]] = {}
    for e in sorted(events, key=lambda e: e["ts"]):
        s = states.setdefault(e["user_id"], {"events": 0, "clicks": 0, "purchases": 0, "recent": []})
        s["events"] += 1
        s["clicks" if e["type"] == "click" else "purchases"] += 1
        s["recent"] = ([*s["recent"], [e["ts"], e["item_id"], e["type"]]])[-history_length:]
    return states


def user_states(worker, users) -> dict[str, dict[str, Any]]:
    out = {}
    for user in users:
        status, body = worker.get(f"/users/{user}")
        assert status == 200, body
        out[user] = {k: body[k] for k in ("events", "clicks", "purchases", "recent")}
    return out


def test_valid_events_reach_user_state_and_bad_ones_the_dead_letter_topic(app_settings, start_worker):
    settings = settings_of(app_settings)
    worker = start_worker(app_settings)
    events = valid_events(3000)
    half = len(events) // 2
    good = [(topic_for(app_settings, e), e["user_id"].encode(), orjson.dumps(e)) for e in events]
    bad = [(app_settings["topic_clicks"], b"u1", raw) for raw, _ in BAD_EVENTS]
    # bad events in the middle of the stream: the worker must keep going after them
    metadata = asyncio.run(produce(settings.bootstrap_servers, good[:half] + bad + good[half:]))
    bad_positions = [(m.topic, m.partition, m.offset) for m in metadata[half : half + len(bad)]]

    stats = worker.wait_for(lambda s: s["consumed_total"] >= len(events) + len(bad))
    assert stats["applied_interactions"] == len(events)
    assert stats["user_state_events_total"] == len(events)
    assert stats["dead_letters_total"] == len(bad)
    assert stats["users"] == len({e["user_id"] for e in events})

    expected = expected_state(events)
    assert user_states(worker, expected) == expected

    letters = asyncio.run(read_dead_letters(settings.bootstrap_servers, settings.topic_dead_letters))
    by_position = {(d.source.topic, d.source.partition, d.source.offset): d for d in letters}
    assert len(letters) == len(bad)
    for (raw, reason), position in zip(BAD_EVENTS, bad_positions, strict=True):
        letter = by_position[position]
        assert letter.reason == reason.value
        assert letter.value == raw  # the original bytes, untouched
        assert letter.key == b"u1"
        assert letter.detail

    status, body = worker.get("/users/nobody")
    assert status == 404 and "unknown user" in body["error"]


def test_catalogue_and_misrouted_events(app_settings, start_worker):
    settings = settings_of(app_settings)
    worker = start_worker(app_settings)
    items = [
        {"item_id": str(i), "title": f"Movie {i}", "description": f"About {i}", "categories": ["Drama"]}
        for i in range(30)
    ]
    update = {**items[3], "title": "Movie 3 (director's cut)"}
    records = [(app_settings["topic_catalogue"], i["item_id"].encode(), orjson.dumps(i)) for i in items]
    records.append((app_settings["topic_catalogue"], b"3", orjson.dumps(update)))
    untitled = orjson.dumps({"item_id": "77", "description": "no title", "categories": []})
    records.append((app_settings["topic_catalogue"], b"77", untitled))
    # keyed by something else, or not at all: must still land in the user's state, once
    unkeyed = [
        {"event_id": f"k{i}", "user_id": "wanderer", "item_id": f"i{i}", "ts": BASE_TS + i, "type": "click"}
        for i in range(12)
    ]
    records += [(app_settings["topic_clicks"], None if i % 2 else b"wrong-key", orjson.dumps(e))
                for i, e in enumerate(unkeyed)]  # fmt: skip
    asyncio.run(produce(settings.bootstrap_servers, records))

    stats = worker.wait_for(lambda s: s["items"] == 30 and s["user_state_events_total"] == 12)
    assert stats["dead_letters"] == {"missing_field": 1}
    (letter,) = asyncio.run(read_dead_letters(settings.bootstrap_servers, settings.topic_dead_letters))
    assert (letter.source.topic, letter.value, letter.detail) == (
        app_settings["topic_catalogue"],
        untitled,
        "title: field is required",
    )
    status, item = worker.get("/items/3")
    assert status == 200 and item["title"] == "Movie 3 (director's cut)"
    assert worker.get("/items/12")[1]["categories"] == ["Drama"]
    assert worker.get("/items/999")[0] == 404
    status, state = worker.get("/users/wanderer")
    assert state["events"] == 12
    assert [entry[1] for entry in state["recent"]] == [f"i{i}" for i in range(12)]


def test_an_event_sent_twice_is_applied_and_trained_once(app_settings, start_worker):
    """A producer that retries (or a replay started twice) writes events again at new offsets."""
    settings = settings_of(app_settings)
    worker = start_worker(app_settings)
    events = valid_events(1000, seed=31)
    records = [(topic_for(app_settings, e), e["user_id"].encode(), orjson.dumps(e)) for e in events]
    resent = records[200:500]  # sent again after the rest, as a retrying producer would
    asyncio.run(produce(settings.bootstrap_servers, records + resent))
    stats = worker.wait_for(lambda s: s["consumed_total"] == len(records) + len(resent) and s.get("trained"))
    stats = worker.wait_for(lambda s: s.get("trained") == len(events))
    assert stats["duplicates"] == len(resent) and stats["applied_interactions"] == len(events)
    assert user_states(worker, expected_state(events)) == expected_state(events)
    assert worker.get("/model")[1]["samples_trained"] == len(events)
