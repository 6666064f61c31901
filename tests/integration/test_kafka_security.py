"""SASL against a real broker: the embedded Kafka with a SASL_PLAINTEXT listener and its own users.

The module starts its own broker (``STREAMREC_LOCAL_KAFKA_SASL_USERS``, free ports, 512m heap)
and stops it at the end; the session's PLAINTEXT broker is not involved. Passwords are random per
run, so finding one in a log or a command's output can only mean it leaked.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streamrec.stream.inference.client import InferenceClient, RequestExpired
from streamrec.stream.kafka.admin import ensure_topics, start_client
from streamrec.stream.kafka.security import new_producer
from streamrec.stream.settings import Settings
from streamrec.stream.tools.replay import producer_for
from streamrec.stream.worker.dead_letters import read_dead_letters
from streamrec.stream.worker.process import WorkerProcess
from tests.integration.conftest import env_for, free_port, local_broker, streamrec

pytestmark = pytest.mark.integration

BROKER_PASSWORD = f"broker-{secrets.token_hex(8)}"
ALICE_PASSWORD = f"alice-{secrets.token_hex(8)}"
WRONG_PASSWORD = f"wrong-{secrets.token_hex(8)}"
SECRETS = (BROKER_PASSWORD, ALICE_PASSWORD, WRONG_PASSWORD)
BASE_TS = 874_724_710_000


def assert_no_secret(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"a password leaked into {where}"


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A broker whose only client listener is SASL_PLAINTEXT (PLAIN and SCRAM) with two users."""
    # The first user is the one the broker itself (and its readiness probe) authenticates as.
    users = json.dumps({"streamrec-broker": BROKER_PASSWORD, "alice": ALICE_PASSWORD})
    with local_broker(tmp_path_factory.mktemp("sasl-broker"), local_kafka_sasl_users=users) as (base, output):
        listener = "SASL_PLAINTEXT listener: PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 for alice, streamrec-broker"
        assert listener in output
        assert_no_secret(output, "`streamrec kafka start`")
        yield base


def client_settings(broker: dict[str, Any], tmp_path: Path, name: str, **security: Any) -> dict[str, Any]:
    """A test's own topics, app id, state and ports on the SASL broker, as user alice unless told otherwise."""
    prefix = f"sec-{name}-{secrets.token_hex(3)}"
    return {
        "kafka_bootstrap_servers": f"127.0.0.1:{broker['local_kafka_port']}",
        "kafka_security_protocol": "SASL_PLAINTEXT",
        "kafka_sasl_mechanism": "SCRAM-SHA-256",
        "kafka_sasl_username": "alice",
        "kafka_sasl_password": ALICE_PASSWORD,
        **security,
        "app_id": prefix,
        **{f"topic_{t}": f"{prefix}.{t}" for t in ("clicks", "purchases", "catalogue", "dead_letters", "embeddings")},
        "topic_inference_requests": f"{prefix}.inference.requests",
        "topic_inference_results": f"{prefix}.inference.results",
        "topic_partitions": 2,
        "state_dir": tmp_path / "state",
        "web_port": free_port(),
        "inference_web_port": free_port(),
        "log_level": "info",  # Faust's and aiokafka's INFO lines too: none may carry a password
        "train": False,
        "baselines": "",
        "augment": False,
    }


def logs_under(*roots: Path) -> str:
    return "\n".join(
        path.read_text(errors="replace")
        for root in roots
        for path in sorted(root.rglob("*"))
        if path.is_file() and (path.suffix in (".log", ".out") or "log" in path.name)
    )


def test_a_worker_with_credentials_applies_events_and_dead_letters_over_sasl(sasl_broker, start_worker, tmp_path):
    values = client_settings(sasl_broker, tmp_path, "worker")
    settings = Settings(**values)
    worker = start_worker(values)

    # Valid events through the replay command (its topic admin and producer), one malformed event
    # through replay's producer factory.
    csv = tmp_path / "events.csv"
    rows = [f"u{i % 7},item-{i % 23},{BASE_TS + i * 1000}" for i in range(120)]
    csv.write_text("user_id,item_id,ts\n" + "\n".join(rows) + "\n")
    replayed = streamrec(["replay", "--from-csv", str(csv), "--no-catalogue"], values, timeout=180)
    assert replayed.returncode == 0, replayed.stderr[-3000:]
    assert json.loads(replayed.stdout.strip().splitlines()[-1])["interactions"] == 120

    async def produce_bad() -> None:
        producer = producer_for(settings)
        await start_client(producer, settings)
        try:
            await (await producer.send(settings.topic_clicks, b'{"event_id": "x", "user_id": ', key=b"u1"))
        finally:
            await producer.stop()

    asyncio.run(produce_bad())
    stats = worker.wait_for(lambda s: s["consumed_total"] >= 121, timeout_s=120)
    assert stats["user_state_events_total"] == 120 and stats["applied_interactions"] == 120
    assert stats["dead_letters"] == {"malformed_json": 1}
    assert stats["users"] == 7

    (letter,) = asyncio.run(read_dead_letters(settings, settings.topic_dead_letters))
    assert (letter.reason, letter.key) == ("malformed_json", b"u1")
    shown = streamrec(["dead-letters"], values, timeout=120)
    assert shown.returncode == 0 and "malformed_json" in shown.stdout, shown.stderr[-2000:]

    assert worker.stop() == 0
    log = worker.log_path.read_text(errors="replace")
    # The listener speaks SASL only, so the events applied above prove that Faust's own clients
    # authenticated; aiokafka says so at INFO, and nothing at any level shows the password.
    assert "Authenticated as alice via SCRAM-SHA-256" in log
    assert_no_secret(log, "the worker's log")
    for done in (replayed, shown):
        assert_no_secret(done.stdout + done.stderr, "a command's output")
    assert_no_secret(logs_under(tmp_path), "a log under the test's directory")


