"""Every id the event contract accepts can be looked up over HTTP, as one percent-encoded path segment.

The routes are resolved by the worker's own aiohttp router (built by Faust, never started), so the
test needs no broker. aiohttp's default pattern for ``{name}`` refuses braces after decoding: an
item ``{x}`` was valid in events and in the tables, and ``/items/%7Bx%7D`` answered the router's
plain-text 404.
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from aiohttp.test_utils import make_mocked_request

from streamrec.stream.settings import Settings
from streamrec.stream.worker.api import owners_of, register_views
from streamrec.stream.worker.ingest import IngestStats, Partitioner, partition_for_key

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


# --- routing by key: to the worker that holds the partition the producers' partitioner maps it to ----------
CHANGELOG = "route-test-user_state-changelog"
WORKERS = {"http://w0:6066": {CHANGELOG: [0, 1]}, "http://w1:6066": {CHANGELOG: [2, 3]}}


class Table(dict):
    """The table attributes :func:`owner_route` reads, and its entries."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name, self.partitions = name, 4
        self.changelog_topic = SimpleNamespace(get_topic_name=lambda: f"route-test-{name}-changelog")


def user_where_partitioners_disagree_on_the_worker() -> str:
    """A user that crc32 puts on w1's partitions and murmur2 on w0's."""
    return next(
        u for u in (f"u{i}" for i in range(500)) if partition_for_key(u, 4, "crc32") >= 2 > partition_for_key(u, 4)
    )


def routed_to(partitioner: Partitioner, metadata: dict[str, dict[str, list[int]]]) -> tuple[int, Any]:
    """Where ``GET /users/{user}`` goes on a worker of an app whose producers use ``partitioner``."""
    app = faust.App(f"route-test-{partitioner}", broker="memory://", store="memory://", web_enabled=True)
    settings = Settings(kafka_bootstrap_servers="127.0.0.1:1", train=False, partitioner=partitioner)
    register_views(app, settings, IngestStats(), Table("user_state"), Table("catalogue"), None, None)
    routed: list[str] = []

    async def route_req(url: Any, web: Any, request: Any) -> Any:
        routed.append(str(url))
        return app.web.json({"routed_to": str(url)})

    app.router.table_metadata = lambda name: metadata  # type: ignore[method-assign]
    app.router._route_req = route_req  # type: ignore[method-assign]
    path = "/users/" + urllib.parse.quote(user_where_partitioners_disagree_on_the_worker(), safe="")

    async def get() -> Any:
        request = make_mocked_request("GET", path, app=app.web.web_app)
        match = await app.web.web_app.router.resolve(request)
        request._match_info = match
        return await match.handler(request)

    response = asyncio.run(get())
    return response.status, json.loads(response.body)


@pytest.mark.parametrize(("partitioner", "worker"), [("crc32", "http://w1:6066"), ("murmur2", "http://w0:6066")])
def test_a_users_request_goes_to_the_worker_of_the_partition_the_setting_maps_it_to(partitioner, worker):
    """With librdkafka producers (crc32) a user's state is on its crc32 partition: murmur2 asks the wrong worker."""
    assert routed_to(partitioner, WORKERS) == (200, {"routed_to": worker})


def test_a_partition_no_worker_holds_yet_answers_503():
    status, body = routed_to("crc32", {"http://w0:6066": {CHANGELOG: [0, 1]}})
    partition = partition_for_key(user_where_partitioners_disagree_on_the_worker(), 4, "crc32")
    assert (status, body) == (503, {"error": f"partition {partition} is not assigned yet; retry shortly"})


def test_owners_of_reads_the_table_metadata():
    assert owners_of(WORKERS, CHANGELOG, 2) == ["http://w1:6066"]
    assert owners_of(WORKERS, CHANGELOG, 5) == [] and owners_of(WORKERS, "other-changelog", 0) == []
