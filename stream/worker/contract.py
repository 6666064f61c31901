"""The event contract: what producers may send, and the one place that decides if they did.

Validation is pure (bytes in, normalised event or :class:`InvalidEvent` out) so it is tested
without Kafka and reused by the agents, the replay tool and the JSON Schema export. Every rejection
carries a reason from the closed set :class:`Reason`: the dead-letter topic and, later, metrics use
it as a label, so it must stay small and stable.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from importlib import resources
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
)

MAX_ID_LENGTH = 256
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


class Reason(StrEnum):
    """Why an event was dead-lettered."""

    PAYLOAD_TOO_LARGE = "payload_too_large"
    NON_UTF8 = "non_utf8"
    MALFORMED_JSON = "malformed_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_FIELD = "missing_field"
    EMPTY_ID = "empty_id"
    WRONG_TYPE = "wrong_type"
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    TS_OUT_OF_RANGE = "ts_out_of_range"
    UNREADABLE_BATCH = "unreadable_batch"  # a record batch the consumer could not decode (stream/kafka/consumer.py)


class InvalidEvent(ValueError):
    """An event that breaks the contract; ``reason`` is machine-readable, ``detail`` is for people."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Limits:
    """The validation limits that come from settings (see :class:`streamrec.stream.settings.Settings`)."""

    max_event_bytes: int = 64 * 1024
    min_event_ms: int = 631_152_000_000  # 1990-01-01T00:00:00Z
    max_future_skew_ms: int = 24 * 3600 * 1000

    @classmethod
    def from_settings(cls, settings: Any) -> Limits:
        return cls(
            max_event_bytes=settings.max_event_bytes,
            min_event_ms=settings.min_event_ms,
            max_future_skew_ms=int(settings.max_future_skew_s * 1000),
        )


# --- field types ---------------------------------------------------------------------------------


def _id_from_int(value: Any) -> Any:
    # Many logs use integer ids; they are normalised to strings so that "42" and 42 are one user.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


Id = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_ID_LENGTH),
    BeforeValidator(_id_from_int),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH, "pattern": r"\S"},
                {"type": "integer"},
            ]
        }
    ),
]


def timestamp_to_ms(value: Any) -> Any:
    """Accept epoch milliseconds (an integer, or its digits as text) or an ISO-8601 string; naive times are UTC."""
    if isinstance(value, bool):
        # JSON true/false is not a time; pydantic's lax int would take it as 1 or 0 ms and the range
        # check would then blame the time, not the type.
        raise ValueError("a boolean is not a timestamp")
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if len(text) >= 12 and text.isascii() and text.isdigit():
            # Epoch milliseconds written as a string (every time since 1990 has 12 digits or more).
            # fromisoformat must not see them: it takes any character between date and time, so it
            # read "1346011472029" as 1346-01-14T20:29 and "1999123112000" as 1999-12-31T20:00.
            return int(text)
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
        except ValueError:
            return value  # not a date: the int validator reports a wrong type
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        # Integer arithmetic, not ``int(parsed.timestamp() * 1000)``: float seconds times 1000 falls a
        # hair short of the millisecond for about 1 in 200 times given to the millisecond, and int()
        # then dropped it ("2004-10-30T19:46:21.044Z" became ...043).
        return (parsed - _EPOCH) // _ONE_MS
    return value


def _not_a_bool(value: Any) -> Any:
    """Reject JSON true/false where a number belongs: pydantic's lax float would read them as 1.0 and 0.0."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a number")
    return value


Price = Annotated[float, Field(ge=0, allow_inf_nan=False), BeforeValidator(_not_a_bool)]

Timestamp = Annotated[
    int,
    BeforeValidator(timestamp_to_ms),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "description": "epoch milliseconds"},
                {"type": "string", "format": "date-time", "description": "ISO-8601"},
            ]
        }
    ),
]


class _Event(BaseModel):
    # Unknown fields are ignored so producers can add fields before consumers know them.
    model_config = ConfigDict(extra="ignore", frozen=True, strict=False, str_max_length=4096)


class Interaction(_Event):
    """A click or purchase by a user on an item. Kafka key: ``user_id``."""

    model_config = ConfigDict(
        title="Interaction", json_schema_extra={"$id": "https://streamrec.dev/schemas/interaction.json"}
    )

    event_id: Id = Field(description="Unique per event; used to drop redeliveries.")
    user_id: Id = Field(description="Also the Kafka message key.")
    item_id: Id
    ts: Timestamp = Field(description="Event time, epoch milliseconds or ISO-8601.")
    type: Literal["click", "purchase"]
    session_id: Id | None = None
    price: Price | None = None
    quantity: Annotated[int, Field(ge=1, strict=True)] = 1
    context: dict[str, Any] | None = Field(default=None, description="Free-form, e.g. device, page.")


class CatalogueItem(_Event):
    """An item's catalogue entry; a later entry for the same id replaces it. Kafka key: ``item_id``."""

    model_config = ConfigDict(
        title="CatalogueItem", json_schema_extra={"$id": "https://streamrec.dev/schemas/catalogue-item.json"}
    )

    item_id: Id
    title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1024)]
    description: Annotated[str, Field(max_length=16384)]
    categories: Annotated[list[Annotated[str, StringConstraints(max_length=256)]], Field(max_length=64)]
    price: Price | None = None
    attributes: dict[str, str | int | float | bool | None] | None = Field(
        default=None, description="Optional scalar attributes, e.g. release_year."
    )


