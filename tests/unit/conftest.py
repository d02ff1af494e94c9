"""Unit tests touch no broker, no database and no real time. This guard fails any unit test that
tries to open a Kafka or MongoDB connection."""

import pytest


class NetworkClientOpened(AssertionError):
    pass


@pytest.fixture(autouse=True)
def _no_infrastructure(monkeypatch: pytest.MonkeyPatch) -> None:
    import aiokafka
    import pymongo

    def refuse(*_: object, **__: object) -> None:
        raise NetworkClientOpened("unit tests must not open Kafka or MongoDB clients")

    for cls in (aiokafka.AIOKafkaProducer, aiokafka.AIOKafkaConsumer):
        monkeypatch.setattr(cls, "start", refuse)
    monkeypatch.setattr(pymongo.AsyncMongoClient, "__init__", refuse)
