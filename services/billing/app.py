"""billing's faust app factory.

faust is used with its traps designed around (see README): processing_guarantee at_least_once,
faust's own web server off (it binds 0.0.0.0 and serves table data) — our ops endpoints are served
by a small aiohttp site on loopback instead — and outputs written with our own idempotent
producer and awaited, so that the broker acknowledged them before faust commits the input.
"""

from __future__ import annotations

from typing import Any

import faust
from mode import Service

from services.billing.settings import BillingSettings
from shared.http import make_ops_app, start_site
from shared.kafka import ensure_topics, kafka_ready, make_producer
from shared.logging import get_logger
from shared.mongo import make_client, mongo_ready

SERVICE = "billing"
log = get_logger(SERVICE)


class BillingRuntime(Service):
    """The connections billing's agent uses, started before and stopped after the agent."""

    def __init__(self, settings: BillingSettings, **kwargs: Any) -> None:
        self.settings = settings
        self.producer = make_producer(settings.kafka_bootstrap_servers)
        self.mongo = make_client(settings.mongodb_url)
        self.db = self.mongo[settings.mongodb_database]
        self._ops_runner: Any = None
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        await ensure_topics(self.settings.kafka_bootstrap_servers, self.settings.topic_prefix)
        await self.producer.start()
        checks = {"kafka": lambda: kafka_ready(self.producer),
                  "mongodb": lambda: mongo_ready(self.mongo)}
        self._ops_runner = await start_site(make_ops_app(SERVICE, checks),
                                            self.settings.http_host, self.settings.http_port)
        log.info("service_started", port=self.settings.http_port)

    async def on_stop(self) -> None:
        if self._ops_runner is not None:
            await self._ops_runner.cleanup()
        await self.producer.stop()
        await self.mongo.close()
        log.info("service_stopped")


def create_app(settings: BillingSettings) -> tuple[faust.App, BillingRuntime]:
    app = faust.App(
        settings.faust_app_id,
        broker=f"kafka://{settings.kafka_bootstrap_servers}",
        store=settings.faust_store,
        processing_guarantee="at_least_once",
        web_enabled=False,
        topic_partitions=6,
        topic_allow_declare=False,  # topics come from shared.messages via ensure_topics
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
    )
    runtime = BillingRuntime(settings)
    app.service(runtime)  # type: ignore[arg-type]
    return app, runtime
