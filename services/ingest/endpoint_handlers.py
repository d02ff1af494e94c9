"""HTTP handlers of the webhook endpoint API (`/v1/webhook-endpoints...`): authenticate -> parse
-> services/ingest/endpoints.py (and the shared rules) -> store / publish -> respond.

Every route is the caller's account's only: an endpoint of another account (or a deleted one)
is 404. Secrets are made here from `os.urandom`, stored only Fernet-encrypted and shown once.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from aiohttp import web

from services.ingest import endpoints
from services.ingest.endpoint_store import EndpointStore
from services.ingest.errors import reject
from services.ingest.handlers import Ingest, read_body
from services.ingest.metrics import ENDPOINT_CHANGES, NOTIFY_REQUESTS
from services.ingest.publisher import NotifyRequests
from shared import webhook_endpoints as rules
from shared.http import json_response
from shared.ids import new_id
from shared.logging import get_logger
from shared.secrets import TokenVault

log = get_logger("ingest")

Doc = dict[str, Any]


class EndpointHandlers:
    def __init__(
        self,
        ingest: Ingest,
        store: EndpointStore,
        requests: NotifyRequests,
        vault: TokenVault | None,
        *,
        allow_loopback_http: bool,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.ingest = ingest
        self.store = store
        self.requests = requests
        self.vault = vault
        self.allow_loopback_http = allow_loopback_http
        self.random_bytes = random_bytes

    async def _account(self, request: web.Request) -> str:
        return await self.ingest.authenticate(request.headers.get("Authorization"))

    async def _endpoint(self, request: web.Request, account_id: str) -> Doc:
        endpoint_id = endpoints.check_endpoint_id(request.match_info["endpoint_id"])
        return endpoints.owned(await self.store.get(endpoint_id), account_id)

    def _new_secret(self, now_ms: int) -> tuple[str, Doc]:
        """(the secret, shown once; its stored entry, encrypted)."""
        if self.vault is None:
            raise reject(
                "internal_error",
                "this service cannot encrypt webhook secrets: HALA_TOKEN_KEYS is not set",
            )
        secret = rules.new_secret(self.random_bytes(rules.SECRET_BYTES))
        entry = rules.secret_entry(
            new_id(rules.SECRET_ID_PREFIX, now_ms), self.vault.encrypt(secret), now_ms
        )
        return secret, entry

    def _changed(self, action: str, account_id: str, endpoint_id: str) -> None:
        ENDPOINT_CHANGES.labels(action).inc()
        log.info(
            "webhook_endpoint_changed",
            action=action,
            account_id=account_id,
            endpoint_id=endpoint_id,
        )

    # --- the endpoints ---------------------------------------------------------------------

    async def create(self, request: web.Request) -> web.Response:
        account_id = await self._account(request)
        body = endpoints.parse_create(await read_body(request))
        now_ms = self.ingest.clock.now_ms()
        secret, entry = self._new_secret(now_ms)
        doc = endpoints.new_endpoint(
            body,
            account_id=account_id,
            endpoint_id=new_id(rules.ENDPOINT_ID_PREFIX, now_ms),
            secret=entry,
            now_ms=now_ms,
            allow_loopback_http=self.allow_loopback_http,
            endpoints_in_use=await self.store.count_in_use(account_id),
        )
        await self.store.insert(doc)
        self._changed("create", account_id, doc["_id"])
        return json_response(endpoints.with_secret(doc, secret, now_ms), status=201)

    async def list(self, request: web.Request) -> web.Response:
        account_id = await self._account(request)
        query = endpoints.parse_page_query(request.query)
        docs = await self.store.page(account_id, query.limit, query.after)
        states = await self.store.states([d["_id"] for d in docs[: query.limit]])
        return json_response(
            endpoints.endpoint_page(docs, states, query.limit, self.ingest.clock.now_ms())
        )

    async def get(self, request: web.Request) -> web.Response:
        account_id = await self._account(request)
        endpoint = await self._endpoint(request, account_id)
        return json_response(await self._view(endpoint))

    async def update(self, request: web.Request) -> web.Response:
        account_id = await self._account(request)
        endpoint = await self._endpoint(request, account_id)
        changes = endpoints.parse_update(
            await read_body(request),
            now_ms=self.ingest.clock.now_ms(),
            allow_loopback_http=self.allow_loopback_http,
        )
        await self.store.update(endpoint["_id"], changes)
        self._changed("update", account_id, endpoint["_id"])
        return json_response(await self._view({**endpoint, **changes}))

    async def delete(self, request: web.Request) -> web.Response:
        account_id = await self._account(request)
        endpoint = await self._endpoint(request, account_id)
        await self.store.update(endpoint["_id"], rules.deletion(self.ingest.clock.now_ms()))
        self._changed("delete", account_id, endpoint["_id"])
        return web.Response(status=204)

    async def rotate_secret(self, request: web.Request) -> web.Response:
        account_id = await self._account(request)
        endpoint = await self._endpoint(request, account_id)
        now_ms = self.ingest.clock.now_ms()
        secret, entry = self._new_secret(now_ms)
        changes = {
            "secrets": rules.rotated(list(endpoint.get("secrets", [])), entry, now_ms),
            "updated_at": now_ms,
        }
        await self.store.update(endpoint["_id"], changes)
        self._changed("rotate_secret", account_id, endpoint["_id"])
        return json_response(endpoints.with_secret({**endpoint, **changes}, secret, now_ms))

    async def _view(self, endpoint: Doc) -> Doc:
        states = await self.store.states([endpoint["_id"]])
        return endpoints.endpoint_view(
            endpoint, states.get(endpoint["_id"]), self.ingest.clock.now_ms()
        )

    # --- deliveries, test events, replays ---------------------------------------------------

    async def deliveries(self, request: web.Request) -> web.Response:
        account_id = await self._account(request)
        endpoint = await self._endpoint(request, account_id)
        query = endpoints.parse_page_query(request.query)
        docs = await self.store.attempts(endpoint["_id"], query.limit, query.after)
        return json_response(endpoints.attempt_page(docs, query.limit))

    async def send_test(self, request: web.Request) -> web.Response:
        account_id = await self._account(request)
        endpoint = await self._endpoint(request, account_id)
        return await self._request_notify(endpoint, None)

    async def replay(self, request: web.Request) -> web.Response:
        account_id = await self._account(request)
        endpoint = await self._endpoint(request, account_id)
        replay_of = endpoints.parse_replay(await read_body(request), self.ingest.clock.now_ms())
        return await self._request_notify(endpoint, replay_of)

    async def _request_notify(self, endpoint: Doc, replay_of: rules.Replay | None) -> web.Response:
        """Publish the command (acks=all) and answer 202 once it is durable."""
        now_ms = self.ingest.clock.now_ms()
        event = endpoints.notify_request(
            request_id=new_id(rules.NOTIFY_REQUEST_PREFIX, now_ms),
            endpoint=endpoint,
            now_ms=now_ms,
            replay_of=replay_of,
        )
        await self.requests.notify_requested(event)
        NOTIFY_REQUESTS.labels(event.kind).inc()
        log.info(
            "notify_requested",
            kind=event.kind,
            account_id=event.account_id,
            endpoint_id=event.endpoint_id,
            request_id=event.event_id,
        )
        return json_response(endpoints.accepted(event), status=202)
