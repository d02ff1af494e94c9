"""ingest's app factory: routes and middleware, with its dependencies passed in."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import yaml
from aiohttp import web

from services.ingest.core import MAX_BODY_BYTES
from services.ingest.handlers import Handlers, Ingest
from shared.http import SERVICE_KEY, ReadinessCheck, add_ops_routes, error_middleware, json_response

SERVICE = "ingest"
OPENAPI_PATH = Path(__file__).with_name("openapi.yaml")


def create_app(checks: Mapping[str, ReadinessCheck], ingest: Ingest) -> web.Application:
    # Slightly above the body limit, so that our own check answers with the JSON envelope.
    app = web.Application(middlewares=[error_middleware], client_max_size=MAX_BODY_BYTES + 1024)
    app[SERVICE_KEY] = SERVICE
    handlers = Handlers(ingest)
    app.router.add_post("/v1/messages", handlers.post_message)
    app.router.add_get("/v1/messages", handlers.list_messages)
    app.router.add_get("/v1/messages/{message_id}", handlers.get_message)
    app.router.add_get("/v1/balance", handlers.get_balance)
    # Meta's own send endpoint, so Cloud API client libraries work with a changed base URL.
    app.router.add_post(r"/{graph_version:v\d+\.\d+}/{phone_number_id:\d+}/messages",
                        handlers.post_meta_message)
    add_openapi_routes(app)
    add_ops_routes(app, SERVICE, checks)
    return app


def add_openapi_routes(app: web.Application) -> None:
    text = OPENAPI_PATH.read_text()
    document = yaml.safe_load(text)

    async def openapi_json(_: web.Request) -> web.Response:
        return json_response(document)

    async def openapi_yaml(_: web.Request) -> web.Response:
        return web.Response(text=text, content_type="application/yaml")

    app.router.add_get("/openapi.json", openapi_json)
    app.router.add_get("/openapi.yaml", openapi_yaml)
