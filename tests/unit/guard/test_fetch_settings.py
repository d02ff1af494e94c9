"""guard's consumer fetch settings (GuardSettings.consumer_options): read from the environment,
bounded, handed to shared.kafka.make_consumer as its overrides."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaConsumer

from services.guard.settings import GuardSettings
from shared.kafka import KafkaConfig, make_consumer

DEV = {"HALA_ENV": "development"}


def _settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> GuardSettings:
    for key, value in {**DEV, **env}.items():
        monkeypatch.setenv(key, value)
    return GuardSettings()


def test_the_fetch_options_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(monkeypatch, GUARD_FETCH_MIN_BYTES="4096", GUARD_FETCH_MAX_WAIT_MS="150")
    assert settings.consumer_options() == {"fetch_min_bytes": 4096, "fetch_max_wait_ms": 150}


@pytest.mark.parametrize(
    ("name", "value"), [("GUARD_FETCH_MIN_BYTES", "0"), ("GUARD_FETCH_MAX_WAIT_MS", "30001")]
)
def test_fetch_options_out_of_bounds_are_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    with pytest.raises(ValueError, match=name.removeprefix("GUARD_").lower()):
        _settings(monkeypatch, **{name: value})


async def test_the_consumer_is_built_with_them(monkeypatch: pytest.MonkeyPatch) -> None:
    options = _settings(monkeypatch).consumer_options()
    kafka = KafkaConfig(bootstrap_servers="127.0.0.1:1", security_protocol="PLAINTEXT")
    consumer = make_consumer(kafka, "g", **options)
    assert isinstance(consumer, AIOKafkaConsumer)
    # What aiokafka's Fetcher is started with (the consumer is never started here).
    assert consumer._fetch_min_bytes == options["fetch_min_bytes"]
    assert consumer._fetch_max_wait_ms == options["fetch_max_wait_ms"]
