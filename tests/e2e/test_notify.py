"""Client events through the real pipeline and simulator: a client registered for `message.*`
receives message.accepted, sent, delivered and read for a message it sent through ingest, and
message.received for the user's reply, each verified by the standardwebhooks library; a
`format: "meta"` endpoint of the same account receives Meta's payloads with the client's ids,
checked the way a handler written from Meta's docs checks them; a template rejection mails the
account once.

The endpoints are created, tested and replayed through ingest's client API."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import queue
from email import message_from_bytes
from email.policy import default
from typing import Any

import aiohttp
from aiohttp import web
from aiosmtpd.controller import Controller
from standardwebhooks import Webhook

from shared.mongo import make_client
from shared.ports import free_loopback_port
from tests.e2e.conftest import Stack, eventually, seed_accounts

TOP_UP = 50_000_000
RECIPIENT = "+447911123456"


class Receiver:
    def __init__(self) -> None:
        self.port = free_loopback_port()
        self.received: list[tuple[str, bytes, dict[str, str]]] = []
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        self.received.append(
            (
                request.match_info["path"],
                await request.read(),
                {k.lower(): v for k, v in request.headers.items()},
            )
        )
        return web.Response(text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{path}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def at(self, path: str) -> list[tuple[bytes, dict[str, str]]]:
        return [(body, headers) for p, body, headers in self.received if p == path]


class Mailbox:
    def __init__(self, port: int) -> None:
        self.messages: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.controller = Controller(self, hostname="127.0.0.1", port=port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.put(message_from_bytes(envelope.original_content, policy=default))
        return "250 OK"


async def api(
    stack: Stack, api_key: str, method: str, path: str, body: dict[str, Any] | None = None
) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method,
            f"{stack.url('ingest')}{path}",
            json=body,
            headers={"Authorization": f"Bearer {api_key}"},
        ) as resp,
    ):
        return resp.status, await resp.json()


async def create_endpoint(
    stack: Stack, api_key: str, url: str, events: list[str], fmt: str
) -> tuple[str, str]:
    """Through the client API: the endpoint's id and its secret (shown once)."""
    status, body = await api(
        stack,
        api_key,
        "POST",
        "/v1/webhook-endpoints",
        {"url": url, "events": events, "format": fmt, "description": "e2e"},
    )
    assert status == 201, body
    assert body["secret"].startswith("whsec_")
    return body["endpoint"]["id"], body["secret"]


