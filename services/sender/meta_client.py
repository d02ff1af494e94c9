"""Meta's Graph API send endpoint, as the sender needs it: one POST, four possible outcomes.

Meta has no idempotency key, so what matters is whether a failed request could have reached Meta:
  * Accepted     - 2xx with a wamid;
  * Refused      - Meta answered with its error envelope (the code decides, services/sender/core);
  * NotSent      - the request never left (connection refused, connect timeout): safe to resend;
  * Ambiguous    - it may have been processed (read timeout, connection lost after sending, a 5xx
                   without Meta's envelope): never resent, the outcome is `unknown` until a status
                   webhook (matched by biz_opaque_callback_data) says more.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec
import orjson

from services.sender import metrics
from services.sender.core import classify
from shared.messages import SendApproved


@dataclass(frozen=True)
class Accepted:
    wamid: str
    message_status: str | None  # accepted | held_for_quality_assessment | paused


@dataclass(frozen=True)
class Refused:
    code: int | None  # None: an HTTP refusal without Meta's envelope (e.g. a proxy's 404)
    title: str
    details: str
    http_status: int


@dataclass(frozen=True)
class NotSent:
    reason: str


@dataclass(frozen=True)
class Ambiguous:
    reason: str


SendOutcome = Accepted | Refused | NotSent | Ambiguous


def request_body(event: SendApproved) -> dict[str, Any]:
    """The Graph API body for an approved message; our message id rides along as the callback
    data Meta echoes in status webhooks (the client's own callback data stays with us). A reply
    quotes `reply_to`, already a wamid (see `with_targets`)."""
    body: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": event.recipient,
        "type": event.message_type,
        event.message_type: event.content,
        "biz_opaque_callback_data": event.message_id,
    }
    if event.reply_to:
        body["context"] = {"message_id": event.reply_to}
    return body


# Our own message ids; anything else a reply or reaction names is a wamid.
OUR_ID_PREFIX = "msg_"


def targets_to_resolve(event: SendApproved) -> list[str]:
    """Our message ids the message names (the quoted message, the reacted-to message) that
    ingest could not yet replace by their wamid: each must be looked up before the call."""
    refs = [event.reply_to] if event.reply_to else []
    if event.message_type == "reaction" and isinstance(event.content, dict):
        refs.append(str(event.content.get("message_id", "")))
    return [ref for ref in refs if ref.startswith(OUR_ID_PREFIX)]


def with_targets(event: SendApproved, wamids: dict[str, str]) -> SendApproved:
    """The message with those ids replaced by their wamids (every one must be in `wamids`)."""
    reply_to = wamids.get(event.reply_to or "", event.reply_to)
    content = event.content
    if (
        event.message_type == "reaction"
        and isinstance(content, dict)
        and content.get("message_id") in wamids
    ):
        content = {**content, "message_id": wamids[content["message_id"]]}
    return msgspec.structs.replace(event, reply_to=reply_to, content=content)


_TITLE_PREFIX = re.compile(r"^\(#\d+\)\s*")


def parse_response(status: int, body: bytes) -> SendOutcome:
    """Turn Meta's answer into an outcome (no I/O: tested directly)."""
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        data = None
    if 200 <= status < 300:
        try:
            message = data["messages"][0]  # type: ignore[index]
            return Accepted(str(message["id"]), message.get("message_status"))
        except (KeyError, IndexError, TypeError):
            # Meta said yes but we cannot tell to what: the message may well be on its way.
            return Ambiguous("success_without_wamid")
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and isinstance(error.get("code"), int):
        error_data = error.get("error_data")
        details = error_data.get("details", "") if isinstance(error_data, dict) else ""
        title = _TITLE_PREFIX.sub("", str(error.get("message", "")))
        return Refused(error["code"], title, str(details or ""), status)
    if status >= 500:
        return Ambiguous(f"http_{status}_without_envelope")
    if status == 429:
        # Refused before processing by something in front of Meta: safe to send again later.
        return NotSent("http_429_without_envelope")
    return Refused(None, f"HTTP {status}", "", status)


class MetaClient:
    """One aiohttp session for the process: connections to Meta are reused."""

    def __init__(
        self,
        base_url: str,
        graph_version: str,
        timeout_seconds: float,
        connections_per_host: int = 100,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self._base = f"{base_url.rstrip('/')}/{graph_version}"
        self._timeout = aiohttp.ClientTimeout(
            total=timeout_seconds, sock_connect=min(timeout_seconds, 5.0)
        )
        # Our own gate in front of the pool: time spent waiting for a free connection must not
        # count against the request timeout, or a busy pool would make sends look ambiguous.
        self._slots = asyncio.Semaphore(connections_per_host)
        self._session = session or aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=0, limit_per_host=connections_per_host, keepalive_timeout=15
            ),
            json_serialize=lambda obj: orjson.dumps(obj).decode(),
        )

    async def close(self) -> None:
        await self._session.close()

    async def send(
        self, phone_number_id: str, access_token: str, event: SendApproved
    ) -> SendOutcome:
        url = f"{self._base}/{phone_number_id}/messages"
        headers = {"Authorization": f"Bearer {access_token}", "Content-Type": "application/json"}
        payload = orjson.dumps(request_body(event))
        async with self._slots:
            started = time.perf_counter()
            outcome = await self._post(url, headers, payload)
            metrics.META_REQUEST_DURATION.observe(time.perf_counter() - started)
        _count(outcome)
        return outcome

    async def _post(self, url: str, headers: dict[str, str], payload: bytes) -> SendOutcome:
        try:
            async with self._session.post(
                url, data=payload, headers=headers, timeout=self._timeout, allow_redirects=False
            ) as response:
                body = await response.read()
                return parse_response(response.status, body)
        except aiohttp.ConnectionTimeoutError:
            return NotSent("connect_timeout")
        except aiohttp.ClientConnectorError as exc:  # refused, DNS, TLS: nothing was sent
            return NotSent(f"connect_failed:{type(exc).__name__}")
        except TimeoutError:
            return Ambiguous("timeout")
        except aiohttp.ClientError as exc:  # reset, disconnect, broken payload: after sending
            return Ambiguous(f"connection_lost:{type(exc).__name__}")


def _count(outcome: SendOutcome) -> None:
    if isinstance(outcome, Accepted):
        metrics.META_REQUESTS.labels("accepted", "none").inc()
    elif isinstance(outcome, Refused):
        error_class = classify(outcome.code).error_class if outcome.code is not None else "final"
        metrics.META_REQUESTS.labels("rejected", str(error_class)).inc()
    elif isinstance(outcome, NotSent):
        metrics.META_REQUESTS.labels("unreachable", "none").inc()
    else:
        metrics.META_REQUESTS.labels("ambiguous", "none").inc()
