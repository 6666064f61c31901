import base64
import os
import socket
import subprocess
import sys

import pytest

from streamrec.stream.kafka.local import LocalKafka, LocalKafkaError, new_cluster_id
from streamrec.stream.settings import Settings
from streamrec.stream.worker.contract import InvalidEvent, Reason
from streamrec.stream.worker.dead_letters import SourcePosition, from_record, headers_for


def test_kafka_bootstrap_servers_selects_an_existing_cluster(monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "broker-a:9092,broker-b:9092")
    settings = Settings()
    assert settings.bootstrap_servers == "broker-a:9092,broker-b:9092"
    assert not settings.uses_embedded_kafka


def test_embedded_default_and_prefixed_variables(monkeypatch):
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("STREAMREC_LOCAL_KAFKA_PORT", "19999")
    monkeypatch.setenv("STREAMREC_TOPIC_PARTITIONS", "6")
    settings = Settings()
    assert settings.uses_embedded_kafka and settings.bootstrap_servers == "127.0.0.1:19999"
    assert settings.topic_partitions == 6


def test_missing_maven_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    settings = Settings(cache_dir=tmp_path / "cache", state_dir=tmp_path / "state")
    with pytest.raises(LocalKafkaError) as caught:
        LocalKafka(settings).fetch()
    assert "not found on PATH" in str(caught.value) and "\n" not in str(caught.value)


def test_cli_reports_missing_java_in_one_line(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free_port = s.getsockname()[1]  # start() first checks that the port is free
    env = {
        "PATH": str(tmp_path),
        "STREAMREC_CACHE_DIR": str(tmp_path / "c"),
        "STREAMREC_STATE_DIR": str(tmp_path / "s"),
        "STREAMREC_LOCAL_KAFKA_PORT": str(free_port),
    }
    done = subprocess.run(
        [sys.executable, "-m", "streamrec.stream", "kafka", "start"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "Error: java not found on PATH: install Java 17+ (e.g. apt-get install openjdk-17-jre-headless)"
    ]


def test_dead_letter_headers_round_trip():
    error = InvalidEvent(Reason.EMPTY_ID, "user_id: String should have at least 1 character")
    headers = headers_for(error, SourcePosition("clicks", 3, 1234), failed_at_ms=99)
    letter = from_record(b"k", b"{raw}", headers)
    assert (letter.reason, letter.source, letter.value, letter.failed_at_ms) == (
        "empty_id",
        SourcePosition("clicks", 3, 1234),
        b"{raw}",
        99,
    )
    assert letter.detail.startswith("user_id:")


def test_cli_says_how_to_fix_an_unreachable_cluster(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "STREAMREC_STATE_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "streamrec.stream", "topics", "create"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "Error: cannot reach Kafka at 127.0.0.1:1: start the local broker with `streamrec kafka start`, "
        "or set KAFKA_BOOTSTRAP_SERVERS to a running cluster"
    )
    assert "Traceback" not in done.stderr


def test_exactly_once_is_refused_with_the_reason(monkeypatch):
    """Faust's transactions were tried and do not make this pipeline exactly-once (docs/delivery.md)."""
    monkeypatch.setenv("STREAMREC_PROCESSING_GUARANTEE", "exactly_once")
    with pytest.raises(ValueError, match=r"exactly_once is not supported: .* dead-letters records twice"):
        Settings()
    monkeypatch.setenv("STREAMREC_PROCESSING_GUARANTEE", "at_least_once")
    assert Settings().processing_guarantee == "at_least_once"
    done = subprocess.run(
        [sys.executable, "-m", "streamrec.stream", "worker", "stream"],
        env={**os.environ, "STREAMREC_PROCESSING_GUARANTEE": "exactly_once"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0 and "invalid configuration" in done.stderr and "docs/delivery.md" in done.stderr


def test_cluster_ids_never_start_with_a_dash():
    """An id such as ``-Xy…`` made ``kafka-storage format -t`` fail in CI ("expected one argument")."""
    draws = iter([b"\xf8" + bytes(15), bytes(16), b"\x10" * 16])  # '-' first, Kafka's zero id, then a good one
    cluster_id = new_cluster_id(lambda n: next(draws))
    assert cluster_id == base64.urlsafe_b64encode(b"\x10" * 16).decode().rstrip("=")
    assert len(cluster_id) == 22
    ids = {new_cluster_id() for _ in range(2000)}
    assert len(ids) == 2000 and not any(i.startswith("-") for i in ids)
