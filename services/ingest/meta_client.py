"""ingest's adapter to Meta's Graph API, for the calls it passes through (mark-as-read and
typing, the Media API). Sends are not made here: they are queued and the sender makes them.

Every answer comes back as it is (status and JSON body): the caller decides what Meta's error
means for its client. Only what never got an answer is translated here: a connection that
failed or timed out is DependencyUnavailable (503), since the call may simply be tried again
(a mark-as-read or an upload done twice does no harm).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import IO, Any, Protocol

import aiohttp
import orjson

from shared.errors import DependencyUnavailable


@dataclass(frozen=True, slots=True)
class MetaAnswer:
    status: int
    body: Any  # the JSON answer, or None when it was not JSON

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@dataclass(frozen=True, slots=True)
class Download:
    """An open download from Meta's media URL: read `chunks` while the context is open."""

    status: int
    content_type: str | None
    content_length: int | None
    chunks: AsyncIterator[bytes]


CHUNK_BYTES = 64 * 1024


class Graph(Protocol):
    """What ingest asks of Meta (GraphClient; an in-memory stand-in in unit tests)."""

    async def mark_read(
        self, phone_number_id: str, token: str, body: dict[str, Any]
    ) -> MetaAnswer: ...
    async def upload(
        self,
        phone_number_id: str,
        token: str,
        file: IO[bytes],
        *,
        mime_type: str,
        filename: str,
        extra: dict[str, str],
    ) -> MetaAnswer: ...
    async def media_info(self, media_id: str, token: str) -> MetaAnswer: ...
    async def delete_media(self, media_id: str, token: str) -> MetaAnswer: ...
    def download(self, url: str, token: str) -> AbstractAsyncContextManager[Download]: ...


class GraphClient:
    """One aiohttp session for the process."""

    def __init__(
        self,
        base_url: str,
        graph_version: str,
        timeout_seconds: float,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self._base = f"{base_url.rstrip('/')}/{graph_version}"
        # Whole-call limit for the small calls; a download or upload is limited per read.
        self._timeout = aiohttp.ClientTimeout(
            total=timeout_seconds, sock_connect=min(timeout_seconds, 5.0)
        )
        self._stream_timeout = aiohttp.ClientTimeout(
            total=None, sock_read=timeout_seconds, sock_connect=min(timeout_seconds, 5.0)
        )
        self._session = session or aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=100, keepalive_timeout=15)
        )

    async def close(self) -> None:
        await self._session.close()

    async def mark_read(self, phone_number_id: str, token: str, body: dict[str, Any]) -> MetaAnswer:
        return await self._call(
            "POST",
            f"{self._base}/{phone_number_id}/messages",
            token,
            data=orjson.dumps(body),
            headers={"Content-Type": "application/json"},
        )

    async def upload(
        self,
        phone_number_id: str,
        token: str,
        file: IO[bytes],
        *,
        mime_type: str,
        filename: str,
        extra: dict[str, str],
    ) -> MetaAnswer:
        """Meta's multipart upload: the file is streamed from `file` (never read whole)."""
        form = aiohttp.FormData()
        form.add_field("messaging_product", "whatsapp")
        form.add_field("type", mime_type)
        for name, value in extra.items():
            form.add_field(name, value)
        form.add_field("file", file, filename=filename, content_type=mime_type)
        return await self._call(
            "POST", f"{self._base}/{phone_number_id}/media", token, data=form, streaming=True
        )

    async def media_info(self, media_id: str, token: str) -> MetaAnswer:
        # Without phone_number_id: for received media that parameter makes Meta refuse.
        return await self._call("GET", f"{self._base}/{media_id}", token)

    async def delete_media(self, media_id: str, token: str) -> MetaAnswer:
        return await self._call("DELETE", f"{self._base}/{media_id}", token)

    @asynccontextmanager
    async def download(self, url: str, token: str) -> AsyncIterator[Download]:
        """Open Meta's media URL with the token (redirects followed, as Meta's CDN may)."""
        try:
            async with self._session.get(
                url, headers=_auth(token), allow_redirects=True, timeout=self._stream_timeout
            ) as response:
                if response.status >= 300:
                    await response.read()
                yield Download(
                    response.status,
                    response.headers.get("Content-Type"),
                    response.content_length,
                    _chunks(response) if response.status < 300 else _nothing(),
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _unavailable(exc) from exc

    async def _call(
        self,
        method: str,
        url: str,
        token: str,
        *,
        data: Any = None,
        headers: dict[str, str] | None = None,
        streaming: bool = False,
    ) -> MetaAnswer:
        try:
            async with self._session.request(
                method,
                url,
                data=data,
                headers={**_auth(token), **(headers or {})},
                timeout=self._stream_timeout if streaming else self._timeout,
                allow_redirects=False,
            ) as response:
                raw = await response.read()
                return MetaAnswer(response.status, _json(raw))
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _unavailable(exc) from exc


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return None


async def _chunks(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    try:
        async for chunk in response.content.iter_chunked(CHUNK_BYTES):
            yield chunk
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise _unavailable(exc) from exc


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""  # an async generator that yields nothing


def _unavailable(exc: BaseException) -> DependencyUnavailable:
    return DependencyUnavailable(
        f"Meta did not answer ({type(exc).__name__})", details={"dependency": "meta"}
    )
