"""HTTP handlers of the contact list API: authenticate -> parse -> services/ingest/
contact_lists.py -> store / publish -> respond.

- `/v1/suppressions`: the marketing suppression list. status's processor is its only writer
  (from users' keywords and Meta's user_preferences too), so a client's change is published
  (`suppressions.change-requested.v1`, acks=all) and answered 202 once durable; it applies
  within a second or two.
- `/v1/opt-out-keywords`: the account's STOP/START words (the document is replaced whole).
- `/v1/blocked-recipients`: numbers the account never sends to (inserted and deleted here and
  by `hala blocks`).

Every route is the caller's account's only: a number of another account is 403
`foreign_phone_number`, like a send from it.
"""

from __future__ import annotations

from aiohttp import web

from services.ingest import contact_lists, core
from services.ingest.contact_store import ContactStore
from services.ingest.handlers import Ingest, read_body
from services.ingest.metrics import CONTACT_LIST_CHANGES
from services.ingest.publisher import SuppressionRequests
from services.ingest.send_rules import SendRules
from shared import opt_out
from shared.contact_lists import blocked_id
from shared.http import json_response
from shared.ids import new_id
from shared.logging import get_logger

log = get_logger("ingest")


class ContactHandlers:
    def __init__(
        self,
        ingest: Ingest,
        store: ContactStore,
        requests: SuppressionRequests,
        send_rules: SendRules,
    ) -> None:
        self.ingest = ingest
        self.store = store
        self.requests = requests
        self.send_rules = send_rules

    async def _account(self, request: web.Request) -> str:
        return await self.ingest.authenticate(request.headers.get("Authorization"))

    def _changed(self, kind: str, action: str, account_id: str) -> None:
        CONTACT_LIST_CHANGES.labels(kind, action).inc()
        log.info("contact_list_changed", list=kind, action=action, account_id=account_id)

    # --- suppressions ----------------------------------------------------------------------

    async def list_suppressions(self, request: web.Request) -> web.Response:
        account_id = await self._account(request)
        query = contact_lists.parse_page_query(request.query, by_number=True)
        if query.phone_number_id is not None:
            await self.ingest.own_phone_number(account_id, query.phone_number_id)
        docs = await self.store.suppressions(
            account_id, query.phone_number_id, query.limit, query.after
        )
        return json_response(contact_lists.suppression_page(docs, query.limit))

    async def suppress(self, request: web.Request) -> web.Response:
        account_id = await self._account(request)
        body = contact_lists.parse_suppression(await read_body(request))
        note = body.note if isinstance(body.note, str) else ""
        return await self._request_suppression(
            account_id, body.phone_number_id, body.recipient, True, note
        )

    async def resubscribe(self, request: web.Request) -> web.Response:
        account_id = await self._account(request)
        return await self._request_suppression(
            account_id,
            request.match_info["phone_number_id"],
            request.match_info["recipient"],
            False,
            "",
        )

    async def _request_suppression(
        self, account_id: str, phone_number_id: str, recipient: str, suppressed: bool, note: str
    ) -> web.Response:
        phone = await self.ingest.own_phone_number(account_id, phone_number_id)
        e164 = contact_lists.suppression_recipient(
            recipient, core.region_of_display_number(phone.get("display_phone_number"))
        )
        now_ms = self.ingest.clock.now_ms()
        event = contact_lists.suppression_request(
            request_id=new_id(contact_lists.SUPPRESSION_REQUEST_PREFIX, now_ms),
            account_id=account_id,
            phone={**phone, "_id": phone_number_id},
            e164=e164,
            suppressed=suppressed,
            note=note,
            now_ms=now_ms,
        )
        await self.requests.suppression_change_requested(event)
        self._changed("suppressions", "suppress" if suppressed else "resubscribe", account_id)
        return json_response(contact_lists.suppression_accepted(event), status=202)

    # --- opt-out keywords ------------------------------------------------------------------

    async def get_keywords(self, request: web.Request) -> web.Response:
        account_id = await self._account(request)
        return json_response(contact_lists.keywords_view(await self.store.keywords(account_id)))

    async def put_keywords(self, request: web.Request) -> web.Response:
        account_id = await self._account(request)
        made = contact_lists.parse_keywords(await read_body(request))
        await self.store.replace_keywords(
            opt_out.config_doc(account_id, made, self.ingest.clock.now_ms())
        )
        self._changed("opt_out_keywords", "replace", account_id)
        return json_response(opt_out.config_view(made))

    # --- blocked recipients ----------------------------------------------------------------

    async def list_blocked(self, request: web.Request) -> web.Response:
        account_id = await self._account(request)
        query = contact_lists.parse_page_query(request.query)
        docs = await self.store.blocked_page(account_id, query.limit, query.after)
        return json_response(contact_lists.blocked_page(docs, query.limit))

    async def block(self, request: web.Request) -> web.Response:
        account_id = await self._account(request)
        body = contact_lists.parse_block(await read_body(request))
        e164 = contact_lists.blocked_recipient(body.recipient)
        note = body.note if isinstance(body.note, str) else ""
        doc = contact_lists.block_doc(account_id, e164, note, self.ingest.clock.now_ms())
        created = await self.store.block(doc)
        if not created:  # blocked already: the entry as it is
            doc = await self.store.blocked(blocked_id(account_id, e164)) or doc
        else:
            self._changed("blocked_recipients", "block", account_id)
        self.send_rules.forget(account_id, e164)
        return json_response(contact_lists.blocked_view(doc), status=201 if created else 200)

    async def unblock(self, request: web.Request) -> web.Response:
        account_id = await self._account(request)
        e164 = contact_lists.blocked_recipient(request.match_info["recipient"])
        if not await self.store.unblock(blocked_id(account_id, e164)):
            raise contact_lists.not_blocked()
        self.send_rules.forget(account_id, e164)
        self._changed("blocked_recipients", "unblock", account_id)
        return web.Response(status=204)
