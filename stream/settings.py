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
    topic_embeddings: str = "streamrec.embeddings"
    topic_partitions: int = Field(default=4, ge=1)
    topic_replication_factor: int = Field(default=1, ge=1)
    dead_letter_retention_ms: int = 14 * 24 * 3600 * 1000

    # --- Stream worker ---------------------------------------------------------------------
    app_id: str = "streamrec"
    store: Literal["auto", "rocksdb", "memory"] = "auto"
    history_length: int = Field(default=50, ge=1, description="Interactions kept per user.")
    seen_length: int = Field(
        default=1000, ge=1, description="Distinct items remembered per user (excluded from recommendations)."
    )
    batch_size: int = Field(default=1000, ge=1, description="Micro-batch size for agents.")
    batch_within_s: float = Field(default=0.2, gt=0, description="Max wait to fill a batch.")
    max_poll_records: int = Field(default=5000, ge=1, description="Records per fetch from Kafka.")
    stream_buffer_maxsize: int = Field(default=20000, ge=1, description="Faust's per-stream buffer.")
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=6066, ge=1, le=65535)
    log_level: str = "info"

    # --- Training (see models/recommender.py for what each knob does) --------------------------
    train: bool = Field(default=True, description="Train the recommender in the stream worker.")
    model_dim: int = Field(default=64, ge=1)
    model_history_length: int = Field(default=20, ge=1, description="History items the user tower reads.")
    model_num_negatives: int = Field(default=128, ge=1)
    model_replay_capacity: int = Field(default=50_000, ge=1)
    model_user_min_count: int = Field(default=1, ge=1, description="Sightings before a user gets its own row.")
    model_item_min_count: int = Field(default=1, ge=1, description="Sightings before an item gets its own row.")
    model_ttl_s: float | None = Field(default=None, gt=0, description="Expire ids idle this long (event time).")
    model_seed: int = 0
    baselines: str = Field(default="most_popular,biased_mf,funk_mf", description="Comma-separated; empty for none.")
    evaluation_window: int = Field(default=1000, ge=1, description="Events in the rolling metrics.")
    torch_threads: int = Field(
        default=1, ge=1, description="Intra-op threads for training (the event loop needs a core)."
    )
    checkpoint_interval_s: float = Field(default=30.0, ge=0, description="0 checkpoints after every batch.")
    checkpoint_keep: int = Field(default=3, ge=1)

    # --- Refreshed embeddings ----------------------------------------------------------------
    embedding_encoding: Literal["json", "binary"] = "binary"
    embedding_change_threshold: float = Field(
        default=0.05, ge=0, description="Relative L2 move that triggers a republish."
    )
    embedding_max_per_s: float = Field(default=20_000, gt=0, description="Records per second, at most.")
    embedding_flush_interval_s: float = Field(default=0.25, gt=0)

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
    def checkpoint_dir(self) -> Path:
        return self.state_dir / "checkpoints"

    @property
    def baseline_names(self) -> list[str]:
        return [name.strip() for name in self.baselines.split(",") if name.strip()]

    @property
    def web_url(self) -> str:
        return f"http://{self.web_host}:{self.web_port}"
