"""The shared HTTP layer: error envelope, ops endpoints, metrics labels."""

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY

from shared.errors import InsufficientCredit, InvalidRequest
from shared.http import SERVICE_KEY, add_ops_routes, error_middleware


async def _client(checks: dict) -> TestClient:
    app = web.Application(middlewares=[error_middleware])
    app[SERVICE_KEY] = "unit"

    async def bad(_: web.Request) -> web.Response:
        raise InvalidRequest(
            "to must be E.164", code="invalid_phone_number", details={"field": "to"}
        )

    async def broke(_: web.Request) -> web.Response:
        raise RuntimeError("bug")

    async def poor(_: web.Request) -> web.Response:
        raise InsufficientCredit("not enough credit")

    app.router.add_get("/bad/{id}", bad)
    app.router.add_get("/broke", broke)
    app.router.add_get("/poor", poor)
    add_ops_routes(app, "unit", checks)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def _up() -> bool:
    return True


async def _down() -> bool:
    return False


async def test_service_errors_become_the_json_envelope_with_their_status() -> None:
    client = await _client({"kafka": _up})
    try:
        resp = await client.get("/bad/123")
        assert resp.status == 400
        assert await resp.json() == {
            "error": {
                "code": "invalid_phone_number",
                "message": "to must be E.164",
                "details": {"field": "to"},
            }
        }
        resp = await client.get("/poor")
        assert resp.status == 402
        assert (await resp.json())["error"]["code"] == "insufficient_credit"
    finally:
        await client.close()


async def test_unknown_routes_and_bugs_answer_in_the_same_envelope() -> None:
    client = await _client({"kafka": _up})
    try:
        resp = await client.get("/nope")
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "not_found"
        resp = await client.get("/broke")
        assert resp.status == 500
        assert (await resp.json())["error"] == {
            "code": "internal_error",
            "message": "internal error",
            "details": {},
        }
    finally:
        await client.close()


async def test_readyz_is_503_until_every_dependency_answers() -> None:
    client = await _client({"kafka": _up, "mongodb": _down})
    try:
        resp = await client.get("/readyz")
        assert resp.status == 503
        body = await resp.json()
        assert body["dependencies"] == {"kafka": "ok", "mongodb": "unavailable"}
        assert (await client.get("/healthz")).status == 200
    finally:
        await client.close()


async def test_metrics_label_requests_by_route_template_not_raw_path() -> None:
    client = await _client({"kafka": _up})
    try:
        await client.get("/bad/555123")
        text = await (await client.get("/metrics")).text()
        assert 'route="/bad/{id}"' in text
        assert "555123" not in text
    finally:
        await client.close()


async def test_each_request_is_counted_once_under_its_route_and_status_class() -> None:
    def count(route: str, status_class: str) -> float:
        return (
            REGISTRY.get_sample_value(
                "hala_http_requests_total",
                {"service": "unit", "route": route, "status_class": status_class},
            )
            or 0.0
        )

    def timed(route: str) -> float:
        return (
            REGISTRY.get_sample_value(
                "hala_http_request_duration_seconds_count", {"service": "unit", "route": route}
            )
            or 0.0
        )

    before = count("/bad/{id}", "4xx"), count("/broke", "5xx"), timed("/bad/{id}")
    client = await _client({"kafka": _up})
    try:
        for _ in range(3):
            await client.get("/bad/1")
        await client.get("/broke")
    finally:
        await client.close()
    after = count("/bad/{id}", "4xx"), count("/broke", "5xx"), timed("/bad/{id}")
    assert [a - b for a, b in zip(after, before, strict=True)] == [3, 1, 3]
