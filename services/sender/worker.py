"""The sender assembled: engine (engine.py), consumer (consumer.py) and status publisher
(publisher.py) wired from the settings and open clients. `__main__` runs what this returns."""

from __future__ import annotations

from functools import partial
from typing import Any

from aiokafka import AIOKafkaProducer
from pymongo.asynchronous.database import AsyncDatabase

from services.sender.consumer import SenderWorker, WorkerConfig
from services.sender.core import RetryLimits
from services.sender.engine import EngineConfig, SendEngine
from services.sender.meta_client import MetaClient
from services.sender.ports import RealTimer
from services.sender.publisher import status_publisher
from services.sender.repository import PhoneNumberDirectory, SenderRepository
from services.sender.settings import SenderSettings
from shared.clock import Clock
from shared.pseudonyms import keyed_hash
from shared.secrets import TokenVault


def create_worker(
    settings: SenderSettings,
    db: AsyncDatabase[dict[str, Any]],
    producer: AIOKafkaProducer,
    clock: Clock,
) -> tuple[SenderWorker, MetaClient]:
    """Wire the sender from its settings and open clients (the caller closes the MetaClient)."""
    repository = SenderRepository(db, TokenVault(settings.token_keys))
    meta = MetaClient(
        settings.meta_base_url,
        settings.meta_graph_version,
        settings.meta_timeout_seconds,
        settings.meta_connections_per_host,
    )
    engine = SendEngine(
        clock=clock,
        timer=RealTimer(clock),
        store=repository,
        phone_numbers=PhoneNumberDirectory(
            repository, clock, settings.phone_number_refresh_seconds
        ),
        meta=meta,
        publish=status_publisher(producer, settings.topic_prefix),
        config=EngineConfig(
            max_in_flight=settings.max_in_flight,
            in_flight_seconds=settings.in_flight_seconds,
            max_in_flight_per_number=settings.max_in_flight_per_number,
            phone_number_refresh_seconds=settings.phone_number_refresh_seconds,
            tier_refresh_seconds=settings.tier_refresh_seconds,
            tier_key=partial(keyed_hash, key=settings.recipient_hash_key_bytes()),
            backlog_seconds=settings.backlog_seconds,
            limits=RetryLimits(
                transient_max_attempts=settings.transient_max_attempts,
                hold_seconds=settings.hold_seconds,
            ),
        ),
    )
    worker = SenderWorker(
        WorkerConfig(
            settings.kafka,
            settings.topic_prefix,
            settings.commit_interval_seconds,
            settings.max_queued,
            settings.shutdown_grace_seconds,
            backlog_seconds=settings.backlog_seconds,
            backlog_floor=settings.backlog_floor,
            follower_fetch_max_wait_ms=settings.follower_fetch_max_wait_ms,
        ),
        producer,
        engine,
        clock,
    )
    return worker, meta
