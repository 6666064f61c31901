"""Hostile input at scale: malformed, mistyped, misrouted and oversized records against a live worker.

Why: the stream worker is the one process between every producer and the user state. Nothing a
producer can put on a topic (any bytes, any key, any headers, a tombstone, a record the Java client
or kcat sends but aiokafka would not) may stop it, lose an event, apply one twice, or file a dead
letter under the wrong reason. Each record here is a known valid event, or a valid event with one
known mutation, so what the worker must make of it (applied, or dead-lettered with which reason)
is fixed before it is sent, without asking ``streamrec.stream.worker.contract``.

Two runs, each against its own worker on the session's real broker:

* a fixed corpus of nasty cases (limits to the byte and the millisecond, tombstones, encodings,
  a record of almost a megabyte, ids a URL or a terminal chokes on, ...);
* Hypothesis batches: valid events with ids of arbitrary unicode (NUL, control, RTL, emoji, as
  long as allowed, integers), every timestamp form, unknown fields, nested context, hostile keys,
  partitions and headers, events sent twice; mixed with events carrying one mutation each.

After every batch the ledger checks the worker's counters, finds each bad record's dead letter by
its source topic, partition and offset (reason, original bytes and key), and compares the user
state and catalogue entry of everything the batch touched with what the ledger computed itself.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from streamrec.stream.worker.contract import Reason
from streamrec.stream.worker.dead_letters import read_dead_letters
from tests.integration.conftest import Worker

pytestmark = pytest.mark.integration

LIMIT = 64 * 1024  # STREAMREC_MAX_EVENT_BYTES, left at its default by app_settings
MIN_MS = 631_152_000_000  # 1990-01-01T00:00:00Z, the earliest event time the contract accepts
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS  # STREAMREC_MAX_FUTURE_SKEW_S, default
HISTORY = 50  # STREAMREC_HISTORY_LENGTH, default
PARTITIONS = 4  # app_settings' topic_partitions
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
REQUIRED = ("event_id", "user_id", "item_id", "ts", "type")
ID_FIELDS = ("event_id", "user_id", "item_id", "session_id")
INTERACTION_FIELDS = frozenset({*REQUIRED, "session_id", "price", "quantity", "context"})
CATALOGUE_FIELDS = frozenset({"item_id", "title", "description", "categories", "price", "attributes"})
# Stripped from ids by Python's str.strip() and by the contract's validator alike (Unicode White_Space).
# \x1c-\x1f are left out: Python strips them and the validator does not, so what they mean is not tested.
WS = " \t\n\r\x0b\x0c\x85\xa0\u1680\u2000\u2028\u2029\u202f\u205f\u3000"
_serial = itertools.count()  # event and item ids unique within the session, so no run sees another's


# --- records and the ledger ------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One record to produce, and what the worker must make of it, decided before it is sent."""

    topic: str
    key: bytes | None
    value: bytes | None
    note: str  # which case: named in every failure message
    reason: Reason | None = None  # the dead letter's reason; None for a valid record
    event: dict[str, Any] | None = None  # valid interaction, normalised: event_id, user_id, item_id, ts, type
    item: dict[str, Any] | None = None  # valid catalogue entry, as the table must hold it
    partition: int | None = None  # a producer that picks the partition itself
    headers: tuple[tuple[str, bytes | None], ...] = ()


def home_partition(key: str, partitions: int) -> int:
    """Where Kafka's default partitioner puts a record keyed by ``key``: where its state must live."""
    every = list(range(partitions))
    return DefaultPartitioner()(key.encode("utf-8"), every, every)


async def produce(bootstrap: str, records: list[Record]) -> list[Any]:
    """Send the records in order; return the broker's metadata (topic, partition, offset) of each."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=2_000_000, linger_ms=5)
    await producer.start()
    try:
        sent = []
        for r in records:
            if r.key is None and r.value is None:
                # Legal on the wire (the Java client sends it); aiokafka's send() asserts against it.
                await producer.client._wait_on_metadata(r.topic)
                tp = TopicPartition(r.topic, r.partition or 0)
                sent.append(await producer._message_accumulator.add_message(tp, None, None, 60.0, headers=[]))
            else:
                headers = list(r.headers) or None
                sent.append(await producer.send(r.topic, r.value, key=r.key, partition=r.partition, headers=headers))
        return list(await asyncio.gather(*sent))
    finally:
        await producer.stop()


def expected_users(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each user's state computed from the events alone: counters, time range, history in time order."""
    states: dict[str, dict[str, Any]] = {}
    for e in sorted(events, key=lambda e: e["ts"]):
        s = states.setdefault(
            e["user_id"],
            {"events": 0, "clicks": 0, "purchases": 0, "first_ts": e["ts"], "recent": [], "seen": set()},
        )
        s["events"] += 1
        s["clicks" if e["type"] == "click" else "purchases"] += 1
        s["last_ts"] = e["ts"]
        s["recent"] = [*s["recent"], [e["ts"], e["item_id"], e["type"]]][-HISTORY:]
        s["seen"].add(e["item_id"])
    return states


def path_id(entity_id: str) -> str:
    """An id as one URL path segment: percent-encoded, dots too, so that "." and ".." stay ids."""
    return urllib.parse.quote(entity_id, safe="").replace(".", "%2E")


