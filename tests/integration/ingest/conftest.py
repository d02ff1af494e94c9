"""An ingest app served in-process over the real database and broker, with two accounts set up
by the admin commands (as an operator would), balances written as billing would, and contacts
who wrote written as status would (their 24 h windows open). Meta's pass-through calls go to an
in-memory stand-in (the e2e tests use the simulator)."""

from __future__ import annotations

import time
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from services.admin import commands
from services.ingest.app import create_app
from services.ingest.cache import RecentMessages
from services.ingest.calls import Calls
from services.ingest.contact_handlers import ContactHandlers
from services.ingest.contact_store import MongoContactStore
from services.ingest.endpoint_handlers import EndpointHandlers
from services.ingest.endpoint_store import MongoEndpointStore
from services.ingest.handlers import Ingest
from services.ingest.limiter import RequestLimiter
from services.ingest.passthrough import PassThroughPacer
from services.ingest.publisher import KafkaPublisher
from services.ingest.rate_limits import Rate
from services.ingest.repository import (
    CachedDirectory,
    CachedWindows,
    MongoDirectory,
    MongoIdempotencyStore,
    MongoInbox,
    MongoMediaStore,
    MongoMessageStore,
)
from services.ingest.send_rules import SendRules
from services.status import core as status_core
from services.status.repository import StatusRepository
from shared.clock import SystemClock
from shared.collections import (
    BALANCES,
    CONVERSATIONS,
    DELIVERY_ATTEMPTS,
    INBOUND_MESSAGES,
    MEDIA,
    MESSAGES,
    WEBHOOK_ENDPOINTS,
    ensure_indexes,
)
from shared.kafka import KafkaConfig
from shared.message_docs import message_document
from shared.messages import NOTIFY_REQUESTED, SEND_REQUESTED, TOPUP_REQUESTED
from shared.pricing import load_rate_card
from shared.rdkafka_producer import RdKafkaProducer
from shared.secrets import TokenVault, new_key
from tests.conftest import Broker
from tests.integration.ingest.kafka_probe import read_published
from tests.unit.ingest.fakes import FakeMeta

WABA_A, PHONE_A, PORTFOLIO_A = "102290129340398", "109731225428301", "880011223344556"
WABA_B, PHONE_B, PORTFOLIO_B = "117552438690213", "118243906275101", "880011223344557"


class StaticTemplates:
    """Meta's template list for the admin sync (Meta itself is not under test here)."""

    def __init__(self, templates: dict[str, list[dict[str, Any]]]) -> None:
        self.templates = templates

    async def list_templates(self, waba_id: str, access_token: str) -> list[dict[str, Any]]:
        return self.templates[waba_id]


def meta_template(
    name: str, body: str, *, category: str = "UTILITY", status: str = "APPROVED", **extra: Any
) -> dict[str, Any]:
    return {
        "id": str(1689556908000000 + zlib.crc32(name.encode()) % 100_000),
        "name": name,
        "language": "en_US",
        "category": category,
        "status": status,
        "components": [{"type": "BODY", "text": body}],
        **extra,
    }


META_TEMPLATES = {
    WABA_A: [
        meta_template("appointment_reminder", "Your appointment is on {{1}} at {{2}}."),
        meta_template("holiday_promo", "Deals for {{1}}.", category="MARKETING", status="PENDING"),
        meta_template(
            "reservation_confirmation", "Table for {{guests}} on {{day}}.", parameter_format="NAMED"
        ),
    ],
    WABA_B: [meta_template("verify_phone", "{{1}} is your code.", category="AUTHENTICATION")],
}


@dataclass
class Tenant:
    account_id: str
    api_key: str
    phone_number_id: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


@dataclass
class Platform:
    db: AsyncDatabase[dict[str, Any]]
    producer: RdKafkaProducer
    prefix: str
    kafka: KafkaConfig  # the tests' own principal, to read what ingest published
    client: TestClient
    a: Tenant
    b: Tenant
    vault: TokenVault
    meta: FakeMeta

    async def user_wrote(
        self,
        phone_number_id: str,
        wa_id: str,
        *,
        ago_seconds: float = 60,
        item: dict[str, Any] | None = None,
        account_id: str | None = None,
        name: str = "Ana",
    ) -> dict[str, Any]:
        """What status stores when a user writes: the inbound message and the conversation
        with its window, made by status's own core and adapter."""
        sent_s = int(time.time() - ago_seconds)
        item = {
            "from": wa_id,
            "id": f"wamid.{wa_id}.{sent_s}.{zlib.crc32(repr(item).encode())}",
            "timestamp": str(sent_s),
            "type": "text",
            "text": {"body": "hello"},
            **(item or {}),
        }
        message = status_core.parse_inbound_item(
            orjson.dumps(item), "waba", phone_number_id, status_core.INBOUND, {wa_id: name}
        )
        if account_id is None:
            account_id = self.a.account_id if phone_number_id == PHONE_A else self.b.account_id
        store = StatusRepository(self.db)
        now_ms = int(time.time() * 1000)
        await store.store_inbound(status_core.inbound_doc(message, account_id, now_ms))
        await store.update_conversation(
            status_core.conversation_id(phone_number_id, message.wa_id),
            status_core.conversation_update(message, account_id, now_ms),
        )
        return item

    async def store_published(self) -> None:
        """Do what status does with what ingest published: make each message's document,
        through status's own adapter."""
        store = StatusRepository(self.db)
        for record in await read_published(self.kafka, SEND_REQUESTED, self.prefix):
            await store.create_message(message_document(SEND_REQUESTED.decode(record.value)))


