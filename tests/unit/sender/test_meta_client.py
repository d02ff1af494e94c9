"""The Graph API adapter: the request it makes and the four outcomes it tells apart, against a
tiny in-test fake of Meta's endpoint (loopback HTTP, no broker, no database)."""

import asyncio
import socket
from typing import Any

import orjson
import pytest
from aiohttp import web

from services.sender.meta_client import (
    Accepted,
    Ambiguous,
    MetaClient,
    NotSent,
    Refused,
    parse_response,
    request_body,
    targets_to_resolve,
    with_targets,
)
from shared.messages import SEND_APPROVED, SEND_REQUESTED, SendApproved

EVENT: SendApproved = SEND_APPROVED.decode(orjson.dumps(SEND_APPROVED.examples[0]))


def test_the_request_body_carries_the_message_and_our_id_as_callback_data() -> None:
    body = request_body(EVENT)
    assert body == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": EVENT.recipient,
        "type": "template",
        "template": EVENT.content,
        "biz_opaque_callback_data": EVENT.message_id,
    }


def _event(**overrides: object) -> SendApproved:
    return SEND_APPROVED.decode(orjson.dumps({**SEND_APPROVED.examples[0], **overrides}))


def test_a_reply_carries_its_context_and_the_clients_callback_data_stays_with_us() -> None:
    event = _event(
        message_type="image",
        category="service",
        callback_data="crm-7",
        content={"link": "https://example.com/p.jpg", "caption": None},
        reply_to="wamid.IN",
    )
    assert request_body(event) == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": event.recipient,
        "type": "image",
        "image": {"link": "https://example.com/p.jpg", "caption": None},
        "biz_opaque_callback_data": event.message_id,
        "context": {"message_id": "wamid.IN"},
    }


def test_every_send_requested_example_becomes_a_body_of_metas_shape() -> None:
    assert len(SEND_REQUESTED.examples) >= 11  # one per message type
    for example in SEND_REQUESTED.examples:
        event = _event(**example)
        body = request_body(event)
        assert body[body["type"]] == example["content"]
        assert body["biz_opaque_callback_data"] == example["message_id"]


def test_only_our_own_ids_are_resolved_and_each_is_replaced_by_its_wamid() -> None:
    reaction = _event(
        message_type="reaction",
        category="service",
        content={"message_id": "msg_a", "emoji": ""},
        reply_to=None,
    )
    reply = _event(message_type="text", category="service", content={"body": "x"}, reply_to="msg_b")
    to_wamids = _event(
        message_type="reaction",
        category="service",
        content={"message_id": "wamid.X", "emoji": "x"},
        reply_to="wamid.Y",
    )
    assert targets_to_resolve(reaction) == ["msg_a"]
    assert targets_to_resolve(reply) == ["msg_b"]
    assert targets_to_resolve(to_wamids) == []
    assert with_targets(reaction, {"msg_a": "wamid.A"}).content == {
        "message_id": "wamid.A",
        "emoji": "",
    }
    resolved = with_targets(reply, {"msg_b": "wamid.B"})
    assert resolved.reply_to == "wamid.B" and resolved.content == {"body": "x"}
    assert reply.reply_to == "msg_b"  # events are frozen: a new one is made


def test_a_success_yields_the_wamid_and_pacing_status() -> None:
    body = orjson.dumps(
        {
            "messaging_product": "whatsapp",
            "contacts": [{"input": "+447911123456", "wa_id": "447911123456"}],
            "messages": [{"id": "wamid.X", "message_status": "accepted"}],
        }
    )
    assert parse_response(200, body) == Accepted("wamid.X", "accepted")
    no_status = orjson.dumps({"messages": [{"id": "wamid.Y"}]})
    assert parse_response(200, no_status) == Accepted("wamid.Y", None)