def get_entity(worker: Worker, kind: str, entity_id: str) -> tuple[int, Any]:
    """``GET /<kind>/<id>``: status and JSON body, or the raw text when the answer is not JSON (a router 404)."""
    try:
        with urllib.request.urlopen(f"{worker.web_url}/{kind}/{path_id(entity_id)}", timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        body = error.read()
        try:
            return error.code, json.loads(body)
        except ValueError:
            return error.code, body.decode(errors="replace")


def wait_or_crash(worker: Worker, condition: Callable[[dict[str, Any]], bool], timeout_s: float) -> dict[str, Any]:
    """Poll ``/stats?totals=1`` until ``condition``; fail at once if an agent crashed (it never recovers)."""
    deadline = time.monotonic() + timeout_s
    stats: dict[str, Any] = {}
    while time.monotonic() < deadline:
        assert worker.alive(), f"worker exited:\n{worker.log_tail()}"
        log = worker.log_tail(400)
        assert "Crashed reason=" not in log, f"an agent of the worker crashed:\n{log[-4000:]}"
        status, stats = worker.get("/stats?totals=1")
        if status == 200 and condition(stats):
            return stats
        time.sleep(0.3)
    raise AssertionError(f"not done in {timeout_s}s; last stats {stats}\n{worker.log_tail()}")


class Ledger:
    """Everything produced so far and what the worker must have made of it; checks the worker against it."""

    def __init__(self, app_settings: dict[str, Any]) -> None:
        self.bootstrap = app_settings["kafka_bootstrap_servers"]
        self.dead_letter_topic = app_settings["topic_dead_letters"]
        self.partitions = app_settings["topic_partitions"]
        self.events: dict[tuple[str, str], dict[str, Any]] = {}  # (user_id, event_id) -> event
        self.items: dict[str, dict[str, Any]] = {}
        self.bad: dict[tuple[str, int, int], Record] = {}  # source position -> record
        self.reasons: Counter[str] = Counter()
        self.consumed = 0  # records the worker reads: each produced one, and each misrouted one again
        self.forwarded = 0
        self.duplicates = 0
        self.catalogue_applied = 0
        self.taken_ts: set[tuple[str, int]] = set()
        self.sent = Counter[str]()  # what was produced, by kind: for the record of a run

    def free_ts(self, user_id: str, ts: int) -> int:
        """A time no other event of the user has, near ``ts``: equal times would make history order moot."""
        while (user_id, ts) in self.taken_ts:
            ts += 1
        self.taken_ts.add((user_id, ts))
        return ts

    def send(self, records: list[Record]) -> tuple[set[str], set[str]]:
        """Produce ``records`` and note what each must become; return the users and items they touch."""
        metadata = asyncio.run(produce(self.bootstrap, records))
        users: set[str] = set()
        items: set[str] = set()
        for record, meta in zip(records, metadata, strict=True):
            self.consumed += 1
            if record.reason is not None:
                self.bad[(meta.topic, meta.partition, meta.offset)] = record
                self.reasons[record.reason.value] += 1
                self.sent["bad"] += 1
                continue
            key = record.event["user_id"] if record.event is not None else record.item["item_id"]
            if meta.partition != home_partition(key, self.partitions):
                self.forwarded += 1  # re-sent keyed by its id, and read again on its home partition
                self.consumed += 1
            if record.event is not None:
                self.sent["interaction"] += 1
                users.add(key)
                ident = (key, record.event["event_id"])
                if ident in self.events:
                    self.duplicates += 1
                else:
                    self.events[ident] = record.event
            else:
                self.sent["catalogue"] += 1
                items.add(key)
                self.items[key] = record.item
                self.catalogue_applied += 1
        return users, items

    def verify(self, worker: Worker, users: set[str], items: set[str], timeout_s: float = 180) -> dict[str, Any]:
        """Counters, every dead letter, and the state of ``users`` and ``items`` as the ledger expects."""
        stats = wait_or_crash(worker, lambda s: s["consumed_total"] >= self.consumed, timeout_s)
        expected = {
            "consumed_total": self.consumed,
            "applied_interactions": len(self.events),
            "user_state_events_total": len(self.events),
            "duplicates": self.duplicates,
            "redelivered": 0,
            "forwarded_misrouted": self.forwarded,
            "applied_catalogue": self.catalogue_applied,
            "dead_letters": dict(self.reasons),
            "users": len({user for user, _ in self.events}),
            "items": len(self.items),
        }
        assert {k: stats[k] for k in expected} == expected
        self.check_dead_letters()
        self.check_users(worker, users)
        self.check_items(worker, items)
        return stats

    def check_dead_letters(self) -> None:
        letters = asyncio.run(read_dead_letters(self.bootstrap, self.dead_letter_topic))
        found: dict[tuple[str, int, int], list[Any]] = {}
        for letter in letters:
            found.setdefault((letter.source.topic, letter.source.partition, letter.source.offset), []).append(letter)
        assert len(letters) == len(self.bad), f"{len(letters)} dead letters for {len(self.bad)} bad records"
        wrong = []
        for position, record in self.bad.items():
            got = [(d.reason, d.value, d.key, bool(d.detail)) for d in found.get(position, [])]
            want = [(record.reason.value, record.value or b"", record.key, True)]
            if got != want:
                shown = [(reason, value[:60], key, has_detail) for reason, value, key, has_detail in got]
                wrong.append(f"{record.note} at {position}: got {shown}, want reason {record.reason.value}")
        assert not wrong, "\n".join(wrong)

    def check_users(self, worker: Worker, users: set[str]) -> None:
        expected = expected_users([e for (user, _), e in self.events.items() if user in users])
        wrong = []
        for user in sorted(users):
            status, body = get_entity(worker, "users", user)
            got = None
            if status == 200 and isinstance(body, dict):
                got = {k: body.get(k) for k in ("events", "clicks", "purchases", "first_ts", "last_ts", "recent")}
                got["seen"] = set(body.get("seen", ()))
                got["user_id"] = body.get("user_id")
            want = {**expected[user], "user_id": user}
            if got != want:
                wrong.append(f"user {user!r}: HTTP {status} {body if got is None else ''}\n  got  {got}\n  want {want}")
        assert not wrong, "\n".join(wrong)

    def check_items(self, worker: Worker, items: set[str]) -> None:
        wrong = []
        for item_id in sorted(items):
            status, body = get_entity(worker, "items", item_id)
            want = {"item_id": item_id, **self.items[item_id]}
            if (status, body) != (200, want):
                wrong.append(f"item {item_id!r}: HTTP {status}\n  got  {body}\n  want {want}")
        assert not wrong, "\n".join(wrong)

    def plain_events_after(self, app_settings: dict[str, Any], n: int) -> set[str]:
        """Ordinary valid events, produced after everything hostile: the worker must still take them."""
        users = [f"after-{i}" for i in range(10)]
        records = []
        for i in range(n):
            user = users[i % len(users)]
            event = {
                "event_id": f"after-{next(_serial)}",
                "user_id": user,
                "item_id": f"item-{i % 37}",
                "ts": self.free_ts(user, 1_500_000_000_000 + i * 1000),
                "type": "purchase" if i % 3 == 0 else "click",
            }
            topic = app_settings["topic_purchases" if event["type"] == "purchase" else "topic_clicks"]
            records.append(Record(topic, user.encode(), orjson.dumps(event), "plain event after", event=event))
        return self.send(records)[0]


def finish(worker: Worker, ledger: Ledger, app_settings: dict[str, Any]) -> None:
    """The worker survived: it is healthy, takes good events produced last, and trained on every event once."""
    users = ledger.plain_events_after(app_settings, 200)
    ledger.verify(worker, users, set())
    stats = wait_or_crash(worker, lambda s: s.get("trained", 0) >= len(ledger.events), timeout_s=180)
    assert stats["trained"] == len(ledger.events)
    assert worker.get("/health")[0] == 200


# --- the fixed corpus ------------------------------------------------------------------------------


def nasty_corpus(app_settings: dict[str, Any], ledger: Ledger, now_ms: int) -> list[Record]:
    """Hand-picked cases, each with its expectation written out (valid ones with their normalised event)."""
    clicks, purchases, catalogue = (app_settings[f"topic_{t}"] for t in ("clicks", "purchases", "catalogue"))
    partitions = app_settings["topic_partitions"]
    records: list[Record] = []
    t0 = 1_100_000_000_000

    def base(n: int, **fields: Any) -> dict[str, Any]:
        doc = {"event_id": f"corpus-{n}", "user_id": "ghost", "item_id": f"ci-{n}", "ts": t0 + n, "type": "click"}
        doc.update(fields)
        return {k: v for k, v in doc.items() if v is not ...}

    def bad(note: str, value: bytes | None, reason: Reason, key: bytes | None = b"ghost", **kw: Any) -> None:
        records.append(Record(kw.pop("topic", clicks), key, value, note, reason=reason, **kw))

    def good(note: str, wire: dict[str, Any] | bytes, want: tuple[str, str, str, int, str], **kw: Any) -> None:
        event = dict(zip(REQUIRED, want, strict=True))
        ledger.taken_ts.add((event["user_id"], event["ts"]))
        key = kw.pop("key", event["user_id"].encode())
        raw = wire if isinstance(wire, bytes) else orjson.dumps(wire)
        records.append(Record(kw.pop("topic", clicks), key, raw, note, event=event, **kw))

    def padded_to(size: int, n: int, **fields: Any) -> bytes:
        doc = base(n, context={"pad": ""}, **fields)
        raw = orjson.dumps({**doc, "context": {"pad": "x" * (size - len(orjson.dumps(doc)))}})
        assert len(raw) == size
        return raw

    # malformed_json
    bad("truncated mid-object", b'{"event_id": "corpus-1", "user_id": ', Reason.MALFORMED_JSON)
    bad("empty value", b"", Reason.MALFORMED_JSON)
    bad("JSON whitespace only", b" \n\t\r ", Reason.MALFORMED_JSON)
    bad("tombstone", None, Reason.MALFORMED_JSON)
    bad("neither key nor value", None, Reason.MALFORMED_JSON, key=None, partition=1)
    bad("single quotes", b"{'event_id': 'corpus-2', 'user_id': 'ghost'}", Reason.MALFORMED_JSON)
    bad("trailing garbage", orjson.dumps(base(3)) + b"x", Reason.MALFORMED_JSON)
    bad("two documents", orjson.dumps(base(4)) * 2, Reason.MALFORMED_JSON)
    bad("NaN literal", orjson.dumps(base(5))[:-1] + b', "price": NaN}', Reason.MALFORMED_JSON)
    bad("trailing comma", orjson.dumps(base(6))[:-1] + b",}", Reason.MALFORMED_JSON)
    bad("unterminated string", b'{"event_id": "corpus-7}', Reason.MALFORMED_JSON)
    bad("comment", b'{"event_id": "corpus-8" /* no */}', Reason.MALFORMED_JSON)
    # non_utf8
    bad("UTF-16 with BOM", json.dumps(base(10)).encode("utf-16"), Reason.NON_UTF8)
    bad("Latin-1", orjson.dumps(base(11, user_id="café")).decode().encode("latin-1"), Reason.NON_UTF8)
    bad("CESU-8 surrogate", orjson.dumps(base(12, user_id="@")).replace(b"@", b"\xed\xa0\x80"), Reason.NON_UTF8)
    bad("overlong '/'", orjson.dumps(base(13, item_id="@")).replace(b"@", b"\xc0\xaf"), Reason.NON_UTF8)
    bad("lone continuation byte", b"\x80", Reason.NON_UTF8)
    bad("cut multi-byte character", orjson.dumps(base(14))[:-1] + b"\xe2\x82", Reason.NON_UTF8)
    # not_an_object
    bad("array of the event", orjson.dumps([base(20)]), Reason.NOT_AN_OBJECT)
    bad("string", b'"just a string"', Reason.NOT_AN_OBJECT)
    bad("JSON encoded twice", orjson.dumps(orjson.dumps(base(21)).decode()), Reason.NOT_AN_OBJECT)
    for i, raw in enumerate([b"42", b"-0.5", b"null", b"true", b"[]", b'"{}"']):
        bad(f"scalar {raw!r}", raw, Reason.NOT_AN_OBJECT, key=f"ghost-{i}".encode())
    # missing_field
    for n, field in enumerate(REQUIRED, start=30):
        bad(f"no {field}", orjson.dumps(base(n, **{field: ...})), Reason.MISSING_FIELD)
    # empty_id
    for n, (field, value) in enumerate(
        [("user_id", ""), ("item_id", " \t "), ("event_id", "\u3000"), ("session_id", ""), ("user_id", "\u2028\xa0")],
        start=40,
    ):
        bad(f"{field}={value!r}", orjson.dumps(base(n, **{field: value})), Reason.EMPTY_ID)
    # wrong_type
    wrong_types: list[tuple[str, Any]] = [
        ("user_id", {"id": 1}), ("item_id", [1]), ("event_id", True), ("user_id", 1.5), ("item_id", "x" * 257),
        ("session_id", {"a": 1}), ("quantity", 0), ("quantity", -3), ("quantity", "2"), ("quantity", 2.5),
        ("quantity", True),
        ("price", -0.01), ("price", "NaN"), ("price", "Infinity"), ("price", True), ("price", "cheap"),
        ("price", [1]), ("ts", "yesterday"), ("ts", True), ("ts", [t0]), ("ts", t0 + 0.5), ("ts", ""),
        ("context", [1, 2]), ("context", "x"), ("context", 7),
    ]  # fmt: skip
    for n, (field, value) in enumerate(wrong_types, start=50):
        bad(f"{field}={value!r}"[:60], orjson.dumps(base(n, **{field: value})), Reason.WRONG_TYPE)
    # unknown_event_type
    for n, kind in enumerate(["view", "", "Click", "purchase ", "click\x00", "CLICK"], start=90):
        bad(f"type={kind!r}", orjson.dumps(base(n, type=kind)), Reason.UNKNOWN_EVENT_TYPE, topic=purchases)
    # ts_out_of_range
    out_of_range: list[Any] = [
        MIN_MS - 1, "1989-12-31T23:59:59.999Z", 874_724_710, 0, -1, -(2**63), 2**63 - 1, now_ms + 2 * DAY_MS,
        "2100-01-01T00:00:00Z", "9999-12-31T23:59:59.999+00:00", "0001-01-01T00:00:00",
        "1999123112000",  # epoch ms as text (2033); not 1999-12-31, as fromisoformat would have it
    ]  # fmt: skip
    for n, ts in enumerate(out_of_range, start=100):
        bad(f"ts={ts!r}", orjson.dumps(base(n, ts=ts)), Reason.TS_OUT_OF_RANGE)
    # payload_too_large (checked before anything is decoded)
    bad("one byte over the limit", padded_to(LIMIT + 1, 120), Reason.PAYLOAD_TOO_LARGE)
    bad("random bytes, 200 kB", random.Random(7).randbytes(200_000), Reason.PAYLOAD_TOO_LARGE)
    bad("valid event of 990 kB", padded_to(990_000, 121), Reason.PAYLOAD_TOO_LARGE, key=None)
    bad(
        "bad event with spoofed dead-letter headers",
        b"{",
        Reason.MALFORMED_JSON,
        headers=(("streamrec.dlq.reason", b"wrong_type"), ("streamrec.dlq.source.offset", b"0"), ("x", None)),
    )

    # valid, at the edges of the contract
    good(
        "exactly the size limit",
        padded_to(LIMIT, 200, user_id="edge"),
        ("corpus-200", "edge", "ci-200", t0 + 200, "click"),
    )
    good("earliest time", base(201, user_id="edge", ts=MIN_MS), ("corpus-201", "edge", "ci-201", MIN_MS, "click"))
    soon = now_ms + 20 * HOUR_MS
    good("20 hours ahead", base(202, user_id="edge", ts=soon), ("corpus-202", "edge", "ci-202", soon, "click"))
    times = [
        ("2004-10-30T19:46:21.044Z", 1_099_165_581_044),  # float arithmetic once made this ...043
        ("2004-10-31T01:16:21.045+05:30", 1_099_165_581_045),
        ("2004-10-30T19:46:21.046", 1_099_165_581_046),  # naive: UTC
        ("2004-10-30 19:46:21.047", 1_099_165_581_047),
        ("20041030T194621.048Z", 1_099_165_581_048),
        ("2004-10-30T11:46:21.049-08:00", 1_099_165_581_049),
        ("1346011472029", 1_346_011_472_029),  # epoch ms as text; fromisoformat once read it as 1346-01-14
        (1_099_165_581_050.0, 1_099_165_581_050),
    ]
    for n, (ts, ms) in enumerate(times, start=210):
        good(f"ts={ts!r}", base(n, user_id="times", ts=ts), (f"corpus-{n}", "times", f"ci-{n}", ms, "click"))
    good("integer ids", {"event_id": 9001, "user_id": 42, "item_id": 7, "ts": t0 + 230, "type": "purchase"},
         ("9001", "42", "7", t0 + 230, "purchase"), key=b"42", topic=purchases)  # fmt: skip
    good(
        "negative integer user", base(231, user_id=-(2**63)), ("corpus-231", str(-(2**63)), "ci-231", t0 + 231, "click")
    )
    good("padded ids, keyed as sent", base(232, user_id=" \tpadded\u3000", item_id="\xa0pi "),
         ("corpus-232", "padded", "pi", t0 + 232, "click"), key=b" \tpadded\xe3\x80\x80")  # fmt: skip
    odd_users = [
        "nul\x00user", "\u202eevil", "\u05e9\u05dc\u05d5\u05dd", "\u0645\u0631\u062d\u0628\u0627", "👩\u200d👩\u200d👧",
        "🙂" * 256, "a/b", "..", ".", "%2F", "?a=b#c", "\x01\x1b[31mred", "\u200b", "\ufeffbom", "\\", "e\u0301", "{x}",
    ]  # fmt: skip
    for n, user in enumerate(odd_users, start=240):
        good(f"user {user[:12]!r}", base(n, user_id=user, item_id=user), (f"corpus-{n}", user, user, t0 + n, "click"))
    good("purchase on the clicks topic", base(260, user_id="mixed", type="purchase"),
         ("corpus-260", "mixed", "ci-260", t0 + 260, "purchase"))  # fmt: skip
    good("click on the purchases topic", base(261, user_id="mixed"),
         ("corpus-261", "mixed", "ci-261", t0 + 261, "click"), topic=purchases)  # fmt: skip
    # misrouted: re-keyed by the worker, applied once
    wrong = (home_partition("rover", partitions) + 1) % partitions
    for n, (how, key, partition) in enumerate(
        [("no key", None, None), ("wrong key", b"wrong-key", None), ("empty key", b"", None),
         ("key not UTF-8", b"\xff\xfe", None), ("right key, wrong partition", b"rover", wrong)],
        start=270,
    ):  # fmt: skip
        want = (f"corpus-{n}", "rover", f"ci-{n}", t0 + n, "click")
        good(how, base(n, user_id="rover"), want, key=key, partition=partition)
    # sent twice: 777 and " 777 " are one event id of one user; applied once
    good("event 777", base(280, event_id=777, user_id="twice"), ("777", "twice", "ci-280", t0 + 280, "click"))
    good("event 777 again, padded and unkeyed", base(280, event_id=" 777 ", user_id="twice"),
         ("777", "twice", "ci-280", t0 + 280, "click"), key=None)  # fmt: skip
    deep: dict[str, Any] = {}
    for _ in range(100):
        deep = {"d": deep}
    extras = base(290, user_id="extras", session_id=5, price=0, quantity=3, context={"deep": deep, "": None},
                  USER_ID="shadow", userId=["x"], **{"user_id ": "shadow", "\x00": {}})  # fmt: skip
    good("unknown fields, deep context", extras, ("corpus-290", "extras", "ci-290", t0 + 290, "click"))
    good("JSON whitespace around", b" \n" + orjson.dumps(base(291, user_id="extras")) + b"\r\n\t ",
         ("corpus-291", "extras", "ci-291", t0 + 291, "click"))  # fmt: skip
    good("hostile headers", base(292, user_id="extras"), ("corpus-292", "extras", "ci-292", t0 + 292, "click"),
         headers=(("streamrec.dlq.reason", b"fake"), ("", b""), ("h", None), ("h", b"\xff")), key=None)  # fmt: skip

    # the catalogue
    item = {"item_id": "base", "title": "T", "description": "d", "categories": ["Drama"]}
    for note, doc, reason in [
        ("no title", {**item, "title": ...}, Reason.MISSING_FIELD),
        ("blank title", {**item, "title": " \u3000 "}, Reason.MISSING_FIELD),
        ("no categories", {**item, "categories": ...}, Reason.MISSING_FIELD),
        ("empty item_id", {**item, "item_id": ""}, Reason.EMPTY_ID),
        ("categories a string", {**item, "categories": "Drama"}, Reason.WRONG_TYPE),
        ("a category not a string", {**item, "categories": ["Drama", 1]}, Reason.WRONG_TYPE),
        ("nested attribute", {**item, "attributes": {"cast": ["a"]}}, Reason.WRONG_TYPE),
        ("negative price", {**item, "price": -1}, Reason.WRONG_TYPE),
        ("price true", {**item, "price": True}, Reason.WRONG_TYPE),
        ("description too long", {**item, "description": "x" * 16385}, Reason.WRONG_TYPE),
    ]:
        raw = orjson.dumps({k: v for k, v in doc.items() if v is not ...})
        bad(f"catalogue: {note}", raw, reason, key=b"base", topic=catalogue)
    bad("catalogue: tombstone", None, Reason.MALFORMED_JSON, key=b"gone", topic=catalogue)
    bad("catalogue: array", orjson.dumps([item]), Reason.NOT_AN_OBJECT, key=b"base", topic=catalogue)
    for note, wire, key, want in [
        ("integer id", {"item_id": 7, "title": " Heat ", "description": "", "categories": [], "price": 3}, b"7",
         {"item_id": "7", "title": "Heat", "description": "", "categories": [], "price": 3.0}),
        ("odd id, misrouted", {"item_id": "🎬/..\x00", "title": "\u202eT", "description": "a\x00b",
                               "categories": ["", "\u05d0"], "attributes": {"year": 1999, "x": None, "ok": True},
                               "extra": [1]}, b"wrong",
         {"item_id": "🎬/..\x00", "title": "\u202eT", "description": "a\x00b", "categories": ["", "\u05d0"],
          "attributes": {"year": 1999, "x": None, "ok": True}}),
    ]:  # fmt: skip
        records.append(Record(catalogue, key, orjson.dumps(wire), f"catalogue: {note}", item=want))
    return records


def test_fixed_corpus_of_nasty_records(app_settings: dict[str, Any], start_worker: Callable[..., Worker]) -> None:
    """The hand-picked cases in one go, then plain events: none lost, none twice, each dead letter right."""
    assert app_settings["topic_partitions"] == PARTITIONS
    worker = start_worker(app_settings)
    ledger = Ledger(app_settings)
    records = nasty_corpus(app_settings, ledger, int(time.time() * 1000))
    users, items = ledger.send(records)
    ledger.verify(worker, users, items)
    for user in ("ghost", "ghost-0", "café"):  # bad events leave no trace in the user state
        assert get_entity(worker, "users", user)[0] == 404
    assert get_entity(worker, "items", "base")[0] == 404 and get_entity(worker, "items", "gone")[0] == 404
    finish(worker, ledger, app_settings)


def test_a_record_at_the_broker_limit_is_dead_lettered(
    app_settings: dict[str, Any], start_worker: Callable[..., Worker]
) -> None:
    """A record the broker took (its limit is about 1 MiB) is a dead letter, and the events after it are applied."""
    worker = start_worker(app_settings)
    ledger = Ledger(app_settings)
    doc = {"event_id": "big", "user_id": "big", "item_id": "i", "ts": MIN_MS, "type": "click", "context": {}}
    raw = orjson.dumps({**doc, "context": {"pad": "x" * 1_040_000}})
    ledger.send([Record(app_settings["topic_clicks"], b"big", raw, "1.04 MB", reason=Reason.PAYLOAD_TOO_LARGE)])
    users = ledger.plain_events_after(app_settings, 20)
    ledger.verify(worker, users, set(), timeout_s=60)


# --- generated batches -----------------------------------------------------------------------------

NASTY = [
    "\x00", "\x01", "\x1b[0m", "\x7f", "\x1f", "\u202e", "\u200f", "\u200b", "\ufeff", "\u0301", "/", "\\", "?",
    "#", "%", "%2F", "&", "+", ".", "..", '"', "'", "<", ">", "{", "}", "\u05e9\u05dc\u05d5\u05dd",
    "\u0645\u0631\u062d\u0628\u0627", "🙂", "👩\u200d👩\u200d👧", "é", "ß", "\U0010ffff", " ", "\t", "\u3000",
]  # fmt: skip
ANY_CHAR = st.characters(codec="utf-8")  # every code point but surrogates: NUL and controls included
EDGE = st.one_of(st.sampled_from(["🙂", "\x00", "\u202e", ".", "/", "é", "#", "\U0010ffff"]), ANY_CHAR).filter(
    lambda c: not c.isspace()
)
MIDDLE = st.lists(st.one_of(st.sampled_from(NASTY), ANY_CHAR), max_size=6).map("".join)
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
JSON_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
JSON = st.recursive(
    JSON_LEAF,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids, max_size=3),
    max_leaves=6,  # small trees: a batch's draws must fit Hypothesis's budget for one example
)
LETTERS = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"), max_size=10)
SPACES = st.text(st.sampled_from(WS), max_size=4)
HEADERS = st.lists(
    st.tuples(
        st.one_of(st.sampled_from(["streamrec.dlq.reason", "streamrec.dlq.source.offset", ""]), st.text(max_size=8)),
        st.one_of(st.none(), st.binary(max_size=16)),
    ),
    max_size=2,
).map(tuple)
# invalid UTF-8, whatever comes before or after it on a character boundary
BAD_UTF8 = [
    b"\xff",
    b"\xfe",
    b"\xc0\xaf",
    b"\xed\xa0\x80",
    b"\x80",
    b"\xe2\x82(",
    b"\xf8\x88\x80\x80\x80",
    b"\xf4\x90\x80\x80",
]


