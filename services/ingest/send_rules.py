"""The account's own rules for a send, checked after the request is valid and its category
known (one call from `Ingest.send`), before anything is reserved or published:

- the account is not held by the fraud and spam rules (403 `account_held`, with the rules and
  their reasons; `account_holds`, written by guard);
- the recipient is not on the account's block list (422 `recipient_blocked`, any type; an
  account that never blocked anyone costs no lookup per recipient);
- a marketing template does not go to a contact who opted out of the sending number's
  marketing (422 `recipient_opted_out`: Meta would fail it with 131050). Utility and
  authentication templates and service messages still go, as Meta allows.

Each lookup is by `_id` and remembered for `cache_seconds` (answers "no" included), shared by
the requests that miss it meanwhile: a new opt-out, block, hold or release applies to sends
within that time of being stored (status stores a STOP, and guard a hold, as soon as they read
the record that calls for it). Refusals are counted with every other one
(`ingest_rejections_total{code}`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from services.ingest.cache import MISSING, TtlCache
from services.ingest.contact_store import ContactStore
from services.ingest.conversations import wa_id_candidates
from services.ingest.errors import reject
from shared import contact_lists, holds
from shared.clock import Clock

Doc = dict[str, Any]
MARKETING = "marketing"


class SendRules:
    def __init__(self, store: ContactStore, clock: Clock, cache_seconds: float) -> None:
        self._store = store
        self._holds: TtlCache[str, Doc | None] = TtlCache(clock, cache_seconds)
        self._blocked: TtlCache[str, Doc | None] = TtlCache(clock, cache_seconds)
        self._suppressions: TtlCache[str, Doc | None] = TtlCache(clock, cache_seconds)
        self._loading: dict[tuple[int, str], asyncio.Future[Doc | None]] = {}

    async def check(
        self, account_id: str, phone_number_id: str, recipient: str, category: str
    ) -> None:
        """Raise the refusal the account's rules call for; return when the send may go.
        `recipient` is E.164."""
        hold = await self._cached(self._holds, account_id, self._store.hold)
        if holds.is_held(hold):
            view = holds.hold_view(hold)
            raise reject(
                "account_held",
                "sending is held by our fraud and spam rules until an "
                "operator releases it: " + "; ".join(r["reason"] for r in view["rules"]),
                rules=view["rules"],
            )
        marker = contact_lists.blocks_marker_id(account_id)
        blocked_id = contact_lists.blocked_id(account_id, recipient)
        if (
            await self._cached(self._blocked, marker, self._store.blocked) is not None
            and await self._cached(self._blocked, blocked_id, self._store.blocked) is not None
        ):
            raise reject(
                "recipient_blocked", "the recipient is on the account's block list", field="to"
            )
        if category != MARKETING:
            return
        for wa_id in wa_id_candidates(recipient):
            doc = await self._cached(
                self._suppressions,
                contact_lists.suppression_id(phone_number_id, wa_id),
                self._store.suppression,
            )
            if doc is not None and contact_lists.is_suppressed(doc, account_id):
                raise reject(
                    "recipient_opted_out",
                    "the recipient opted out of marketing "
                    "messages from this number; utility and authentication templates "
                    "may still be sent",
                    field="to",
                    source=doc.get("source"),
                    since=contact_lists.iso(doc.get("at")),
                )

    async def _cached(
        self,
        cache: TtlCache[str, Doc | None],
        key: str,
        load: Callable[[str], Awaitable[Doc | None]],
    ) -> Doc | None:
        """The remembered answer, or one lookup shared by the requests that miss meanwhile."""
        hit = cache.get(key)
        if hit is not MISSING:
            return hit  # type: ignore[return-value]
        flight = (id(cache), key)
        loading = self._loading.get(flight)
        if loading is not None:
            return await asyncio.shield(loading)
        loading = asyncio.ensure_future(load(key))
        self._loading[flight] = loading
        try:
            value = await asyncio.shield(loading)
        finally:
            if self._loading.get(flight) is loading:
                del self._loading[flight]
        cache.put(key, value)
        return value

    def forget(self, account_id: str, recipient: str | None = None) -> None:
        """Drop what this process remembers after it changed the list itself (a block or an
        unblock through the API applies to this process's next send at once)."""
        self._holds.discard(account_id)
        self._blocked.discard(contact_lists.blocks_marker_id(account_id))
        if recipient is not None:
            self._blocked.discard(contact_lists.blocked_id(account_id, recipient))
