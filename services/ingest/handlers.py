"""ingest's HTTP handlers: parse -> core -> lookups, insert, publish -> respond.

`Ingest.send` is the one flow behind both send routes (/v1 and Meta's own shape); the routes only
differ in how they read the request and how they answer.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from services.ingest import conversations, core, in_flight, passthrough
from services.ingest.cache import RecentMessages
from services.ingest.errors import ERROR_CODES, meta_code_of, reject
from services.ingest.limiter import ACCOUNT_ID
from services.ingest.metrics import (
    IDEMPOTENT_REPLAYS,
    IN_FLIGHT_REFUSALS,
    MESSAGES_ACCEPTED,
    PUBLISH_UNCONFIRMED,
    REJECTIONS,
)
from services.ingest.publisher import Publisher
from services.ingest.repository import (
    CachedDirectory,
    CachedWindows,
    DuplicateMessage,
    IdempotencyStore,
    Inbox,
    MessageStore,
)
from services.ingest.send_rules import SendRules
from shared.clock import Clock
from shared.errors import RECORD_WRITTEN_UNKNOWN, DependencyUnavailable, ServiceError
from shared.http import json_response
from shared.json_depth import MAX_JSON_DEPTH, too_deep
from shared.logging import get_logger
from shared.pricing import RateCard

log = get_logger("ingest")

REPLAY_HEADER = "Idempotent-Replay"


@dataclass(frozen=True)
class SendOutcome:
    doc: dict[str, Any]
    replayed: bool


class Ingest:
    """The send flow and the reads, over injected adapters (fakes in unit tests)."""

    def __init__(
        self,
        *,
        directory: CachedDirectory,
        idempotency: IdempotencyStore,
        messages: MessageStore,
        recent: RecentMessages,
        publisher: Publisher,
        clock: Clock,
        rate_card: RateCard,
        inbox: Inbox,
        windows: CachedWindows,
        send_rules: SendRules,
    ) -> None:
        self.directory = directory
        self.send_rules = send_rules
        self.inbox = inbox
        self.windows = windows
        self.idempotency = idempotency
        self.messages = messages
        self.recent = recent
        self.publisher = publisher
        self.clock = clock
        self.rate_card = rate_card

    async def authenticate(self, authorization: str | None) -> str:
        """The caller's account id."""
        api_key = core.api_key_from_header(authorization)
        account_id = core.check_api_key(await self.directory.api_key(core.hash_api_key(api_key)))
        core.check_account(await self.directory.account(account_id))
        return account_id

    async def own_phone_number(self, account_id: str, phone_number_id: str) -> dict[str, Any]:
        return core.check_phone_number(
            await self.directory.phone_number(phone_number_id), account_id, phone_number_id
        )

    async def send(
        self,
        account_id: str,
        request: core.SendRequest,
        idempotency_key: str | None,
        phone: dict[str, Any] | None = None,
    ) -> SendOutcome:
        """Checks, then the durable publish (the 202 follows it). status stores the message's
        document from the event; a keyed request first stores its idempotency record.
        `phone`: the sending number's document, when the caller has already checked it."""
        now_ms = self.clock.now_ms()
        if phone is None:
            phone = await self.own_phone_number(account_id, request.phone_number_id)
        # A national `to` is read in the business number's country (known only now on /v1).
        request = core.with_recipient(
            request, core.region_of_display_number(phone.get("display_phone_number"))
        )
        # Only a keyed request is ever compared with another: a keyless one needs no hash.
        body_hash: str | None = None
        # A retry is answered before the business checks: its credit is already reserved and
        # its template may have changed since, but the original answer still stands.
        if idempotency_key is not None:
            body_hash = core.request_hash(request)
            earlier = await self._earlier(account_id, idempotency_key, body_hash, now_ms)
            if earlier is not None:
                return await self._replay(earlier)

        category = "service"
        if request.message_type != "template":
            await self._check_window(account_id, request)
        else:
            template = await self.directory.template(
                phone["waba_id"], request.template_name, request.template_language
            )
            category = core.check_template(template, request)
        # the account's holds, block list and opt-outs (services/ingest/send_rules.py)
        await self.send_rules.check(
            account_id, request.phone_number_id, request.recipient or "", category
        )
        price = self.rate_card.price(category, request.recipient_region)
        if not core.has_credit(await self.directory.balance(account_id), price):
            # The cached figure may predate a top-up: only a fresh one may refuse.
            if not core.has_credit(await self.directory.balance(account_id, fresh=True), price):
                raise core.insufficient_credit(price)
        await self._check_in_flight(account_id)

        request = await self._resolve_refs(account_id, request)
        message_id = (
            core.keyed_message_id(account_id, idempotency_key, now_ms)
            if idempotency_key is not None
            else core.new_message_id(now_ms, os.urandom(10))
        )
        event = core.send_requested(
            message_id=message_id,
            account_id=account_id,
            request=request,
            phone=phone,
            category=category,
            now_ms=now_ms,
        )
        doc = core.accepted_message(event, request)
        if idempotency_key is not None and body_hash is not None:
            try:
                await self.idempotency.insert(
                    core.idempotency_record(doc, idempotency_key, body_hash, now_ms)
                )
            except DuplicateMessage:
                # A concurrent request with the same key stored first: answer as its retry.
                earlier = await self._earlier(account_id, idempotency_key, body_hash, now_ms)
                if earlier is None:
                    raise
                return await self._replay(earlier)
        self.directory.note_spent(account_id, price)
        try:
            await self.publisher.send_requested(event)
        except DependencyUnavailable as exc:
            if exc.details.get("record_written") != RECORD_WRITTEN_UNKNOWN:
                raise  # never written: a plain 503, sending again is safe
            PUBLISH_UNCONFIRMED.inc()
            raise core.publish_unconfirmed(exc, message_id) from exc
        self.recent.remember(doc)
        _accepted_counter(request.message_type).inc()
        return SendOutcome(doc, replayed=False)

    async def _check_in_flight(self, account_id: str) -> None:
        """The account's cap on messages in flight (in_flight.py), from the cached balance."""
        balance = await self.directory.balance(account_id)
        if in_flight.at_cap(balance):
            assert balance is not None
            IN_FLIGHT_REFUSALS.inc()
            raise in_flight.too_many_in_flight(balance, self.directory.ttl_seconds)

    async def _check_window(self, account_id: str, request: core.SendRequest) -> None:
        """A free-form message needs the contact's 24 h window open (unless the account
        switched the check off): refused before anything is reserved or sent."""
        if not conversations.window_enforced(await self.directory.account(account_id)):
            return
        window = await self.windows.window(
            request.phone_number_id, conversations.wa_id_candidates(request.recipient or "")
        )
        conversations.check_window(window, request.message_type, enforced=True)

    async def _resolve_refs(self, account_id: str, request: core.SendRequest) -> core.SendRequest:
        """Our message ids named by a reply or a reaction must be the account's; those already
        sent go out as their wamid (the sender resolves the others just before sending)."""
        wamids: dict[str, str] = {}
        for ref in core.our_message_refs(request):
            wamid = core.check_referenced_message(await self.message(account_id, ref), ref)
            if wamid is not None:
                wamids[ref] = wamid
        return core.with_wamids(request, wamids)

    async def message(self, account_id: str, message_id: str) -> dict[str, Any] | None:
        """The stored document, or the accepted message status has not stored yet."""
        doc = await self.messages.get(account_id, message_id)
        return doc if doc is not None else self.recent.get(account_id, message_id)

    async def _earlier(
        self, account_id: str, key: str, body_hash: str, now_ms: int
    ) -> dict[str, Any] | None:
        records = await self.idempotency.find(core.idempotency_record_ids(account_id, key, now_ms))
        return core.message_to_replay(
            [core.message_of_record(r) for r in records], body_hash, now_ms
        )

    async def _replay(self, doc: dict[str, Any]) -> SendOutcome:
        # No document yet: the first attempt may have stopped between its record and its
        # publish. Publishing again is safe, consumers dedupe by message id.
        if await self.messages.get(doc["account_id"], doc["_id"]) is None:
            await self.publisher.send_requested(core.send_requested_event(doc))
        IDEMPOTENT_REPLAYS.inc()
        return SendOutcome(doc, replayed=True)


