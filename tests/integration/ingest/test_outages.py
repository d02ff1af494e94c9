"""While the broker or the database is unreachable, ingest answers 503 within a second (not after
librdkafka's 15 s delivery timeout, or a database's silence), publishes nothing it answered 503
for, and serves again by itself once the dependency is back.

A second ingest is built over the same database and tenants as the `platform` fixture's, with
the dependency under test reached through a port this test controls: nothing listens there at
first (Kafka), or a TCP proxy there is stopped and started again (the database). The shared
broker and database themselves are never touched. The broker is reached as deployed: over
SASL_SSL as ingest's own principal, the proxy forwarding the TLS stream untouched (bootstrap
by the name `localhost`, which the broker's certificate names).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import orjson
from aiohttp.test_utils import TestClient, TestServer
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.uri_parser import parse_uri

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
from services.ingest.settings import IngestSettings
from shared.clock import SystemClock
from shared.messages import SEND_REQUESTED
from shared.mongo import make_client
from shared.ports import free_loopback_port
from shared.pricing import load_rate_card
from shared.rdkafka_producer import RdKafkaProducer
from tests.conftest import Broker
from tests.integration.ingest.conftest import Platform
from tests.integration.ingest.kafka_probe import published_count, read_published
from tests.integration.tcp_proxy import TcpProxy
from tests.unit.ingest.fakes import FakeMeta

ONE_SECOND = 1.0
RECOVERY_DEADLINE_S = 30.0
LATE_ACK_ATTEMPTS = 20


@asynccontextmanager
async def second_ingest(
    platform: Platform, db: AsyncDatabase[dict[str, Any]], producer: RdKafkaProducer
) -> AsyncIterator[TestClient[Any, Any]]:
    clock = SystemClock()
    inbox = MongoInbox(db)
    contact_store = MongoContactStore(db)
    send_rules = SendRules(contact_store, clock, cache_seconds=0)
    ingest = Ingest(
        directory=CachedDirectory(MongoDirectory(db), clock, ttl_seconds=0),
        idempotency=MongoIdempotencyStore(db),
        messages=MongoMessageStore(db),
        recent=RecentMessages(clock, 30.0),
        publisher=KafkaPublisher(producer, platform.prefix),
        clock=clock,
        rate_card=load_rate_card(),
        inbox=inbox,
        windows=CachedWindows(inbox, clock, closed_seconds=0),
        send_rules=send_rules,
    )
    calls = Calls(
        ingest=ingest,
        media=MongoMediaStore(db),
        meta=FakeMeta(),
        vault=platform.vault,
        pacer=PassThroughPacer(100, 100, 1),
        clock=clock,
    )
    publisher = KafkaPublisher(producer, platform.prefix)
    webhooks = EndpointHandlers(
        ingest, MongoEndpointStore(db), publisher, platform.vault, allow_loopback_http=True
    )
    contacts = ContactHandlers(ingest, contact_store, publisher, send_rules)
    # The rate limits' middleware too, as in production: it looks the caller up first.
    limiter = RequestLimiter(clock, account_default=Rate(10_000, 10_000))
    client: TestClient[Any, Any] = TestClient(
        TestServer(create_app(calls, webhooks=webhooks, contacts=contacts, limiter=limiter))
    )
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


async def _send(client: TestClient[Any, Any], platform: Platform) -> tuple[int, Any, float]:
    body = {
        "from": platform.a.phone_number_id,
        "to": "+447912345678",
        "type": "text",
        "text": {"body": "Your order shipped"},
    }
    started = time.monotonic()
    resp = await client.post(
        "/v1/messages",
        data=orjson.dumps(body),
        headers={**platform.a.auth, "Content-Type": "application/json"},
    )
    return resp.status, await resp.json(), time.monotonic() - started


async def _until_accepted(client: TestClient[Any, Any], platform: Platform) -> Any:
    deadline = time.monotonic() + RECOVERY_DEADLINE_S
    while True:
        status, body, _ = await _send(client, platform)
        if status == 202:
            return body
        assert status == 503, body
        assert time.monotonic() < deadline, "ingest did not recover by itself"


async def test_with_the_broker_unreachable_ingest_answers_503_within_a_second_then_recovers(
    platform: Platform, broker: Broker
) -> None:
    port = free_loopback_port()  # nothing listens here yet
    ingest_kafka = broker.as_service("ingest")
    producer = RdKafkaProducer(
        replace(ingest_kafka, bootstrap_servers=f"localhost:{port}"),
        ack_timeout_s=IngestSettings().kafka_ack_timeout_seconds,
    )
    await producer.start(wait=False)
    broker_host, broker_port = ingest_kafka.bootstrap_servers.split(",")[0].rsplit(":", 1)
    proxy = TcpProxy(broker_host, int(broker_port), port=port)
    try:
        async with second_ingest(platform, platform.db, producer) as client:
            for _ in range(3):
                status, body, took = await _send(client, platform)
                assert (status, body["error"]["code"]) == (503, "dependency_unavailable")
                assert body["error"]["details"]["record_written"] == "no", body
                assert took < ONE_SECOND, took
            assert await published_count(platform.kafka, SEND_REQUESTED, platform.prefix) == 0

            await proxy.start()  # the broker can be reached again (bootstrap through here)
            accepted = await _until_accepted(client, platform)
            assert accepted["status"] == "accepted"
            # Only the accepted request was ever written: the refused ones never left.
            assert await published_count(platform.kafka, SEND_REQUESTED, platform.prefix) == 1
    finally:
        await producer.stop()
        await proxy.stop()


async def test_a_503_whose_message_may_have_been_sent_says_so_and_names_it(
    platform: Platform, broker: Broker
) -> None:
    """The broker's acknowledgement due at once (0.1 ms): the request's event is on the wire
    when ingest gives up waiting. The 503 must not read as "not sent": it says the record's fate
    is unknown and names the message, and what was written is the accepted messages and perhaps
    that one. An acknowledgement can still come before the producer's first poll on loopback
    (then the answer is a true 202), so requests are sent until one is late, up to a bound."""
    producer = RdKafkaProducer(broker.as_service("ingest"), linger_ms=0, ack_timeout_s=0.0001)
    await producer.start()
    accepted: list[str] = []
    try:
        async with second_ingest(platform, platform.db, producer) as client:
            for _ in range(LATE_ACK_ATTEMPTS):
                status, body, _ = await _send(client, platform)
                if status != 202:
                    break
                accepted.append(body["id"])
    finally:
        await producer.stop()  # whatever was on the wire is written (or not) by now
    assert status != 202, f"every one of {LATE_ACK_ATTEMPTS} acknowledgements came in time"
    assert (status, body["error"]["code"]) == (503, "dependency_unavailable"), body
    details = body["error"]["details"]
    assert details["record_written"] == "unknown", body
    assert details["message_id"].startswith("msg_"), body
    assert "may have been accepted" in body["error"]["message"]
    written = await read_published(platform.kafka, SEND_REQUESTED, platform.prefix)
    written_ids = sorted(SEND_REQUESTED.decode(r.value).message_id for r in written)
    assert written_ids in (sorted(accepted), sorted([*accepted, details["message_id"]]))


async def test_with_the_database_unreachable_ingest_answers_503_within_a_second_then_recovers(
    platform: Platform, mongodb_url: str
) -> None:
    host, mongo_port = parse_uri(mongodb_url)["nodelist"][0]
    proxy = TcpProxy(host, int(mongo_port))
    await proxy.start()
    mongo = make_client(
        f"mongodb://{proxy.address}/?directConnection=true",
        timeout_ms=IngestSettings().mongodb_timeout_ms,
    )
    try:
        async with second_ingest(platform, mongo[platform.db.name], platform.producer) as client:
            status, body, _ = await _send(client, platform)
            assert status == 202, body

            await proxy.stop()  # the database is gone: every connection reset, port closed
            for _ in range(3):
                status, body, took = await _send(client, platform)
                assert (status, body["error"]["code"]) == (503, "dependency_unavailable")
                assert took < ONE_SECOND, took

            await proxy.start()
            accepted = await _until_accepted(client, platform)
            assert accepted["status"] == "accepted"
    finally:
        await proxy.stop()
        await mongo.close()
