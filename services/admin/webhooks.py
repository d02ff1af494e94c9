"""`hala webhooks`: an operator manages a client's webhook endpoints on its behalf, with exactly
the rules of the client API (shared/webhook_endpoints.py): the same URL and event checks, the
same secrets (shown once, stored Fernet-encrypted under HALA_TOKEN_KEYS), the same 24-hour
rotation overlap, soft deletes, and test events and replays published for notify.

Async functions over a database, a producer and a token vault passed in (like commands.py), so
tests call them without a subprocess.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from aiokafka import AIOKafkaProducer
from pymongo import DESCENDING
from pymongo.asynchronous.database import AsyncDatabase

from services.admin.commands import get_account
from shared import webhook_endpoints as rules
from shared.clock import Clock, SystemClock
from shared.collections import DELIVERY_ATTEMPTS, ENDPOINT_STATES, WEBHOOK_ENDPOINTS
from shared.errors import InvalidRequest, NotFound, PermanentError
from shared.ids import new_id
from shared.kafka import publish
from shared.messages import NOTIFY_REQUESTED
from shared.secrets import TokenVault

Db = AsyncDatabase[dict[str, Any]]
Doc = dict[str, Any]
_SYSTEM_CLOCK = SystemClock()
SECRET_NOTE = "store this secret now: it is not shown again"


@contextmanager
def _as_errors() -> Iterator[None]:
    """A shared rule's refusal as the CLI's error (printed `error: message (code)`)."""
    try:
        yield
    except rules.EndpointRuleError as exc:
        details = dict(exc.details)
        if exc.field is not None:
            details["field"] = exc.field
        kind = PermanentError if exc.code == "endpoint_limit_reached" else InvalidRequest
        raise kind(exc.message, code=exc.code, details=details) from None


async def _endpoint(db: Db, account_id: str, endpoint_id: str) -> Doc:
    found = rules.owned(await db[WEBHOOK_ENDPOINTS].find_one({"_id": endpoint_id}), account_id)
    if found is None:
        raise NotFound(
            f"no webhook endpoint {endpoint_id} for account {account_id}",
            code="unknown_webhook_endpoint",
        )
    return dict(found)


async def _state(db: Db, endpoint_id: str) -> Doc | None:
    return await db[ENDPOINT_STATES].find_one({"_id": endpoint_id})


def _new_secret(
    vault: TokenVault, now_ms: int, random_bytes: Callable[[int], bytes]
) -> tuple[str, Doc]:
    secret = rules.new_secret(random_bytes(rules.SECRET_BYTES))
    return secret, rules.secret_entry(
        new_id(rules.SECRET_ID_PREFIX, now_ms), vault.encrypt(secret), now_ms
    )


# --- the endpoints --------------------------------------------------------------------------


async def list_endpoints(db: Db, account_id: str, *, clock: Clock = _SYSTEM_CLOCK) -> list[Doc]:
    """The account's endpoints (not deleted), newest first, with notify's health."""
    await get_account(db, account_id)
    docs = await (
        db[WEBHOOK_ENDPOINTS]
        .find({"account_id": account_id, "deleted_at": None})
        .sort([("created_at", DESCENDING), ("_id", DESCENDING)])
        .to_list(None)
    )
    states = await asyncio.gather(*(_state(db, d["_id"]) for d in docs))
    now_ms = clock.now_ms()
    return [rules.endpoint_view(d, s, now_ms) for d, s in zip(docs, states, strict=True)]


async def create_endpoint(
    db: Db,
    vault: TokenVault,
    *,
    account_id: str,
    url: str,
    events: list[str],
    format: str = "standard",
    description: str = "",
    allow_loopback_http: bool = False,
    clock: Clock = _SYSTEM_CLOCK,
    random_bytes: Callable[[int], bytes] = os.urandom,
) -> Doc:
    await get_account(db, account_id)
    now_ms = clock.now_ms()
    secret, entry = _new_secret(vault, now_ms, random_bytes)
    with _as_errors():
        doc = rules.new_endpoint(
            endpoint_id=new_id(rules.ENDPOINT_ID_PREFIX, now_ms),
            account_id=account_id,
            url=url,
            events=events,
            format=format,
            description=description,
            secret=entry,
            now_ms=now_ms,
            allow_loopback_http=allow_loopback_http,
        )
        rules.check_room(
            await db[WEBHOOK_ENDPOINTS].count_documents(
                {"account_id": account_id, "deleted_at": None}
            )
        )
    await db[WEBHOOK_ENDPOINTS].insert_one(doc)
    return {
        "endpoint": rules.endpoint_view(doc, None, now_ms),
        "secret": secret,
        "note": SECRET_NOTE,
    }


async def show_endpoint(
    db: Db, account_id: str, endpoint_id: str, *, clock: Clock = _SYSTEM_CLOCK
) -> Doc:
    endpoint = await _endpoint(db, account_id, endpoint_id)
    return rules.endpoint_view(endpoint, await _state(db, endpoint_id), clock.now_ms())


async def update_endpoint(
    db: Db,
    account_id: str,
    endpoint_id: str,
    given: Mapping[str, Any],
    *,
    allow_loopback_http: bool = False,
    clock: Clock = _SYSTEM_CLOCK,
) -> Doc:
    """Change the given fields (url, events, enabled, description); enabling also re-enables
    an endpoint notify disabled."""
    endpoint = await _endpoint(db, account_id, endpoint_id)
    now_ms = clock.now_ms()
    with _as_errors():
        changes = rules.endpoint_update(
            given, now_ms=now_ms, allow_loopback_http=allow_loopback_http
        )
    await db[WEBHOOK_ENDPOINTS].update_one({"_id": endpoint_id}, {"$set": changes})
    return rules.endpoint_view({**endpoint, **changes}, await _state(db, endpoint_id), now_ms)


async def delete_endpoint(
    db: Db, account_id: str, endpoint_id: str, *, clock: Clock = _SYSTEM_CLOCK
) -> Doc:
    await _endpoint(db, account_id, endpoint_id)
    await db[WEBHOOK_ENDPOINTS].update_one(
        {"_id": endpoint_id}, {"$set": rules.deletion(clock.now_ms())}
    )
    return {"id": endpoint_id, "deleted": True}


async def rotate_secret(
    db: Db,
    vault: TokenVault,
    account_id: str,
    endpoint_id: str,
    *,
    clock: Clock = _SYSTEM_CLOCK,
    random_bytes: Callable[[int], bytes] = os.urandom,
) -> Doc:
    """A new secret, shown once; the previous one keeps signing for 24 hours."""
    endpoint = await _endpoint(db, account_id, endpoint_id)
    now_ms = clock.now_ms()
    secret, entry = _new_secret(vault, now_ms, random_bytes)
    changes = {
        "secrets": rules.rotated(list(endpoint.get("secrets", [])), entry, now_ms),
        "updated_at": now_ms,
    }
    await db[WEBHOOK_ENDPOINTS].update_one({"_id": endpoint_id}, {"$set": changes})
    return {
        "endpoint": rules.endpoint_view(
            {**endpoint, **changes}, await _state(db, endpoint_id), now_ms
        ),
        "secret": secret,
        "note": SECRET_NOTE,
    }


# --- deliveries, test events, replays ------------------------------------------------------


async def list_deliveries(db: Db, account_id: str, endpoint_id: str, limit: int = 50) -> list[Doc]:
    """The endpoint's latest delivery attempts, newest first."""
    await _endpoint(db, account_id, endpoint_id)
    docs = await (
        db[DELIVERY_ATTEMPTS]
        .find({"endpoint_id": endpoint_id})
        .sort([("at", DESCENDING), ("_id", DESCENDING)])
        .limit(limit)
        .to_list(None)
    )
    return [rules.attempt_view(d) for d in docs]