def text_ids(max_len: int = 256) -> st.SearchStrategy[str]:
    """Ids of any unicode that strips to itself: one character, a mix, or a run as long as allowed."""
    return st.one_of(
        EDGE,
        st.builds(lambda a, m, b: a + m[: max_len - 2] + b, EDGE, MIDDLE, EDGE),
        st.builds(lambda c, n: c * n, EDGE, st.integers(min_value=max_len - 4, max_value=max_len)),
    )


IDS = st.one_of(text_ids(), INT64.map(str))


def is_int_text(value: str) -> bool:
    return re.fullmatch(r"-?[1-9][0-9]*|0", value) is not None and -(2**63) <= int(value) < 2**63


def wire_id(data: st.DataObject, canonical: str) -> Any:
    """How a producer may write an id: as it is, padded with whitespace, or as a JSON integer."""
    form = data.draw(st.sampled_from(["plain", "padded", "int"] if is_int_text(canonical) else ["plain", "padded"]))
    if form == "int":
        return int(canonical)
    if form == "padded":
        return data.draw(SPACES) + canonical + data.draw(SPACES)
    return canonical


def wire_ts(data: st.DataObject, ms: int) -> Any:
    """Every form the contract takes for one epoch millisecond."""
    utc = EPOCH + timedelta(milliseconds=ms)
    form = data.draw(st.sampled_from(["int", "float", "digits", "Z", "offset", "naive", "space", "micro", "basic"]))
    if form == "int":
        return ms
    if form == "float":
        return float(ms)
    if form == "digits":
        return str(ms)
    if form == "Z":
        return utc.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if form == "offset":
        zone = timezone(timedelta(minutes=data.draw(st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59))))
        return utc.astimezone(zone).isoformat(timespec="milliseconds")
    if form == "naive":
        return utc.replace(tzinfo=None).isoformat(timespec="milliseconds")
    if form == "space":
        return utc.replace(tzinfo=None).isoformat(sep=" ", timespec="milliseconds")
    if form == "micro":
        return utc.isoformat(timespec="microseconds")
    return utc.strftime("%Y%m%dT%H%M%S.") + f"{ms % 1000:03d}Z"  # ISO basic format


