"""The embedded default broker: a single-node Apache Kafka (KRaft) run from Maven Central's jars.

For users without Docker. ``fetch`` downloads the broker and its runtime dependencies once into
``<cache_dir>/kafka-<version>/libs`` with Maven (``stream/kafka/pom.xml``); ``start`` formats the
KRaft log dir on first use, launches ``kafka.Kafka`` in its own process group and waits until the
broker answers a metadata request; ``stop`` sends SIGTERM and waits for a clean shutdown. The pid,
properties, log and data live under ``<state_dir>/kafka``.

With ``STREAMREC_LOCAL_KAFKA_SASL_USERS`` (JSON ``{"user": "password"}``) the client listener is
``SASL_PLAINTEXT`` and accepts those users with PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 (SCRAM
credentials are written when the storage is first formatted), so that authentication is tested
against a real broker. Without it, nothing changes: one PLAINTEXT listener. The controller
listener stays PLAINTEXT on the loopback either way.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from streamrec.stream.kafka.admin import cluster_reachable
from streamrec.stream.kafka.security import KafkaEndpoint, KafkaSecurity
from streamrec.stream.settings import Settings

SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")

_LOG4J2 = """\
rootLogger.level=INFO
rootLogger.appenderRef.file.ref=FILE
appender.file.type=File
appender.file.name=FILE
appender.file.fileName={log}
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
logger.kafka.name=kafka
logger.kafka.level=WARN
logger.apache.name=org.apache.kafka
logger.apache.level=WARN
logger.started.name=kafka.server.KafkaRaftServer
logger.started.level=INFO
"""


class LocalKafkaError(RuntimeError):
    """A problem the user can act on; the message says what to do."""


@dataclass(frozen=True)
class BrokerStatus:
    running: bool
    pid: int | None
    bootstrap: str
    version: str
    log_file: Path
    security_protocol: str = "PLAINTEXT"


_RESERVED_UUIDS = frozenset({"AAAAAAAAAAAAAAAAAAAAAA", "AAAAAAAAAAAAAAAAAAAAAQ"})  # Kafka's zero and metadata-topic ids


def new_cluster_id(random_bytes: Callable[[int], bytes] = os.urandom) -> str:
    """A KRaft cluster id: 16 random bytes in unpadded URL-safe base64, as ``kafka-storage random-uuid`` prints.

    One id in 64 would start with ``-``; Kafka's own ``Uuid.randomUuid`` draws again in that case
    because such an id reads as an option on a command line (``format -t -Xy...`` fails with
    "expected one argument"). The same rule here, and the id is passed as ``--cluster-id=ID`` too.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(random_bytes(16)).decode().rstrip("=")
        if not cluster_id.startswith("-") and cluster_id not in _RESERVED_UUIDS:
            return cluster_id


def _require(tool: str, install_hint: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise LocalKafkaError(f"{tool} not found on PATH: {install_hint}")
    return path


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); treat it as dead.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


