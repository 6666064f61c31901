"""The request/result records between stream workers and inference workers, on two Kafka topics.

Why Kafka and not HTTP or gRPC: the stream workers already hold a producer and the broker is the
one component every process can reach; inference workers scale by joining one consumer group on
the requests topic (no load balancer, no service discovery); a worker that dies leaves its
requests to expire at their deadline, which is exactly the degraded mode the stream side wants.

Wire format (UTF-8 JSON, documented in the README):

* request, key ``id`` (spread over the partitions, so over the inference workers)::

    {"id": "3f2a…", "client": "stream-7a1c…", "kind": "embed", "deadline_ms": 1732370000123,
     "payload": {"text": "Toy Story (1995). Animation, Comedy."}}

* result, key ``client`` (each stream worker reads every partition and keeps its own)::

    {"id": "3f2a…", "client": "stream-7a1c…", "ok": true, "result": [0.01, …],
     "worker": "augment-91b0…", "latency_ms": 22.6}

Kinds and payloads (bounded, validated on both sides):

========== ========================================= ===============================
kind       payload                                   result
========== ========================================= ===============================
embed      ``{"text": str}``                         unit-norm vector (list of float)
yes_no     ``{"prompt": str}``                       log P(" Yes") − log P(" No")
generate   ``{"prompt": str, "max_new_tokens": int}`` generated text (str)
========== ========================================= ===============================
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

import orjson

KINDS = ("embed", "yes_no", "generate")
MAX_TEXT_CHARS = 4000
MAX_NEW_TOKENS = 64


class InvalidRequest(ValueError):
    """A request or result that cannot be decoded or breaks the bounds above."""


def new_id() -> str:
    return uuid.uuid4().hex


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class InferenceRequest:
    id: str
    client: str
    kind: str
    payload: dict[str, Any]
    deadline_ms: int

    def encode(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def decode(cls, raw: bytes, max_bytes: int) -> InferenceRequest:
        if len(raw) > max_bytes:
            raise InvalidRequest(f"request of {len(raw)} bytes exceeds the limit of {max_bytes}")
        try:
            document = orjson.loads(raw)
            request = cls(
                str(document["id"]),
                str(document["client"]),
                str(document["kind"]),
                dict(document["payload"]),
                int(document["deadline_ms"]),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise InvalidRequest(f"malformed request: {error}") from None
        validate_payload(request.kind, request.payload)
        return request

    def expired(self, at_ms: int | None = None) -> bool:
        return (now_ms() if at_ms is None else at_ms) >= self.deadline_ms


def validate_payload(kind: str, payload: dict[str, Any]) -> None:
    """Raise :class:`InvalidRequest` unless ``payload`` fits ``kind``'s schema and bounds."""
    if kind not in KINDS:
        raise InvalidRequest(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    field = "text" if kind == "embed" else "prompt"
    text = payload.get(field)
    if not isinstance(text, str) or not text.strip():
        raise InvalidRequest(f"{kind} needs a non-empty string {field!r}")
    if len(text) > MAX_TEXT_CHARS:
        raise InvalidRequest(f"{field} of {len(text)} characters exceeds {MAX_TEXT_CHARS}")
    if kind == "generate":
        tokens = payload.get("max_new_tokens", 32)
        if not isinstance(tokens, int) or not 1 <= tokens <= MAX_NEW_TOKENS:
            raise InvalidRequest(f"max_new_tokens must be an integer in 1..{MAX_NEW_TOKENS}")


@dataclass(frozen=True, slots=True)
class InferenceResult:
    id: str
    client: str
    ok: bool
    result: Any = None
    error: str | None = None
    worker: str = ""
    latency_ms: float = 0.0  # from the request's arrival at the worker to its answer (queue + model)

    def encode(self) -> bytes:
        return orjson.dumps(asdict(self), option=orjson.OPT_SERIALIZE_NUMPY)

    @classmethod
    def decode(cls, raw: bytes) -> InferenceResult:
        try:
            document = orjson.loads(raw)
            return cls(**document)
        except (orjson.JSONDecodeError, TypeError) as error:
            raise InvalidRequest(f"malformed result: {error}") from None


def length_of(kind: str, payload: dict[str, Any]) -> int:
    """A cheap token-count estimate (about four characters a token) for length bucketing."""
    text = payload.get("text") or payload.get("prompt") or ""
    return max(1, len(text) // 4)
