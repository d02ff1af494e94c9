"""Settings every service has. Each service subclasses `ServiceSettings` with its own env prefix
(`INGEST_`, `SENDER_`, ...) for its own variables. The broker, database and topic prefix are the
same for every service, so they are read from unprefixed variables (the ones the local
infrastructure script prints)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    kafka_bootstrap_servers: str = Field("127.0.0.1:9092",
                                         validation_alias="KAFKA_BOOTSTRAP_SERVERS")
    mongodb_url: str = Field("mongodb://127.0.0.1:27017", validation_alias="MONGODB_URL")
    mongodb_database: str = Field("hala", validation_alias="MONGODB_DATABASE")
    # Deadline of every MongoDB operation, in ms (shared.mongo.make_client's timeoutMS).
    mongodb_timeout_ms: int = Field(10_000, gt=0, validation_alias="MONGODB_TIMEOUT_MS")
    # Prefixes topic and consumer-group names: tests give each run its own on a shared broker.
    topic_prefix: str = Field("", validation_alias="HALA_TOPIC_PREFIX")
    # "development" (make run, the tests, the bench) lets secrets fall back to published
    # development values (shared.secret_defaults); anything else requires them.
    environment: str = Field("production", validation_alias="HALA_ENV")
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    log_level: str = "INFO"
