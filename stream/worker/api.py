"""HTTP API on the Faust web server: health, counters, entities, recommendations, the model.

Routes (all JSON):

* ``GET /health`` – liveness.
* ``GET /stats`` – ingestion counters and table sizes (``?totals=1`` adds the events in user state).
* ``GET /users/{user_id}``, ``GET /items/{item_id}`` – one table entry, 404 if unknown.
* ``GET /recommend/{user_id}?k=20`` – top-k items the user has not interacted with; users the model
  cannot personalise get popular items with ``"fallback": "popular"``.
* ``GET /similar/{item_id}?k=20`` – items closest to one item (cosine of the item-tower vectors).
* ``GET /model`` – training progress, checkpoints, vocabulary memory, publishing and the
  prequential metrics of the model and every baseline.
* ``GET /model/events`` – with ``STREAMREC_EVALUATION_KEEP_EVENTS`` set, every model's per-event
  metrics for the first scored events of each slice, with their users (404 otherwise): what a paired
  comparison with a bootstrap interval over users needs (``bench/quality.py --seeds``).
* ``GET /embeddings/{kind}/{id}`` – the vector the embeddings topic would carry for it now.
* ``POST /embeddings/snapshot`` – publish every entity's current vector.
* ``GET /parameters/items/{id}`` – the item's shared parameters (id embedding and bias), which
  every stream worker should hold alike once the parameter sync has caught up.

With ``STREAMREC_API_TOKEN`` set, every route but ``/health`` and ``/metrics`` (no user data; a
probe and a scraper must reach them) answers 401 unless the request carries
``Authorization: Bearer <token>``.

Bad parameters get 400 with a message; unknown ids get 404. Routes keyed by user (or catalogue
item) are forwarded to the worker that owns the key's partition (:func:`owner_route`; the partition
``STREAMREC_PARTITIONER`` maps the key to, where its state lives), so any worker answers for any
user; while the group has not assigned that partition yet, 503.
"""

from __future__ import annotations

import functools
import hmac
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any

import faust
from aiohttp import web
from faust.exceptions import SameNode
from faust.web import Request, Response, View
from yarl import URL

from streamrec.models.serving import parse_k, recommend_for
from streamrec.stream.metrics import (
    GpuCollector,
    HttpSensor,
    HttpStats,
    StreamWorkerCollector,
    consumer_lag,
    consumer_stats,
    exposition,
    registry_with,
)
from streamrec.stream.settings import Settings
from streamrec.stream.worker.augmentation import StreamAugmenter
from streamrec.stream.worker.ingest import IngestStats, Partitioner, partition_for_key
from streamrec.stream.worker.learner import Learner
from streamrec.stream.worker.parameter_sync import ItemParameterExchange
from streamrec.stream.worker.publisher import EmbeddingPublisher
from streamrec.stream.worker.user_state import history_items, seen_items

OPEN_PATHS = frozenset({"/health", "/metrics"})
# An id in a route: any one path segment. aiohttp's default for ``{name}`` is ``[^{}/]+``, matched after
# percent-decoding, so an id with a brace (valid in events) got the router's 404 and could never be read.
# Metrics label routes by their canonical template, which stays ``/users/{user_id}``.
ID = "[^/]+"


