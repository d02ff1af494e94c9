"""The consumer fetch settings of the services off the timed paths (notify's and guard's
`consumer_options`): read from the environment, bounded, handed to shared.kafka.make_consumer
as its overrides."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from services.guard.settings import GuardSettings
from services.notify.settings import NotifySettings
from shared.kafka import KafkaConfig, make_consumer

DEV = {"HALA_ENV": "development"}
SERVICES = pytest.mark.parametrize(
    ("settings_class", "prefix"), [(NotifySettings, "NOTIFY_"), (GuardSettings, "GUARD_")]
)


def _settings(monkeypatch: pytest.MonkeyPatch, settings_class: type, **env: str) -> Any:
    for key, value in {**DEV, **env}.items():
        monkeypatch.setenv(key, value)
    return settings_class()


@SERVICES
def test_the_fetch_options_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, settings_class: type, prefix: str
) -> None:
    env = {f"{prefix}FETCH_MIN_BYTES": "4096", f"{prefix}FETCH_MAX_WAIT_MS": "150"}
    settings = _settings(monkeypatch, settings_class, **env)
    assert settings.consumer_options() == {"fetch_min_bytes": 4096, "fetch_max_wait_ms": 150}


@SERVICES
@pytest.mark.parametrize(
    ("name", "value"), [("FETCH_MIN_BYTES", "0"), ("FETCH_MAX_WAIT_MS", "30001")]
)
def test_fetch_options_out_of_bounds_are_refused(
    monkeypatch: pytest.MonkeyPatch, settings_class: type, prefix: str, name: str, value: str
) -> None:
    with pytest.raises(ValueError, match=name.lower()):
        _settings(monkeypatch, settings_class, **{prefix + name: value})


@SERVICES
async def test_the_consumer_is_built_with_them(
    monkeypatch: pytest.MonkeyPatch, settings_class: type, prefix: str
) -> None:
    options = _settings(monkeypatch, settings_class).consumer_options()
    kafka = KafkaConfig(bootstrap_servers="127.0.0.1:1", security_protocol="PLAINTEXT")
    consumer = make_consumer(kafka, "g", **options)
    assert isinstance(consumer, AIOKafkaConsumer)
    # What aiokafka's Fetcher is started with (the consumer is never started here).
    assert consumer._fetch_min_bytes == options["fetch_min_bytes"]
    assert consumer._fetch_max_wait_ms == options["fetch_max_wait_ms"]
