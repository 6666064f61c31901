"""Kafka authentication and encryption: one place that turns settings into client options.

Every Kafka client the project creates (Faust's producer and consumers, the topic admin, the
inference worker's and the inference client's clients, replay, the offset and topic readers, the
benchmarks) is built from :func:`client_options` or :func:`faust_credentials`, so a secured cluster
needs its settings once, and no client can be forgotten. The settings are described in
``docs/security.md``; :class:`KafkaSecurity` is their typed, validated form.

Secrets stay :class:`~pydantic.SecretStr` until the moment a client is constructed: reprs, logs and
error messages see ``**********``. The plain password exists only in the keyword arguments handed to
aiokafka (which keeps it for its own SASL handshakes) and inside Faust's ``SASLCredentials``, whose
repr shows the user name only.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias

from pydantic import SecretStr

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient
    from faust.types.auth import CredentialsT

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
SASL_PROTOCOLS = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})
TLS_PROTOCOLS = frozenset({"SSL", "SASL_SSL"})
# The embedded broker writes users into a JAAS line in server.properties: keep them unquotable.
_LOCAL_USER = re.compile(r"[A-Za-z0-9._-]+")
_LOCAL_PASSWORD_FORBIDDEN = frozenset('"\\\n\r;,[]')


class KafkaSecurityError(ValueError):
    """The security settings contradict each other, or their TLS files cannot be loaded."""


@dataclass(frozen=True)
class KafkaSecurity:
    """How clients authenticate to the brokers and whether the connection is encrypted."""

    protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism = "PLAIN"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_key_password: SecretStr | None = None
    ssl_check_hostname: bool = True

    @property
    def uses_sasl(self) -> bool:
        return self.protocol in SASL_PROTOCOLS

    @property
    def uses_tls(self) -> bool:
        return self.protocol in TLS_PROTOCOLS

    def describe(self) -> str:
        """For logs and error messages: never a secret."""
        if self.uses_sasl:
            return f"{self.protocol} ({self.sasl_mechanism} as {self.sasl_username!r})"
        return self.protocol

    def problems(self) -> list[str]:
        """What is wrong with these settings, as messages naming the variables to fix (empty: fine).

        A setting that the chosen protocol would ignore is a mistake too: credentials set with
        ``PLAINTEXT`` mean the protocol was forgotten, and silently connecting without them would
        turn into a confusing "cannot reach Kafka" later.
        """
        env = "STREAMREC_KAFKA_"
        found: list[str] = []
        if self.uses_sasl:
            missing = [
                f"{env}SASL_{name.upper()}"
                for name, value in (("username", self.sasl_username), ("password", self.sasl_password))
                if not value or (isinstance(value, SecretStr) and not value.get_secret_value())
            ]
            if missing:
                found.append(f"{env}SECURITY_PROTOCOL={self.protocol} needs {' and '.join(missing)}")
        elif self.sasl_username is not None or self.sasl_password is not None:
            found.append(
                f"{env}SASL_USERNAME/_PASSWORD are set but {env}SECURITY_PROTOCOL={self.protocol} does not use them: "
                "set it to SASL_SSL (or SASL_PLAINTEXT)"
            )
        tls_files = {"SSL_CAFILE": self.ssl_cafile, "SSL_CERTFILE": self.ssl_certfile, "SSL_KEYFILE": self.ssl_keyfile}
        if not self.uses_tls:
            given = [f"{env}{name}" for name, path in tls_files.items() if path is not None]
            if given or self.ssl_key_password is not None:
                given += [f"{env}SSL_KEY_PASSWORD"] if self.ssl_key_password is not None else []
                found.append(
                    f"{', '.join(given)} set but {env}SECURITY_PROTOCOL={self.protocol} does not use TLS: "
                    "set it to SSL or SASL_SSL"
                )
            return found
        if (self.ssl_keyfile is not None or self.ssl_key_password is not None) and self.ssl_certfile is None:
            found.append(f"{env}SSL_KEYFILE/_KEY_PASSWORD need {env}SSL_CERTFILE (the client certificate)")
        unreadable = [
            f"{env}{name}={path}" for name, path in tls_files.items() if path is not None and not path.is_file()
        ]
        if unreadable:
            found.append(f"no such file: {', '.join(unreadable)}")
        if not found:
            try:
                self.ssl_context()
            except (OSError, ssl.SSLError) as error:
                found.append(f"cannot load the TLS files ({env}SSL_*): {error}")
        return found

    def ssl_context(self) -> ssl.SSLContext | None:
        """The context that verifies the brokers (and presents a client certificate), or None without TLS."""
        if not self.uses_tls:
            return None
        from aiokafka.helpers import create_ssl_context

        context = create_ssl_context(
            cafile=self.ssl_cafile,
            certfile=self.ssl_certfile,
            keyfile=self.ssl_keyfile,
            password=self.ssl_key_password.get_secret_value() if self.ssl_key_password else None,
        )
        # Certificates are always verified; only the name check can be relaxed (brokers reached
        # through addresses their certificates do not name, e.g. a port-forward).
        context.check_hostname = self.ssl_check_hostname
        return context

    def client_options(self) -> dict[str, Any]:
        """aiokafka keyword arguments (producer, consumer, admin); empty for PLAINTEXT."""
        if self.protocol == "PLAINTEXT":
            return {}
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.uses_tls:
            options["ssl_context"] = self.ssl_context()
        if self.uses_sasl:
            assert self.sasl_password is not None, "validated by Settings"
            options |= {
                "sasl_mechanism": self.sasl_mechanism,
                "sasl_plain_username": self.sasl_username,
                "sasl_plain_password": self.sasl_password.get_secret_value(),
            }
        return options

    def faust_credentials(self) -> CredentialsT | None:
        """Faust's ``broker_credentials``; Faust maps them onto the same aiokafka options.

        ``faust.SASLCredentials`` becomes SASL_SSL exactly when it is given an SSL context
        (``faust.auth``), and ``faust.SSLCredentials`` carries the context alone.
        """
        import faust

        if self.protocol == "PLAINTEXT":
            return None
        context = self.ssl_context()
        if not self.uses_sasl:
            assert context is not None
            return faust.SSLCredentials(context)
        assert self.sasl_password is not None, "validated by Settings"
        return faust.SASLCredentials(
            username=self.sasl_username,
            password=self.sasl_password.get_secret_value(),
            ssl_context=context,
            mechanism=self.sasl_mechanism,
        )


@dataclass(frozen=True)
class KafkaEndpoint:
    """A cluster address and how to talk to it: what every client factory needs."""

    bootstrap: str
    security: KafkaSecurity = field(default_factory=KafkaSecurity)

    def client_options(self) -> dict[str, Any]:
        return {"bootstrap_servers": self.bootstrap, **self.security.client_options()}


class SecuredCluster(Protocol):
    """What a client needs of the settings: where the brokers are and how to talk to them.

    :class:`~streamrec.stream.settings.Settings` is one. The arrow runs one way: the settings build
    their :class:`KafkaSecurity` from this module; this module never imports the settings.
    """

    @property
    def bootstrap_servers(self) -> str: ...

    @property
    def kafka_security(self) -> KafkaSecurity: ...


# A plain ``"host:port"`` string is a PLAINTEXT cluster (tests, tools); Settings carry their own security.
KafkaTarget: TypeAlias = "str | SecuredCluster | KafkaEndpoint"


def endpoint(target: KafkaTarget) -> KafkaEndpoint:
    if isinstance(target, KafkaEndpoint):
        return target
    if isinstance(target, str):
        return KafkaEndpoint(target)
    return KafkaEndpoint(target.bootstrap_servers, target.kafka_security)


def client_options(target: KafkaTarget, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client: bootstrap servers, security, then ``overrides``."""
    return endpoint(target).client_options() | overrides