def unknown_fields(known: frozenset[str]) -> st.SearchStrategy[dict[str, Any]]:
    names = st.one_of(
        st.sampled_from(["USER_ID", "userId", "user_id ", "Type", "$type", "__proto__", "\x00"]), st.text(max_size=8)
    )
    return st.dictionaries(names.filter(lambda k: k not in known), JSON, max_size=2)


def draw_event(data: st.DataObject, ledger: Ledger, users: list[str], now_ms: int) -> dict[str, Any]:
    """A valid interaction, normalised: what the user state must show of it."""
    user = data.draw(st.sampled_from(users))
    n = next(_serial)
    stem = data.draw(st.one_of(st.none(), text_ids(max_len=240)))
    ts = data.draw(st.integers(min_value=MIN_MS, max_value=now_ms + 20 * HOUR_MS))
    return {
        "event_id": str(10**15 + n) if stem is None else f"{stem}#{n}",
        "user_id": user,
        "item_id": data.draw(IDS),
        "ts": ledger.free_ts(user, ts),
        "type": data.draw(st.sampled_from(["click", "purchase"])),
    }


def render(data: st.DataObject, event: dict[str, Any]) -> dict[str, Any]:
    """One wire form of ``event``: any id and time forms, optional and unknown fields, any field order."""
    doc: dict[str, Any] = {f: wire_id(data, event[f]) for f in ("event_id", "user_id", "item_id")}
    doc["ts"] = wire_ts(data, event["ts"])
    doc["type"] = event["type"]
    optional = {
        "session_id": st.one_of(st.none(), IDS),
        "price": st.one_of(st.none(), st.integers(0, 10**12), st.floats(0, 1e12, allow_nan=False)),
        "quantity": st.integers(min_value=1, max_value=2**63 - 1),
        "context": st.one_of(st.none(), st.dictionaries(st.text(max_size=6), JSON, max_size=3)),
    }
    for name in data.draw(st.lists(st.sampled_from(sorted(optional)), unique=True)):
        doc[name] = data.draw(optional[name])
    if doc.get("session_id") is not None:
        doc["session_id"] = wire_id(data, doc["session_id"])
    doc.update(data.draw(unknown_fields(INTERACTION_FIELDS)))
    return dict(data.draw(st.permutations(list(doc.items()))))


