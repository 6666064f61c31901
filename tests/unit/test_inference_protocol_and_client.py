"""The inference topics' records and the stream side's bookkeeping: bounds, deadlines, matching."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from streamrec.stream.inference.client import InferenceClient, RequestDropped, RequestExpired, RequestFailed
from streamrec.stream.inference.protocol import InferenceRequest, InferenceResult, InvalidRequest, now_ms
from streamrec.stream.settings import Settings


def request_bytes(**overrides) -> bytes:
    document = {"id": "r1", "client": "c", "kind": "embed", "deadline_ms": 10, "payload": {"text": "a film"}}
    return orjson.dumps(document | overrides)


def test_requests_round_trip_and_bad_ones_are_refused_with_the_reason():
    request = InferenceRequest("r1", "c", "generate", {"prompt": "rewrite", "max_new_tokens": 16}, 123)
    assert InferenceRequest.decode(request.encode(), 10_000) == request
    cases = {
        b"not json": "malformed request",
        request_bytes(kind="train"): "unknown kind 'train'",
        request_bytes(payload={"text": "  "}): "needs a non-empty string 'text'",
        request_bytes(payload={"text": "x" * 5000}): "exceeds 4000",
        request_bytes(kind="generate", payload={"prompt": "p", "max_new_tokens": 500}): "max_new_tokens must be",
        orjson.dumps({"id": "r1"}): "malformed request",
    }
    for raw, reason in cases.items():
        with pytest.raises(InvalidRequest, match=reason):
            InferenceRequest.decode(raw, 10_000)
    with pytest.raises(InvalidRequest, match="exceeds the limit of 50"):
        InferenceRequest.decode(request_bytes(), 50)


def test_a_request_is_expired_at_its_deadline():
    request = InferenceRequest("r1", "c", "embed", {"text": "t"}, deadline_ms=1_000)
    assert not request.expired(999) and request.expired(1_000)


class FakeKafka:
    def __init__(self) -> None:
        self.sent: list[InferenceRequest] = []

    async def send(self, topic: str, key: bytes, value: bytes) -> None:
        self.sent.append(InferenceRequest.decode(value, 1_000_000))


def test_results_are_matched_by_id_failures_raise_and_unanswered_requests_expire():
    async def scenario() -> None:
        kafka = FakeKafka()
        client = InferenceClient(Settings(inference_timeout_s=5, inference_max_in_flight=3), kafka.send)
        answered = asyncio.ensure_future(client.request("embed", {"text": "a"}))
        failed = asyncio.ensure_future(client.request("yes_no", {"prompt": "b"}))
        silent = asyncio.ensure_future(client.request("embed", {"text": "c"}))
        await asyncio.sleep(0)
        assert [r.payload for r in kafka.sent] == [{"text": "a"}, {"prompt": "b"}, {"text": "c"}]
        with pytest.raises(RequestDropped):  # a fourth request exceeds the in-flight bound
            await client.request("embed", {"text": "d"})
        a, b, _ = kafka.sent
        client._resolve(InferenceResult(b.id, client.client_id, False, error="overloaded"))
        client._resolve(InferenceResult(a.id, client.client_id, True, [0.5, 0.5]))
        client._resolve(InferenceResult(a.id, client.client_id, True, [9.0]))  # a duplicate is ignored
        assert await answered == [0.5, 0.5]
        with pytest.raises(RequestFailed, match="overloaded"):
            await failed
        assert client.expire(now_ms() + 6_000) == 1
        with pytest.raises(RequestExpired):
            await silent
        stats = client.stats.as_dict()
        assert stats["completed"] == {"embed": 1} and stats["failed"] == {"yes_no": 1}
        assert stats["expired"] == {"embed": 1} and stats["dropped"] == {"embed": 1}
        assert client.in_flight == 0 and client.available()

    asyncio.run(scenario())


def test_request_many_gives_none_for_what_did_not_come_back():
    async def scenario() -> None:
        kafka = FakeKafka()
        client = InferenceClient(Settings(inference_timeout_s=5), kafka.send)
        many = asyncio.ensure_future(client.request_many("embed", [{"text": "a"}, {"text": "b"}]))
        for _ in range(3):  # gather schedules each request as its own task
            await asyncio.sleep(0)
        client._resolve(InferenceResult(kafka.sent[0].id, client.client_id, True, [1.0]))
        client.expire(now_ms() + 60_000)
        assert await many == [[1.0], None]

    asyncio.run(scenario())