def bearer_token_required(token: str) -> Callable[..., Awaitable[web.StreamResponse]]:
    """aiohttp middleware: 401 for a request without ``Authorization: Bearer <token>`` (constant-time check)."""
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def check(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
        if request.path in OPEN_PATHS or hmac.compare_digest(
            request.headers.get("Authorization", "").encode(), expected
        ):
            return await handler(request)
        return web.json_response(
            {"error": "missing or wrong bearer token"}, status=401, headers={"WWW-Authenticate": "Bearer"}
        )

    return check


def owners_of(metadata: Mapping[str, Mapping[str, Collection[int]]], changelog: str, partition: int) -> list[str]:
    """The workers (web URLs) that hold ``partition`` of a table, from Faust's table metadata."""
    return [url for url, topics in metadata.items() if partition in topics.get(changelog, ())]


def owner_route(
    app: faust.App, table: faust.Table, match_info: str, partitioner: Partitioner = "murmur2"
) -> Callable[..., Any]:
    """Decorate a view method to run on the worker that owns ``match_info``'s partition of ``table``.

    Faust's own ``table_route`` finds the partition by hashing the key as the changelog serialises
    it (JSON, ``"u38"``), but a table's partition is its *source* partition, which producers pick
    by hashing the raw key (``u38``): the two disagree for most keys, so with several workers a
    request landed on a worker without the user and answered 404. This hashes the raw key with
    the producers' partitioner (``STREAMREC_PARTITIONER``, :func:`streamrec.stream.worker.ingest.partition_for_key`:
    the partition the ingestion keeps the key's state in), then forwards through Faust's router
    (the request's headers, the bearer token included, go along).
    """

    def decorator(handler: Callable[..., Awaitable[Response]]) -> Callable[..., Awaitable[Response]]:
        @functools.wraps(handler)
        async def routed(view: View, request: Request, **kwargs: Any) -> Response:
            key = request.match_info[match_info]
            partition = partition_for_key(key, table.partitions or app.conf.topic_partitions, partitioner)
            changelog = table.changelog_topic.get_topic_name()
            owners = owners_of(app.router.table_metadata(table.name), changelog, partition)
            if not owners:
                return view.json({"error": f"partition {partition} is not assigned yet; retry shortly"}, status=503)
            try:
                return await app.router._route_req(URL(owners[0]), view.web, request)
            except SameNode:
                return await handler(view, request, **kwargs)

        return routed

    return decorator


def register_views(
    app: faust.App,
    settings: Settings,
    stats: IngestStats,
    user_state: faust.Table,
    catalogue: faust.Table,
    learner: Learner | None,
    publisher: EmbeddingPublisher | None,
    augmenter: StreamAugmenter | None = None,
    exchange: ItemParameterExchange | None = None,
) -> None:
    @app.page("/health")
    class Health(View):
        async def get(self, request: Request) -> Response:
            return self.json({"status": "ok", "time": time.time()})

    if settings.api_token is not None:
        # Faust routes requests for another worker's users with the original headers, token included.
        app.web.web_app.middlewares.append(bearer_token_required(settings.api_token.get_secret_value()))
    http = HttpStats()
    app.sensors.add(HttpSensor(http))
    topics = (*settings.interaction_topics, settings.topic_catalogue)
    collector = StreamWorkerCollector(
        stats,
        learner,
        publisher,
        augmenter,
        http,
        lag=lambda: consumer_lag(app, topics),
        consumer=lambda: consumer_stats(app),
    )
    registry = registry_with(collector, GpuCollector())

    @app.page("/metrics")
    class Metrics(View):
        """Prometheus text format (see stream/metrics.py for the names)."""

        async def get(self, request: Request) -> Response:
            body, content_type = exposition(registry)
            return self.bytes(body, headers={"Content-Type": content_type})

    @app.page("/stats")
    class Stats(View):
        """Process counters plus table sizes (the tables' local partitions)."""

        async def get(self, request: Request) -> Response:
            body: dict[str, Any] = stats.as_dict()
            body["users"] = len(user_state)
            body["items"] = len(catalogue)
            # The input partitions this worker owns now (how the consumer group spread them).
            owned = [tp for tp in app.consumer.assignment() if tp.topic in settings.interaction_topics]
            body["assigned"] = sorted(f"{tp.topic}:{tp.partition}" for tp in owned)
            consumer = consumer_stats(app)
            if consumer is not None:
                body["consumer"] = consumer.as_dict()
            if learner is not None:
                body["trained"] = learner.stats.trained
                body["model_version"] = learner.model.version
            if augmenter is not None:
                body["augmentation"] = augmenter.report() | {"trained": dict(learner.model.augmented_trained)}
            if request.query.get("totals"):
                # Survives restarts: the sum of per-user counters recovered from the changelog.
                body["user_state_events_total"] = sum(state["events"] for state in user_state.values() if state)
            return self.json(body)

    _register_entity_view(app, user_state, "users", "user_id", settings.partitioner)
    _register_entity_view(app, catalogue, "items", "item_id", settings.partitioner)
    if learner is None:
        return
    guarded = learner.guarded

    def popular(k: int, exclude: Collection[str]) -> list[tuple[str, float]]:
        trending, now_s = learner.trending, learner.latest_event_s
        return [(item, trending.score(item, now_s)) for item in trending.top(k, exclude)]

    class Recommend(View):
        @owner_route(app, user_state, "user_id", settings.partitioner)
        async def get(self, request: Request, user_id: str) -> Response:
            try:
                k = parse_k(request.query.get("k"))
            except ValueError as error:
                return self.json({"error": str(error)}, status=400)
            state = user_state.get(user_id)
            history, seen = history_items(state), seen_items(state)
            found = await guarded.read(recommend_for, guarded.model, user_id, history, seen, k, popular)
            return self.json(
                {
                    "user_id": user_id,
                    "k": k,
                    "items": [{"item_id": item, "score": score} for item, score in found.items],
                    "fallback": found.fallback,
                    "model_version": found.model_version,
                }
            )

    app.page(f"/recommend/{{user_id:{ID}}}")(Recommend)

    @app.page(f"/similar/{{item_id:{ID}}}")
    class Similar(View):
        async def get(self, request: Request, item_id: str) -> Response:
            try:
                k = parse_k(request.query.get("k"))
            except ValueError as error:
                return self.json({"error": str(error)}, status=400)
            try:
                found = await guarded.read(guarded.model.similar, item_id, k)
            except KeyError:
                return self.json({"error": f"unknown item {item_id!r}"}, status=404)
            items = [{"item_id": item, "similarity": score} for item, score in found]
            return self.json({"item_id": item_id, "k": k, "items": items, "model_version": guarded.model.version})

    @app.page("/model")
    class Model(View):
        async def get(self, request: Request) -> Response:
            body = await learner.report()
            if publisher is not None:
                body["embeddings"] = publisher.stats.as_dict() | {"pending": len(publisher.pending)}
            if augmenter is not None:
                body["augmentation"] = augmenter.report()
            if exchange is not None:
                body["parameter_sync"] = exchange.report()
            return self.json(body)

    @app.page("/model/events")
    class ModelEvents(View):
        async def get(self, request: Request) -> Response:
            if settings.evaluation_keep_events == 0:
                return self.json(
                    {"error": "no per-event metrics are kept: set STREAMREC_EVALUATION_KEEP_EVENTS"}, status=404
                )
            return self.json({"keep_events": settings.evaluation_keep_events} | await learner.kept_events())

    @app.page(f"/parameters/items/{{item_id:{ID}}}")
    class ItemParameters(View):
        async def get(self, request: Request, item_id: str) -> Response:
            if item_id not in guarded.model.items:
                return self.json({"error": f"unknown item {item_id!r}"}, status=404)
            vector = await guarded.read(guarded.model.item_parameters, [item_id])
            sync = learner.sync
            return self.json(
                {
                    "item_id": item_id,
                    "parameters": vector[0].tolist(),
                    "worker_id": sync.worker_id if sync is not None else None,
                    "model_version": guarded.model.version,
                }
            )

    @app.page(f"/embeddings/{{kind}}/{{entity_id:{ID}}}")
    class Embedding(View):
        async def get(self, request: Request, kind: str, entity_id: str) -> Response:
            if kind not in ("users", "items"):
                return self.json({"error": f"kind must be 'users' or 'items', got {kind!r}"}, status=400)
            if kind == "items":
                if entity_id not in guarded.model.items:
                    return self.json({"error": f"unknown item {entity_id!r}"}, status=404)
                vector = await guarded.read(guarded.model.item_embeddings, [entity_id])
            else:
                state = user_state.get(entity_id)
                if state is None:
                    return self.json({"error": f"unknown user {entity_id!r}"}, status=404)
                vector = await guarded.read(guarded.model.user_embeddings, [entity_id], [history_items(state)])
            return self.json(
                {
                    "id": entity_id,
                    "kind": kind[:-1],
                    "vector": vector[0].tolist(),
                    "model_version": guarded.model.version,
                }
            )

    @app.page("/embeddings/snapshot")
    class Snapshot(View):
        async def post(self, request: Request) -> Response:
            if publisher is None:
                return self.json({"error": "embedding publishing is disabled"}, status=409)
            sent = await publisher.snapshot()
            return self.json({"published": sent, "model_version": guarded.model.version})


def _register_entity_view(
    app: faust.App, table: faust.Table, plural: str, id_field: str, partitioner: Partitioner = "murmur2"
) -> None:
    """``GET /<plural>/{id}``: one table entry, routed to the worker that owns its partition."""

    class EntityView(View):
        @owner_route(app, table, id_field, partitioner)
        async def get(self, request: Request, **match: str) -> Response:
            entity_id = match[id_field]
            entry = table.get(entity_id)
            if entry is None:
                return self.json({"error": f"unknown {plural[:-1]} {entity_id!r}"}, status=404)
            return self.json({id_field: entity_id, **entry})

    EntityView.__name__ = f"{plural.title()}View"
    app.page(f"/{plural}/{{{id_field}:{ID}}}")(EntityView)
