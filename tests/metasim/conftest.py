"""Fixtures: a simulator on a manual clock, a real webhook receiver, and polling helpers."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import hmac
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tools.metasim.app import build_app
from tools.metasim.clock import ManualClock, SystemClock
from tools.metasim.config import SimConfig, load_config_dict
from tools.metasim.handlers import SIM

WABA_A1 = "102290129340398"
WABA_B1 = "117552438690213"
A1_NUMBER = "109731225428301"  # 80 mps
A1_NUMBER_2 = "109731225428302"  # 80 mps
A1_FAST_NUMBER = "109731225428303"  # 1000 mps
B1_NUMBER = "118243906275101"  # 80 mps, portfolio tier TIER_2K
B1_COEX_NUMBER = "118243906275102"  # coexistence, 20 mps
BSP_TOKEN = "EAAsim-bsp-system-user"
APP_SECRET = b"metasim-app-secret-change-me"
UK_USER = "+447700900123"


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


# Deterministic webhook timing for tests: 1 simulated second per step, no jitter, polite.
TEST_OVERRIDES: dict[str, Any] = {
    "time_scale": 1.0,
    "throughput_upgrade_seconds": 1.0,
    "webhooks": {
        "profile": "polite",
        "delays": {"sent": 1.0, "delivered": 1.0, "read": 1.0, "jitter": 0.0},
        "read_probability": 1.0,
        "timeout_seconds": 2.0,
    },
    "outcomes": {"template_review": {"outcome": "APPROVED", "delay_seconds": 5.0}},
}


_DEFAULT_CONFIG = load_config_dict()  # parsed once: deep_merge copies it for every test


def make_config(overrides: dict[str, Any] | None = None) -> SimConfig:
    raw = deep_merge(_DEFAULT_CONFIG, TEST_OVERRIDES)
    return SimConfig.model_validate(deep_merge(raw, overrides or {}))


async def wait_for(
    condition: Callable[[], Any], timeout: float = 5.0, what: str = "condition"
) -> Any:
    """Poll until `condition()` is truthy, failing after a real-time deadline (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def verify_signature(body: bytes, header: str | None) -> bool:
    expected = hmac.new(APP_SECRET, body, hashlib.sha256).hexdigest()
    return header is not None and hmac.compare_digest("sha256=" + expected, header)


@dataclass
class Receiver:
    """A real webhook endpoint: keeps raw bodies, answers with scripted statuses."""

    url: str = ""
    verify_token: str = "metasim-verify-token"
    posts: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    scripted_statuses: list[int] = field(default_factory=list)  # consumed first, then 200
    hang_seconds: float = 0.0
    verifications: list[dict[str, str]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)  # ends hangs at teardown

    @property
    def payloads(self) -> list[dict[str, Any]]:
        return [orjson.loads(body) for _, body in self.posts]

    def statuses(self) -> list[dict[str, Any]]:
        return [
            status
            for payload in self.payloads
            for entry in payload["entry"]
            for change in entry["changes"]
            for status in change["value"].get("statuses", [])
        ]

    def statuses_for(self, wamid: str) -> list[dict[str, Any]]:
        return [s for s in self.statuses() if s["id"] == wamid]

    def changes(self, field_name: str) -> list[dict[str, Any]]:
        return [
            change["value"]
            for payload in self.payloads
            for entry in payload["entry"]
            for change in entry["changes"]
            if change["field"] == field_name
        ]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    state = Receiver()

    async def post(request: web.Request) -> web.Response:
        body = await request.read()
        if state.hang_seconds:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.release.wait(), state.hang_seconds)
        state.posts.append((dict(request.headers), body))
        status = state.scripted_statuses.pop(0) if state.scripted_statuses else 200
        return web.Response(status=status, text="ok")

    async def get(request: web.Request) -> web.Response:
        state.verifications.append(dict(request.query))
        if (
            request.query.get("hub.mode") == "subscribe"
            and request.query.get("hub.verify_token") == state.verify_token
        ):
            return web.Response(text=request.query["hub.challenge"])
        return web.Response(status=403, text="bad token")

    app = web.Application()
    app.router.add_post("/webhooks/meta", post)
    app.router.add_get("/webhooks/meta", get)
    server = TestServer(app)
    await server.start_server()
    state.url = str(server.make_url("/webhooks/meta"))
    yield state
    state.release.set()
    await server.close()