async def send_test(
    db: Db,
    producer: AIOKafkaProducer,
    account_id: str,
    endpoint_id: str,
    *,
    topic_prefix: str = "",
    clock: Clock = _SYSTEM_CLOCK,
) -> Doc:
    return await _request(db, producer, account_id, endpoint_id, None, topic_prefix, clock)


async def replay(
    db: Db,
    producer: AIOKafkaProducer,
    account_id: str,
    endpoint_id: str,
    *,
    since: int | None = None,
    until: int | None = None,
    event_id: str | None = None,
    topic_prefix: str = "",
    clock: Clock = _SYSTEM_CLOCK,
) -> Doc:
    """One event again, or the endpoint's events in [since, until) (ms; until: now)."""
    with _as_errors():
        replay_of = rules.replay(since=since, until=until, event_id=event_id, now_ms=clock.now_ms())
    return await _request(db, producer, account_id, endpoint_id, replay_of, topic_prefix, clock)


async def _request(
    db: Db,
    producer: AIOKafkaProducer,
    account_id: str,
    endpoint_id: str,
    replay_of: rules.Replay | None,
    topic_prefix: str,
    clock: Clock,
) -> Doc:
    await _endpoint(db, account_id, endpoint_id)
    now_ms = clock.now_ms()
    request = rules.notify_request(
        request_id=new_id(rules.NOTIFY_REQUEST_PREFIX, now_ms),
        account_id=account_id,
        endpoint_id=endpoint_id,
        now_ms=now_ms,
        replay_of=replay_of,
    )
    await publish(producer, NOTIFY_REQUESTED, request, topic_prefix)
    return {
        **rules.notify_request_view(request),
        "note": "notify delivers it shortly; see `hala webhooks deliveries`",
    }
