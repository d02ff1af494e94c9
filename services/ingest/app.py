"""ingest's app factory: routes and middleware, with its dependencies passed in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from services.ingest.call_handlers import CallHandlers
from services.ingest.calls import Calls
from services.ingest.contact_handlers import ContactHandlers
from services.ingest.core import MAX_BODY_BYTES
from services.ingest.endpoint_handlers import EndpointHandlers
from services.ingest.handlers import Handlers, meta_error_response
from services.ingest.limiter import RequestLimiter, add_rate_limit_headers, rate_limit_middleware
from services.ingest.media import MEDIA_ID_PATTERN
from shared.errors import ServiceError
from shared.http import SERVICE_KEY, error_middleware, json_response

SERVICE = "ingest"
OPENAPI_PATH = Path(__file__).with_name("openapi.yaml")
GRAPH_VERSION = r"/{graph_version:v\d+\.\d+}"
# Routes that take no API key: never rate limited, whatever headers come with them. (The ops
# endpoints are on their own app and port.)
UNLIMITED_ROUTES = frozenset({"/openapi.json", "/openapi.yaml"})


def create_app(
    calls: Calls,
    public_base_url: str = "",
    *,
    webhooks: EndpointHandlers,
    contacts: ContactHandlers,
    limiter: RequestLimiter | None = None,
) -> web.Application:
    """The client API only: the ops endpoints are served on their own port (shared/runtime).
    `limiter`: the request rate limits of accounts and keys (None: no limits, for tests of
    other things)."""
    middlewares: list[Any] = [error_middleware]
    if limiter is not None:
        # Inside the error middleware, so that its refusals are counted like other answers.
        middlewares.append(
            rate_limit_middleware(
                limiter, calls.ingest.directory, meta_route_error, UNLIMITED_ROUTES
            )
        )
    # Slightly above the body limit, so that our own check answers with the JSON envelope.
    # (Uploads are read part by part as a stream, which this limit does not apply to.)
    app = web.Application(middlewares=middlewares, client_max_size=MAX_BODY_BYTES + 1024)
    if limiter is not None:
        app.on_response_prepare.append(add_rate_limit_headers)
    app[SERVICE_KEY] = SERVICE
    more = CallHandlers(calls, public_base_url)
    handlers = Handlers(calls.ingest, status_call=more.meta_status_call)
    app.router.add_post("/v1/messages", handlers.post_message)
    app.router.add_get("/v1/messages", handlers.list_messages)
    app.router.add_get("/v1/messages/{message_id}", handlers.get_message)
    app.router.add_post("/v1/messages/{wamid}/read", more.mark_read)
    app.router.add_get("/v1/balance", handlers.get_balance)
    app.router.add_get("/v1/conversations", more.list_conversations)
    app.router.add_get("/v1/conversations/{wa_id}/messages", more.conversation_messages)
    app.router.add_post("/v1/media", more.upload)
    media = f"/v1/media/{{media_id:{MEDIA_ID_PATTERN}}}"
    app.router.add_get(media, more.download)
    app.router.add_delete(media, more.delete_media)
    app.router.add_get(f"{media}/info", more.media_info)
    add_webhook_endpoint_routes(app, webhooks)
    add_contact_list_routes(app, contacts)
    # Meta's own endpoints, so Cloud API client libraries work with a changed base URL: sends
    # and mark-as-read (one endpoint), the Media API.
    app.router.add_post(
        GRAPH_VERSION + r"/{phone_number_id:\d+}/messages", handlers.post_meta_message
    )
    app.router.add_post(GRAPH_VERSION + r"/{phone_number_id:\d+}/media", more.meta_upload)
    meta_media = f"{GRAPH_VERSION}/{{media_id:{MEDIA_ID_PATTERN}}}"
    app.router.add_get(meta_media, more.meta_media_url)
    app.router.add_delete(meta_media, more.meta_delete_media)
    add_openapi_routes(app)
    return app


def meta_route_error(request: web.Request, exc: ServiceError) -> web.StreamResponse | None:
    """An error on one of Meta's routes, in Meta's envelope; None on ours (the error
    middleware answers it)."""
    resource = request.match_info.route.resource
    if resource is not None and resource.canonical.startswith("/{graph_version}"):
        return meta_error_response(exc)
    return None


def add_webhook_endpoint_routes(app: web.Application, webhooks: EndpointHandlers) -> None:
    """Where the client manages the endpoints its events are delivered to."""
    endpoints = "/v1/webhook-endpoints"
    one = endpoints + "/{endpoint_id}"
    app.router.add_post(endpoints, webhooks.create)
    app.router.add_get(endpoints, webhooks.list)
    app.router.add_get(one, webhooks.get)
    app.router.add_patch(one, webhooks.update)
    app.router.add_delete(one, webhooks.delete)
    app.router.add_post(one + "/test", webhooks.send_test)
    app.router.add_post(one + "/rotate-secret", webhooks.rotate_secret)
    app.router.add_get(one + "/deliveries", webhooks.deliveries)
    app.router.add_post(one + "/replay", webhooks.replay)


def add_contact_list_routes(app: web.Application, contacts: ContactHandlers) -> None:
    """The account's marketing suppressions, opt-out keywords and block list."""
    app.router.add_get("/v1/suppressions", contacts.list_suppressions)
    app.router.add_post("/v1/suppressions", contacts.suppress)
    app.router.add_delete(
        r"/v1/suppressions/{phone_number_id:\d+}/{recipient}", contacts.resubscribe
    )
    app.router.add_get("/v1/opt-out-keywords", contacts.get_keywords)
    app.router.add_put("/v1/opt-out-keywords", contacts.put_keywords)
    app.router.add_get("/v1/blocked-recipients", contacts.list_blocked)
    app.router.add_post("/v1/blocked-recipients", contacts.block)
    app.router.add_delete("/v1/blocked-recipients/{recipient}", contacts.unblock)


def add_openapi_routes(app: web.Application) -> None:
    text = OPENAPI_PATH.read_text()
    document = yaml.safe_load(text)

    async def openapi_json(_: web.Request) -> web.Response:
        return json_response(document)

    async def openapi_yaml(_: web.Request) -> web.Response:
        return web.Response(text=text, content_type="application/yaml")

    app.router.add_get("/openapi.json", openapi_json)
    app.router.add_get("/openapi.yaml", openapi_yaml)
