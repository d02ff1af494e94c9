"""Composition root: settings -> logging -> connections -> serve until SIGTERM."""

import asyncio

from aiohttp import web

from services.ingest.app import SERVICE, create_app
from services.ingest.cache import RecentMessages
from services.ingest.calls import Calls
from services.ingest.contact_handlers import ContactHandlers
from services.ingest.contact_store import MongoContactStore
from services.ingest.endpoint_handlers import EndpointHandlers
from services.ingest.endpoint_store import MongoEndpointStore
from services.ingest.handlers import Ingest
from services.ingest.limiter import RequestLimiter
from services.ingest.meta_client import GraphClient
from services.ingest.passthrough import PassThroughPacer
from services.ingest.processes import Supervisor
from services.ingest.publisher import KafkaPublisher
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
from services.ingest.sweeper import IdempotencySweeper
from shared.clock import SystemClock
from shared.collections import (
    BLOCKED_RECIPIENTS,
    DELIVERY_ATTEMPTS,
    IDEMPOTENCY_KEYS,
    MEDIA,
    SUPPRESSIONS,
    WEBHOOK_ENDPOINTS,
    ensure_indexes,
)
from shared.logging import configure_logging, get_logger
from shared.pricing import load_rate_card
from shared.rdkafka_producer import RdKafkaProducer
from shared.runtime import Connections, Parts, serve
from shared.secrets import TokenVault
from shared.settings import load_settings


def run() -> None:
    settings = load_settings(IngestSettings)
    configure_logging(SERVICE, settings.log_level)
    asyncio.run(main(settings))


async def main(settings: IngestSettings) -> None:
    if settings.processes > 1:
        await Supervisor(settings.processes, settings.ops_host, settings.ops_port).run()
        return
    keys = settings.token_keys.get_secret_value() if settings.token_keys else ""
    if not keys:
        # Sends do not need the tokens (the sender makes them); pass-through calls do.
        get_logger(SERVICE).warning(
            "token_keys_missing",
            detail="HALA_TOKEN_KEYS is not set: mark-as-read and "
            "media calls and webhook endpoint secrets will answer "
            "500",
        )

    async def build(conns: Connections) -> Parts:
        await ensure_indexes(
            conns.db,
            MEDIA,
            IDEMPOTENCY_KEYS,
            WEBHOOK_ENDPOINTS,
            DELIVERY_ATTEMPTS,
            BLOCKED_RECIPIENTS,
            SUPPRESSIONS,
        )
        clock = SystemClock()
        producer = RdKafkaProducer(
            settings.kafka,
            ack_timeout_s=settings.kafka_ack_timeout_seconds,
            linger_ms=settings.kafka_linger_ms,
            poll_interval_s=settings.kafka_poll_interval_ms / 1000,
        )
        await producer.start()
        inbox = MongoInbox(conns.db)
        publisher = KafkaPublisher(producer, settings.topic_prefix)
        vault = TokenVault(keys) if keys else None
        idempotency = MongoIdempotencyStore(conns.db)
        contact_store = MongoContactStore(conns.db)
        send_rules = SendRules(contact_store, clock, settings.send_rules_cache_seconds)
        sweeper = IdempotencySweeper(
            idempotency,
            clock,
            retention_seconds=settings.idempotency_retention_hours * 3600,
            page_size=settings.idempotency_sweep_page_size,
        )
        ingest = Ingest(
            directory=CachedDirectory(MongoDirectory(conns.db), clock, settings.cache_ttl_seconds),
            idempotency=idempotency,
            messages=MongoMessageStore(conns.db),
            recent=RecentMessages(
                clock, settings.recent_ttl_seconds, max_bytes=settings.recent_max_bytes
            ),
            publisher=publisher,
            clock=clock,
            rate_card=load_rate_card(settings.rate_card_version),
            inbox=inbox,
            windows=CachedWindows(inbox, clock, settings.window_closed_cache_seconds),
            send_rules=send_rules,
        )
        meta = GraphClient(
            settings.meta_base_url, settings.meta_graph_version, settings.meta_timeout_seconds
        )
        calls = Calls(
            ingest=ingest,
            media=MongoMediaStore(conns.db),
            meta=meta,
            vault=vault,
            pacer=PassThroughPacer(
                settings.passthrough_rate_per_second,
                settings.passthrough_burst,
                settings.passthrough_max_wait_seconds,
            ),
            clock=clock,
        )
        checks = {**conns.readiness_checks(), "kafka": producer.ready}
        webhooks = EndpointHandlers(
            ingest,
            MongoEndpointStore(conns.db),
            publisher,
            vault,
            allow_loopback_http=settings.allow_loopback_http,
        )
        contacts = ContactHandlers(ingest, contact_store, publisher, send_rules)
        limiter = RequestLimiter(
            clock,
            account_default=settings.account_rate_limit(),
            key_default=settings.key_rate_limit(),
        )
        app = create_app(
            calls, settings.public_base_url, webhooks=webhooks, contacts=contacts, limiter=limiter
        )

        async def stop_clients(_: web.Application) -> None:
            await producer.stop()  # after the last request: what was accepted is flushed
            await meta.close()

        app.on_cleanup.append(stop_clients)
        return Parts(
            checks=checks,
            client_app=app,
            workers=[sweeper.run_forever(settings.idempotency_sweep_interval_seconds)],
        )

    await serve(settings, SERVICE, build, reuse_port=settings.reuse_port)


if __name__ == "__main__":
    run()