@functools.cache
def _accepted_counter(message_type: str) -> Any:
    # labels() builds its key under a lock on every call; the types are a closed set.
    return MESSAGES_ACCEPTED.labels(message_type)


async def read_body(request: web.Request) -> bytes:
    """The body's bytes, within the size and nesting limits (decoding and validating is one
    msgspec pass, in core)."""
    if request.content_length is not None and request.content_length > core.MAX_BODY_BYTES:
        raise _too_large()
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise _too_large() from None
    if len(raw) > core.MAX_BODY_BYTES:
        raise _too_large()
    if too_deep(raw):  # every decoder recurses: refused before any of them sees it
        raise reject(
            "nesting_too_deep",
            f"arrays and objects in the body are nested more than {MAX_JSON_DEPTH} levels deep",
            limit=MAX_JSON_DEPTH,
        )
    return raw


def _too_large() -> ServiceError:
    return reject(
        "payload_too_large",
        f"the request body exceeds {core.MAX_BODY_BYTES} bytes",
        limit=core.MAX_BODY_BYTES,
    )


# A status call on Meta's messages endpoint (mark-as-read, typing): (account id, the path's
# phone number id, the body) -> Meta's answer.
StatusCall = Callable[[str, str, bytes], Awaitable[dict[str, Any]]]