def new_consumer(target: KafkaTarget, *topics: str, **options: Any) -> AIOKafkaConsumer:
    from aiokafka import AIOKafkaConsumer

    return AIOKafkaConsumer(*topics, **client_options(target, **options))


def new_producer(target: KafkaTarget, **options: Any) -> AIOKafkaProducer:
    from aiokafka import AIOKafkaProducer

    return AIOKafkaProducer(**client_options(target, **options))


def new_admin(target: KafkaTarget, **options: Any) -> AIOKafkaAdminClient:
    from aiokafka.admin import AIOKafkaAdminClient

    return AIOKafkaAdminClient(**client_options(target, **options))


def faust_credentials(settings: SecuredCluster) -> CredentialsT | None:
    """``broker_credentials`` for a ``faust.App`` built from ``settings``."""
    return settings.kafka_security.faust_credentials()


def local_user_problems(users: dict[str, SecretStr]) -> list[str]:
    """Users the embedded broker could not write into its JAAS configuration."""
    found = []
    for name, password in users.items():
        if not _LOCAL_USER.fullmatch(name):
            found.append(f"STREAMREC_LOCAL_KAFKA_SASL_USERS: user {name!r} may use only letters, digits, '.', '_', '-'")
        secret = password.get_secret_value()
        if not secret or _LOCAL_PASSWORD_FORBIDDEN & set(secret):
            found.append(
                f"STREAMREC_LOCAL_KAFKA_SASL_USERS: the password of {name!r} must be non-empty and free of "
                "quotes, backslashes, ';', ',', brackets and line breaks"
            )
    return found


