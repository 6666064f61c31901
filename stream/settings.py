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

from pydantic import AliasChoices, Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streamrec.stream.kafka.security import KafkaSecurity, local_user_problems


class Settings(BaseSettings):
    # hide_input_in_errors: a validation error must not echo the environment it read (passwords).
    model_config = SettingsConfigDict(env_prefix="STREAMREC_", extra="ignore", frozen=True, hide_input_in_errors=True)

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
    local_kafka_pom: Path | None = Field(
        default=None, description="A Maven pom for the broker's jars; unset: the one packaged with streamrec."
    )
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
    dead_letter_max_bytes: int = Field(
        default=2 * 1024 * 1024,
        ge=1024 * 1024,
        description="Largest dead letter (the original record plus headers): above the input topics' limit.",
    )

    # --- Stream worker ---------------------------------------------------------------------
    app_id: str = "streamrec"
    store: Literal["auto", "rocksdb", "memory"] = "auto"
    rocksdb_block_cache_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024 * 1024,
        description="Block cache per table partition (Faust's default, 2 GiB each, let memory grow for long).",
    )
    rocksdb_write_buffer_bytes: int = Field(
        default=8 * 1024 * 1024, ge=1024 * 1024, description="Memtable size per table partition (two are kept)."
    )
    history_length: int = Field(default=50, ge=1, description="Interactions kept per user.")
    seen_length: int = Field(
        default=1000, ge=1, description="Distinct items remembered per user (excluded from recommendations)."
    )
    dedupe_window: int = Field(
        default=200, ge=0, description="Newest event_ids kept per user to drop events sent twice (0: off)."
    )
    partitioner: Literal["murmur2", "crc32"] = Field(
        default="murmur2",
        description="How the producers map keys to partitions: murmur2 (Java, aiokafka, Faust; librdkafka's "
        "murmur2_random) or crc32 (librdkafka's default consistent_random: kcat, confluent-kafka, Go, .NET). Records "
        "elsewhere are forwarded to their home; HTTP routes by key follow it. Choose before the first start.",
    )
    batch_size: int = Field(
        default=1000, ge=1, description="Most records per batch handed to an agent (a larger fetch is split)."
    )
    max_poll_records: int = Field(default=5000, ge=1, description="Records per fetch from Kafka.")
    processing_guarantee: Literal["at_least_once", "exactly_once"] = Field(
        default="at_least_once",
        description="exactly_once is refused: Faust's transactions do not make this pipeline exactly-once "
        "(docs/delivery.md).",
    )
    broker_session_timeout_s: float = Field(
        default=60.0,
        ge=6,
        le=85,
        description="A worker silent this long leaves the group and its partitions move (6 is the broker's minimum; "
        "Faust needs it below its 90 s request timeout).",
    )
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=6066, ge=1, le=65535)
    api_token: SecretStr | None = Field(
        default=None,
        description="When set, every HTTP route but /health and /metrics needs `Authorization: Bearer <token>`.",
    )
    metrics_baselines_interval_s: float = Field(
        default=15.0, gt=0, description="How often /metrics' copy of the baselines' prequential table is refreshed."
    )
    log_level: str = "info"

    # --- Training (see models/recommender.py for what each knob does) --------------------------
    train: bool = Field(default=True, description="Train the recommender in the stream worker.")
    model_dim: int = Field(default=64, ge=1)
    model_history_length: int = Field(default=20, ge=1, description="History items the user tower reads.")
    model_sequence: Literal["pooled", "transition", "attention", "gru"] = Field(
        default="pooled", description="The user tower's order term (models/recommender/sequence.py)."
    )
    model_num_negatives: int = Field(default=128, ge=1)
    model_replay_capacity: int = Field(default=50_000, ge=1)
    model_user_min_count: int = Field(default=1, ge=1, description="Sightings before a user gets its own row.")
    model_item_min_count: int = Field(default=1, ge=1, description="Sightings before an item gets its own row.")
    model_ttl_s: float | None = Field(default=None, gt=0, description="Expire ids idle this long (event time).")
    model_seed: int = 0
    event_time_alignment: bool = Field(
        default=False,
        description="Hand the interaction partitions over in step in event time (stream/worker/event_time.py): "
        "a record past the watermark waits for the partitions behind, so fewer clicks arrive after their "
        "user's later events and more are scored. Off by default (ingestion cost: docs/settings.md).",
    )
    event_time_slack_s: float = Field(default=0.0, ge=0, description="Event-time lead a record may have.")
    event_time_idle_s: float = Field(
        default=0.2, ge=0, le=60, description="A partition that brought nothing for this long holds nobody back."
    )
    baselines: str = Field(
        default="most_popular,cooccurrence,item_knn,biased_mf,funk_mf", description="Comma-separated; empty for none."
    )
    evaluation_window: int = Field(default=1000, ge=1, description="Events in the rolling metrics.")
    evaluation_tuning_events: int = Field(
        default=0,
        ge=0,
        description="The stream's first events, trained on but not scored (the benchmark tunes baselines there).",
    )
    evaluation_keep_events: int = Field(
        default=0,
        ge=0,
        le=1_000_000,
        description="Scored events per model and slice whose metrics are kept with their user for GET "
        "/model/events (paired comparisons with intervals, bench/quality.py); 0 keeps none. Bounded: "
        "about 60 bytes each, per model and slice.",
    )
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

    # --- Scale-out: item parameters shared between stream workers (docs/scaling.md) ---------------
    param_sync: bool = Field(
        default=True, description="Share item-side parameters with the other stream workers over Kafka."
    )
    param_sync_interval_s: float = Field(default=1.0, gt=0, description="How often contributions are published.")
    topic_item_parameters: str = "streamrec.item-parameters"

    # --- Augmentation (models/augmentation; see the README's "Augmentation" section) ----------
    augment: bool = Field(default=True, description="Augment and expand samples in the stream worker.")
    augment_sequence: bool = Field(default=True, description="Crop/mask/reorder views of the history.")
    augment_sequence_weight: float = Field(default=0.3, ge=0)
    augment_neighbours: bool = Field(default=True, description="Pseudo-positives from content neighbours.")
    augment_neighbours_weight: float = Field(default=0.2, ge=0)
    augment_negatives: bool = Field(default=True, description="Popularity-aware explicit negatives.")
    augment_negatives_weight: float = Field(default=0.2, ge=0)
    augment_text: bool = Field(default=True, description="Embed item texts (and their rewrites) as content.")
    augment_text_paraphrases: int = Field(default=1, ge=0, description="LM paraphrases per new item text.")
    augment_paraphrases_per_s: float = Field(
        default=0.5, gt=0, description="Items paraphrased per second (the LM is slow on a CPU; raise it for a GPU)."
    )
    augment_text_substitutions: int = Field(default=2, ge=0, description="WordNet rewrites per new item text.")
    augment_llm: bool = Field(default=True, description="LLM-scored pseudo-interactions for sparse users.")
    augment_llm_candidates: int = Field(default=8, ge=1, description="Candidates scored per sparse event.")
    augment_llm_weight: float = Field(default=0.5, ge=0)
    augment_llm_sparse_user_events: int = Field(default=20, ge=1, description="Users below this get LLM expansion.")
    augment_llm_max_per_user: int = Field(default=10, ge=0, description="LLM pseudo-labels per user per day.")
    augment_max_per_event: int = Field(default=4, ge=0, description="Local augmented samples for the coldest.")
    augment_user_scale: float = Field(default=10.0, gt=0, description="User events where the ratio falls to 1/e.")
    augment_item_scale: float = Field(default=20.0, gt=0, description="Item events where the ratio falls to 1/e.")
    augment_heavy_user_events: int = Field(default=50, ge=1, description="Users with this many events get none.")
    augment_budget_per_s: float = Field(default=5000.0, gt=0, description="Augmented samples per second, at most.")
    augment_llm_budget_per_s: float = Field(
        default=1.0, gt=0, description="LM scoring prompts per second (a CPU worker answers ~1.5; a GPU thousands)."
    )

    # --- Inference worker (streamrec worker augment) -------------------------------------------
    topic_inference_requests: str = "streamrec.inference.requests"
    topic_inference_results: str = "streamrec.inference.results"
    inference_encoder: str | None = Field(default=None, description="Sentence encoder path (default: MiniLM).")
    inference_lm: str | None = Field(default=None, description="Causal LM directory (default: SmolLM2 GGUF).")
    inference_lm_gguf: str | None = Field(default=None, description="GGUF file in inference_lm, if any.")
    inference_enable_lm: bool = Field(default=True, description="Load the causal LM (scoring, paraphrases).")
    inference_device: Literal["auto", "cpu", "cuda"] = "auto"
    inference_torch_threads: int = Field(
        default=1, ge=1, description="CPU threads per model call (more only helps on idle, many-core machines)."
    )
    inference_max_batch: int = Field(default=64, ge=1, description="Embedding requests per batch, at most.")
    inference_lm_max_batch: int = Field(default=16, ge=1, description="LM prompts per batch (scoring, paraphrases).")
    inference_max_wait_ms: float = Field(default=10.0, ge=0)
    inference_max_queue: int = Field(default=2048, ge=1, description="Requests queued in the worker, at most.")
    inference_cache_size: int = Field(default=100_000, ge=1, description="Item-text embeddings cached.")
    inference_web_port: int = Field(default=6067, ge=1, le=65535)
    inference_timeout_s: float = Field(default=10.0, gt=0, description="An embedding request expires after this.")
    inference_lm_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="LM requests (scoring, paraphrases: slow on a CPU, never on the training path) expire after this.",
    )
    inference_max_in_flight: int = Field(default=1024, ge=1, description="Requests a stream worker awaits, at most.")
    inference_max_request_bytes: int = Field(default=64 * 1024, ge=1024)

    # --- Validation limits -----------------------------------------------------------------
    max_event_bytes: int = Field(default=64 * 1024, ge=256)
    max_future_skew_s: float = Field(default=24 * 3600, ge=0)
    min_event_time: datetime = datetime(1990, 1, 1, tzinfo=UTC)

    @field_validator("min_event_time")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    # --- Kafka security (stream/kafka/security.py; docs/security.md) --------------------------------
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = Field(default=None, description="PEM CAs that sign the brokers (default: system).")
    kafka_ssl_certfile: Path | None = Field(default=None, description="PEM client certificate (mutual TLS).")
    kafka_ssl_keyfile: Path | None = Field(default=None, description="Its private key, if not in the certfile.")
    kafka_ssl_key_password: SecretStr | None = None
    kafka_ssl_check_hostname: bool = Field(default=True, description="Certificates are verified either way.")
    local_kafka_sasl_users: dict[str, SecretStr] = Field(
        default_factory=dict,
        description='JSON {"user": "password"}: the embedded broker listens with SASL (PLAIN, SCRAM) instead.',
    )

    @field_validator(
        "kafka_sasl_username", "kafka_sasl_password", "kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile",
        "kafka_ssl_key_password", mode="before",
    )  # fmt: skip
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value  # a chart or compose file renders unset values as ""

    @field_validator("kafka_security_protocol", "kafka_sasl_mechanism", mode="before")
    @classmethod
    def _upper(cls, value: object, info: ValidationInfo) -> object:
        if not isinstance(value, str):
            return value
        return value.strip().upper() or cls.model_fields[info.field_name].default  # "" is the default

    @model_validator(mode="after")
    def _exactly_once_refused(self) -> Settings:
        if self.processing_guarantee == "exactly_once":
            raise ValueError(
                "STREAMREC_PROCESSING_GUARANTEE=exactly_once is not supported: with Faust's transactions a worker "
                "killed mid-stream still dead-letters records twice and, with training, leaves events untrained "
                "(docs/delivery.md); the default at_least_once keeps every effect idempotent"
            )
        return self

    @model_validator(mode="after")
    def _kafka_security_consistent(self) -> Settings:
        problems = self.kafka_security.problems() + local_user_problems(self.local_kafka_sasl_users)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @cached_property
    def kafka_security(self) -> KafkaSecurity:
        """How every Kafka client authenticates and encrypts (``STREAMREC_KAFKA_*``)."""
        return KafkaSecurity(
            protocol=self.kafka_security_protocol,
            sasl_mechanism=self.kafka_sasl_mechanism,
            sasl_username=self.kafka_sasl_username,
            sasl_password=self.kafka_sasl_password,
            ssl_cafile=self.kafka_ssl_cafile,
            ssl_certfile=self.kafka_ssl_certfile,
            ssl_keyfile=self.kafka_ssl_keyfile,
            ssl_key_password=self.kafka_ssl_key_password,
            ssl_check_hostname=self.kafka_ssl_check_hostname,
        )

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
