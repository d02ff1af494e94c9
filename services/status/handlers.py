"""Meta's webhook endpoint: the verification handshake (GET) and event delivery (POST).

A POST is answered 200 only once its raw bytes are durable in Kafka: Meta keeps no history we
could fetch later, and anything but 200 makes it deliver again. All work happens downstream.
A POST whose entries name several WABAs becomes one record per WABA (`core.split_by_waba`), all
published together and all acknowledged before the 200.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import msgspec
from aiohttp import web

from services.status import core
from services.status.metrics import (
    WEBHOOK_PUBLISH_DURATION,
    WEBHOOK_RECORDS_PUBLISHED,
    WEBHOOKS_PUBLISHED,
    WEBHOOKS_RECEIVED,
    WEBHOOKS_REJECTED,
)
from services.status.publisher import Publisher
from shared.clock import Clock
from shared.errors import Forbidden, InvalidRequest, InvalidSignature, ServiceError
from shared.json_depth import MAX_JSON_DEPTH, too_deep
from shared.logging import get_logger
from shared.messages import WEBHOOK_RECEIVED, WebhookReceived

log = get_logger(__name__)

SIGNATURE_HEADER = "X-Hub-Signature-256"


@dataclass(frozen=True)
class WebhookConfig:
    app_secret: bytes
    verify_token: str
    max_body_bytes: int


class PayloadTooLarge(ServiceError):
    code = "payload_too_large"
    http_status = 413


class WebhookHandlers:
    def __init__(self, config: WebhookConfig, publisher: Publisher, clock: Clock) -> None:
        self._config = config
        self._publisher = publisher
        self._clock = clock

    async def verify_subscription(self, request: web.Request) -> web.Response:
        challenge = core.handshake_challenge(request.query, self._config.verify_token)
        if challenge is None:
            log.warning("webhook_verification_refused", outcome="refused")
            raise Forbidden("webhook verification failed", code="verification_failed")
        log.info("webhook_verification_answered", outcome="verified")
        return web.Response(text=challenge, content_type="text/plain")

    async def receive(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        WEBHOOKS_RECEIVED.inc()
        outcome, size, records = "published", 0, 0
        try:
            body = await self._read_body(request)
            size = len(body)
            split = self._accept(body, request.headers.get(SIGNATURE_HEADER))
            received_at = self._clock.now_ms()
            events = [
                (
                    WEBHOOK_RECEIVED,
                    WebhookReceived(
                        event_id=record.event_id,
                        received_at=received_at,
                        payload=msgspec.Raw(record.payload),
                    ),
                )
                for record in split
            ]
            publish_started = time.perf_counter()
            # Enqueued together, one wait for every acknowledgement. If some fail, the 503 makes
            # Meta retry the POST, whose records get the same ids and bytes: the ones already
            # written are read twice, which every consumer already tolerates (a lost 200 does it).
            await self._publisher.publish_all(events)
            WEBHOOK_PUBLISH_DURATION.observe(time.perf_counter() - publish_started)
            WEBHOOKS_PUBLISHED.inc()
            records = len(events)
            WEBHOOK_RECORDS_PUBLISHED.inc(records)
            return web.Response(status=200, text="OK", content_type="text/plain")
        except ServiceError as exc:
            outcome = exc.code
            raise
        finally:
            log.info(
                "webhook_received",
                outcome=outcome,
                bytes=size,
                records=records,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
            )

    async def _read_body(self, request: web.Request) -> bytes:
        limit = self._config.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            WEBHOOKS_REJECTED.labels("too_large").inc()
            raise PayloadTooLarge(f"webhook body exceeds {limit} bytes")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge as exc:
            WEBHOOKS_REJECTED.labels("too_large").inc()
            raise PayloadTooLarge(f"webhook body exceeds {limit} bytes") from exc
        if len(body) > limit:
            WEBHOOKS_REJECTED.labels("too_large").inc()
            raise PayloadTooLarge(f"webhook body exceeds {limit} bytes")
        return body

    def _accept(self, body: bytes, signature: str | None) -> list[core.WabaRecord]:
        """The records, one per WABA, of a body signed by Meta and shaped like a webhook."""
        if not core.signature_is_valid(body, signature, self._config.app_secret):
            WEBHOOKS_REJECTED.labels("bad_signature").inc()
            raise InvalidSignature("X-Hub-Signature-256 does not match the body")
        if too_deep(body):  # every JSON decoder recurses: refused before one sees it
            WEBHOOKS_REJECTED.labels("too_deep").inc()
            raise InvalidRequest(
                f"the body nests arrays and objects more than {MAX_JSON_DEPTH} levels deep",
                code="nesting_too_deep",
                details={"limit": MAX_JSON_DEPTH},
            )
        try:
            return core.split_by_waba(body)
        except InvalidRequest:
            WEBHOOKS_REJECTED.labels("malformed").inc()
            raise