async def _tenant(
    db: AsyncDatabase[dict[str, Any]],
    vault: TokenVault,
    name: str,
    waba: str,
    portfolio: str,
    phone: str,
    display: str,
) -> Tenant:
    account = await commands.create_account(
        db,
        name=name,
        email=f"ops@{name.lower()}.example",
        phone="+971501234567",
        business_name=f"{name} LLC",
        fb_business_manager_id="123456789012",
    )
    await commands.register_waba(
        db, account_id=account["_id"], waba_id=waba, portfolio_id=portfolio
    )
    await commands.register_number(
        db,
        vault,
        account_id=account["_id"],
        waba_id=waba,
        phone_number_id=phone,
        display_phone_number=display,
        access_token=f"EAA-{name}",
    )
    await commands.sync_templates(db, vault, StaticTemplates(META_TEMPLATES), waba_id=waba)
    api_key, _ = await commands.issue_key(db, account_id=account["_id"], name="it")
    # billing is the only writer of balances; here the test plays billing.
    await db[BALANCES].insert_one(
        {"_id": account["_id"], "available": 10_000_000, "reserved": 0, "currency": "USD"}
    )
    return Tenant(account["_id"], api_key, phone)


@pytest.fixture
async def platform(
    broker: Broker, mongo: AsyncMongoClient[dict[str, Any]], unique: str
) -> AsyncIterator[Platform]:
    prefix = f"t{unique}."
    await broker.grant(prefix, [SEND_REQUESTED, TOPUP_REQUESTED, NOTIFY_REQUESTED])
    db = mongo[f"it_{unique}"]
    await ensure_indexes(
        db, MESSAGES, INBOUND_MESSAGES, CONVERSATIONS, MEDIA, WEBHOOK_ENDPOINTS, DELIVERY_ATTEMPTS
    )
    await commands.prepare(db)
    vault = TokenVault(new_key())
    producer = RdKafkaProducer(broker.as_service("ingest"))  # ingest's own principal
    await producer.start()
    clock = SystemClock()
    inbox = MongoInbox(db)
    publisher = KafkaPublisher(producer, prefix)
    contact_store = MongoContactStore(db)
    # No cache: holds, blocks and opt-outs must show at once in these tests.
    send_rules = SendRules(contact_store, clock, cache_seconds=0)
    ingest = Ingest(
        # No cache: revocations and suspensions must show at once in these tests.
        directory=CachedDirectory(MongoDirectory(db), clock, ttl_seconds=0),
        idempotency=MongoIdempotencyStore(db),
        messages=MongoMessageStore(db),
        recent=RecentMessages(clock, 30.0),
        publisher=publisher,
        clock=clock,
        rate_card=load_rate_card(),
        inbox=inbox,
        windows=CachedWindows(inbox, clock, closed_seconds=0),
        send_rules=send_rules,
    )
    meta = FakeMeta()
    calls = Calls(
        ingest=ingest,
        media=MongoMediaStore(db),
        meta=meta,
        vault=vault,
        pacer=PassThroughPacer(100, 100, 1),
        clock=clock,
    )
    webhooks = EndpointHandlers(
        ingest, MongoEndpointStore(db), publisher, vault, allow_loopback_http=True
    )
    contacts = ContactHandlers(ingest, contact_store, publisher, send_rules)
    # Rate limits as in production, with defaults no test here reaches: a test that wants a
    # limit sets the account's or key's own, as `hala` does.
    limiter = RequestLimiter(clock, account_default=Rate(10_000, 10_000))
    client = TestClient(
        TestServer(create_app(calls, webhooks=webhooks, contacts=contacts, limiter=limiter))
    )
    await client.start_server()
    try:
        a = await _tenant(db, vault, "Alpha", WABA_A, PORTFOLIO_A, PHONE_A, "15550001001")
        b = await _tenant(db, vault, "Beta", WABA_B, PORTFOLIO_B, PHONE_B, "15550002001")
        platform = Platform(db, producer, prefix, broker.setup, client, a, b, vault, meta)
        # The contacts the tests send free-form messages to have written (windows open).
        for phone, wa_id in (
            (PHONE_A, "447912345678"),
            (PHONE_B, "447912345678"),
            (PHONE_A, "16502530000"),
        ):
            await platform.user_wrote(phone, wa_id)
        yield platform
    finally:
        await client.close()
        await producer.stop()
        await mongo.drop_database(db.name)