def test_a_wrong_password_is_a_clear_error_from_the_cli_and_the_worker(sasl_broker, tmp_path):
    values = client_settings(sasl_broker, tmp_path, "wrong", kafka_sasl_password=WRONG_PASSWORD)
    started = time.monotonic()
    done = streamrec(["topics", "create"], values, timeout=120)
    assert time.monotonic() - started < 60, "a rejected password must fail fast, not retry"
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: SASL authentication failed at 127.0.0.1:"), done.stderr
    assert "SCRAM-SHA-256 as 'alice'" in last and "STREAMREC_KAFKA_SASL_PASSWORD" in last
    assert "Traceback" not in done.stderr
    assert_no_secret(done.stdout + done.stderr, "`streamrec topics create`")

    # The stream worker checks its topics first, so it exits at once with the same message.
    log_path = tmp_path / "worker.log"
    worker = WorkerProcess(Settings(**values), env=env_for(values), log_path=log_path)
    worker.start()
    assert worker.process is not None
    assert worker.process.wait(timeout=120) == 1
    log = log_path.read_text(errors="replace")
    assert "Error: SASL authentication failed at 127.0.0.1:" in log
    assert_no_secret(log, "the refused worker's log")

    # PLAIN is refused with the broker's own words; a client without SASL is told what to set.
    plain = streamrec(["topics", "create"], {**values, "kafka_sasl_mechanism": "PLAIN"}, timeout=120)
    assert plain.returncode == 1 and "Invalid username or password" in plain.stderr
    assert_no_secret(plain.stdout + plain.stderr, "`streamrec topics create` (PLAIN)")
    anonymous = {k: v for k, v in values.items() if not k.startswith(("kafka_sasl", "kafka_security"))}
    none = streamrec(["topics", "create"], anonymous, timeout=120)
    assert none.returncode == 1
    assert "does the cluster need SASL or TLS? Check STREAMREC_KAFKA_SECURITY_PROTOCOL" in none.stderr


class FakeModels:
    """What the inference worker calls, without transformers: a two-dimensional 'embedding' per text."""

    load_seconds = 0.0
    lm = None

    def encoder_handlers(self) -> dict[str, Any]:
        return {"embed": lambda payloads: [[float(len(p["text"])), 1.0] for p in payloads]}

    def lm_handlers(self) -> dict[str, Any]:
        return {}


def test_inference_requests_and_results_round_trip_over_sasl_plain(sasl_broker, tmp_path):
    """The inference worker's consumer and producer and the stream side's client, all authenticated."""
    from streamrec.stream.inference.worker import InferenceWorker

    values = client_settings(sasl_broker, tmp_path, "inference", kafka_sasl_mechanism="PLAIN")
    settings = Settings(**values)

    async def scenario() -> list[float]:
        await ensure_topics(settings)
        stop = asyncio.Event()
        worker = InferenceWorker(settings, models=FakeModels())  # type: ignore[arg-type]
        running = asyncio.ensure_future(worker.run(stop))
        producer = new_producer(settings)
        await start_client(producer, settings)

        async def send(topic: str, key: bytes, value: bytes) -> Any:
            return await producer.send_and_wait(topic, value, key=key)

        client = InferenceClient(settings, send)
        await client.start()
        try:
            # Requests sent before the worker's group has its partitions are not seen ("latest"): retry.
            deadline = time.monotonic() + 90
            while True:
                assert not running.done(), running.exception()
                try:
                    return await client.request("embed", {"text": "Toy Story (1995)"}, timeout_s=2)
                except RequestExpired:
                    assert time.monotonic() < deadline, "no inference result over SASL in 90 s"
        finally:
            await client.stop()
            await producer.stop()
            stop.set()
            await asyncio.wait_for(running, 60)

    assert asyncio.run(scenario()) == [16.0, 1.0]


def test_the_broker_logs_hold_no_password(sasl_broker):
    broker_logs = logs_under(Path(sasl_broker["state_dir"]) / "kafka")
    assert "Kafka Server started" in broker_logs
    assert_no_secret(broker_logs, "the broker's logs")
