"""POSTing one attempt to a client's endpoint, safely.

- SSRF: the URL is checked again at every attempt (https; in development also http to
  loopback), a literal IP must be public, and a host name is resolved by `PublicOnlyResolver`,
  which keeps only public addresses: the connector connects to exactly what the resolver
  returned, so a DNS answer cannot be swapped between check and connect (rebinding).
- No redirects (a 3xx is a failure), no proxies from the environment, no decompression.
- Timeouts: 2 s to connect a socket, 10 s for the whole attempt (a receiver trickling its
  answer a byte at a time still ends there); at most a few KB of the answer are read, then the
  connection is closed unless the answer was complete.

An attempt never raises: its result says what happened (status, or an error kind).
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import time
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from services.notify.core import AttemptResult, excerpt
from shared.webhook_urls import (
    UnacceptableUrl,
    check_endpoint_url,
    is_loopback_address,
    is_public_address,
)


class Transport(Protocol):
    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> AttemptResult: ...


class BlockedAddress(OSError):
    """Every address of the host is one we must not connect to."""


def address_allowed(host: str, allow_loopback: bool) -> bool:
    return is_public_address(host) or (allow_loopback and is_loopback_address(host))


class PublicOnlyResolver(AbstractResolver):
    """Resolves with the default resolver and keeps only the addresses we may connect to."""

    def __init__(self, allow_loopback: bool = False, inner: AbstractResolver | None = None) -> None:
        self._inner = inner or DefaultResolver()
        self._allow_loopback = allow_loopback

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        allowed = [r for r in results if address_allowed(r["host"], self._allow_loopback)]
        if not allowed:
            raise BlockedAddress(errno.EACCES, f"{host} resolves to no public address")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


class HttpTransport:
    def __init__(
        self,
        *,
        allow_loopback: bool,
        connect_timeout: float = 2.0,
        total_timeout: float = 10.0,
        max_response_bytes: int = 4096,
        max_connections: int = 128,
    ) -> None:
        self._allow_loopback = allow_loopback
        self._timeout = aiohttp.ClientTimeout(total=total_timeout, sock_connect=connect_timeout)
        self._max_response = max_response_bytes
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            resolver=PublicOnlyResolver(self._allow_loopback),
            limit=self._max_connections,
            limit_per_host=0,
            ttl_dns_cache=10,
            enable_cleanup_closed=True,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            auto_decompress=False,
            trust_env=False,
            skip_auto_headers=("Accept-Encoding",),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _refusal(self, url: str) -> str | None:
        """Why this URL may not be called now, or None."""
        try:
            checked = check_endpoint_url(url, allow_loopback_http=self._allow_loopback)
        except UnacceptableUrl as exc:
            return f"{exc.code}: {exc}"
        host = (urlsplit(url).hostname or "").strip("[]")
        literal = _is_ip(host)
        if literal and not address_allowed(host, self._allow_loopback):
            return "private_address: the url's address is not public"
        if checked.host == "localhost" and not self._allow_loopback:
            return "private_address: localhost"
        return None

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> AttemptResult:
        assert self._session is not None, "start() first"
        started = time.perf_counter()
        refusal = self._refusal(url)
        if refusal is not None:
            return AttemptResult(None, 0.0, "blocked", refusal)
        try:
            async with self._session.post(
                url, data=body, headers=headers, allow_redirects=False
            ) as resp:
                raw = await resp.content.read(self._max_response)
                complete = resp.content.at_eof()
                result = AttemptResult(
                    resp.status,
                    time.perf_counter() - started,
                    retry_after=resp.headers.get("Retry-After"),
                    response=excerpt(raw),
                )
                if not complete:
                    resp.close()  # never reuse a connection with an unread answer on it
                return result
        except TimeoutError:
            return AttemptResult(
                None,
                time.perf_counter() - started,
                "timeout",
                "no complete answer within the timeout",
            )
        except aiohttp.ClientConnectorDNSError as exc:
            blocked = isinstance(exc.os_error, BlockedAddress)
            return AttemptResult(
                None,
                time.perf_counter() - started,
                "blocked" if blocked else "connection_error",
                _short(exc.os_error if blocked else exc),
            )
        except aiohttp.ClientConnectorError as exc:
            return AttemptResult(
                None, time.perf_counter() - started, "connection_error", _short(exc)
            )
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return AttemptResult(
                None, time.perf_counter() - started, "connection_error", _short(exc)
            )


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _short(exc: Any) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]