class LocalKafka:
    """Manage the embedded broker described by ``settings`` (host, ports, version, directories)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.version = settings.local_kafka_version
        self.libs_dir = settings.cache_dir / f"kafka-{self.version}" / "libs"
        self.home = settings.state_dir / "kafka"
        self.data_dir = self.home / "data"
        self.pid_file = self.home / "broker.pid"
        self.log_file = self.home / "broker.log"
        self.properties_file = self.home / "server.properties"
        self.bootstrap = f"{settings.local_kafka_host}:{settings.local_kafka_port}"
        self.sasl_users = dict(settings.local_kafka_sasl_users)
        self.listener = "SASL_PLAINTEXT" if self.sasl_users else "PLAINTEXT"

    # --- jars --------------------------------------------------------------------------------
    def _pom(self, workdir: Path) -> Path:
        """The broker's pom: the setting if given, else the one packaged with streamrec.

        The packaged pom is copied into the cache first: Maven treats the pom's folder as its
        project directory, and an installed package's folder may be read-only.
        """
        if self.settings.local_kafka_pom is not None:
            if not self.settings.local_kafka_pom.is_file():
                raise LocalKafkaError(
                    f"broker pom not found at {self.settings.local_kafka_pom} (STREAMREC_LOCAL_KAFKA_POM)"
                )
            return self.settings.local_kafka_pom
        pom = workdir / "pom.xml"
        pom.write_bytes(resources.files(__package__).joinpath("pom.xml").read_bytes())
        return pom

    def fetch(self) -> Path:
        """Download the broker jars once; later calls return the cached directory."""
        if (self.libs_dir / ".complete").exists():
            return self.libs_dir
        java_hint = "install Java 17+ (e.g. apt-get install openjdk-17-jre-headless)"
        _require("java", java_hint)
        mvn = _require("mvn", "install Apache Maven 3.6+ (e.g. apt-get install maven) to fetch the broker")
        staging = self.libs_dir.with_name(f"libs.partial-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        staging.parent.mkdir(parents=True, exist_ok=True)
        pom = self._pom(staging.parent)
        cmd = [
            mvn, "-q", "-B", "-f", str(pom), f"-Dkafka.version={self.version}",
            "dependency:copy-dependencies", "-DincludeScope=runtime", f"-DoutputDirectory={staging}",
        ]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
            shutil.rmtree(staging, ignore_errors=True)
            raise LocalKafkaError(f"Maven could not fetch Kafka {self.version}:\n{tail}")
        (staging / ".complete").write_text(self.version)
        shutil.rmtree(self.libs_dir, ignore_errors=True)
        staging.rename(self.libs_dir)
        return self.libs_dir

    # --- lifecycle ---------------------------------------------------------------------------
    def status(self) -> BrokerStatus:
        pid = self._read_pid()
        running = pid is not None and _pid_alive(pid)
        pid = pid if running else None
        return BrokerStatus(running, pid, self.bootstrap, self.version, self.log_file, self.listener)

    def start(self) -> BrokerStatus:
        """Start the broker unless it already runs; return once it serves metadata requests."""
        current = self.status()
        if current.running:
            self._wait_ready(current.pid)
            return current
        host, port = self.settings.local_kafka_host, self.settings.local_kafka_port
        if port_open(host, port):
            raise LocalKafkaError(
                f"{host}:{port} is already in use by another process; set STREAMREC_LOCAL_KAFKA_PORT "
                "or point KAFKA_BOOTSTRAP_SERVERS at that broker"
            )
        libs = self.fetch()
        java = _java()
        self.home.mkdir(parents=True, exist_ok=True)
        self._write_config()
        if not (self.data_dir / "meta.properties").exists():
            self._format(java, libs)
        with open(self.home / "broker.out", "ab") as out:
            process = subprocess.Popen(
                [*self._java_cmd(java, libs), "kafka.Kafka", str(self.properties_file)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=self.home,
            )  # fmt: skip
        self.pid_file.write_text(str(process.pid))
        self._wait_ready(process.pid)
        return self.status()

    def stop(self, timeout_s: float = 60.0) -> bool:
        """Stop the broker cleanly (SIGTERM, then SIGKILL after ``timeout_s``); False if none ran."""
        pid = self._read_pid()
        if pid is None or not _pid_alive(pid):
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _pid_alive(pid) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.2)
        if _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
            _reap(pid)
        self.pid_file.unlink(missing_ok=True)
        return True

    # --- internals ---------------------------------------------------------------------------
    def _read_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def _java_cmd(self, java: str, libs: Path) -> list[str]:
        heap = self.settings.local_kafka_heap
        return [
            java, f"-Xms{heap}", f"-Xmx{heap}", "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
            "-cp", f"{libs}/*",
        ]  # fmt: skip

    def _write_config(self) -> None:
        s = self.settings
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{s.local_kafka_host}:{s.local_kafka_controller_port}",
            "listeners": f"{self.listener}://{self.bootstrap},CONTROLLER://{s.local_kafka_host}:{s.local_kafka_controller_port}",
            "advertised.listeners": f"{self.listener}://{self.bootstrap}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": f"{self.listener}:{self.listener},CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": self.listener,
            "log.dirs": str(self.data_dir),
            "num.partitions": str(s.topic_partitions),
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "log.retention.hours": "168",
            **self._sasl_config(),
        }
        self.properties_file.touch(mode=0o600)  # it may hold passwords: readable by the owner only
        self.properties_file.chmod(0o600)
        self.properties_file.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        (self.home / "log4j2.properties").write_text(_LOG4J2.format(log=self.log_file))

    def _sasl_config(self) -> dict[str, str]:
        """The SASL listener's settings: PLAIN users in its JAAS line, SCRAM ones in the metadata log.

        The broker authenticates to itself (inter-broker listener) as the first user, over PLAIN.
        """
        if not self.sasl_users:
            return {}
        (first, first_password), *_ = self.sasl_users.items()
        users = " ".join(f'user_{name}="{pw.get_secret_value()}"' for name, pw in self.sasl_users.items())
        prefix = f"listener.name.{self.listener.lower()}"
        plain = "org.apache.kafka.common.security.plain.PlainLoginModule"
        scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        return {
            "sasl.enabled.mechanisms": ",".join(("PLAIN", *SCRAM_MECHANISMS)),
            "sasl.mechanism.inter.broker.protocol": "PLAIN",
            f"{prefix}.plain.sasl.jaas.config": (
                f'{plain} required username="{first}" password="{first_password.get_secret_value()}" {users};'
            ),
            **{f"{prefix}.{mechanism.lower()}.sasl.jaas.config": scram for mechanism in SCRAM_MECHANISMS},
        }

    def client_endpoint(self) -> KafkaEndpoint:
        """How this process reaches the broker: as the first SASL user (PLAIN) when it has users."""
        if not self.sasl_users:
            return KafkaEndpoint(self.bootstrap)
        name, password = next(iter(self.sasl_users.items()))
        security = KafkaSecurity("SASL_PLAINTEXT", "PLAIN", sasl_username=name, sasl_password=password)
        return KafkaEndpoint(self.bootstrap, security)

    def _format(self, java: str, libs: Path) -> None:
        cluster_id = new_cluster_id()
        scram = [
            arg
            for name, password in self.sasl_users.items()
            for mechanism in SCRAM_MECHANISMS
            for arg in ("--add-scram", f"{mechanism}=[name={name},password={password.get_secret_value()}]")
        ]
        cmd = [*self._java_cmd(java, libs), "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}",
               "-c", str(self.properties_file), *scram]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=self.home)
        if done.returncode != 0:
            output = done.stdout + done.stderr
            for password in self.sasl_users.values():  # the tool may echo its arguments
                output = output.replace(password.get_secret_value(), "**********")
            raise LocalKafkaError(f"formatting KRaft storage failed:\n{output}")

    def _wait_ready(self, pid: int | None) -> None:
        host, port = self.settings.local_kafka_host, self.settings.local_kafka_port
        deadline = time.monotonic() + self.settings.local_kafka_start_timeout_s
        while time.monotonic() < deadline:
            if pid is not None and not _pid_alive(pid):
                raise LocalKafkaError(f"the broker exited during start-up; see {self.log_file}\n{self._log_tail()}")
            if port_open(host, port) and self._answers_metadata():
                return
            time.sleep(0.3)
        raise LocalKafkaError(f"the broker did not become ready in time; see {self.log_file}\n{self._log_tail()}")

    def _answers_metadata(self) -> bool:
        return cluster_reachable(self.client_endpoint(), timeout_s=5.0)

    def _log_tail(self, lines: int = 20) -> str:
        chunks = []
        for path in (self.log_file, self.home / "broker.out"):
            if path.exists():
                chunks.extend(path.read_text(errors="replace").splitlines()[-lines:])
        return "\n".join(chunks)


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    return _require("java", "install Java 17+ (e.g. apt-get install openjdk-17-jre-headless)")


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
