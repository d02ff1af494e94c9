"""A notify assembled from its real parts over fakes: store, transport, mail server, clock."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest

from services.notify.dispatcher import DeliveryPolicy, Dispatcher
from services.notify.endpoints import EndpointDirectory
from services.notify.mailer import Mailer
from services.notify.worker import NotifyWorker
from shared.clock import FakeClock
from shared.pipeline import Item
from shared.secrets import TokenVault, new_key
from tests.unit.notify.fakes import FakeMailServer, FakeStore, FakeTransport

DAY_MS = 86_400_000


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


@dataclass
class FakeRecord:
    topic: str
    value: bytes
    timestamp: int
    partition: int = 0
    offset: int = 0


@dataclass
class Notify:
    store: FakeStore
    transport: FakeTransport
    mail: FakeMailServer
    clock: FakeClock
    vault: TokenVault
    directory: EndpointDirectory
    dispatcher: Dispatcher
    mailer: Mailer
    worker: NotifyWorker

    def add_endpoint(
        self,
        endpoint_id: str,
        account_id: str = "acc_demo",
        url: str | None = None,
        events: tuple[str, ...] = ("*",),
        fmt: str = "standard",
        secret: str | None = None,
        **fields: Any,
    ) -> str:
        secret = secret or new_secret()
        now = self.clock.now_ms()
        self.store.endpoints[endpoint_id] = {
            "_id": endpoint_id,
            "account_id": account_id,
            "url": url or f"https://{endpoint_id}.example.com/hook",
            "events": list(events),
            "format": fmt,
            "enabled": True,
            "enabled_at": now - 1000,
            "created_at": now - 1000,
            "deleted_at": None,
            "secrets": [
                {
                    "id": "s1",
                    "encrypted": self.vault.encrypt(secret),
                    "created_at": now - 1000,
                    "expires_at": None,
                }
            ],
            **fields,
        }
        self.directory.forget()
        return secret

    async def handle(
        self, topic: Any, event: dict[str, Any] | Any, offset: int = 0, prefix: str = ""
    ) -> None:
        value = msgspec.json.encode(event)
        await self.worker.handle_record(
            FakeRecord(  # type: ignore[arg-type]
                prefix + topic.name, value, self.clock.now_ms(), offset=offset
            )
        )

    async def handle_batch(self, events: list[tuple[Any, dict[str, Any]]]) -> None:
        """Records as one batch of the pipeline (offsets in list order)."""
        records = [
            FakeRecord(topic.name, msgspec.json.encode(event), self.clock.now_ms(), offset=i)
            for i, (topic, event) in enumerate(events)
        ]
        await self.worker.handle_batch(
            [Item(r, self.worker.decode(r)) for r in records]  # type: ignore[arg-type]
        )

    async def settle(self) -> None:
        await self.dispatcher.wait_idle()

    async def run_due(self) -> None:
        """Deliver whatever is due now (the poller's round), and wait for the attempts."""
        await self.dispatcher.poll_once()
        await self.dispatcher.wait_idle()


def build(
    schedule: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400),
    endpoint_ttl_s: float = 0.0,
    **policy: Any,
) -> Notify:
    store, transport, mail, clock = FakeStore(), FakeTransport(), FakeMailServer(), FakeClock()
    vault = TokenVault(new_key())
    directory = EndpointDirectory(store, vault, clock, ttl_seconds=endpoint_ttl_s)
    mailer = Mailer(store, mail, clock, "Hala <alerts@hala.test>", [10, 60])
    disabled: list[str] = []

    async def on_disabled(endpoint: Any, health: Any) -> None:
        from services.notify import alerts

        disabled.append(endpoint.id)
        await mailer.raise_alert(
            alerts.endpoint_disabled(
                endpoint.id,
                endpoint.account_id,
                endpoint.url,
                health.disabled_reason,
                health.disabled_at,
                health.failing_since,
            )
        )

    dispatcher = Dispatcher(
        store,
        directory,
        transport,
        clock,
        DeliveryPolicy(schedule=schedule, jitter=0.0, **policy),
        on_disabled=on_disabled,
        draw=lambda: 0.5,
    )
    dispatcher.disabled = disabled  # type: ignore[attr-defined]
    worker = NotifyWorker(store, directory, dispatcher, mailer, clock, details_wait_seconds=0.05)
    return Notify(store, transport, mail, clock, vault, directory, dispatcher, mailer, worker)


@pytest.fixture
def notify() -> Iterator[Notify]:
    yield build()
