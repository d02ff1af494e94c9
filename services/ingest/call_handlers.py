"""HTTP handlers of the calls that are not sends -- mark-as-read, the Media API -- and of the
conversation reads. Parse -> calls.py / repository -> respond.

Meta-shaped routes answer in Meta's shapes and error envelope (Meta's own error when Meta
refused the call); the /v1 routes in ours.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from services.ingest import conversations, media, passthrough
from services.ingest.calls import Calls
from services.ingest.errors import reject
from services.ingest.handlers import meta_error_response, read_body, retry_after
from services.ingest.media import MAX_MEDIA_BYTES, MULTIPART_OVERHEAD
from shared.errors import ServiceError
from shared.http import error_body, json_response
from shared.logging import get_logger

log = get_logger("ingest")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class CallHandlers:
    def __init__(self, calls: Calls, public_base_url: str = "") -> None:
        self.calls = calls
        self.ingest = calls.ingest
        self.public_base_url = public_base_url.rstrip("/")

    async def _account(self, request: web.Request) -> str:
        return await self.ingest.authenticate(request.headers.get("Authorization"))

    def download_url(self, request: web.Request, media_id: str) -> str:
        base = self.public_base_url or f"{request.scheme}://{request.host}"
        return f"{base}/v1/media/{media_id}"

    # --- Meta's shapes -----------------------------------------------------------------------

    async def meta_status_call(
        self, account_id: str, phone_number_id: str, raw: bytes
    ) -> dict[str, Any]:
        """Mark-as-read (and typing) on Meta's messages endpoint (see Handlers)."""
        call = passthrough.parse_meta_mark_read(raw)
        return await self.calls.mark_read(account_id, call, phone_number_id)

    async def meta_upload(self, request: web.Request) -> web.StreamResponse:
        async def answer() -> web.StreamResponse:
            account_id = await self._account(request)
            phone_number_id = request.match_info["phone_number_id"]
            await self.ingest.own_phone_number(account_id, phone_number_id)
            doc = await self.calls.upload(
                account_id,
                await _multipart(request),
                phone_number_id=phone_number_id,
                meta_shape=True,
            )
            return json_response({"id": doc["_id"]})

        return await _meta(answer, "upload")

    async def meta_media_url(self, request: web.Request) -> web.StreamResponse:
        async def answer() -> web.StreamResponse:
            account_id = await self._account(request)
            media_id = request.match_info["media_id"]
            info, _ = await self.calls.media_info(account_id, media_id, _number_filter(request))
            return json_response(media.meta_media_view(info, self.download_url(request, media_id)))

        return await _meta(answer, "media_url")

    async def meta_delete_media(self, request: web.Request) -> web.StreamResponse:
        async def answer() -> web.StreamResponse:
            account_id = await self._account(request)
            result = await self.calls.delete(
                account_id, request.match_info["media_id"], _number_filter(request)
            )
            return json_response(result)

        return await _meta(answer, "delete_media")

    # --- ours ------------------------------------------------------------------------------

    async def mark_read(self, request: web.Request) -> web.StreamResponse:
        async def answer() -> web.StreamResponse:
            account_id = await self._account(request)
            call = passthrough.parse_v1_mark_read(
                await read_body(request), request.match_info["wamid"]
            )
            return json_response(await self.calls.mark_read(account_id, call))

        return await _ours(answer)

    async def upload(self, request: web.Request) -> web.StreamResponse:
        async def answer() -> web.StreamResponse:
            account_id = await self._account(request)
            number = request.query.get("phone_number_id")
            if number is not None:
                await self.ingest.own_phone_number(account_id, number)
            doc = await self.calls.upload(
                account_id, await _multipart(request), phone_number_id=number, meta_shape=False
            )
            return json_response(media.upload_view(doc), status=201)

        return await _ours(answer)

    async def media_info(self, request: web.Request) -> web.StreamResponse:
        async def answer() -> web.StreamResponse:
            account_id = await self._account(request)
            media_id = request.match_info["media_id"]
            info, source = await self.calls.media_info(account_id, media_id)
            return json_response(
                media.media_view(info, source, self.download_url(request, media_id))
            )

        return await _ours(answer)

    async def download(self, request: web.Request) -> web.StreamResponse:
        """The file's bytes, streamed from Meta as they come (never held whole)."""
        account_id = await self._account(request)
        media_id = request.match_info["media_id"]
        try:
            async with self.calls.open_media(account_id, media_id) as download:
                response = web.StreamResponse(
                    status=200,
                    headers={
                        "Content-Type": download.content_type or "application/octet-stream",
                        "Cache-Control": "private, no-store",
                    },
                )
                if download.content_length is not None:
                    response.content_length = download.content_length
                await response.prepare(request)
                try:
                    async for chunk in download.chunks:
                        await response.write(chunk)
                except ServiceError as exc:
                    # The status line is sent: the client must not take the truncated bytes
                    # for the file, so the connection is cut rather than the body ended.
                    log.warning("media_download_interrupted", error_code=exc.code)
                    if request.transport is not None:
                        request.transport.close()
                    return response
                await response.write_eof()
                return response
        except ServiceError as exc:
            if exc.code == "rate_limited":
                return _ours_error(exc)
            raise

    async def delete_media(self, request: web.Request) -> web.StreamResponse:
        async def answer() -> web.StreamResponse:
            account_id = await self._account(request)
            result = await self.calls.delete(account_id, request.match_info["media_id"])
            return json_response(result)

        return await _ours(answer)

    # --- conversations -----------------------------------------------------------------------

    async def list_conversations(self, request: web.Request) -> web.StreamResponse:
        account_id = await self._account(request)
        query = conversations.parse_conversation_query(dict(request.query))
        inbox = self.ingest.inbox
        docs = await inbox.conversations(account_id, query)
        shown = docs[: query.limit]
        lasts = await asyncio.gather(
            *(
                asyncio.gather(
                    inbox.last_inbound(account_id, d["phone_number_id"], d["wa_id"]),
                    inbox.last_outbound(account_id, d["phone_number_id"], "+" + d["wa_id"]),
                )
                for d in shown
            )
        )
        now_ms = self.ingest.clock.now_ms()
        views = [
            conversations.conversation_view(doc, last_in, last_out, now_ms)
            for doc, (last_in, last_out) in zip(shown, lasts, strict=True)
        ]
        return json_response(conversations.conversation_page(docs, query.limit, views))

    async def conversation_messages(self, request: web.Request) -> web.StreamResponse:
        account_id = await self._account(request)
        query = conversations.parse_thread_query(request.match_info["wa_id"], dict(request.query))
        inbox = self.ingest.inbox
        inbound, outbound = await asyncio.gather(
            inbox.thread_inbound(account_id, query), inbox.thread_outbound(account_id, query)
        )
        return json_response(conversations.thread_page(inbound, outbound, query))


