"""The Faust application: topics, changelog-backed tables, agents and web views, wired from settings.

``build_app`` is a factory rather than a module-level app so that every process (worker, tests,
benchmarks) builds it from one :class:`~streamrec.stream.settings.Settings` object.

Data flows one way: ``clicks``/``purchases`` → the ``interactions`` route → ``user_state``
table (+ dead letters) → learner (test-then-train, checkpoints) → embeddings topic;
``catalogue`` → the ``catalogue`` route → ``catalogue`` table. The routes are the agents: each
gets its records batch by batch, as Kafka fetched them (:mod:`streamrec.stream.kafka.consumer`). The HTTP routes
are in :mod:`streamrec.stream.worker.api`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import faust

from streamrec.stream.kafka.consumer import Batch, ChangelogAckedTable, InputRoutes, Route
from streamrec.stream.kafka.consumer import install as install_consumer
from streamrec.stream.kafka.security import faust_credentials
from streamrec.stream.settings import Settings
from streamrec.stream.worker.agent_failure import exit_on_error
from streamrec.stream.worker.api import register_views
from streamrec.stream.worker.augmentation import StreamAugmenter
from streamrec.stream.worker.contract import Limits
from streamrec.stream.worker.event_time import EventTimeBuffer, event_time_of
from streamrec.stream.worker.ingest import Ingestor, IngestStats, TrainingEvent
from streamrec.stream.worker.learner import Learner
from streamrec.stream.worker.parameter_sync import ItemParameterExchange
from streamrec.stream.worker.publisher import EmbeddingPublisher

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
    learner: Learner | None
    publisher: EmbeddingPublisher | None
    augmenter: StreamAugmenter | None = None
    exchange: ItemParameterExchange | None = None


def build_app(settings: Settings, learner: Learner | None = None) -> StreamApp:
    """The worker's app; ``learner`` (restored from a checkpoint by the caller) turns training on."""
    brokers = ";".join(f"kafka://{host}" for host in settings.bootstrap_servers.split(","))
    store = store_url(settings)
    app = faust.App(
        settings.app_id,
        broker=brokers,
        broker_credentials=faust_credentials(settings),  # SASL/TLS (stream/kafka/security.py)
        store=store,
        datadir=str(settings.state_dir / "worker"),
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication_factor,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        broker_max_poll_records=settings.max_poll_records,
        # Faust's producer refuses records over 1,000,000 bytes by default, below the broker's limit:
        # dead-lettering a record the broker accepted would crash the agent (tests/integration/test_hostile_input.py).
        producer_max_request_size=settings.dead_letter_max_bytes,
        broker_session_timeout=settings.broker_session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.broker_session_timeout_s / 3),
        web_enabled=True,
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        key_serializer="raw",
        value_serializer="raw",
        table_cleanup_interval=3600.0,
        Table=ChangelogAckedTable,  # a commit waits for the changelog (stream/kafka/consumer.py)
    )
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    interactions = app.topic(*settings.interaction_topics, partitions=settings.topic_partitions, **raw)
    catalogue_topic = app.topic(settings.topic_catalogue, partitions=settings.topic_partitions, **raw)
    dead_letters = app.topic(settings.topic_dead_letters, partitions=settings.topic_partitions, **raw)
    forward_topics = {name: app.topic(name, **raw) for name in (*settings.interaction_topics, settings.topic_catalogue)}

    json_table: dict[str, Any] = {"schema": faust.Schema(key_type=str, key_serializer="raw", value_serializer="json")}
    if store.startswith("rocksdb"):
        # Bounded memory per table partition: Faust's defaults (a 2 GiB block cache and three 64 MiB
        # memtables per partition database) let a long-running worker's memory grow by steps (bench/soak.py).
        json_table["options"] = {
            "block_cache_size": settings.rocksdb_block_cache_bytes,
            "block_cache_compressed_size": settings.rocksdb_block_cache_bytes // 4,
            "write_buffer_size": settings.rocksdb_write_buffer_bytes,
            "max_write_buffer_number": 2,
        }
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
        seen_length=settings.seen_length,
        dedupe_window=settings.dedupe_window,
        max_dead_letter_bytes=settings.dead_letter_max_bytes,
        stats=stats,
        partitioner=settings.partitioner,
    )
    publisher = None
    augmenter = None
    if learner is not None and settings.augment:

        async def send_request(topic: str, key: bytes, value: bytes) -> Any:
            return await app.producer.send(topic, key, value, None, None, None)

        augmenter = StreamAugmenter(settings, send_request, learner.guarded)
        learner.augmentation = augmenter.augmentation
        _wire_augmentation(app, augmenter)
    if learner is not None:

        async def send_embedding(key: bytes, value: bytes | None, headers: list[tuple[str, bytes]] | None = None):
            # The producer directly: a topic's send() costs more per record than this hot path can pay.
            return await app.producer.send(settings.topic_embeddings, key, value, None, None, headers)

        publisher = EmbeddingPublisher(
            learner.guarded,
            send_embedding,
            user_state,
            threshold=settings.embedding_change_threshold,
            max_per_s=settings.embedding_max_per_s,
            encoding=settings.embedding_encoding,
        )
        _wire_training(app, settings, learner, publisher)
    exchange = None
    if learner is not None and learner.sync is not None:

        async def send_parameters(key: bytes, value: bytes) -> Any:
            return await app.producer.send(settings.topic_item_parameters, key, value, None, None, None)

        exchange = ItemParameterExchange(settings, learner, send_parameters)
        _wire_parameter_sync(app, settings, exchange)

    async def train_and_publish(training_events: list[TrainingEvent], batch: dict[tuple[str, int], range]) -> None:
        assert learner is not None and publisher is not None
        report = await learner.learn(training_events, batch)
        if augmenter is not None:
            augmenter.note_step([e.observation() for e in training_events])
        _note_moved(learner, publisher, training_events)
        if report.expired_users or report.expired_items:
            await publisher.retire(report.expired_users, report.expired_items)
            if learner.sync is not None:
                learner.sync.forget(report.expired_items)
        await publisher.flush()  # sends; delivery is not awaited here
        if learner.checkpoint_due():
            await learner.checkpoint()

    training: asyncio.Future[None] | None = None
    aligned = None  # hands the interaction topics over in step in event time (stream/worker/event_time.py)
    if settings.event_time_alignment:
        aligned = EventTimeBuffer(
            int(settings.event_time_slack_s * 1000),
            settings.event_time_idle_s,
            max_held=20 * settings.batch_size,
            min_release=settings.batch_size,
        )
        stats.event_time = aligned  # /stats reads its figures when asked

    async def ingest_interactions(batch: Batch) -> None:
        nonlocal training
        training_events = await ingestor.interactions(batch.records, batch.unreadable)
        if learner is None:
            return
        # One step in flight: batch n trains (in a thread) while batch n+1 is ingested. Steps stay
        # in order, and the learner's own offsets, not the commit, say what is trained.
        if training is not None:
            await training
        training = asyncio.ensure_future(train_and_publish(training_events, batch.ranges))

    async def ingest_catalogue(batch: Batch) -> None:
        items = await ingestor.catalogue_items(batch.records, batch.unreadable)
        if learner is not None:
            learner.note_catalogue([item.item_id for item in items])
        if augmenter is not None:
            augmenter.note_items(items)

    routes = InputRoutes(
        (
            Route("ingest_interactions", frozenset(settings.interaction_topics), ingest_interactions),
            Route("ingest_catalogue", frozenset({settings.topic_catalogue}), ingest_catalogue),
        ),
        max_batch_records=settings.batch_size,
        # A fetch's partitions are merged by event time, read from the payload (Kafka's own timestamps
        # are too coarse: a fast producer stamps dozens of records with the same millisecond).
        time_of=event_time_of if settings.event_time_alignment else None,
        event_time=aligned,
        event_time_topics=frozenset(settings.interaction_topics),
        # After the seek to the committed offsets, the learner seeks back to what it has trained on.
        after_seek=learner.rewind if learner is not None else None,
    )
    install_consumer(app, routes, (interactions, catalogue_topic))

    for route in routes.routes:
        _serve(app, route.name)

    register_views(app, settings, stats, user_state, catalogue, learner, publisher, augmenter, exchange)
    return StreamApp(app, settings, ingestor, user_state, catalogue, learner, publisher, augmenter, exchange)


