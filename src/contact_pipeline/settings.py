"""Runtime configuration, read from the environment in this module only."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]


class Settings(BaseSettings):
    """Connection settings and tuning knobs of the worker and the CLI.

    Kafka and MongoDB settings use the names those ecosystems use
    (``KAFKA_BOOTSTRAP_SERVERS``, ``MONGODB_URI``); the rest are prefixed
    ``CONTACT_PIPELINE_``.
    """

    model_config = SettingsConfigDict(env_prefix="CONTACT_PIPELINE_", extra="ignore")

    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092", validation_alias="KAFKA_BOOTSTRAP_SERVERS"
    )
    mongodb_uri: SecretStr = Field(
        default=SecretStr("mongodb://127.0.0.1:27017/"), validation_alias="MONGODB_URI"
    )
    mongodb_database: str = "contact_pipeline"

    app_id: str = "contact-pipeline"
    """Faust application id: the Kafka consumer group and the prefix of its internal topics."""

    topic_prefix: str = ""
    """Prepended to every topic name in topics.yaml, so tests and tenants of one cluster can
    keep apart."""

    topics_file: Path = REPOSITORY_ROOT / "topics.yaml"
    schemas_dir: Path = REPOSITORY_ROOT / "schemas"

    batch_max_messages: int = 500
    """Maximum commands applied in one bulk write."""

    batch_max_wait_seconds: float = 0.2
    """How long the worker waits to fill a batch before applying what it has."""

    store_retry_max_seconds: float = 300.0
    """How long a batch is retried while the document store fails before the worker stops."""

    web_enabled: bool = True
    """Serve the worker's HTTP endpoint; tests that run several workers turn it off."""

    web_bind: str = "127.0.0.1"
    """Address the worker's HTTP endpoint listens on; containers set 0.0.0.0."""

    web_port: int = 6066
    """Port of the worker's HTTP endpoint (Faust web, Prometheus metrics at /metrics)."""

    list_cache_max_age_seconds: float = 1.0
    """Oldest copy of a tenant's lists a worker evaluates contact changes against."""

    backfill_grace_seconds: float = 5.0
    """Wait between a list change and its backfill's scan. Keep it above the list cache
    age plus the longest batch, so no contact write after the scan used the old criteria."""

    backfill_max_in_flight: int = 20_000
    """Evaluate commands a backfill may have sent but not yet seen applied."""

    confirmation_secret: SecretStr = SecretStr("contact-pipeline-development-secret")
    """Key that signs double opt-in confirmation tokens. Set your own in production;
    the worker logs a warning while the development default is in use."""

    confirmation_max_age_seconds: int = 7 * 24 * 3600
    """How long a confirmation token stays valid."""

    confirmation_url: str = "https://forms.example/confirm?token={token}"
    """Link in the confirmation e-mail; ``{token}`` is replaced by the signed token."""

    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    smtp_from: str = "lists@contact-pipeline.invalid"
    """Sender of confirmation e-mails."""

    data_dir: Path = REPOSITORY_ROOT / ".local" / "worker"
    """Folder of the worker's local Faust state (one subfolder per app id)."""

    log_level: str = "INFO"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings, read once from the environment."""
    return Settings()
