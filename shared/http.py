"""HTTP helpers for every service: the error envelope, request metrics, the ops endpoints
`/healthz` (the process is alive), `/readyz` (its dependencies answer) and `/metrics`, and the one
way a service serves HTTPS.

The ops endpoints are an app of their own (`make_ops_app`) on a port of their own
(`<SERVICE>_OPS_HOST/PORT`, loopback by default): the client port serves only client routes, so
metrics and readiness are never exposed with the API or the webhook receiver."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import REGISTRY
from prometheus_client.aiohttp import make_aiohttp_handler

from shared.errors import ServiceError
from shared.logging import get_logger
from shared.metrics import (
    DEAD_LETTER_REASONS,
    DEAD_LETTERS,
    DEPENDENCY_UP,
    HTTP_DURATION,
    HTTP_REQUESTS,
)

log = get_logger(__name__)

ReadinessCheck = Callable[[], Awaitable[bool]]
SERVICE_KEY = web.AppKey("service", str)


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )


def error_body(code: str, message: str, details: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": dict(details or {})}}


def _route_label(request: web.Request) -> str:
    # The route template, never the raw path: raw paths carry ids (unbounded label values).
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def retry_after_header(exc: ServiceError) -> dict[str, str] | None:
    """`Retry-After` (whole seconds) for an error that says when to come back
    (`details.retry_after_seconds`: a 429 or 503)."""
    seconds = exc.details.get("retry_after_seconds")
    if isinstance(seconds, int) and not isinstance(seconds, bool):
        return {"Retry-After": str(seconds)}
    return None


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Turn ServiceError into the JSON envelope, count and time every request."""
    started = time.perf_counter()
    route = _route_label(request)
    try:
        response = await handler(request)
    except ServiceError as exc:
        response = json_response(
            error_body(exc.code, exc.message, exc.details),
            status=exc.http_status,
            headers=retry_after_header(exc),
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
            exc.status, "http_error"
        )
        response = json_response(error_body(code, exc.reason), status=exc.status)
    except Exception:
        log.exception("unhandled_error", route=route)
        response = json_response(error_body("internal_error", "internal error"), status=500)
    counter, timer = _request_metrics(request.app[SERVICE_KEY], route, response.status // 100)
    counter.inc()
    timer.observe(time.perf_counter() - started)
    return response


@functools.cache
def _request_metrics(service: str, route: str, status_class: int) -> tuple[Any, Any]:
    # labels() builds and looks up its key under a lock on every call; the set of (service,
    # route, class) is small and closed, so each pair of children is looked up once.
    return (
        HTTP_REQUESTS.labels(service, route, f"{status_class}xx"),
        HTTP_DURATION.labels(service, route),
    )


DEPENDENCY_PROBE_INTERVAL_S = 15.0


def add_ops_routes(
    app: web.Application, service: str, checks: Mapping[str, ReadinessCheck]
) -> None:
    """/healthz, /readyz and /metrics. Readiness runs every dependency check concurrently; a
    background probe keeps `hala_dependency_up` current even when nobody calls /readyz."""
    # Series that exist from the start, so that alerts on increase() see the first event.
    for reason in DEAD_LETTER_REASONS:
        DEAD_LETTERS.labels(service=service, reason=reason)

    async def probe() -> dict[str, bool]:
        names = list(checks)
        results = await asyncio.gather(*(checks[n]() for n in names))
        for name, ok in zip(names, results, strict=True):
            DEPENDENCY_UP.labels(service, name).set(1 if ok else 0)
        return dict(zip(names, results, strict=True))

    async def probe_forever() -> None:
        while True:
            await probe()
            await asyncio.sleep(DEPENDENCY_PROBE_INTERVAL_S)

    async def background_probe(_: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(probe_forever())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def healthz(_: web.Request) -> web.Response:
        return json_response({"status": "ok", "service": service})

    async def readyz(_: web.Request) -> web.Response:
        probed = await probe()
        names, results = list(probed), list(probed.values())
        status = dict(zip(names, ("ok" if ok else "unavailable" for ok in results), strict=True))
        ready = all(results)
        return json_response(
            {"ready": ready, "service": service, "dependencies": status},
            status=200 if ready else 503,
        )

    app.cleanup_ctx.append(background_probe)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", make_aiohttp_handler(REGISTRY))


def make_ops_app(service: str, checks: Mapping[str, ReadinessCheck]) -> web.Application:
    """An app with only the ops endpoints (for services whose work is consuming Kafka)."""
    app = web.Application(middlewares=[error_middleware])
    app[SERVICE_KEY] = service
    add_ops_routes(app, service, checks)
    return app


def server_ssl_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """TLS for a server: `cert_file` holds the chain (leaf first), `key_file` its private key,
    both PEM. TLS 1.2 at least, Python's default ciphers."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile=cert_file, keyfile=key_file)
    return context


async def start_site(
    app: web.Application,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None = None,
    *,
    reuse_port: bool = False,
) -> web.AppRunner:
    """Serve `app` on host:port, over HTTPS when given a context (see server_ssl_context);
    `reuse_port`: SO_REUSEPORT, the port shared with other processes that set it too."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context, reuse_port=reuse_port or None)
    await site.start()
    return runner


def stop_event_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT: the composition root awaits it, then shuts down."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop
