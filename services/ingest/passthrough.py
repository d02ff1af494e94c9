"""Calls passed through to Meta, not queued sends: mark-as-read (with or without the typing
indicator) and the Media API. Pure: which body is a mark-as-read, which message it may name,
what goes to Meta, and the per-number pace of these calls.

They are answered synchronously with Meta's own answer, never billed and never queued; each
takes a turn from its number's bucket first, so that a client cannot use a number's Meta
throughput up with them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from services.ingest.core import validation_error
from services.ingest.errors import reject
from services.ingest.schemas import MetaMarkRead, V1MarkRead


class _StatusProbe(msgspec.Struct):
    """Only whether a body has a top-level `status` (a send never has)."""

    status: Any = msgspec.UNSET


_PROBE = msgspec.json.Decoder(_StatusProbe)
_META_DECODER = msgspec.json.Decoder(MetaMarkRead)
_V1_DECODER = msgspec.json.Decoder(V1MarkRead)


def is_status_call(raw: bytes) -> bool:
    """Whether a body on Meta's messages endpoint is a status call (`"status": "read"`) rather
    than a send. Only bodies that spell `"status"` are decoded a second time."""
    if b'"status"' not in raw:
        return False
    try:
        return _PROBE.decode(raw).status is not msgspec.UNSET
    except (msgspec.DecodeError, msgspec.ValidationError):
        return False  # the send parser answers with the precise error


@dataclass(frozen=True, slots=True)
class ReadCall:
    message_id: str  # the inbound wamid
    typing: bool


def parse_meta_mark_read(raw: bytes) -> ReadCall:
    request = _decode(_META_DECODER, raw)
    return ReadCall(request.message_id, request.typing_indicator is not msgspec.UNSET)


def parse_v1_mark_read(raw: bytes, wamid: str) -> ReadCall:
    """`POST /v1/messages/{wamid}/read`: an empty body, or `{"typing_indicator": true}`."""
    if not raw.strip():
        return ReadCall(wamid, False)
    request = _decode(_V1_DECODER, raw)
    return ReadCall(wamid, bool(request.typing_indicator))


def _decode(decoder: msgspec.json.Decoder[Any], raw: bytes) -> Any:
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise validation_error(str(exc)) from None
    except msgspec.DecodeError:
        raise reject("malformed_json", "the request body is not valid JSON") from None


def check_inbound_for_read(
    doc: dict[str, Any] | None, account_id: str, phone_number_id: str | None, wamid: str
) -> str:
    """The number that received the message named by a mark-as-read: it must be an inbound
    message (not an echo of the business's own) of the account, received by that number when
    the call names one. Returns the phone number id."""
    if (
        doc is None
        or doc.get("account_id") != account_id
        or doc.get("direction", "inbound") != "inbound"
        or (phone_number_id is not None and doc.get("phone_number_id") != phone_number_id)
    ):
        raise reject(
            "unknown_inbound_message",
            f"{wamid} is not a message this account's number received",
            field="message_id",
            message_id=wamid,
        )
    return str(doc["phone_number_id"])


def mark_read_body(call: ReadCall) -> dict[str, Any]:
    """Meta's body for the call."""
    body: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "status": "read",
        "message_id": call.message_id,
    }
    if call.typing:
        body["typing_indicator"] = {"type": "text"}
    return body


# --- pace -----------------------------------------------------------------------------------------


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass
class PassThroughPacer:
    """A token bucket per phone number: `rate` calls per second, `burst` at once. A call waits
    for its turn when that is at most `max_wait` seconds away, else it is refused (429): the
    client is told when to retry rather than holding a connection open for long."""

    rate: float
    burst: int
    max_wait: float
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def admit(self, phone_number_id: str, now: float) -> float | None:
        """Seconds to wait for this call's turn (its token is taken), or None: refused, and
        nothing is taken."""
        bucket = self._buckets.get(phone_number_id)
        if bucket is None:
            if len(self._buckets) >= 100_000:
                self._buckets.clear()  # bounded; forgetting a bucket only refills it
            bucket = self._buckets[phone_number_id] = _Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        wait = max(0.0, (1.0 - bucket.tokens) / self.rate)
        if wait > self.max_wait:
            return None
        bucket.tokens -= 1.0  # may go below zero: the token of a call that waits its turn
        return wait

    def retry_after(self, phone_number_id: str) -> float:
        """When a refused call may come back (seconds)."""
        bucket = self._buckets.get(phone_number_id)
        if bucket is None:
            return 0.0
        return max(0.0, (1.0 - bucket.tokens) / self.rate - self.max_wait)


def too_fast(phone_number_id: str, retry_after: float) -> Exception:
    seconds = max(1, round(retry_after + 0.5))
    return reject(
        "rate_limited",
        "too many calls for this phone number: retry later",
        phone_number_id=phone_number_id,
        retry_after_seconds=seconds,
    )


# --- Meta's refusals ------------------------------------------------------------------------------


def meta_refusal(status: int, body: Any) -> Exception:
    """Our error for Meta's refusal of a pass-through call. The Meta-compatible routes relay
    Meta's own error object (`details.meta_error`) as it came; our own routes answer 404 for
    an object Meta does not have (an expired or deleted media id), else 502 `meta_error`."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        error = {
            "message": f"HTTP {status} without Meta's error envelope",
            "type": "OAuthException",
            "code": 2 if status >= 500 else 100,
        }
    message = str(error.get("message") or f"HTTP {status}")
    if status == 404 or (error.get("code") == 100 and error.get("error_subcode") == 33):
        return reject(
            "not_found", f"Meta has no such object: {message}", meta_status=status, meta_error=error
        )
    return reject(
        "meta_error", f"Meta refused the call: {message}", meta_status=status, meta_error=error
    )


def relayed_meta_error(details: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
    """(HTTP status, body) to answer on a Meta-compatible route for an error that came from
    Meta, or None. A refusal of *our* token (401) is not the client's to fix: 502."""
    error = details.get("meta_error")
    status = details.get("meta_status")
    if not isinstance(error, dict) or not isinstance(status, int):
        return None
    return (502 if status == 401 else status), {"error": error}