async def connection_problem(target: KafkaTarget, timeout_s: float = 10.0) -> str | None:
    """Why a client could not bootstrap, when the reason is authentication or TLS (else None).

    aiokafka logs the real cause of a failed bootstrap and raises a generic "Unable to bootstrap";
    this probe opens one connection itself (the same handshake a client does) to name the cause:
    rejected SASL credentials, a mechanism the broker does not offer, a certificate that does not
    verify, or a broker that drops a client speaking the wrong protocol.
    """
    import aiokafka.errors as errors
    from aiokafka.conn import create_conn
    from aiokafka.protocol.metadata import MetadataRequest

    ep = endpoint(target)
    security = ep.security
    options = security.client_options()
    options.pop("security_protocol", None)
    options.pop("ssl_context", None)
    try:
        context = security.ssl_context()
    except (OSError, ssl.SSLError) as error:
        return f"cannot load the TLS files (STREAMREC_KAFKA_SSL_*): {error}"
    for address in ep.bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        if not host or not port.isdigit():
            continue
        where = f"{host}:{port}"
        conn = None
        try:
            conn = await asyncio.wait_for(
                create_conn(
                    host,
                    int(port),
                    request_timeout_ms=int(timeout_s * 1000),
                    security_protocol=security.protocol,
                    ssl_context=context,
                    **options,
                ),
                timeout_s,
            )
            await asyncio.wait_for(conn.send(MetadataRequest([])), timeout_s)
            return None  # this broker answers: the problem is elsewhere
        except (errors.SaslAuthenticationFailed, errors.IllegalSaslStateError) as error:
            return (
                f"SASL authentication failed at {where} ({security.describe()}): {error}. Check "
                "STREAMREC_KAFKA_SASL_USERNAME, STREAMREC_KAFKA_SASL_PASSWORD and STREAMREC_KAFKA_SASL_MECHANISM"
            )
        except errors.UnsupportedSaslMechanismError as error:
            return f"SASL authentication failed at {where}: {error}. Set STREAMREC_KAFKA_SASL_MECHANISM to one of them"
        except ssl.SSLCertVerificationError as error:
            return (
                f"TLS certificate of {where} does not verify: {error.verify_message}. Check STREAMREC_KAFKA_SSL_CAFILE "
                "(and STREAMREC_KAFKA_SSL_CHECK_HOSTNAME when the certificate names another host)"
            )
        except ssl.SSLError as error:
            return (
                f"TLS handshake with {where} failed: {error}. Is it a TLS listener? "
                "Check STREAMREC_KAFKA_SECURITY_PROTOCOL"
            )
        except errors.KafkaConnectionError as error:
            if conn is not None:  # connected, then dropped: the listener expects another protocol
                return (
                    f"the broker at {where} closed the connection of a {security.protocol} client ({error}): "
                    "does the cluster need SASL or TLS? Check STREAMREC_KAFKA_SECURITY_PROTOCOL"
                )
        except (OSError, TimeoutError, errors.KafkaError):
            pass  # not reachable: not a security problem
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
    return None