async def _multipart(request: web.Request) -> Any:
    if (
        request.content_length is not None
        and request.content_length > MAX_MEDIA_BYTES + MULTIPART_OVERHEAD
    ):
        raise media.too_large(None, MAX_MEDIA_BYTES)
    if request.content_type != "multipart/form-data":
        raise reject(
            "invalid_multipart", "an upload is a multipart/form-data body with a `file` part"
        )
    try:
        return await request.multipart()
    except (ValueError, AssertionError, KeyError) as exc:
        raise reject("invalid_multipart", f"the form cannot be read: {exc}") from None


def _number_filter(request: web.Request) -> str | None:
    """Meta's `phone_number_id` query parameter: only media of that number."""
    return request.query.get("phone_number_id") or None


async def _meta(
    answer: Callable[[], Awaitable[web.StreamResponse]], call: str
) -> web.StreamResponse:
    started = time.perf_counter()
    try:
        return await answer()
    except ServiceError as exc:
        log.info(
            "passthrough_call_handled",
            route="meta",
            kind=call,
            outcome="rejected",
            error_code=exc.code,
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
        )
        return meta_error_response(exc)


async def _ours(answer: Callable[[], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    try:
        return await answer()
    except ServiceError as exc:
        if exc.code == "rate_limited":
            return _ours_error(exc)
        raise  # the shared middleware answers with our envelope


def _ours_error(exc: ServiceError) -> web.Response:
    return json_response(
        error_body(exc.code, exc.message, exc.details),
        status=exc.http_status,
        headers=retry_after(exc),
    )