class Handlers:
    def __init__(self, ingest: Ingest, status_call: StatusCall | None = None) -> None:
        self.ingest = ingest
        self.status_call = status_call

    async def post_message(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        try:
            account_id = await self._account_id(request)
            send_request = core.parse_send_request(await read_body(request))
            key = core.parse_idempotency_key(request.headers.get("Idempotency-Key"))
            outcome = await self.ingest.send(account_id, send_request, key)
        except ServiceError as exc:
            _log_rejection("v1", exc, started)
            raise
        _log_accepted("v1", outcome, started)
        return json_response(
            core.accepted_response(outcome.doc),
            status=202,
            headers={REPLAY_HEADER: "true"} if outcome.replayed else None,
        )

    async def post_meta_message(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        phone_number_id = request.match_info["phone_number_id"]
        try:
            account_id = await self._account_id(request)
            phone = await self.ingest.own_phone_number(account_id, phone_number_id)
            raw = await read_body(request)
            if self.status_call is not None and passthrough.is_status_call(raw):
                # Not a send: mark-as-read (and typing), answered with Meta's own answer.
                return await self._status_call(self.status_call, account_id, phone_number_id, raw)
            send_request = core.parse_meta_request(
                raw,
                phone_number_id,
                core.region_of_display_number(phone.get("display_phone_number")),
            )
            key = core.parse_idempotency_key(request.headers.get("Idempotency-Key"))
            outcome = await self.ingest.send(account_id, send_request, key, phone)
        except ServiceError as exc:
            _log_rejection("meta", exc, started)
            return meta_error_response(exc)
        except Exception:
            log.exception("unhandled_error", route="meta")
            return meta_error_response(reject("internal_error", "internal error"))
        _log_accepted("meta", outcome, started)
        return json_response(
            core.meta_accepted_response(outcome.doc),
            status=200,
            headers={REPLAY_HEADER: "true"} if outcome.replayed else None,
        )

    async def _account_id(self, request: web.Request) -> str:
        """The caller's account: as the rate limit middleware found it (a valid key of an
        active account, looked up a moment ago), else checked here."""
        account_id = request.get(ACCOUNT_ID)
        if account_id is not None:
            return account_id
        return await self.ingest.authenticate(request.headers.get("Authorization"))

    @staticmethod
    async def _status_call(
        call: StatusCall, account_id: str, phone_number_id: str, raw: bytes
    ) -> web.Response:
        try:
            return json_response(await call(account_id, phone_number_id, raw))
        except ServiceError as exc:
            log.info(
                "passthrough_call_handled",
                route="meta",
                kind="read",
                outcome="rejected",
                error_code=exc.code,
            )
            return meta_error_response(exc)

    async def get_message(self, request: web.Request) -> web.Response:
        account_id = await self.ingest.authenticate(request.headers.get("Authorization"))
        doc = await self.ingest.message(account_id, request.match_info["message_id"])
        if doc is None:  # also for other accounts' messages: their existence is not revealed
            raise reject("not_found", "no such message")
        reserve, settle = await self.ingest.messages.ledger_entries(doc["_id"])
        price = core.price_view(reserve, settle, self.ingest.rate_card.currency)
        return json_response(core.message_view(doc, price=price))

    async def list_messages(self, request: web.Request) -> web.Response:
        account_id = await self.ingest.authenticate(request.headers.get("Authorization"))
        query = core.parse_list_query(dict(request.query))
        docs = await self.ingest.messages.list(account_id, query)
        entries = await self.ingest.messages.ledger_entries_of(core.page_ids(docs, query.limit))
        currency = self.ingest.rate_card.currency
        prices = {
            message_id: core.price_view(reserve, settle, currency)
            for message_id, (reserve, settle) in entries.items()
        }
        return json_response(core.page(docs, query.limit, prices))

    async def get_balance(self, request: web.Request) -> web.Response:
        account_id = await self.ingest.authenticate(request.headers.get("Authorization"))
        balance = await self.ingest.directory.balance(account_id, fresh=True)
        return json_response(core.balance_view(balance, self.ingest.rate_card.currency))


def meta_error_response(exc: ServiceError) -> web.Response:
    """An error in Meta's Graph envelope: Meta's own, as it came, when Meta refused a
    pass-through call; else ours translated (with Retry-After when the number's pace said no)."""
    relayed = passthrough.relayed_meta_error(exc.details)
    if relayed is not None:
        return json_response(relayed[1], status=relayed[0])
    spec = ERROR_CODES.get(exc.code, ERROR_CODES["internal_error"])
    body = core.meta_error_body(
        exc.code, exc.message, exc.details, meta_code_of(exc), trace_id=os.urandom(9).hex()
    )
    return json_response(body, status=spec.meta_http_status, headers=retry_after(exc))


def retry_after(exc: ServiceError) -> dict[str, str] | None:
    seconds = exc.details.get("retry_after_seconds")
    return {"Retry-After": str(seconds)} if isinstance(seconds, int) else None


def _log_rejection(route: str, exc: ServiceError, started: float) -> None:
    REJECTIONS.labels(exc.code if exc.code in ERROR_CODES else "other").inc()
    log.info(
        "send_request_handled",
        route=route,
        outcome="rejected",
        error_code=exc.code,
        duration_ms=round((time.perf_counter() - started) * 1000, 2),
    )


def _log_accepted(route: str, outcome: SendOutcome, started: float) -> None:
    # Debug, not info: a line per accepted message cost ~8 % of a request's CPU, the counts are
    # in the metrics and each message's history in its document; and a log of every message
    # would outlive the retention the messages collection keeps. Rejections stay at info.
    if not log.is_enabled_for(logging.DEBUG):
        return  # not even the arguments: this runs on every accepted request
    doc = outcome.doc
    log.debug(
        "send_request_handled",
        route=route,
        outcome="replayed" if outcome.replayed else "accepted",
        account_id=doc["account_id"],
        message_id=doc["_id"],
        message_type=doc["type"],
        duration_ms=round((time.perf_counter() - started) * 1000, 2),
    )