# --- parsing -------------------------------------------------------------------------------------

_ID_FIELDS = frozenset({"event_id", "user_id", "item_id", "session_id"})


def _reason_for(error: dict[str, Any]) -> Reason:
    field = error["loc"][0] if error["loc"] else None
    kind = error["type"]
    if kind == "missing":
        return Reason.MISSING_FIELD
    if field in _ID_FIELDS and kind == "string_too_short":
        return Reason.EMPTY_ID
    if field == "type" and kind == "literal_error":
        return Reason.UNKNOWN_EVENT_TYPE
    if field == "title" and kind == "string_too_short":
        return Reason.MISSING_FIELD
    return Reason.WRONG_TYPE


def _describe(error: dict[str, Any]) -> str:
    where = ".".join(str(part) for part in error["loc"]) or "event"
    value = error.get("input")
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    if error["type"] == "missing":
        return f"{where}: field is required"
    return f"{where}: {error['msg']} (got {shown})"


def _decode(raw: bytes, limits: Limits) -> dict[str, Any]:
    if len(raw) > limits.max_event_bytes:
        raise InvalidEvent(Reason.PAYLOAD_TOO_LARGE, f"{len(raw)} bytes exceeds the limit of {limits.max_event_bytes}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEvent(Reason.NON_UTF8, f"byte {exc.start} is not valid UTF-8") from None
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(Reason.MALFORMED_JSON, str(exc)) from None
    if not isinstance(document, dict):
        raise InvalidEvent(Reason.NOT_AN_OBJECT, f"expected a JSON object, got {type(document).__name__}")
    return document


def _validate(model: type[_Event], document: dict[str, Any]) -> Any:
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise InvalidEvent(_reason_for(first), _describe(first)) from None


def parse_interaction(raw: bytes, limits: Limits, now_ms: int | None = None) -> Interaction:
    """Validate and normalise one interaction's bytes, or raise :class:`InvalidEvent`."""
    event: Interaction = _validate(Interaction, _decode(raw, limits))
    check_event_time(event.ts, limits, now_ms)
    return event


def parse_catalogue_item(raw: bytes, limits: Limits) -> CatalogueItem:
    """Validate and normalise one catalogue entry's bytes, or raise :class:`InvalidEvent`."""
    return _validate(CatalogueItem, _decode(raw, limits))


def check_event_time(ts_ms: int, limits: Limits, now_ms: int | None = None) -> None:
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    if ts_ms < limits.min_event_ms:
        hint = " (epoch seconds given? ts must be epoch milliseconds)" if ts_ms > 10**8 else ""
        raise InvalidEvent(Reason.TS_OUT_OF_RANGE, f"ts {_iso(ts_ms)} is before {_iso(limits.min_event_ms)}{hint}")
    if ts_ms > now_ms + limits.max_future_skew_ms:
        raise InvalidEvent(
            Reason.TS_OUT_OF_RANGE,
            f"ts {_iso(ts_ms)} is more than {limits.max_future_skew_ms // 1000}s in the future",
        )


def _iso(ms: int) -> str:
    try:
        return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat()
    except (OverflowError, OSError, ValueError):
        return f"{ms}ms"


def encode(event: _Event) -> bytes:
    """The canonical wire form of an event (compact JSON, unset optionals left out)."""
    return orjson.dumps(event.model_dump(mode="json", exclude_none=True))


def json_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema documents, generated from the models above.

    Their packaged copies (:func:`packaged_schemas`) are what users get; a test keeps the two equal.
    """
    return {
        "interaction.schema.json": Interaction.model_json_schema(mode="validation"),
        "catalogue-item.schema.json": CatalogueItem.model_json_schema(mode="validation"),
    }


def packaged_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema files shipped in the package (``schemas/`` beside this module), by file name."""
    folder = resources.files(__package__).joinpath("schemas")
    return {
        entry.name: orjson.loads(entry.read_bytes())
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".schema.json")
    }