def route(data: st.DataObject, home_key: str, wire_key: Any, keyless: bool = True) -> dict[str, Any]:
    """Key, partition and headers: mostly the home key, else anything a careless producer sends.

    ``keyless=False`` for the compacted catalogue, where the broker itself refuses a record without a key.
    """
    modes = ["home", "home", "home", "wire", "other", "empty", "not_utf8"] + (["none"] if keyless else [])
    mode = data.draw(st.sampled_from(modes))
    key: bytes | None = None
    if mode == "home":
        key = home_key.encode()
    elif mode == "wire":
        key = str(wire_key).encode()
    elif mode == "other":
        key = data.draw(st.binary(min_size=1, max_size=12))
    elif mode == "empty":
        key = b""
    elif mode == "not_utf8":
        key = b"\xff" + data.draw(st.binary(max_size=6))
    partition = data.draw(st.sampled_from([None, None, None, *range(PARTITIONS)]))
    return {"key": key, "partition": partition, "headers": data.draw(HEADERS)}


def mutate(data: st.DataObject, doc: dict[str, Any], now_ms: int, catalogue: bool) -> tuple[bytes | None, Reason, str]:
    """One known mutation of a valid document: the bytes, and the reason the contract gives for it."""
    kinds = ["truncated", "garbage", "not_utf8", "not_object", "too_large", "tombstone", "empty"]
    if catalogue:
        kinds += ["missing", "blank_title", "empty_id", "categories", "attributes", "price", "text_type"]
    else:
        kinds += ["missing", "empty_id", "id_type", "id_too_long", "quantity", "price", "ts_type", "ts_range"]
        kinds += ["type", "context"]
    kind = data.draw(st.sampled_from(kinds))
    doc = dict(doc)
    text = orjson.dumps(doc).decode()
    reason: Reason
    if kind == "truncated":  # at a character boundary, so that it is not also broken UTF-8
        return text[: data.draw(st.integers(0, len(text) - 1))].encode(), Reason.MALFORMED_JSON, kind
    if kind == "garbage":
        junk = data.draw(st.sampled_from([b"x", b",", b"}", b"]", b'"', b"{}", b"\x00", b"null"]))
        raw = text.encode() + junk if data.draw(st.booleans()) else junk + text.encode()
        return raw, Reason.MALFORMED_JSON, kind
    if kind == "not_utf8":
        at = data.draw(st.integers(0, len(text)))
        return text[:at].encode() + data.draw(st.sampled_from(BAD_UTF8)) + text[at:].encode(), Reason.NON_UTF8, kind
    if kind == "not_object":
        value = data.draw(st.one_of(st.lists(JSON, max_size=3), JSON_LEAF, st.just([doc]), st.just(text)))
        return orjson.dumps(value), Reason.NOT_AN_OBJECT, kind
    if kind == "too_large":
        if data.draw(st.booleans()):
            size = LIMIT + data.draw(st.integers(1, 4096))
            return random.Random(data.draw(st.integers(0, 2**32))).randbytes(size), Reason.PAYLOAD_TOO_LARGE, kind
        field = "attributes" if catalogue else "context"
        pad = LIMIT + data.draw(st.integers(1, 4096)) - len(orjson.dumps({**doc, field: {"pad": ""}}))
        return orjson.dumps({**doc, field: {"pad": "x" * pad}}), Reason.PAYLOAD_TOO_LARGE, kind
    if kind == "tombstone":
        return None, Reason.MALFORMED_JSON, kind
    if kind == "empty":
        return data.draw(st.sampled_from([b"", b" ", b"\n\t"])), Reason.MALFORMED_JSON, kind
    if kind == "missing":
        required = ("item_id", "title", "description", "categories") if catalogue else REQUIRED
        del doc[data.draw(st.sampled_from(required))]
        reason = Reason.MISSING_FIELD
    elif kind == "blank_title":
        doc["title"] = data.draw(SPACES)
        reason = Reason.MISSING_FIELD
    elif kind == "empty_id":
        doc[data.draw(st.sampled_from(("item_id",) if catalogue else ID_FIELDS))] = data.draw(SPACES)
        reason = Reason.EMPTY_ID
    elif kind == "id_type":
        doc[data.draw(st.sampled_from(ID_FIELDS))] = data.draw(
            st.one_of(
                st.dictionaries(st.text(max_size=4), JSON, max_size=2),
                st.lists(JSON, max_size=2),
                st.booleans(),
                # not 2.0: the JSON Schema counts it as an integer, the validator as a wrong type
                st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer()),
            )
        )
        reason = Reason.WRONG_TYPE
    elif kind == "id_too_long":
        doc[data.draw(st.sampled_from(ID_FIELDS))] = data.draw(EDGE) * data.draw(st.integers(257, 400))
        reason = Reason.WRONG_TYPE
    elif kind == "quantity":
        doc["quantity"] = data.draw(
            st.one_of(
                st.integers(min_value=-(2**63), max_value=0),
                st.integers(1, 10**6).map(str),
                st.integers(1, 10**6).map(lambda q: q + 0.5),  # not 2.0: see id_type
                st.booleans(),
            )
        )
        reason = Reason.WRONG_TYPE
    elif kind == "price":  # negative, non-finite or non-numeric text, booleans, containers
        doc["price"] = data.draw(
            st.one_of(
                st.floats(max_value=-1e-9, allow_nan=False, allow_infinity=False),
                st.integers(min_value=-(2**63), max_value=-1),
                st.integers(min_value=-(2**63), max_value=-1).map(str),
                st.sampled_from(["NaN", "nan", "Infinity", "-Infinity", "inf"]),
                LETTERS,
                st.booleans(),
                st.lists(INT64, max_size=2),
            )
        )
        reason = Reason.WRONG_TYPE
    elif kind == "ts_type":
        doc["ts"] = data.draw(
            st.one_of(
                st.booleans(),
                LETTERS,
                st.lists(INT64, max_size=2),
                st.dictionaries(st.text(max_size=3), INT64, max_size=2),
                st.integers(MIN_MS, now_ms).map(lambda ms: ms + 0.5),  # a fraction of a millisecond
            )
        )
        reason = Reason.WRONG_TYPE
    elif kind == "ts_range":
        iso_before = st.datetimes(datetime(1, 1, 1), datetime(1989, 12, 31, 23, 59, 59, 999_000))
        iso_after = st.datetimes(datetime.fromtimestamp((now_ms + 2 * DAY_MS) / 1000, UTC).replace(tzinfo=None))
        doc["ts"] = data.draw(
            st.one_of(
                st.integers(min_value=-(2**63), max_value=MIN_MS - 1),
                st.integers(min_value=now_ms + 2 * DAY_MS, max_value=2**63 - 1),
                st.integers(min_value=MIN_MS // 1000, max_value=now_ms // 1000),  # epoch seconds
                iso_before.map(lambda d: d.isoformat() + "Z"),
                iso_after.map(lambda d: d.isoformat() + "Z"),
            )
        )
        reason = Reason.TS_OUT_OF_RANGE
    elif kind == "type":
        doc["type"] = data.draw(st.text(max_size=10).filter(lambda t: t not in ("click", "purchase")))
        reason = Reason.UNKNOWN_EVENT_TYPE
    elif kind == "context":
        doc["context"] = data.draw(st.one_of(st.lists(JSON, max_size=3), st.text(max_size=6), INT64, st.booleans()))
        reason = Reason.WRONG_TYPE
    elif kind == "categories":
        doc["categories"] = data.draw(
            st.one_of(
                st.text(max_size=6),
                st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
                st.lists(
                    st.one_of(INT64, st.booleans(), st.none(), st.lists(st.text(), max_size=1)),
                    min_size=1,
                    max_size=3,
                ),
            )
        )
        reason = Reason.WRONG_TYPE
    elif kind == "attributes":
        doc["attributes"] = data.draw(
            st.one_of(
                st.lists(INT64, max_size=2),
                st.dictionaries(
                    st.text(max_size=4),
                    st.one_of(st.lists(JSON, max_size=2), st.dictionaries(st.text(max_size=2), JSON, max_size=2)),
                    min_size=1,
                    max_size=2,
                ),
            )
        )
        reason = Reason.WRONG_TYPE
    else:  # text_type: a catalogue text field that is not text
        doc[data.draw(st.sampled_from(["title", "description"]))] = data.draw(
            st.one_of(INT64, st.booleans(), st.lists(st.text(max_size=3), max_size=2))
        )
        reason = Reason.WRONG_TYPE
    return orjson.dumps(doc), reason, kind


def draw_item(data: st.DataObject) -> tuple[dict[str, Any], dict[str, Any]]:
    """A valid catalogue entry: (one wire form of it, the entry the table must hold)."""
    n = next(_serial)
    stem = data.draw(st.one_of(st.none(), text_ids(max_len=240)))
    item_id = str(10**12 + n) if stem is None else f"{stem}~{n}"
    title = data.draw(text_ids(max_len=60))
    entry: dict[str, Any] = {
        "item_id": item_id,
        "title": title,
        "description": data.draw(st.text(max_size=40)),
        "categories": data.draw(st.lists(st.text(max_size=12), max_size=4)),
    }
    price = data.draw(st.one_of(st.none(), st.integers(0, 10**12), st.floats(0, 1e12, allow_nan=False)))
    scalar = st.one_of(
        st.none(), st.booleans(), INT64, st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8)
    )
    attributes = data.draw(st.one_of(st.none(), st.dictionaries(st.text(max_size=8), scalar, max_size=3)))
    wire = {**entry, "item_id": wire_id(data, item_id), "title": data.draw(SPACES) + title + data.draw(SPACES)}
    if price is not None:
        wire["price"], entry["price"] = price, float(price)
    if attributes is not None:
        wire["attributes"] = entry["attributes"] = attributes
    wire.update(data.draw(unknown_fields(CATALOGUE_FIELDS)))
    return dict(data.draw(st.permutations(list(wire.items())))), entry