def test_metas_error_envelope_is_a_refusal_with_code_title_and_details() -> None:
    body = orjson.dumps(
        {
            "error": {
                "message": "(#132001) Template name does not exist",
                "type": "OAuthException",
                "code": 132001,
                "error_data": {
                    "messaging_product": "whatsapp",
                    "details": "template name (x) does not exist",
                },
                "fbtrace_id": "Az8",
            }
        }
    )
    assert parse_response(404, body) == Refused(
        132001, "Template name does not exist", "template name (x) does not exist", 404
    )
    odd = orjson.dumps({"error": {"message": "x", "code": 131000, "error_data": "flat"}})
    assert parse_response(500, odd) == Refused(131000, "x", "", 500)


def test_answers_that_may_hide_a_delivery_are_ambiguous() -> None:
    assert isinstance(parse_response(502, b"<html>Bad gateway</html>"), Ambiguous)
    assert isinstance(parse_response(500, b""), Ambiguous)
    assert isinstance(parse_response(200, b"not json"), Ambiguous)
    assert isinstance(parse_response(200, orjson.dumps({"messages": []})), Ambiguous)


def test_refusals_without_an_envelope_are_told_apart_by_status() -> None:
    assert isinstance(parse_response(429, b"slow down"), NotSent)
    refused = parse_response(404, b"no such route")
    assert isinstance(refused, Refused) and refused.code is None


class FakeMeta:
    """Answers the send endpoint the way the test says, and remembers what it got."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], Any]] = []
        self.behaviour = "accept"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        payload = await request.json()
        self.requests.append((request.path, dict(request.headers), payload))
        if self.behaviour == "accept":
            return web.json_response(
                {"messaging_product": "whatsapp", "messages": [{"id": "wamid.OK"}]}
            )
        if self.behaviour == "refuse":
            return web.json_response(
                {"error": {"message": "(#131047) Re-engagement message", "code": 131047}},
                status=400,
            )
        if self.behaviour == "hang":
            await asyncio.Event().wait()
        if self.behaviour == "drop":
            assert request.transport is not None
            request.transport.close()
            await asyncio.sleep(0)
        return web.Response(status=503, text="upstream unavailable")


@pytest.fixture
async def fake_meta(aiohttp_server: Any) -> Any:
    fake = FakeMeta()
    app = web.Application()
    app.router.add_post("/{version}/{number}/messages", fake.handle)
    server = await aiohttp_server(app)
    fake.url = str(server.make_url("")).rstrip("/")  # type: ignore[attr-defined]
    return fake


async def test_a_send_posts_to_the_number_with_the_bearer_token(fake_meta: Any) -> None:
    client = MetaClient(fake_meta.url, "v24.0", timeout_seconds=5)
    try:
        outcome = await client.send("106540352242922", "EAAtoken", EVENT)
    finally:
        await client.close()
    assert outcome == Accepted("wamid.OK", None)
    path, headers, payload = fake_meta.requests[0]
    assert path == "/v24.0/106540352242922/messages"
    assert headers["Authorization"] == "Bearer EAAtoken"
    assert payload["biz_opaque_callback_data"] == EVENT.message_id


@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [("refuse", Refused), ("drop", Ambiguous), ("fail", Ambiguous), ("hang", Ambiguous)],
)
async def test_each_way_meta_can_answer_maps_to_its_outcome(
    fake_meta: Any, behaviour: str, expected: type
) -> None:
    fake_meta.behaviour = behaviour
    client = MetaClient(fake_meta.url, "v24.0", timeout_seconds=0.2)
    try:
        outcome = await client.send("1", "t", EVENT)
    finally:
        await client.close()
    assert isinstance(outcome, expected), outcome
    if isinstance(outcome, Refused):
        assert outcome.code == 131047


async def test_a_refused_connection_is_not_sent_and_safe_to_retry() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once the socket closes
    client = MetaClient(f"http://127.0.0.1:{port}", "v24.0", timeout_seconds=1)
    try:
        outcome = await client.send("1", "t", EVENT)
    finally:
        await client.close()
    assert isinstance(outcome, NotSent)
