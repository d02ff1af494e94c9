"""Request rate limits per account and per API key, pure: token-bucket arithmetic, which limit
applies to a caller, and the IETF `RateLimit-Policy` / `RateLimit` fields that describe it.

Every authenticated request costs one token from its account's bucket and, when the key has a
limit of its own, one from the key's bucket; it goes only when both have one (a refusal takes
nothing from either). A bucket holds at most `burst` tokens and gains `per_second` tokens each
second. Time is passed in (`now`, monotonic seconds): the shell owns the clock.

Header fields (draft-ietf-httpapi-ratelimit-headers, -11 syntax: Structured Field Lists whose
items are the policy names as Strings):
  RateLimit-Policy: "account";q=<burst>;w=<seconds a full bucket takes to refill>
  RateLimit:        "account";r=<whole tokens left>;t=<seconds until full again, or, when no
                    whole token is left, until the next one (= Retry-After)>
A bucket has no fixed window, so `w` is the approximation the draft's authors suggest for one.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

ACCOUNT = "account"
KEY = "key"


@dataclass(frozen=True, slots=True)
class Rate:
    """`per_second` tokens a second, at most `burst` at once."""

    per_second: float
    burst: int

    def __post_init__(self) -> None:
        if not (self.per_second > 0 and math.isfinite(self.per_second)):
            raise ValueError("a rate limit's per_second must be a positive number")
        if self.burst < 1:
            raise ValueError("a rate limit's burst must be at least 1")

    @property
    def window_seconds(self) -> int:
        """How long an empty bucket takes to fill (the policy's `w`), whole seconds, >= 1."""
        return max(1, math.ceil(self.burst / self.per_second))

    def as_doc(self) -> dict[str, Any]:
        return {"per_second": self.per_second, "burst": self.burst}


@dataclass(slots=True)
class Bucket:
    """One caller's state: tokens as of `updated` (monotonic seconds)."""

    tokens: float
    updated: float

    @classmethod
    def full(cls, rate: Rate, now: float) -> Bucket:
        return cls(float(rate.burst), now)

    def level(self, rate: Rate, now: float) -> float:
        """The tokens it holds at `now` (refilled, never above the burst)."""
        return min(float(rate.burst), self.tokens + max(0.0, now - self.updated) * rate.per_second)

    def is_full(self, rate: Rate, now: float) -> bool:
        return self.level(rate, now) >= rate.burst


# Named tuples, not frozen dataclasses: these are made on every request (a frozen dataclass
# costs several times as much to build).
class Limit(NamedTuple):
    """A policy that applies to this request: its name, rate and the caller's bucket."""

    name: str
    rate: Rate
    bucket: Bucket


class State(NamedTuple):
    """What a policy's bucket looks like after the request: for the headers."""

    name: str
    rate: Rate
    remaining: int
    reset_seconds: int


class Verdict(NamedTuple):
    allowed: bool
    states: tuple[State, ...]
    # Refused: the policy that said no and whole seconds until the request could go.
    violated: str | None = None
    retry_after_seconds: int | None = None


def admit(limits: Sequence[Limit], now: float, cost: float = 1.0) -> Verdict:
    """Take `cost` tokens from every bucket, or from none when one of them lacks them.

    The buckets are changed in place (refilled to `now`, then debited when allowed)."""
    levels: list[float] = []
    violated: str | None = None
    wait = 0
    for limit in limits:
        level = limit.bucket.level(limit.rate, now)
        limit.bucket.tokens = level
        limit.bucket.updated = now
        levels.append(level)
        if level < cost:
            seconds = math.ceil((cost - level) / limit.rate.per_second - 1e-9)
            if violated is None or seconds > wait:
                violated, wait = limit.name, seconds
    if violated is not None:
        return Verdict(
            False,
            tuple(_state(limit, level, cost) for limit, level in zip(limits, levels, strict=True)),
            violated,
            max(1, wait),
        )
    states = []
    for limit, level in zip(limits, levels, strict=True):
        limit.bucket.tokens = level - cost
        states.append(_state(limit, level - cost, cost))
    return Verdict(True, tuple(states))


def _state(limit: Limit, tokens: float, cost: float) -> State:
    rate = limit.rate
    remaining = max(0, math.floor(tokens / cost + 1e-9))
    if remaining == 0:  # when the next request may go
        seconds = (cost - tokens) / rate.per_second
    else:  # when the bucket is full again
        seconds = (rate.burst - tokens) / rate.per_second
    return State(limit.name, rate, remaining, max(0, math.ceil(seconds - 1e-9)))


# --- which limits apply --------------------------------------------------------------------------


def rate_of(value: Any) -> Rate | None:
    """An override stored on an `accounts` or `api_keys` document (`rate_limit`:
    `{"per_second": float, "burst": int}`, written by `hala`), or None when there is none or
    it cannot be read (the default then applies)."""
    if value is None or not isinstance(value, Mapping):
        return None
    per_second, burst = value.get("per_second"), value.get("burst")
    if isinstance(per_second, bool) or isinstance(burst, bool):
        return None
    if not isinstance(per_second, int | float) or not isinstance(burst, int):
        return None
    return _rate(float(per_second), burst)


@functools.lru_cache(maxsize=1024)
def _rate(per_second: float, burst: int) -> Rate | None:
    try:
        return Rate(per_second, burst)
    except ValueError:
        return None


def account_rate(account: Mapping[str, Any] | None, default: Rate) -> Rate:
    """The account's own limit, else the default every account has."""
    own = rate_of(account.get("rate_limit")) if account is not None else None
    return own or default


def key_rate(key: Mapping[str, Any] | None, default: Rate | None) -> Rate | None:
    """The key's own limit, else the default for keys (None: keys have no limit of their own,
    only their account's applies)."""
    own = rate_of(key.get("rate_limit")) if key is not None else None
    return own or default


# --- header fields -------------------------------------------------------------------------------


def policy_field(states: Sequence[State]) -> str:
    return ", ".join([_policy_item(s.name, s.rate) for s in states])


@functools.lru_cache(maxsize=1024)
def _policy_item(name: str, rate: Rate) -> str:
    """A policy's item (the same for every request under it)."""
    return f'"{name}";q={rate.burst};w={rate.window_seconds}'


def ratelimit_field(states: Sequence[State]) -> str:
    return ", ".join([f'"{s.name}";r={s.remaining};t={s.reset_seconds}' for s in states])


def headers(verdict: Verdict) -> dict[str, str]:
    """The fields of an answer: RateLimit-Policy and RateLimit always (when a limit applied),
    Retry-After on a refusal."""
    if not verdict.states:
        return {}
    fields = {
        "RateLimit-Policy": policy_field(verdict.states),
        "RateLimit": ratelimit_field(verdict.states),
    }
    if verdict.retry_after_seconds is not None:
        fields["Retry-After"] = str(verdict.retry_after_seconds)
    return fields


def refusal_details(verdict: Verdict) -> dict[str, Any]:
    """The error's `details` for a refused request."""
    state = next(s for s in verdict.states if s.name == verdict.violated)
    return {
        "policy": verdict.violated,
        "limit_per_second": state.rate.per_second,
        "burst": state.rate.burst,
        "retry_after_seconds": verdict.retry_after_seconds,
    }


def refusal_message(verdict: Verdict) -> str:
    scope = "API key" if verdict.violated == KEY else "account"
    return f"too many requests for this {scope}: retry after {verdict.retry_after_seconds} s"
