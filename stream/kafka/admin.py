"""Topic administration and offset queries through aiokafka's admin client.

Topics are created explicitly, before any producer or worker touches them, so that a broker's
auto-creation (with its own partition count) never decides how the stream is partitioned: Faust
tables require the source topics and their changelogs to have the same number of partitions.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError

from streamrec.stream.kafka.security import KafkaTarget, connection_problem, endpoint, new_admin, new_consumer
from streamrec.stream.settings import Settings


class KafkaUnavailable(RuntimeError):
    """No broker answers at the configured address."""

    def __init__(self, bootstrap: str) -> None:
        super().__init__(
            f"cannot reach Kafka at {bootstrap}: start the local broker with `streamrec kafka start`, "
            "or set KAFKA_BOOTSTRAP_SERVERS to a running cluster"
        )


class KafkaAuthenticationError(KafkaUnavailable):
    """The brokers answer, but refuse this client's credentials or TLS handshake (the message says which)."""

    def __init__(self, reason: str) -> None:
        RuntimeError.__init__(self, reason)


async def start_client(client: Any, target: KafkaTarget) -> None:
    """Start an aiokafka client, turning "no broker there" into :class:`KafkaUnavailable`.

    aiokafka reports a rejected password like an unreachable broker ("Unable to bootstrap"), so a
    failed start is followed by one probe that names an authentication or TLS cause when there is
    one (:class:`KafkaAuthenticationError`): a wrong password must not read as "start the broker".
    """
    try:
        await client.start()
    except KafkaConnectionError:
        shutdown = getattr(client, "close", None) or client.stop  # admin clients close, consumers stop
        with contextlib.suppress(KafkaError, OSError):
            await shutdown()
        reason = await connection_problem(target)
        if reason is not None:
            raise KafkaAuthenticationError(reason) from None
        raise KafkaUnavailable(endpoint(target).bootstrap) from None


