import json
from datetime import UTC, datetime, timedelta, timezone

import jsonschema
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamrec.stream.worker.contract import (
    InvalidEvent,
    Limits,
    Reason,
    json_schemas,
    packaged_schemas,
    parse_catalogue_item,
    parse_interaction,
)

LIMITS = Limits(max_event_bytes=1024, min_event_ms=631_152_000_000, max_future_skew_ms=3_600_000)
NOW_MS = 1_800_000_000_000


def event(**overrides):
    base = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "ts": 874_724_710_000, "type": "click"}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


def parse(doc) -> object:
    return parse_interaction(orjson.dumps(doc) if not isinstance(doc, bytes) else doc, LIMITS, NOW_MS)


def reason_of(raw: bytes) -> Reason:
    with pytest.raises(InvalidEvent) as caught:
        parse_interaction(raw, LIMITS, NOW_MS)
    return caught.value.reason


def test_valid_event_is_normalised():
    got = parse(event(user_id=42, ts="1997-09-22T21:57:59Z", session_id=" s1 ", price=9.5, quantity=2, extra="x"))
    assert (got.user_id, got.session_id, got.ts, got.price, got.quantity) == ("42", "s1", 874_965_479_000, 9.5, 2)
    assert not hasattr(got, "extra")


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        (874_724_710_000, 874_724_710_000),
        ("874724710000", 874_724_710_000),
        ("1997-09-20T03:05:10+00:00", 874_724_710_000),
        ("1997-09-20T05:05:10+02:00", 874_724_710_000),
        ("1997-09-20T03:05:10", 874_724_710_000),  # naive means UTC
        ("2004-10-30T19:46:21.044Z", 1_099_165_581_044),  # float seconds * 1000 made this ...043
        ("1346011472029", 1_346_011_472_029),  # epoch ms as text, not 1346-01-14T20:29 (fromisoformat)
        ("20041030", 1_099_094_400_000),  # an ISO basic date is still a date
    ],
)
def test_timestamp_forms(ts, expected):
    assert parse(event(ts=ts)).ts == expected


@settings(deadline=None)
@given(
    st.integers(min_value=LIMITS.min_event_ms, max_value=NOW_MS),
    st.integers(min_value=-14 * 60, max_value=14 * 60),
)
def test_iso_times_keep_every_millisecond(ms, offset_minutes):
    """Any time written to the millisecond, in any UTC offset, is that exact epoch millisecond."""
    zone = timezone(timedelta(minutes=offset_minutes))
    written = (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)).astimezone(zone)
    assert parse(event(ts=written.isoformat(timespec="milliseconds"))).ts == ms


@settings(deadline=None)
@given(st.integers(min_value=LIMITS.min_event_ms, max_value=NOW_MS))
def test_epoch_milliseconds_as_text_are_those_milliseconds(ms):
    assert parse(event(ts=str(ms))).ts == ms


