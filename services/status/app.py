"""status's app factory: Meta's webhook routes, dependencies passed in (the ops endpoints are
served on their own port, shared/runtime)."""

from __future__ import annotations

from aiohttp import web

from services.status.handlers import WebhookConfig, WebhookHandlers
from services.status.publisher import Publisher
from shared.clock import Clock
from shared.http import SERVICE_KEY, error_middleware

SERVICE = "status"
WEBHOOK_PATH = "/webhooks/meta"


def create_app(config: WebhookConfig, publisher: Publisher, clock: Clock) -> web.Application:
    # aiohttp refuses bodies over client_max_size while reading: Meta's limit plus headroom,
    # the handler enforces the exact limit.
    app = web.Application(middlewares=[error_middleware], client_max_size=config.max_body_bytes + 1)
    app[SERVICE_KEY] = SERVICE
    handlers = WebhookHandlers(config, publisher, clock)
    app.router.add_get(WEBHOOK_PATH, handlers.verify_subscription)
    app.router.add_post(WEBHOOK_PATH, handlers.receive)
    return app