def _serve(app: faust.App, name: str) -> None:
    """An app task running one route's handler; an exception stops the worker (stream/worker/agent_failure.py)."""

    async def serve() -> None:
        with exit_on_error(name):  # fail fast, lose nothing: nothing past the failed batch is committed
            await app.consumer.serve(name)

    serve.__name__ = serve.__qualname__ = f"serve_{name}"
    app.task(serve)


def _note_moved(learner: Learner, publisher: EmbeddingPublisher, events: Sequence[TrainingEvent]) -> None:
    """Hand the step's moved users and items to the publisher, with the oldest event behind each."""
    users, items = learner.model.take_touched()
    if learner.sync is not None:
        learner.sync.note_trained(items)
    first_event: dict[str, int] = {}
    for event in events:
        user = event.interaction.user_id
        first_event[user] = min(first_event.get(user, event.timestamp_ms), event.timestamp_ms)
    oldest = min(first_event.values(), default=int(time.time() * 1000))
    # Users the step moved only through replayed samples are refreshed with their next event.
    publisher.note({u: ts for u, ts in first_event.items() if u in users}, items, oldest)


def _wire_parameter_sync(app: faust.App, settings: Settings, exchange: ItemParameterExchange) -> None:
    """Read the other workers' item contributions from start-up on; publish ours on a timer and at shutdown."""

    @app.task
    async def start_parameter_reader() -> None:
        exchange.start()

    @app.timer(settings.param_sync_interval_s)
    async def publish_item_parameters() -> None:
        await exchange.publish()

    @app.on_before_shutdown.connect
    async def stop_parameter_sync(sender: Any, **kwargs: Any) -> None:
        await exchange.stop()
        await exchange.publish()


def _wire_augmentation(app: faust.App, augmenter: StreamAugmenter) -> None:
    """Start the inference client with the app (it needs the producer), stop it before the final flush."""

    @app.task
    async def start_augmenter() -> None:
        await augmenter.start()

    @app.on_before_shutdown.connect
    async def stop_augmenter(sender: Any, **kwargs: Any) -> None:
        await augmenter.stop()


def _wire_training(app: faust.App, settings: Settings, learner: Learner, publisher: EmbeddingPublisher) -> None:
    """Hooks around the agent: a timer for held-back publishes, the final checkpoint."""

    @app.timer(settings.embedding_flush_interval_s)
    async def flush_embeddings() -> None:
        await publisher.flush()

    if learner.trainer.baseline_sink is not None:

        @app.timer(settings.metrics_baselines_interval_s)
        async def refresh_baseline_metrics() -> None:
            await learner.refresh_baseline_metrics()

    @app.on_before_shutdown.connect
    async def final_checkpoint(sender: Any, **kwargs: Any) -> None:
        # Runs after the consumer has stopped and every fetched batch is handled.
        await publisher.flush()
        await learner.checkpoint(wait=True)
        learner.close()