class TopicLayoutError(RuntimeError):
    """An existing topic's partitioning cannot work with the tables built on it."""


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str]
    # Source topics of tables must have exactly the tables' partition count.
    co_partitioned: bool = True


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic the service reads or writes, with its partitioning and retention."""
    n, rf = settings.topic_partitions, settings.topic_replication_factor
    return [
        TopicSpec(settings.topic_clicks, n, rf, {}),
        TopicSpec(settings.topic_purchases, n, rf, {}),
        # The catalogue is state, not history: keep the latest entry per item forever.
        TopicSpec(settings.topic_catalogue, n, rf, {"cleanup.policy": "compact"}),
        # A dead letter holds the original record, which may be as large as the broker allows, plus headers.
        TopicSpec(
            settings.topic_dead_letters,
            n,
            rf,
            {
                "retention.ms": str(settings.dead_letter_retention_ms),
                "max.message.bytes": str(settings.dead_letter_max_bytes),
            },
        ),
        # Latest vector per entity; append time makes record.timestamp the moment it was published.
        TopicSpec(
            settings.topic_embeddings,
            n,
            rf,
            {"cleanup.policy": "compact", "message.timestamp.type": "LogAppendTime"},
            co_partitioned=False,
        ),
        # Each worker's newest cumulative contribution per item (models/parameter_sync.py).
        TopicSpec(settings.topic_item_parameters, n, rf, {"cleanup.policy": "compact"}, co_partitioned=False),
        # Inference requests and results are short-lived: a request is useless after its deadline.
        TopicSpec(settings.topic_inference_requests, n, rf, {"retention.ms": "3600000"}, co_partitioned=False),
        TopicSpec(settings.topic_inference_results, n, rf, {"retention.ms": "3600000"}, co_partitioned=False),
    ]


async def ensure_topics(settings: Settings) -> list[str]:
    """Create the missing topics and return their names; check the partitioning of existing ones.

    Raises :class:`KafkaUnavailable` when no broker answers and :class:`TopicLayoutError` when an
    existing source topic has another partition count than the tables need.
    """
    specs = topic_specs(settings)
    admin = new_admin(settings)
    await start_client(admin, settings)
    try:
        existing = set(await admin.list_topics())
        await _check_partitions(admin, [s for s in specs if s.name in existing and s.co_partitioned])
        missing = [s for s in specs if s.name not in existing]
        created = []
        for spec in missing:
            try:
                await admin.create_topics(
                    [NewTopic(spec.name, spec.partitions, spec.replication_factor, topic_configs=spec.config)]
                )
                created.append(spec.name)
            except TopicAlreadyExistsError:  # another process won the race
                pass
        if created:
            await _wait_for_metadata(admin, created)
        return created
    finally:
        await admin.close()


async def _check_partitions(admin: AIOKafkaAdminClient, specs: list[TopicSpec]) -> None:
    if not specs:
        return
    found = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics([s.name for s in specs])}
    for spec in specs:
        if found.get(spec.name, spec.partitions) != spec.partitions:
            raise TopicLayoutError(
                f"topic {spec.name} has {found[spec.name]} partition(s) but STREAMREC_TOPIC_PARTITIONS="
                f"{spec.partitions}: the tables need the same count as their source topics. Set "
                f"STREAMREC_TOPIC_PARTITIONS={found[spec.name]}, or recreate the topic."
            )


async def _wait_for_metadata(admin: AIOKafkaAdminClient, names: list[str], timeout_s: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        if set(names) <= set(await admin.list_topics()):
            return
        await asyncio.sleep(0.2)


async def end_offsets(target: KafkaTarget, topic: str) -> dict[int, int]:
    """The high-water mark of every partition of ``topic`` (the number of records ever written).

    ``target`` is the settings (their cluster and credentials) or a plain PLAINTEXT ``host:port``.
    """
    consumer = new_consumer(target, enable_auto_commit=False)
    await start_client(consumer, target)
    try:
        tps = await topic_partitions(consumer, topic)
        if not tps:
            return {}
        offsets = await consumer.end_offsets(tps)
        return {tp.partition: offset for tp, offset in offsets.items()}
    finally:
        await consumer.stop()


async def topic_partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """The partitions of ``topic``, asking the broker: a consumer without a subscription has no metadata."""
    cluster = await consumer._client.fetch_all_metadata()
    partitions = cluster.partitions_for_topic(topic) or set()
    return [TopicPartition(topic, p) for p in sorted(partitions)]


async def _reachable(target: KafkaTarget, timeout_s: float) -> bool:
    admin = new_admin(target, request_timeout_ms=int(timeout_s * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        await asyncio.wait_for(admin.describe_cluster(), timeout_s)
        return True
    except (TimeoutError, KafkaError, OSError):
        return False
    finally:
        try:
            await admin.close()
        except Exception:  # noqa: BLE001 - closing a half-started client may fail; nothing to do
            pass


def cluster_reachable(target: KafkaTarget, timeout_s: float = 5.0) -> bool:
    """True when a broker at ``target`` answers a metadata request (with its credentials, if any)."""
    return asyncio.run(_reachable(target, timeout_s))


async def read_topic(target: KafkaTarget, topic: str, last: int | None = None) -> list[Any]:
    """Every record now in ``topic`` (or the newest ``last`` per partition), partition by partition.

    Reads up to the end offsets taken at the start, so it returns even while producers write.
    Committed records only: a topic written in transactions (``exactly_once``) also holds records
    of aborted transactions (a killed worker's last batch) and transaction markers, which take
    offsets but are never returned; the loop follows the consumer's position past them.
    ``target``: the settings, a :class:`~streamrec.stream.kafka.security.KafkaEndpoint` or a PLAINTEXT ``host:port``.
    """
    consumer = new_consumer(target, enable_auto_commit=False, isolation_level="read_committed")
    await start_client(consumer, target)
    try:
        tps = await topic_partitions(consumer, topic)
        if not tps:
            return []
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        records: list[Any] = []
        for tp in tps:
            first = starts[tp] if last is None else max(starts[tp], ends[tp] - last)
            if first >= ends[tp]:
                continue
            consumer.seek(tp, first)
            while await consumer.position(tp) < ends[tp]:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                records.extend(record for record in batch.get(tp, []) if record.offset < ends[tp])
        return records
    finally:
        await consumer.stop()
