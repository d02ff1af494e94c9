"""The endpoints notify delivers to: read from ingest's `webhook_endpoints` through a short
cache (a change is seen within `ttl_seconds`), their signing secrets decrypted once, and
notify's own health verdicts (`endpoint_states`), held in memory and written on change. An
account's endpoints are read once however many of a batch's records ask at the same time."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any

from services.notify import core
from services.notify.repository import NotifyStore
from shared.clock import Clock
from shared.errors import PermanentError
from shared.secrets import TokenVault


class EndpointDirectory:
    def __init__(
        self,
        store: NotifyStore,
        vault: TokenVault | None,
        clock: Clock,
        ttl_seconds: float = 2.0,
        capacity: int = 20_000,
    ) -> None:
        self._store = store
        self._vault = vault
        self._clock = clock
        self._ttl = ttl_seconds
        self._capacity = capacity
        self._by_account: OrderedDict[str, tuple[float, list[core.Endpoint]]] = OrderedDict()
        self._by_id: OrderedDict[str, tuple[float, core.Endpoint | None]] = OrderedDict()
        self._plain: OrderedDict[str, str] = OrderedDict()  # encrypted -> secret
        self._loading: dict[str, asyncio.Future[list[core.Endpoint]]] = {}
        self.health: dict[str, core.Health] = {}

    async def load_health(self) -> None:
        self.health = {
            doc["_id"]: core.Health.from_doc(doc) for doc in await self._store.endpoint_states()
        }

    def health_of(self, endpoint_id: str) -> core.Health:
        return self.health.get(endpoint_id, core.Health())

    async def for_account(self, account_id: str) -> list[core.Endpoint]:
        now = self._clock.monotonic()
        cached = self._by_account.get(account_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        loading = self._loading.get(account_id)
        if loading is not None:  # another record of the batch is reading them
            return await asyncio.shield(loading)
        future: asyncio.Future[list[core.Endpoint]] = asyncio.get_running_loop().create_future()
        self._loading[account_id] = future
        try:
            docs = await self._store.endpoints_of_account(account_id)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters, if any, get it too
            raise
        finally:
            del self._loading[account_id]
        endpoints = [core.endpoint_from_doc(d) for d in docs]
        endpoints = [e for e in endpoints if not e.deleted]
        future.set_result(endpoints)
        self._remember(self._by_account, account_id, (now + self._ttl, endpoints))
        for endpoint in endpoints:
            self._remember(self._by_id, endpoint.id, (now + self._ttl, endpoint))
        return endpoints

    async def get(self, endpoint_id: str, fresh: bool = False) -> core.Endpoint | None:
        now = self._clock.monotonic()
        cached = self._by_id.get(endpoint_id)
        if cached is not None and cached[0] > now and not fresh:
            return cached[1]
        doc = await self._store.endpoint(endpoint_id)
        endpoint = core.endpoint_from_doc(doc) if doc is not None else None
        self._remember(self._by_id, endpoint_id, (now + self._ttl, endpoint))
        return endpoint

    def forget(self, account_id: str | None = None) -> None:
        if account_id is None:
            self._by_account.clear()
            self._by_id.clear()
        else:
            self._by_account.pop(account_id, None)

    def secrets(self, endpoint: core.Endpoint, now_ms: int) -> list[str]:
        """The live secrets in clear, newest first. Raises PermanentError when a secret
        cannot be decrypted with the configured keys."""
        plain = []
        for entry in core.live_secrets(endpoint, now_ms):
            secret = self._plain.get(entry.encrypted)
            if secret is None:
                if self._vault is None:
                    raise PermanentError(
                        "no HALA_TOKEN_KEYS to decrypt endpoint secrets", code="token_key_mismatch"
                    )
                secret = self._vault.decrypt(entry.encrypted)
                self._remember(self._plain, entry.encrypted, secret)
            plain.append(secret)
        return plain

    def _remember(self, cache: OrderedDict[str, Any], key: str, value: object) -> None:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > self._capacity:
            cache.popitem(last=False)
