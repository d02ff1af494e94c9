"""docker-compose.yml can't run here (no Docker engine): keep it correct by construction."""

from pathlib import Path

import yaml

from services.billing.settings import BillingSettings
from services.guard.settings import GuardSettings
from services.ingest.settings import IngestSettings
from services.notify.settings import NotifySettings
from services.sender.settings import SenderSettings
from services.status.settings import StatusSettings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_compose_file_parses_and_has_every_component() -> None:
    assert {"kafka", "mongo", "metasim", "ingest", "status", "sender", "billing", "notify",
            "guard", "prometheus"} <= set(COMPOSE["services"])


def test_every_service_gets_the_same_variables_its_settings_read() -> None:
    for name, settings_cls in (("ingest", IngestSettings), ("status", StatusSettings),
                               ("sender", SenderSettings), ("billing", BillingSettings),
                               ("notify", NotifySettings), ("guard", GuardSettings)):
        env = COMPOSE["services"][name]["environment"]
        prefix = settings_cls.model_config["env_prefix"]
        for key in env:
            if key.startswith(prefix):
                field = key.removeprefix(prefix).lower()
                assert field in settings_cls.model_fields, f"{name}: {key} is read by nothing"
            else:
                assert key in {"KAFKA_BOOTSTRAP_SERVERS", "MONGODB_URL", "MONGODB_DATABASE",
                               "HALA_TOKEN_KEYS"}
        settings = settings_cls(**{})  # defaults parse
        assert settings.http_port == int(env[f"{prefix}HTTP_PORT"])
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"


def test_mongo_runs_as_a_single_node_replica_set() -> None:
    assert "--replSet" in COMPOSE["services"]["mongo"]["command"]
    assert "replicaSet=rs0" in COMPOSE["x-service-env"]["MONGODB_URL"]
