"""Per-account and per-key request rate limits on every authenticated route (the arithmetic is
rate_limits.py's): the buckets of this process, and the middleware that takes a token before the
handler runs and puts the `RateLimit-Policy` / `RateLimit` fields on every answer.

The buckets live in this process's memory: with N ingest processes behind a balancer that
spreads an account's requests over them, the account may make up to N times its limit (see
services/ingest/README.md).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from services.ingest import core, rate_limits
from services.ingest.errors import reject
from services.ingest.metrics import RATE_LIMITED
from services.ingest.rate_limits import ACCOUNT, KEY, Bucket, Limit, Rate, Verdict
from services.ingest.repository import CachedDirectory
from shared.clock import Clock
from shared.errors import ServiceError, TransientError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Answers an error the way the request's route answers errors (Meta's envelope on Meta's routes).
ErrorAnswer = Callable[[web.Request, ServiceError], web.StreamResponse | None]

VERDICT = web.RequestKey("rate_limit_verdict", Verdict)
# The account of a request whose API key and account the middleware has checked (a valid key of
# an active account): the handler need not look them up again.
ACCOUNT_ID = web.RequestKey("authenticated_account_id", str)


class RequestLimiter:
    """The token buckets of the accounts and keys this process has seen (bounded: the least
    recently used go first; a bucket forgotten comes back full, which only an idle caller's
    would be anyway)."""

    def __init__(
        self,
        clock: Clock,
        *,
        account_default: Rate,
        key_default: Rate | None = None,
        max_buckets: int = 100_000,
    ) -> None:
        self._clock = clock
        self._account_default = account_default
        self._key_default = key_default
        self._max = max_buckets
        self._buckets: OrderedDict[tuple[str, str], Bucket] = OrderedDict()

    def check(
        self,
        account_id: str,
        account: dict[str, Any] | None,
        key_hash: str,
        key: dict[str, Any] | None,
    ) -> Verdict:
        """Take this request's token from its account's bucket and, if the key has a limit of
        its own, from the key's: both or neither."""
        now = self._clock.monotonic()
        account_rate = rate_limits.account_rate(account, self._account_default)
        limits = [
            Limit(ACCOUNT, account_rate, self._bucket(ACCOUNT, account_id, account_rate, now))
        ]
        key_rate = rate_limits.key_rate(key, self._key_default)
        if key_rate is not None:
            limits.append(Limit(KEY, key_rate, self._bucket(KEY, key_hash, key_rate, now)))
        verdict = rate_limits.admit(limits, now)
        if not verdict.allowed:
            RATE_LIMITED.labels(verdict.violated or "").inc()
        return verdict

    def _bucket(self, kind: str, ident: str, rate: Rate, now: float) -> Bucket:
        buckets = self._buckets
        key = (kind, ident)
        bucket = buckets.get(key)
        if bucket is None:
            bucket = buckets[key] = Bucket.full(rate, now)
            while len(buckets) > self._max:
                buckets.popitem(last=False)
        else:
            buckets.move_to_end(key)
        return bucket

    def __len__(self) -> int:
        return len(self._buckets)


def rate_limit_middleware(
    limiter: RequestLimiter,
    directory: CachedDirectory,
    error_answer: ErrorAnswer,
    exempt: frozenset[str] = frozenset(),
) -> Callable[..., Awaitable[Any]]:
    """Before the handler: who is asking (the same cached lookups the handler then makes), and
    a token of theirs. A request without a valid key is left to the handler, which refuses it
    as before (401/403); a dependency that fails the lookup is answered at once (503).
    `error_answer` answers an error on routes that do not use the JSON error envelope (Meta's);
    None: raise it for the error middleware. `exempt`: routes (their templates) that need no key
    and are not limited, whatever headers come with them (the document, ops endpoints)."""

    @web.middleware
    async def limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        authorization = request.headers.get("Authorization")
        if authorization is None or _route(request) in exempt:
            return await handler(request)
        try:
            key_hash = core.hash_api_key(core.api_key_from_header(authorization))
            key = await directory.api_key(key_hash)
            account_id = core.check_api_key(key)
            account = core.check_account(await directory.account(account_id))
        except TransientError as exc:
            return _answer(request, exc, error_answer)
        except ServiceError:
            return await handler(request)  # it refuses the caller itself
        verdict = limiter.check(account_id, account, key_hash, key)
        request[VERDICT] = verdict
        request[ACCOUNT_ID] = account_id
        if not verdict.allowed:
            refused = reject(
                "rate_limited",
                rate_limits.refusal_message(verdict),
                **rate_limits.refusal_details(verdict),
            )
            return _answer(request, refused, error_answer)
        return await handler(request)

    return limit


def _route(request: web.Request) -> str | None:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else None


def _answer(
    request: web.Request, exc: ServiceError, error_answer: ErrorAnswer
) -> web.StreamResponse:
    answered = error_answer(request, exc)
    if answered is None:
        raise exc
    return answered


async def add_rate_limit_headers(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare`: the fields of the request's limits on whatever answers it
    (success, the handler's errors, the refusal)."""
    verdict = request.get(VERDICT)
    if verdict is not None:
        response.headers.update(rate_limits.headers(verdict))