@pytest.mark.parametrize(
    ("raw", "reason", "detail"),
    [
        (b"{not json", Reason.MALFORMED_JSON, "line 1"),
        (b"\xff\xfe\x00", Reason.NON_UTF8, "byte 0"),
        (b"[1, 2]", Reason.NOT_AN_OBJECT, "got list"),
        (orjson.dumps(event(user_id=...)), Reason.MISSING_FIELD, "user_id: field is required"),
        (orjson.dumps(event(item_id="")), Reason.EMPTY_ID, "item_id"),
        (orjson.dumps(event(event_id="   ")), Reason.EMPTY_ID, "event_id"),
        (orjson.dumps(event(user_id=["u"])), Reason.WRONG_TYPE, "user_id"),
        (orjson.dumps(event(user_id=True)), Reason.WRONG_TYPE, "user_id"),
        (orjson.dumps(event(price="cheap")), Reason.WRONG_TYPE, "price"),
        (orjson.dumps(event(quantity=0)), Reason.WRONG_TYPE, "quantity"),
        (orjson.dumps(event(ts="yesterday")), Reason.WRONG_TYPE, "ts"),
        (orjson.dumps(event(ts=True)), Reason.WRONG_TYPE, "ts: Value error, a boolean is not a timestamp"),
        (orjson.dumps(event(price=True)), Reason.WRONG_TYPE, "price: Value error, a boolean is not a number"),
        (orjson.dumps(event(type="view")), Reason.UNKNOWN_EVENT_TYPE, "'view'"),
        (orjson.dumps(event(ts=1)), Reason.TS_OUT_OF_RANGE, "before 1990"),
        (orjson.dumps(event(ts=874_724_710)), Reason.TS_OUT_OF_RANGE, "epoch seconds given?"),
        (orjson.dumps(event(ts=NOW_MS + 3_600_001)), Reason.TS_OUT_OF_RANGE, "in the future"),
        (orjson.dumps(event(ts="1999123112000")), Reason.TS_OUT_OF_RANGE, "in the future"),  # ms, not 1999-12-31
        (orjson.dumps(event(context={"pad": "x" * 2000})), Reason.PAYLOAD_TOO_LARGE, "exceeds the limit of 1024"),
    ],
)
def test_each_bad_input_has_a_reason_and_a_readable_detail(raw, reason, detail):
    with pytest.raises(InvalidEvent) as caught:
        parse_interaction(raw, LIMITS, NOW_MS)
    assert caught.value.reason is reason
    assert detail in caught.value.detail


def test_future_skew_boundary_is_inclusive():
    assert parse(event(ts=NOW_MS + 3_600_000)).ts == NOW_MS + 3_600_000


def test_catalogue_item():
    raw = orjson.dumps({"item_id": 7, "title": " Heat ", "description": "d", "categories": ["Action"], "price": 3})
    item = parse_catalogue_item(raw, LIMITS)
    assert (item.item_id, item.title, item.categories, item.price) == ("7", "Heat", ["Action"], 3.0)
    with pytest.raises(InvalidEvent) as caught:
        parse_catalogue_item(orjson.dumps({"item_id": "7", "title": "", "description": "", "categories": []}), LIMITS)
    assert caught.value.reason is Reason.MISSING_FIELD


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_either_parse_or_raise_invalid_event(raw):
    try:
        parse_interaction(raw, LIMITS, NOW_MS)
    except InvalidEvent as error:
        assert error.reason in Reason


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["event_id", "user_id", "item_id", "ts", "type", "price", "quantity", "context"]),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(),
            st.floats(),
            st.text(max_size=20),
            st.lists(st.integers(), max_size=3),
        ),
    )
)
def test_arbitrary_documents_either_parse_or_raise_invalid_event(doc):
    try:
        parse_interaction(orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY), LIMITS, NOW_MS)
    except InvalidEvent as error:
        assert error.reason in Reason
    except orjson.JSONEncodeError:
        pass


def test_packaged_schemas_match_the_models():
    packaged = packaged_schemas()
    assert sorted(packaged) == sorted(json_schemas())
    for name, schema in json_schemas().items():
        assert packaged[name] == json.loads(json.dumps(schema)), (
            f"stream/worker/schemas/{name} is stale: run `streamrec schemas --from-code --out stream/worker/schemas`"
        )


@pytest.mark.parametrize(
    ("doc", "valid"),
    [
        (event(), True),
        (event(user_id=42, ts="1997-09-22T21:57:59Z", price=1.5, context={"page": "home"}), True),
        (event(user_id=...), False),
        (event(item_id=""), False),
        (event(type="view"), False),
        (event(quantity=0), False),
        (event(user_id=[1]), False),
        (event(price=True), False),
        (event(ts=False), False),
    ],
)
def test_json_schema_agrees_with_the_validator(doc, valid):
    schema = packaged_schemas()["interaction.schema.json"]
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    assert validator.is_valid(doc) is valid
    try:
        parse(doc)
        parsed = True
    except InvalidEvent:
        parsed = False
    assert parsed is valid
