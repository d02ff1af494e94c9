"""Composition root: settings -> logging -> connections -> consumer, dispatcher, mailer,
sweeper -> serve until SIGTERM."""

import asyncio

from services.notify import alerts
from services.notify.core import Endpoint, Health, scaled
from services.notify.dispatcher import DeliveryPolicy, Dispatcher
from services.notify.endpoints import EndpointDirectory
from services.notify.mailer import Mailer, SmtpConfig, SmtpServer
from services.notify.repository import NotifyRepository
from services.notify.settings import NotifySettings
from services.notify.sweeper import sweep_forever
from services.notify.transport import HttpTransport
from services.notify.worker import SERVICE, NotifyWorker, run_consumer
from shared.clock import SystemClock
from shared.collections import (
    DELIVERIES,
    DELIVERY_ATTEMPTS,
    EMAIL_ALERTS,
    NOTIFY_EVENTS,
    ensure_indexes,
)
from shared.logging import configure_logging
from shared.runtime import Connections, Parts, serve
from shared.secrets import TokenVault
from shared.settings import load_settings


async def main() -> None:
    settings = load_settings(NotifySettings)
    configure_logging(SERVICE, settings.log_level)
    if not settings.token_keys.get_secret_value():
        raise SystemExit("HALA_TOKEN_KEYS is not set: notify cannot decrypt endpoint secrets")
    clock = SystemClock()
    scale = settings.effective_time_scale

    async def build(conns: Connections) -> Parts:
        await ensure_indexes(conns.db, NOTIFY_EVENTS, DELIVERIES, DELIVERY_ATTEMPTS, EMAIL_ALERTS)
        store = NotifyRepository(conns.db)
        directory = EndpointDirectory(
            store, TokenVault(settings.token_keys), clock, settings.endpoint_cache_seconds
        )
        await directory.load_health()
        mailer = Mailer(
            store,
            SmtpServer(
                SmtpConfig(
                    settings.smtp_host,
                    settings.smtp_port,
                    settings.smtp_username,
                    settings.smtp_password.get_secret_value() if settings.smtp_password else "",
                    settings.smtp_starttls,
                    settings.smtp_timeout_seconds,
                )
            ),
            clock,
            settings.smtp_from,
            settings.email_retry_seconds,
        )

        async def on_disabled(endpoint: Endpoint, health: Health) -> None:
            await mailer.raise_alert(
                alerts.endpoint_disabled(
                    endpoint.id,
                    endpoint.account_id,
                    endpoint.url,
                    health.disabled_reason or "failing",
                    health.disabled_at or clock.now_ms(),
                    health.failing_since,
                )
            )

        transport = HttpTransport(
            allow_loopback=settings.development,
            connect_timeout=settings.connect_timeout_seconds,
            total_timeout=settings.total_timeout_seconds,
            max_response_bytes=settings.max_response_bytes,
            max_connections=settings.max_in_flight,
        )
        await transport.start()
        grace_ms = round(settings.first_attempt_grace_seconds * 1000)
        dispatcher = Dispatcher(
            store,
            directory,
            transport,
            clock,
            DeliveryPolicy(
                schedule=scaled(settings.retry_schedule_seconds, scale),
                jitter=settings.retry_jitter,
                disable_after_ms=round(settings.disable_after_seconds * 1000 / scale),
                retry_after_scale=scale,
                per_endpoint_concurrency=settings.per_endpoint_concurrency,
                max_in_flight=settings.max_in_flight,
                per_endpoint_queue=settings.per_endpoint_queue,
                poll_interval=settings.poll_interval_seconds,
                grace_ms=grace_ms,
            ),
            on_disabled=on_disabled,
        )
        worker = NotifyWorker(
            store,
            directory,
            dispatcher,
            mailer,
            clock,
            settings.topic_prefix,
            grace_ms,
            settings.max_replay_events,
        )

        async def run_dispatcher() -> None:
            try:
                await dispatcher.run_forever()
            finally:
                await dispatcher.stop()
                await transport.close()

        workers = [
            run_consumer(
                settings.kafka,
                settings.topic_prefix,
                worker,
                conns.producer,
                consumer_options=settings.consumer_options(),
            ),
            run_dispatcher(),
            mailer.run_forever(),
            sweep_forever(store, clock, settings.retention_days, settings.sweep_interval_seconds),
        ]
        return Parts(checks=conns.readiness_checks(), workers=workers)

    await serve(settings, SERVICE, build)


if __name__ == "__main__":
    asyncio.run(main())
