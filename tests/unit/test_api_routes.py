"""Every id the event contract accepts can be looked up over HTTP, as one percent-encoded path segment.

The routes are resolved by the worker's own aiohttp router (built by Faust, never started), so the
test needs no broker. aiohttp's default pattern for ``{name}`` refuses braces after decoding: an
item ``{x}`` was valid in events and in the tables, and ``/items/%7Bx%7D`` answered the router's
plain-text 404.
"""

from __future__ import annotations

import asyncio
import urllib.parse

import faust
import pytest
from aiohttp.test_utils import make_mocked_request

from stream.api import register_views
from stream.ingest import IngestStats
from stream.settings import Settings

IDS = ["{x}", "}", "{", "a/b", "%2F", "..", "\x00nul", "🙂", "a?b#c", "sp ace", "\\", "x" * 256]


@pytest.fixture(scope="module")
def router():
    app = faust.App("route-test", broker="memory://", store="memory://", web_enabled=True)
    register_views(app, Settings(kafka_bootstrap_servers="127.0.0.1:1", train=False), IngestStats(), {}, {}, None, None)
    return app.web.web_app.router


@pytest.mark.parametrize("entity_id", IDS)
@pytest.mark.parametrize(("plural", "field"), [("users", "user_id"), ("items", "item_id")])
def test_any_id_resolves_to_its_entity_route(router, plural: str, field: str, entity_id: str) -> None:
    path = f"/{plural}/" + urllib.parse.quote(entity_id, safe="").replace(".", "%2E")
    match = asyncio.run(router.resolve(make_mocked_request("GET", path)))
    assert match.http_exception is None, f"{path} does not resolve"
    assert match[field] == entity_id
    assert match.route.resource.canonical == f"/{plural}/{{{field}}}"  # the metrics label: one per route
