"""Kafka security settings: validation, the aiokafka options and Faust credentials built from them.

Certificates are made with the ``openssl`` command line (a throwaway CA, a server certificate for
``localhost`` and a client certificate whose key is encrypted). The TLS diagnosis runs against a
real TLS socket on the loopback; the SASL path against a real broker is in
tests/integration/test_kafka_security.py.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from pydantic import SecretStr, ValidationError

from streamrec.stream.kafka.security import (
    KafkaEndpoint,
    KafkaSecurity,
    client_options,
    connection_problem,
    faust_credentials,
)
from streamrec.stream.settings import Settings

PASSWORD = "pw-that-must-not-leak-7f3a"
KEY_PASSWORD = "key-pw-that-must-not-leak-91c2"
REPO = Path(__file__).resolve().parents[2]


def settings(**values) -> Settings:
    return Settings(kafka_bootstrap_servers="broker-1:9093,broker-2:9093", **values)


def sasl(**values) -> Settings:
    return settings(kafka_sasl_username="alice", kafka_sasl_password=PASSWORD, **values)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, a server certificate for localhost signed by it, a client certificate with an encrypted key."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command line is needed to make test certificates")
    d = tmp_path_factory.mktemp("pki")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    for ca in ("ca", "other-ca"):
        openssl("req", "-x509", *ec, "-keyout", f"{ca}.key", "-out", f"{ca}.crt", "-days", "2", "-subj", f"/CN={ca}")
    (d / "san.ext").write_text("subjectAltName=DNS:localhost\n")
    for name in ("server", "client"):
        openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.crt", "-days", "2", "-extfile", "san.ext")  # fmt: skip
    openssl("pkey", "-in", "client.key", "-aes256", "-passout", f"pass:{KEY_PASSWORD}", "-out", "client-enc.key")
    names = {"ca": "ca.crt", "other-ca": "other-ca.crt", "server": "server.crt", "server-key": "server.key",
             "client": "client.crt", "client-enc-key": "client-enc.key"}  # fmt: skip
    return {name: d / file for name, file in names.items()}


def test_plaintext_by_default_adds_no_options_and_no_faust_credentials():
    s = settings()
    assert s.kafka_security_protocol == "PLAINTEXT"
    assert s.kafka_security.client_options() == {}
    assert client_options(s) == {"bootstrap_servers": "broker-1:9093,broker-2:9093"}
    assert client_options("h:1", acks="all") == {"bootstrap_servers": "h:1", "acks": "all"}
    assert faust_credentials(s) is None


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_plaintext_options_and_faust_credentials_agree(mechanism):
    s = sasl(kafka_security_protocol="sasl_plaintext", kafka_sasl_mechanism=mechanism.lower())
    options = client_options(s, client_id="x")
    assert options == {
        "bootstrap_servers": "broker-1:9093,broker-2:9093",
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "alice",
        "sasl_plain_password": PASSWORD,
        "client_id": "x",
    }
    credentials = faust_credentials(s)
    # Faust turns its credentials into the same aiokafka options for its own producer and consumers.
    assert credentials_to_aiokafka_auth(credentials) == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "alice",
        "sasl_plain_password": PASSWORD,
        "ssl_context": None,
    }
    assert PASSWORD not in repr(credentials)


def test_ssl_builds_a_verifying_context_from_the_ca_file(pki):
    s = settings(kafka_security_protocol="SSL", kafka_ssl_cafile=pki["ca"])
    options = client_options(s)
    assert options.keys() == {"bootstrap_servers", "security_protocol", "ssl_context"}
    assert options["security_protocol"] == "SSL"
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [dict(entry[0] for entry in cert["subject"]) for cert in context.get_ca_certs()] == [{"commonName": "ca"}]
    auth = credentials_to_aiokafka_auth(faust_credentials(s))
    assert auth["security_protocol"] == "SSL" and isinstance(auth["ssl_context"], ssl.SSLContext)
    relaxed = client_options(settings(kafka_security_protocol="SSL", kafka_ssl_cafile=pki["ca"],
                                      kafka_ssl_check_hostname=False))["ssl_context"]  # fmt: skip
    assert not relaxed.check_hostname and relaxed.verify_mode == ssl.CERT_REQUIRED


def test_sasl_ssl_with_a_client_certificate_and_an_encrypted_key(pki):
    s = sasl(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512", kafka_ssl_cafile=pki["ca"],
             kafka_ssl_certfile=pki["client"], kafka_ssl_keyfile=pki["client-enc-key"],
             kafka_ssl_key_password=KEY_PASSWORD)  # fmt: skip
    options = client_options(s)
    assert options["security_protocol"] == "SASL_SSL" and options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    credentials = faust_credentials(s)
    assert credentials.protocol.value == "SASL_SSL"  # faust: SASLCredentials with a context are SASL_SSL
    auth = credentials_to_aiokafka_auth(credentials)
    assert auth["security_protocol"] == "SASL_SSL" and isinstance(auth["ssl_context"], ssl.SSLContext)
    assert KEY_PASSWORD not in repr(s) and PASSWORD not in repr(s)


def test_a_wrong_key_password_is_a_start_up_error_that_does_not_echo_it(pki):
    with pytest.raises(ValidationError) as caught:
        settings(kafka_security_protocol="SSL", kafka_ssl_certfile=pki["client"],
                 kafka_ssl_keyfile=pki["client-enc-key"], kafka_ssl_key_password="not-" + KEY_PASSWORD)  # fmt: skip
    assert "cannot load the TLS files" in str(caught.value) and KEY_PASSWORD not in str(caught.value)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"kafka_security_protocol": "SASL_SSL"},
         "STREAMREC_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs STREAMREC_KAFKA_SASL_USERNAME and "
         "STREAMREC_KAFKA_SASL_PASSWORD"),
        ({"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_username": "alice"},
         "SASL_PLAINTEXT needs STREAMREC_KAFKA_SASL_PASSWORD"),
        ({"kafka_sasl_username": "alice", "kafka_sasl_password": PASSWORD},
         "STREAMREC_KAFKA_SASL_USERNAME/_PASSWORD are set but STREAMREC_KAFKA_SECURITY_PROTOCOL=PLAINTEXT"),
        ({"kafka_ssl_cafile": "/etc/hosts"}, "STREAMREC_KAFKA_SSL_CAFILE set but STREAMREC_KAFKA_SECURITY_PROTOCOL="),
        ({"kafka_security_protocol": "SSL", "kafka_ssl_cafile": "/nonexistent/ca.pem"},
         "no such file: STREAMREC_KAFKA_SSL_CAFILE=/nonexistent/ca.pem"),
        ({"kafka_security_protocol": "SSL", "kafka_ssl_keyfile": "/etc/hosts"}, "need STREAMREC_KAFKA_SSL_CERTFILE"),
        ({"kafka_security_protocol": "KERBEROS"}, "kafka_security_protocol"),
        ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "GSSAPI"}, "kafka_sasl_mechanism"),
        ({"local_kafka_sasl_users": {"bad user": "x"}}, "user 'bad user' may use only"),
        ({"local_kafka_sasl_users": {"alice": 'pw"quoted'}}, "the password of 'alice' must be"),
    ],
)  # fmt: skip
def test_inconsistent_settings_are_refused_at_start_up_with_the_variable_to_fix(values, message):
    with pytest.raises(ValidationError) as caught:
        settings(**values)
    assert message in str(caught.value)
    assert PASSWORD not in str(caught.value)  # hide_input_in_errors: the input is never echoed


def test_empty_values_from_a_chart_mean_unset():
    s = settings(kafka_security_protocol="", kafka_sasl_username="", kafka_sasl_password="", kafka_ssl_cafile="")
    assert (s.kafka_sasl_username, s.kafka_sasl_password, s.kafka_ssl_cafile) == (None, None, None)
    assert s.kafka_security_protocol == "PLAINTEXT"


def test_the_cli_names_the_problem_without_printing_the_password(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "STREAMREC_STATE_DIR": str(tmp_path), "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
           "STREAMREC_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT", "STREAMREC_KAFKA_SASL_USERNAME": "alice",
           "STREAMREC_KAFKA_SASL_PASSWORD": PASSWORD}  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "streamrec.stream", "topics", "create"], env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 1
    assert "Error: invalid configuration" in done.stderr and "set it to SASL_SSL" in done.stderr
    assert PASSWORD not in done.stdout + done.stderr


def test_secrets_are_masked_in_reprs():
    s = sasl(kafka_security_protocol="SASL_SSL", local_kafka_sasl_users={"bob": PASSWORD})
    for text in (repr(s), str(s), repr(s.kafka_security), s.kafka_security.describe(),
                 repr(faust_credentials(s)), s.model_dump_json()):  # fmt: skip
        assert PASSWORD not in text
    assert s.kafka_security.describe() == "SASL_SSL (PLAIN as 'alice')"


async def _tls_server(pki: dict[str, Path]) -> tuple[asyncio.Server, int]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki["server"], pki["server-key"])

    async def close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(close_at_once, "127.0.0.1", 0, ssl=context)
    return server, server.sockets[0].getsockname()[1]


def test_tls_problems_are_named_by_the_connection_probe(pki):
    async def probe(host: str, cafile: Path, check_hostname: bool = True) -> str | None:
        server, port = await _tls_server(pki)
        async with server:
            security = KafkaSecurity("SSL", ssl_cafile=cafile, ssl_check_hostname=check_hostname)
            return await connection_problem(KafkaEndpoint(f"{host}:{port}", security), timeout_s=5)

    wrong_ca = asyncio.run(probe("localhost", pki["other-ca"]))
    assert wrong_ca is not None and re.search(r"TLS certificate of localhost:\d+ does not verify", wrong_ca)
    assert "STREAMREC_KAFKA_SSL_CAFILE" in wrong_ca
    wrong_name = asyncio.run(probe("127.0.0.1", pki["ca"]))  # the certificate names localhost only
    assert wrong_name is not None and "STREAMREC_KAFKA_SSL_CHECK_HOSTNAME" in wrong_name
    # A verified handshake with a server that is no broker is not a security problem.
    assert asyncio.run(probe("localhost", pki["ca"])) is None
    assert asyncio.run(probe("127.0.0.1", pki["ca"], check_hostname=False)) is None
    # Nobody listening: not a security problem either (the caller says "cannot reach Kafka").
    assert asyncio.run(connection_problem(KafkaEndpoint("127.0.0.1:1", KafkaSecurity("SSL")), timeout_s=5)) is None


def test_a_wrong_password_is_masked_when_the_local_broker_cannot_format(tmp_path, monkeypatch):
    from streamrec.stream.kafka.local import LocalKafka, LocalKafkaError

    local = LocalKafka(Settings(state_dir=tmp_path, local_kafka_sasl_users={"alice": PASSWORD}))
    failed = subprocess.CompletedProcess(
        [], 1, stdout=f"bad --add-scram SCRAM-SHA-256=[password={PASSWORD}]", stderr=""
    )
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: failed)
    with pytest.raises(LocalKafkaError) as caught:
        local._format("java", tmp_path)
    assert PASSWORD not in str(caught.value) and "**********" in str(caught.value)


def test_the_local_sasl_broker_config_and_its_readiness_probe_credentials(tmp_path):
    from streamrec.stream.kafka.local import LocalKafka

    plain = LocalKafka(Settings(state_dir=tmp_path / "plain"))
    plain.home.mkdir(parents=True)
    plain._write_config()
    props = plain.properties_file.read_text()
    assert "listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://" in props and "sasl." not in props
    assert plain.client_endpoint() == KafkaEndpoint("127.0.0.1:9092")
    users = {"broker": "b-pw", "alice": "a-pw"}
    secured = LocalKafka(Settings(state_dir=tmp_path / "sasl", local_kafka_sasl_users=users))
    secured.home.mkdir(parents=True)
    secured._write_config()
    props = secured.properties_file.read_text()
    assert "listeners=SASL_PLAINTEXT://127.0.0.1:9092,CONTROLLER://" in props
    assert 'username="broker" password="b-pw" user_broker="b-pw" user_alice="a-pw";' in props
    assert "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512" in props
    assert secured.properties_file.stat().st_mode & 0o077 == 0  # passwords inside: owner only
    assert secured.client_endpoint().security == KafkaSecurity("SASL_PLAINTEXT", "PLAIN", "broker", SecretStr("b-pw"))


CONSTRUCTORS = re.compile(r"\b(AIOKafkaConsumer|AIOKafkaProducer|AIOKafkaAdminClient|AIOKafkaClient)\(")


def test_every_client_the_project_builds_goes_through_kafka_security():
    """No aiokafka client is constructed directly and every Faust app gets broker_credentials."""
    offenders = []
    for path in [*(REPO / "stream").rglob("*.py"), *(REPO / "bench").rglob("*.py"), *(REPO / "models").rglob("*.py")]:
        text = path.read_text()
        if path.relative_to(REPO) != Path("stream/kafka/security.py") and CONSTRUCTORS.search(text):
            offenders.append(f"{path.relative_to(REPO)} builds an aiokafka client directly")
        for call in re.finditer(r"faust\.App\(", text):
            if "broker_credentials=" not in text[call.end() : call.end() + 600]:
                offenders.append(f"{path.relative_to(REPO)}: faust.App without broker_credentials")
    assert not offenders
