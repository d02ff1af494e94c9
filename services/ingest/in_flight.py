"""The cap on an account's messages in flight (accepted, not yet final), ingest's side: pure.

billing enforces the cap exactly: it is the only writer of an account's balance (topics keyed by
account), it counts the account's open reservations (`balances.in_flight`: +1 per reservation,
-1 per charge or release) and refuses a reservation at `balances.in_flight_limit` (the account's
`max_in_flight`, else BILLING_MAX_IN_FLIGHT): the message becomes `rejected`, reason
`too_many_in_flight`, and nothing is reserved or sent. ingest answers earlier, from the balance
it caches for the credit check: at the cap, a send is refused with 429 `too_many_in_flight`
before anything is published. Its figure is billing's count as of the last read (at most the
cache time old) plus what this process accepted since, so it can be low by what other ingest
processes and billing's lag accepted meanwhile; those messages get billing's `rejected`
instead. Nothing goes past the cap either way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from services.ingest.errors import reject
from shared.errors import ServiceError


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def at_cap(balance: Mapping[str, Any] | None) -> bool:
    """Whether the account has its maximum of messages in flight (no cap known: False)."""
    if balance is None:
        return False
    limit = _count(balance.get("in_flight_limit"))
    if limit is None or limit <= 0:  # 0: billing applies no cap
        return False
    return (_count(balance.get("in_flight")) or 0) >= limit


def too_many_in_flight(balance: Mapping[str, Any], cache_seconds: float) -> ServiceError:
    """The refusal: a new figure comes with the next read of the balance."""
    return reject(
        "too_many_in_flight",
        "the account has its maximum of messages accepted and not yet delivered, "
        "failed or expired: retry once some have finished",
        in_flight=_count(balance.get("in_flight")) or 0,
        limit=_count(balance.get("in_flight_limit")) or 0,
        retry_after_seconds=max(1, math.ceil(cache_seconds)),
    )
