"""One typed settings object for every process, read from the environment (12-factor).

Every variable is ``STREAMREC_<FIELD>`` (for example ``STREAMREC_TOPIC_PARTITIONS=8``), except
the broker address, which also answers to the conventional ``KAFKA_BOOTSTRAP_SERVERS``. When a
bootstrap address is set, the service uses that cluster and never starts the embedded broker.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STREAMREC_", extra="ignore", frozen=True)

    # --- Kafka -----------------------------------------------------------------------------
    kafka_bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "STREAMREC_KAFKA_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS", "kafka_bootstrap_servers"
        ),
        description="host:port[,host:port]; when unset the embedded local broker is used.",
    )
    local_kafka_host: str = "127.0.0.1"
    local_kafka_port: int = Field(default=9092, ge=1, le=65535)
    local_kafka_controller_port: int = Field(default=9093, ge=1, le=65535)
    local_kafka_version: str = "4.3.1"
    local_kafka_heap: str = "1g"
    local_kafka_pom: Path = PROJECT_ROOT / "deploy" / "kafka" / "pom.xml"
    local_kafka_start_timeout_s: float = 90.0

    # --- Where things live -----------------------------------------------------------------
    cache_dir: Path = Field(default_factory=lambda: Path.home() / ".cache" / "streamrec")
    state_dir: Path = Field(default_factory=lambda: Path.cwd() / ".streamrec")

    # --- Topics ----------------------------------------------------------------------------
    topic_clicks: str = "streamrec.clicks"
    topic_purchases: str = "streamrec.purchases"
    topic_catalogue: str = "streamrec.catalogue"
    topic_dead_letters: str = "streamrec.dead-letters"
    topic_partitions: int = Field(default=4, ge=1)
    topic_replication_factor: int = Field(default=1, ge=1)
    dead_letter_retention_ms: int = 14 * 24 * 3600 * 1000

    # --- Stream worker ---------------------------------------------------------------------
    app_id: str = "streamrec"
    store: Literal["auto", "rocksdb", "memory"] = "auto"
    history_length: int = Field(default=50, ge=1, description="Interactions kept per user.")
    batch_size: int = Field(default=1000, ge=1, description="Micro-batch size for agents.")
    batch_within_s: float = Field(default=0.2, gt=0, description="Max wait to fill a batch.")
    max_poll_records: int = Field(default=5000, ge=1, description="Records per fetch from Kafka.")
    stream_buffer_maxsize: int = Field(default=20000, ge=1, description="Faust's per-stream buffer.")
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=6066, ge=1, le=65535)
    log_level: str = "info"

    # --- Validation limits -----------------------------------------------------------------
    max_event_bytes: int = Field(default=64 * 1024, ge=256)
    max_future_skew_s: float = Field(default=24 * 3600, ge=0)
    min_event_time: datetime = datetime(1990, 1, 1, tzinfo=UTC)

    @field_validator("min_event_time")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    @cached_property
    def uses_embedded_kafka(self) -> bool:
        return not self.kafka_bootstrap_servers

    @cached_property
    def bootstrap_servers(self) -> str:
        """The address every client connects to: the configured cluster or the local broker."""
        if self.kafka_bootstrap_servers:
            return self.kafka_bootstrap_servers
        return f"{self.local_kafka_host}:{self.local_kafka_port}"

    @property
    def interaction_topics(self) -> tuple[str, str]:
        return (self.topic_clicks, self.topic_purchases)

    @property
    def min_event_ms(self) -> int:
        return int(self.min_event_time.timestamp() * 1000)

    @property
    def web_url(self) -> str:
        return f"http://{self.web_host}:{self.web_port}"
