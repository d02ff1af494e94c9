"""ingest's app factory: routes and middleware, with its dependencies passed in."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from shared.http import SERVICE_KEY, ReadinessCheck, add_ops_routes, error_middleware

SERVICE = "ingest"


def create_app(checks: Mapping[str, ReadinessCheck]) -> web.Application:
    app = web.Application(middlewares=[error_middleware], client_max_size=64 * 1024)
    app[SERVICE_KEY] = SERVICE
    add_ops_routes(app, SERVICE, checks)
    return app