async def test_a_client_hears_of_its_message_and_the_reply_and_meta_handlers_too(
    stack: Stack,
) -> None:
    receiver, mailbox = Receiver(), Mailbox(stack.smtp_port)
    await receiver.start()
    mailbox.controller.start()
    try:
        await stack.sim("POST", "/_sim/webhooks/config", json={"read_probability": 1.0})
        [account, *_] = await seed_accounts(stack, TOP_UP)
        mongo = make_client(stack.mongodb_url)
        await mongo[stack.database]["accounts"].update_one(
            {"_id": account.account_id}, {"$set": {"alert_emails": ["alerts@example.com"]}}
        )
        await mongo.close()
        std_id, secret = await create_endpoint(
            stack,
            account.api_key,
            f"http://127.0.0.1:{receiver.port}/std",
            ["message.*"],
            "standard",
        )
        meta_id, meta_secret = await create_endpoint(
            stack, account.api_key, f"http://127.0.0.1:{receiver.port}/meta", ["*"], "meta"
        )
        # notify sees endpoint changes within NOTIFY_ENDPOINT_CACHE_SECONDS; a test event is
        # the client's way to know its endpoint is live (and makes notify read it at once)
        for endpoint_id in (std_id, meta_id):
            status, _ = await api(
                stack, account.api_key, "POST", f"/v1/webhook-endpoints/{endpoint_id}/test"
            )
            assert status == 202

        async def both_tested() -> bool | int:
            got = len(receiver.at("std")) + len(receiver.at("meta"))
            return True if got >= 2 else got

        await eventually(both_tested, within=60, what="the endpoints' test events")
        test_body = json.loads(receiver.at("meta")[0][0])
        assert test_body["entry"][0]["changes"][0]["field"] == "hala_endpoint_test"
        number = account.numbers[0]
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{stack.url('ingest')}/v1/messages",
                headers={"Authorization": f"Bearer {account.api_key}"},
                json={
                    "from": number,
                    "to": RECIPIENT,
                    "type": "template",
                    "template": {
                        "name": "receipt",
                        "language": {"code": "en_US"},
                        "components": [
                            {"type": "body", "parameters": [{"type": "text", "text": "A-1"}]}
                        ],
                    },
                    "client_reference": "order-42",
                    "biz_opaque_callback_data": "crm-42",
                },
            ) as resp,
        ):
            sent = await resp.json()
            assert resp.status == 202, sent
        message_id = sent["id"]

        def standard_events() -> dict[str, dict[str, Any]]:
            return {
                e["type"]: e
                for e in (
                    Webhook(secret).verify(body, headers) for body, headers in receiver.at("std")
                )
            }

        async def statuses_heard() -> bool | list[str]:
            types = set(standard_events())
            wanted = {"message.accepted", "message.sent", "message.delivered", "message.read"}
            return True if wanted <= types else sorted(types)

        await eventually(statuses_heard, within=90, what="accepted, sent, delivered, read")
        events = standard_events()
        for kind in ("accepted", "sent", "delivered", "read"):
            data = events[f"message.{kind}"]["data"]
            assert data["message_id"] == message_id and data["status"] == kind
            assert data["client_reference"] == "order-42"
            assert data["biz_opaque_callback_data"] == "crm-42"
        wamid = events["message.sent"]["data"]["wamid"]

        reply = await stack.sim(
            "POST",
            "/_sim/inbound",
            json={
                "phone_number_id": number,
                "from": RECIPIENT.lstrip("+"),
                "text": "thanks!",
                "context_message_id": wamid,
            },
        )

        async def reply_heard() -> bool | list[str]:
            return True if "message.received" in standard_events() else sorted(standard_events())

        await eventually(reply_heard, within=60, what="message.received")
        received = standard_events()["message.received"]["data"]
        assert (received["wamid"], received["type"]) == (reply["wamid"], "text")
        assert received["content"]["body"] == "thanks!"
        assert received["context_wamid"] == wamid

        # the meta endpoint: Meta's envelope, Meta's signature under the endpoint's secret
        def meta_items() -> list[dict[str, Any]]:
            items = []
            for body, headers in receiver.at("meta"):
                expected = (
                    "sha256=" + hmac.new(meta_secret.encode(), body, hashlib.sha256).hexdigest()
                )
                assert hmac.compare_digest(headers["x-hub-signature-256"], expected)
                Webhook(meta_secret).verify(body, headers)
                payload = json.loads(body)
                assert payload["object"] == "whatsapp_business_account"
                [entry] = payload["entry"]
                [change] = entry["changes"]
                if change["field"] == "hala_endpoint_test":
                    continue
                assert entry["id"] == account.waba_id and change["field"] == "messages"
                items.append(change["value"])
            return items

        async def meta_heard() -> bool | int:
            items = meta_items()
            statuses = {s["status"] for v in items for s in v.get("statuses", [])}
            inbound = [m for v in items for m in v.get("messages", [])]
            return True if {"sent", "delivered", "read"} <= statuses and inbound else len(items)

        await eventually(meta_heard, within=60, what="Meta's payloads at the meta endpoint")
        for value in meta_items():
            for status in value.get("statuses", []):
                assert status["id"] == message_id
                assert status["biz_opaque_callback_data"] == "crm-42"
            for message in value.get("messages", []):
                assert message["id"] == reply["wamid"]
                assert message["context"]["id"] == message_id

        # the client's own view: every attempt, a test event now, a replay with the original id
        status, page = await api(
            stack, account.api_key, "GET", f"/v1/webhook-endpoints/{std_id}/deliveries"
        )
        assert status == 200 and len(page["data"]) >= 5
        assert {a["http_status"] for a in page["data"]} == {200}
        status, _ = await api(
            stack, account.api_key, "POST", f"/v1/webhook-endpoints/{std_id}/test"
        )
        assert status == 202
        replayed = events["message.delivered"]["id"]
        status, _ = await api(
            stack,
            account.api_key,
            "POST",
            f"/v1/webhook-endpoints/{std_id}/replay",
            {"event_id": replayed},
        )
        assert status == 202

        async def test_and_replay_heard() -> bool | list[str]:
            ids = [headers["webhook-id"] for _, headers in receiver.at("std")]
            tests = [b for b, _ in receiver.at("std") if b"endpoint.test" in b]
            return True if len(tests) == 2 and ids.count(replayed) == 2 else ids

        await eventually(test_and_replay_heard, within=60, what="the test event and the replay")

        # a template rejection: one mail to the account's addresses
        await stack.sim(
            "POST",
            "/_sim/templates/status",
            json={
                "waba_id": account.waba_id,
                "name": "promo",
                "language": "en_US",
                "status": "REJECTED",
                "reason": "INVALID_FORMAT",
            },
        )

        mails: list[Any] = []

        async def mailed() -> bool:
            while not mailbox.messages.empty():
                mails.append(mailbox.messages.get_nowait())
            return bool(mails)

        await eventually(mailed, within=60, every=0.2, what="the rejection mail")
        await asyncio.sleep(0)
        assert [m["Subject"] for m in mails] == ['Template "promo" rejected']
        assert set(mails[0]["To"].split(", ")) == {"ops0@example.com", "alerts@example.com"}
    finally:
        mailbox.controller.stop()
        await receiver.stop()