def draw_batch(data: st.DataObject, ledger: Ledger, app_settings: dict[str, Any], now_ms: int) -> list[Record]:
    """Valid events (some sent twice) and catalogue entries, and one-mutation bad ones, in any order."""
    interaction_topics = [app_settings["topic_clicks"], app_settings["topic_purchases"]]
    catalogue = app_settings["topic_catalogue"]
    users = data.draw(st.lists(IDS, min_size=1, max_size=8, unique=True), label="users")
    records: list[Record] = []
    valid: list[dict[str, Any]] = []
    for _ in range(data.draw(st.integers(5, 14), label="valid events")):
        event = draw_event(data, ledger, users, now_ms)
        valid.append(event)
        doc = render(data, event)
        raw = orjson.dumps(doc)
        if data.draw(st.booleans()):
            raw = data.draw(st.sampled_from([b" ", b"\n", b"\t\r\n"])) + raw + data.draw(st.sampled_from([b"", b" "]))
        topic = data.draw(st.sampled_from(interaction_topics))
        records.append(
            Record(topic, value=raw, note="valid", event=event, **route(data, event["user_id"], doc["user_id"]))
        )
    for _ in range(data.draw(st.integers(0, 2), label="sent twice")):
        event = data.draw(st.sampled_from(valid))
        doc = render(data, event)
        topic = data.draw(st.sampled_from(interaction_topics))
        records.append(
            Record(
                topic,
                value=orjson.dumps(doc),
                note="sent twice",
                event=event,
                **route(data, event["user_id"], doc["user_id"]),
            )
        )
    for _ in range(data.draw(st.integers(5, 14), label="bad events")):
        event = draw_event(data, ledger, users, now_ms)  # a valid event, then one mutation
        doc = render(data, event)
        raw, reason, kind = mutate(data, doc, now_ms, catalogue=False)
        topic = data.draw(st.sampled_from(interaction_topics))
        records.append(
            Record(topic, value=raw, note=kind, reason=reason, **route(data, event["user_id"], doc["user_id"]))
        )
    for _ in range(data.draw(st.integers(1, 3), label="catalogue entries")):
        wire, entry = draw_item(data)
        records.append(Record(catalogue, value=orjson.dumps(wire), note="catalogue", item=entry,
                              **route(data, entry["item_id"], wire["item_id"], keyless=False)))  # fmt: skip
    for _ in range(data.draw(st.integers(1, 3), label="bad catalogue entries")):
        wire, entry = draw_item(data)
        raw, reason, kind = mutate(data, wire, now_ms, catalogue=True)
        records.append(Record(catalogue, value=raw, note=f"catalogue {kind}", reason=reason,
                              **route(data, entry["item_id"], wire.get("item_id", ""), keyless=False)))  # fmt: skip
    return list(data.draw(st.permutations(records), label="order"))


GENERATED_BATCHES = 10


def test_generated_hostile_batches(app_settings: dict[str, Any], start_worker: Callable[..., Worker]) -> None:
    """Hypothesis batches against one worker, each checked in full before the next; then plain events."""
    assert app_settings["topic_partitions"] == PARTITIONS
    worker = start_worker(app_settings)
    ledger = Ledger(app_settings)
    now_ms = int(time.time() * 1000)

    @settings(
        derandomize=True,
        max_examples=GENERATED_BATCHES,
        deadline=None,
        database=None,
        phases=(Phase.explicit, Phase.generate),  # no shrinking: every rerun is another batch on the live worker
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],  # big batches, on purpose
    )
    @given(st.data())
    def one_batch(data: st.DataObject) -> None:
        records = draw_batch(data, ledger, app_settings, now_ms)
        users, items = ledger.send(records)
        ledger.verify(worker, users, items)

    one_batch()
    assert ledger.sent["bad"] >= 5 * GENERATED_BATCHES and ledger.sent["interaction"] >= 5 * GENERATED_BATCHES
    finish(worker, ledger, app_settings)