@dataclass
class Sim:
    client: TestClient
    clock: ManualClock | SystemClock
    app: web.Application

    @property
    def sim(self) -> Any:
        return self.app[SIM]

    async def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        await asyncio.sleep(0)

    async def send(
        self, number: str, payload: dict[str, Any], token: str = BSP_TOKEN, version: str = "v24.0"
    ) -> tuple[int, dict[str, Any]]:
        path = f"/{version}/{number}/messages" if version else f"/{number}/messages"
        response = await self.client.post(
            path, data=orjson.dumps(payload), headers={"Authorization": f"Bearer {token}"}
        )
        return response.status, await response.json()

    async def send_text(
        self, number: str, to: str, body: str = "hi", **extra: Any
    ) -> tuple[int, dict[str, Any]]:
        payload = {
            "messaging_product": "whatsapp",
            "to": to,
            "type": "text",
            "text": {"body": body},
            **extra,
        }
        return await self.send(number, payload)

    async def send_template(
        self,
        number: str,
        to: str,
        name: str,
        params: list[str] | None = None,
        language: str = "en_US",
        components: list[dict[str, Any]] | None = None,
        **extra: Any,
    ) -> tuple[int, dict[str, Any]]:
        if components is None:
            components = []
            if params:
                components.append(
                    {"type": "body", "parameters": [{"type": "text", "text": p} for p in params]}
                )
        payload = {
            "messaging_product": "whatsapp",
            "to": to,
            "type": "template",
            "template": {"name": name, "language": {"code": language}, "components": components},
            **extra,
        }
        return await self.send(number, payload)

    async def graph(
        self, method: str, path: str, token: str = BSP_TOKEN, **kwargs: Any
    ) -> tuple[int, Any]:
        """A Graph API call (path without the host, e.g. /v24.0/<id>) with a bearer token."""
        response = await self.client.request(
            method, path, headers={"Authorization": f"Bearer {token}"}, **kwargs
        )
        return response.status, await response.json()

    async def upload(
        self,
        number: str,
        content: bytes,
        mime_type: str,
        filename: str = "file.bin",
        token: str = BSP_TOKEN,
        type_field: str | None = "",
        messaging_product: str | None = "whatsapp",
    ) -> tuple[int, Any]:
        """`POST /<number>/media` as Meta documents it (and as pywa sends it): multipart with
        `file` (filename + MIME), `type` and `messaging_product`. `type_field=None` leaves the
        `type` part out; "" sends the file's MIME type."""
        form = aiohttp.FormData()
        if messaging_product is not None:
            form.add_field("messaging_product", messaging_product)
        form.add_field("file", content, filename=filename, content_type=mime_type)
        if type_field is not None:
            form.add_field("type", type_field or mime_type)
        return await self.graph("POST", f"/v24.0/{number}/media", token, data=form)

    async def uploaded(self, number: str, content: bytes, mime_type: str, **kw: Any) -> str:
        status, body = await self.upload(number, content, mime_type, **kw)
        assert status == 200, body
        return str(body["id"])

    async def control(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        response = await self.client.request(method, path, json=body)
        return response.status, await response.json()

    async def inbound(
        self, number: str, user: str, text: str = "hello", **extra: Any
    ) -> dict[str, Any]:
        status, body = await self.control(
            "POST",
            "/_sim/inbound",
            {"phone_number_id": number, "from": user, "text": text, **extra},
        )
        assert status == 200, body
        return body


MakeSim = Callable[..., Awaitable[Sim]]


@pytest.fixture
async def make_sim() -> AsyncIterator[MakeSim]:
    clients: list[TestClient] = []

    async def factory(
        receiver: Receiver | None = None,
        overrides: dict[str, Any] | None = None,
        clock: ManualClock | SystemClock | None = None,
    ) -> Sim:
        merged = deep_merge(
            {
                "webhooks": {
                    "enabled": receiver is not None,
                    "callback_url": receiver.url if receiver else "http://127.0.0.1:9/none",
                }
            },
            overrides or {},
        )
        clock = clock or ManualClock()
        app = build_app(make_config(merged), clock)
        client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return Sim(client, clock, app)

    yield factory
    for client in clients:
        await client.close()
