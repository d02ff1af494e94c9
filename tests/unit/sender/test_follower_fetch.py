"""The followers' fetch wait: SENDER_FOLLOWER_FETCH_MAX_WAIT_MS reaches the consumers of the
compacted topics (throughput, WABA status, account holds); the inbound follower keeps
make_consumer's default (its records must reach the buckets within their one-second memory)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from services.sender import followers
from services.sender.settings import SenderSettings
from shared.kafka import KafkaConfig

KAFKA = KafkaConfig("unused:9092", "PLAINTEXT")
ENGINE: Any = SimpleNamespace(
    apply_throughput=None, apply_waba_status=None, apply_account_hold=None, count_inbound=None
)


class _Built(Exception):
    """Raised by the fake consumer's start(): the options are all the test needs."""


def _capture(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    built: list[dict[str, Any]] = []

    class FakeConsumer:
        async def start(self) -> None:
            raise _Built

        async def stop(self) -> None:
            pass

    def make_consumer(kafka: KafkaConfig, group: str | None, **options: Any) -> FakeConsumer:
        assert group is None  # followers have no consumer group
        built.append(options)
        return FakeConsumer()

    monkeypatch.setattr(followers, "make_consumer", make_consumer)
    return built


@pytest.mark.parametrize(
    "follow",
    [followers.follow_throughput, followers.follow_waba_status, followers.follow_account_hold],
)
async def test_a_compacted_topic_follower_waits_as_configured(
    monkeypatch: pytest.MonkeyPatch, follow: Any
) -> None:
    built = _capture(monkeypatch)
    with pytest.raises(_Built):
        await follow(KAFKA, "p.", ENGINE, 3000)
    assert built == [{"fetch_max_wait_ms": 3000}]


async def test_the_inbound_follower_keeps_the_default_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built = _capture(monkeypatch)
    with pytest.raises(_Built):
        await followers.follow_inbound(KAFKA, "p.", ENGINE)
    assert built == [{}]


def test_the_wait_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HALA_ENV", "development")
    monkeypatch.setenv("SENDER_FOLLOWER_FETCH_MAX_WAIT_MS", "2500")
    assert SenderSettings().follower_fetch_max_wait_ms == 2500
    monkeypatch.setenv("SENDER_FOLLOWER_FETCH_MAX_WAIT_MS", "30001")
    with pytest.raises(ValueError, match="follower_fetch_max_wait_ms"):
        SenderSettings()
