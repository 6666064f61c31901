"""The Faust application: topics, changelog-backed tables, agents and web views, wired from settings.

``build_app`` is a factory rather than a module-level app so that every process (worker, tests,
benchmarks) builds it from one :class:`~stream.settings.Settings` object.

Data flows one way: ``clicks``/``purchases`` → ``ingest_interactions`` agent → ``user_state``
table (+ dead letters); ``catalogue`` → ``ingest_catalogue`` agent → ``catalogue`` table.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import faust
from faust.web import Request, Response, View

from stream.contract import Limits
from stream.ingest import Ingestor, IngestStats
from stream.settings import Settings

log = logging.getLogger(__name__)


def store_url(settings: Settings) -> str:
    """``rocksdb://`` when rocksdict is importable (or demanded), else ``memory://``.

    Both keep the changelog topic, so a restarted worker recovers its tables either way; RocksDB
    also keeps a local copy so that recovery only replays what changed since the last run.
    """
    if settings.store == "memory":
        return "memory://"
    try:
        import rocksdict  # noqa: F401
    except ImportError:
        if settings.store == "rocksdb":
            raise RuntimeError("STREAMREC_STORE=rocksdb but rocksdict is not installed") from None
        log.warning("rocksdict is not installed; tables are kept in memory (changelog still recovers them)")
        return "memory://"
    return "rocksdb://"


@dataclass
class StreamApp:
    app: faust.App
    settings: Settings
    ingestor: Ingestor
    user_state: faust.Table
    catalogue: faust.Table


def build_app(settings: Settings) -> StreamApp:
    brokers = ";".join(f"kafka://{host}" for host in settings.bootstrap_servers.split(","))
    app = faust.App(
        settings.app_id,
        broker=brokers,
        store=store_url(settings),
        datadir=str(settings.state_dir / "worker"),
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication_factor,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        broker_max_poll_records=settings.max_poll_records,
        stream_buffer_maxsize=settings.stream_buffer_maxsize,
        web_enabled=True,
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        key_serializer="raw",
        value_serializer="raw",
        table_cleanup_interval=3600.0,
    )
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    interactions = app.topic(*settings.interaction_topics, partitions=settings.topic_partitions, **raw)
    catalogue_topic = app.topic(settings.topic_catalogue, partitions=settings.topic_partitions, **raw)
    dead_letters = app.topic(settings.topic_dead_letters, partitions=settings.topic_partitions, **raw)
    forward_topics = {name: app.topic(name, **raw) for name in (*settings.interaction_topics, settings.topic_catalogue)}

    json_table = {"schema": faust.Schema(key_type=str, key_serializer="raw", value_serializer="json")}
    user_state = app.Table(
        "user_state", default=None, partitions=settings.topic_partitions, help="Per-user recent history.", **json_table
    )
    catalogue = app.Table(
        "catalogue", default=None, partitions=settings.topic_partitions, help="Item catalogue.", **json_table
    )

    stats = IngestStats()
    ingestor = Ingestor(
        user_state=user_state,
        catalogue=catalogue,
        send_dead_letter=dead_letters.send,
        forward=lambda topic: forward_topics[topic].send,
        limits=Limits.from_settings(settings),
        partitions=settings.topic_partitions,
        history_length=settings.history_length,
        stats=stats,
    )

    @app.agent(interactions, name="ingest_interactions")
    async def ingest_interactions(stream: faust.StreamT) -> None:
        async for events in stream.take_events(settings.batch_size, within=settings.batch_within_s):
            await ingestor.interactions(events)

    @app.agent(catalogue_topic, name="ingest_catalogue")
    async def ingest_catalogue(stream: faust.StreamT) -> None:
        async for events in stream.take_events(settings.batch_size, within=settings.batch_within_s):
            await ingestor.catalogue_items(events)

    _register_views(app, stats, user_state, catalogue)
    return StreamApp(app, settings, ingestor, user_state, catalogue)


def _register_views(app: faust.App, stats: IngestStats, user_state: faust.Table, catalogue: faust.Table) -> None:
    @app.page("/health")
    class Health(View):
        async def get(self, request: Request) -> Response:
            return self.json({"status": "ok", "time": time.time()})

    @app.page("/stats")
    class Stats(View):
        """Process counters plus table sizes (the tables' local partitions)."""

        async def get(self, request: Request) -> Response:
            body: dict[str, Any] = stats.as_dict()
            body["users"] = len(user_state)
            body["items"] = len(catalogue)
            if request.query.get("totals"):
                # Survives restarts: the sum of per-user counters recovered from the changelog.
                body["user_state_events_total"] = sum(state["events"] for state in user_state.values() if state)
            return self.json(body)

    _register_entity_view(app, user_state, "users", "user_id")
    _register_entity_view(app, catalogue, "items", "item_id")


def _register_entity_view(app: faust.App, table: faust.Table, plural: str, id_field: str) -> None:
    """``GET /<plural>/{id}``: one table entry, routed to the worker that owns its partition."""

    class EntityView(View):
        @app.table_route(table=table, match_info=id_field)
        async def get(self, request: Request, **match: str) -> Response:
            entity_id = match[id_field]
            entry = table.get(entity_id)
            if entry is None:
                return self.json({"error": f"unknown {plural[:-1]} {entity_id!r}"}, status=404)
            return self.json({id_field: entity_id, **entry})

    EntityView.__name__ = f"{plural.title()}View"
    app.page(f"/{plural}/{{{id_field}}}")(EntityView)
