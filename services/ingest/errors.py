"""Every error code ingest answers with, in one table: the OpenAPI document lists exactly these,
and the Meta-compatible route translates each into a Graph API error code."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.errors import (
    Conflict,
    DependencyUnavailable,
    Forbidden,
    InsufficientCredit,
    InvalidRequest,
    NotFound,
    PermanentError,
    ServiceError,
    TransientError,
    Unauthorized,
)


@dataclass(frozen=True)
class ErrorCode:
    kind: type[ServiceError]
    http_status: int
    # How the Meta-compatible route reports it: Graph error code and HTTP status.
    meta_code: int
    meta_http_status: int


ERROR_CODES: dict[str, ErrorCode] = {
    # the request itself
    "malformed_json": ErrorCode(InvalidRequest, 400, 100, 400),
    # JSON nested deeper than shared.json_depth.MAX_JSON_DEPTH (refused before decoding)
    "nesting_too_deep": ErrorCode(InvalidRequest, 400, 100, 400),
    "invalid_request": ErrorCode(InvalidRequest, 400, 100, 400),
    "unknown_field": ErrorCode(InvalidRequest, 400, 100, 400),
    "invalid_field": ErrorCode(InvalidRequest, 400, 100, 400),
    "invalid_phone_number": ErrorCode(InvalidRequest, 400, 100, 400),
    # something Meta offers that this gateway does not (e.g. group messages)
    "unsupported": ErrorCode(InvalidRequest, 400, 100, 400),
    "invalid_cursor": ErrorCode(InvalidRequest, 400, 100, 400),
    "payload_too_large": ErrorCode(InvalidRequest, 413, 100, 413),
    # who is asking
    "unauthorized": ErrorCode(Unauthorized, 401, 190, 401),
    "api_key_revoked": ErrorCode(Unauthorized, 401, 190, 401),
    "account_suspended": ErrorCode(Forbidden, 403, 131031, 403),
    # our fraud and spam rules hold the account's sending until an operator releases it
    # (Meta's "temporarily blocked for policy violations")
    "account_held": ErrorCode(Forbidden, 403, 368, 403),
    # Meta answers an unknown or foreign phone number id with "object does not exist" (100).
    "foreign_phone_number": ErrorCode(Forbidden, 403, 100, 400),
    # templates
    "unknown_template": ErrorCode(PermanentError, 422, 132001, 404),
    "template_not_approved": ErrorCode(PermanentError, 422, 132001, 404),
    "template_parameter_mismatch": ErrorCode(PermanentError, 422, 132000, 400),
    # a reply or reaction names a message id (msg_…) that is not one of the account's
    "unknown_context_message": ErrorCode(PermanentError, 422, 131009, 400),
    # the 24 h customer-service window is closed: only a template may go (Meta's 131047)
    "outside_customer_service_window": ErrorCode(PermanentError, 422, 131047, 400),
    # a marketing template to a contact who opted out of the number's marketing (Meta's 131050)
    "recipient_opted_out": ErrorCode(PermanentError, 422, 131050, 400),
    # a number on the account's block list (Meta's "message undeliverable")
    "recipient_blocked": ErrorCode(PermanentError, 422, 131026, 400),
    # mark-as-read names a message that is not an inbound message of the account's number
    "unknown_inbound_message": ErrorCode(PermanentError, 422, 100, 400),
    # media uploads
    "invalid_multipart": ErrorCode(InvalidRequest, 400, 100, 400),
    "unsupported_media_type": ErrorCode(InvalidRequest, 415, 100, 400),
    "media_too_large": ErrorCode(InvalidRequest, 413, 100, 400),
    # too many requests: the account's or the key's request rate (rate_limits.py), or
    # pass-through calls beyond the number's pace (Meta's throughput code; the account's and
    # key's limits answer 80007, see meta_code_of)
    "rate_limited": ErrorCode(TransientError, 429, 130429, 429),
    # the account has its maximum of messages accepted and not yet final (in_flight.py)
    "too_many_in_flight": ErrorCode(TransientError, 429, 80007, 429),
    # Meta refused a pass-through call (the Meta route relays Meta's own envelope instead)
    "meta_error": ErrorCode(ServiceError, 502, 1, 502),
    # webhook endpoints (the rules are shared/webhook_endpoints.py's and shared/webhook_urls.py's)
    "invalid_url": ErrorCode(InvalidRequest, 400, 100, 400),
    "insecure_url": ErrorCode(InvalidRequest, 400, 100, 400),
    "private_address": ErrorCode(InvalidRequest, 400, 100, 400),
    "unknown_event_type": ErrorCode(InvalidRequest, 400, 100, 400),
    "endpoint_limit_reached": ErrorCode(Conflict, 409, 100, 409),
    # money and retries
    "insufficient_credit": ErrorCode(InsufficientCredit, 402, 131042, 400),
    "idempotency_key_reused": ErrorCode(Conflict, 409, 100, 409),
    "not_found": ErrorCode(NotFound, 404, 100, 404),
    # raised by shared.http's middleware, not by ingest's own code
    "method_not_allowed": ErrorCode(InvalidRequest, 405, 100, 405),
    "http_error": ErrorCode(InvalidRequest, 400, 100, 400),
    "internal_error": ErrorCode(ServiceError, 500, 1, 500),
    "dependency_unavailable": ErrorCode(DependencyUnavailable, 503, 2, 503),
}

# Meta's codes for our request rate limits, by `details.policy`: "Rate limit issues" (the
# business reached its rate limit). Pass-through calls beyond a number's pace keep 130429.
RATE_LIMIT_META_CODES = {"account": 80007, "key": 80007}

# Meta's per-status codes for templates that exist but cannot be sent.
TEMPLATE_STATUS_META_CODES = {"PAUSED": 132015, "DISABLED": 132016}


def meta_code_of(exc: ServiceError) -> int:
    """The Graph error code the Meta-compatible routes answer `exc` with."""
    spec = ERROR_CODES.get(exc.code, ERROR_CODES["internal_error"])
    if exc.code == "rate_limited":
        return RATE_LIMIT_META_CODES.get(str(exc.details.get("policy")), spec.meta_code)
    return spec.meta_code


def reject(code: str, message: str, **details: Any) -> ServiceError:
    """The exception for one of the codes above (an unknown code is a bug: KeyError)."""
    spec = ERROR_CODES[code]
    return spec.kind(message, code=code, details=details, http_status=spec.http_status)


def invalid_field(field: str, message: str, **details: Any) -> ServiceError:
    return reject("invalid_field", message, field=field, **details)
