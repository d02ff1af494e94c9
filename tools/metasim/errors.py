"""Meta's error codes as the simulator answers them: title, HTTP status, default details.

One table, so the synchronous Graph envelope and the asynchronous webhook error object always agree.
HTTP statuses follow Meta's Nov-2025 error table (throttling codes are 400, not 429).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ERROR_CODES_HREF = (
    "https://developers.facebook.com/documentation/business-messaging/whatsapp/support/error-codes"
)


@dataclass(frozen=True, slots=True)
class ErrorSpec:
    code: int
    title: str
    http_status: int
    details: str


# Assumption: Meta documents no error code for an exhausted portfolio messaging limit. 131064
# ("messaging limit reached", added to Meta's catalogue in 2026 for a classification-enforcement
# limit) is the closest documented code, so the simulator answers tier exhaustion with it.
MESSAGING_LIMIT_CODE = 131064

_SPECS = (
    ErrorSpec(
        0, "AuthException", 401, "Unable to authenticate the app user; the token was invalidated."
    ),
    ErrorSpec(1, "API Unknown", 400, "Invalid request or possible server error."),
    ErrorSpec(2, "API Service", 503, "Temporary due to downtime or due to being overloaded."),
    ErrorSpec(
        10, "Permission Denied", 403, "Permission is either not granted or has been removed."
    ),
    ErrorSpec(100, "Invalid parameter", 400, "Invalid parameter."),
    ErrorSpec(190, "Access token has expired", 401, "Error validating access token."),
    ErrorSpec(
        200, "API Permission", 403, "The token has no access to this WhatsApp Business Account."
    ),
    ErrorSpec(
        368,
        "Temporarily blocked for policies violations",
        403,
        "The WhatsApp Business Account associated with the app has been restricted or disabled "
        "for violating a platform policy.",
    ),
    ErrorSpec(130429, "Rate limit hit", 400, "Cloud API message throughput has been reached."),
    ErrorSpec(
        131000, "Something went wrong", 500, "Message failed to send due to an unknown error."
    ),
    ErrorSpec(131008, "Required parameter is missing", 400, "A required parameter is missing."),
    ErrorSpec(131009, "Parameter value is not valid", 400, "A parameter value is not valid."),
    ErrorSpec(131016, "Service unavailable", 500, "A service is temporarily unavailable."),
    ErrorSpec(131026, "Message undeliverable", 400, "Unable to deliver message to this recipient."),
    ErrorSpec(
        131047,
        "Re-engagement message",
        400,
        "More than 24 hours have passed since the recipient last replied to the sender number.",
    ),
    ErrorSpec(
        131049,
        "This message was not delivered to maintain healthy ecosystem engagement.",
        400,
        "In order to maintain a healthy ecosystem engagement, the message failed to be delivered.",
    ),
    ErrorSpec(
        131050,
        "Unable to deliver the message. This recipient has chosen to stop receiving marketing "
        "messages on WhatsApp from your business.",
        400,
        "The recipient opted out of marketing messages from this business.",
    ),
    ErrorSpec(131051, "Unsupported message type", 400, "Message type is not currently supported."),
    ErrorSpec(
        131052, "Media download error", 400, "Unable to download the media sent by the user."
    ),
    ErrorSpec(131053, "Media upload error", 400, "Unable to upload the media used in the message."),
    ErrorSpec(
        131056,
        "(Business Account, Consumer Account) pair rate limit hit",
        400,
        "Too many messages sent from the sender phone number to the same recipient phone number "
        "in a short period of time.",
    ),
    ErrorSpec(
        131057,
        "Account in maintenance mode",
        500,
        "Business Account is in maintenance mode (throughput upgrade in progress).",
    ),
    ErrorSpec(131059, "Invalid pagination cursor", 400, "Retry the request without before/after."),
    ErrorSpec(
        MESSAGING_LIMIT_CODE,
        "Messaging limit reached",
        400,
        "The business portfolio reached its messaging limit of unique users in a moving 24 hours.",
    ),
    ErrorSpec(
        132000,
        "Number of parameters does not match the expected number of params",
        400,
        "The number of parameters does not match the template.",
    ),
    ErrorSpec(
        132001,
        "Template name does not exist in the translation",
        404,
        "The template does not exist in this language or is not approved.",
    ),
    ErrorSpec(
        132012,
        "Parameter format does not match format in the created template",
        400,
        "A parameter's format does not match the template.",
    ),
    ErrorSpec(
        132005,
        "Translated text too long",
        400,
        "Translated text is too long once the parameters are filled in.",
    ),
    ErrorSpec(132015, "Template is Paused", 400, "The template is paused due to low quality."),
    ErrorSpec(132016, "Template is Disabled", 400, "The template was paused too many times."),
    ErrorSpec(
        132018,
        "There was an issue with the parameters in your template.",
        400,
        "A template parameter is not valid.",
    ),
    ErrorSpec(2388019, "Message template limit exceeded", 400, "Too many message templates."),
)

ERROR_TABLE: dict[int, ErrorSpec] = {spec.code: spec for spec in _SPECS}


class GraphError(Exception):
    """A request Meta would refuse; carries the code and the `error_data.details` text."""

    def __init__(self, code: int, details: str | None = None, subcode: int | None = None) -> None:
        spec = ERROR_TABLE[code]
        super().__init__(f"({code}) {details or spec.details}")
        self.code = code
        self.details = details or spec.details
        # Graph's error_subcode, e.g. 33 on "Object with ID ... does not exist" for media.
        self.subcode = subcode
        # Filled in by the send pipeline so the rejection can be recorded against its recipient.
        self.recipient: str | None = None
        self.callback_data: str | None = None

    @property
    def http_status(self) -> int:
        return ERROR_TABLE[self.code].http_status


def graph_error_body(
    code: int, details: str, fbtrace_id: str, subcode: int | None = None
) -> dict[str, Any]:
    """The synchronous envelope Graph API returns with a non-2xx status."""
    spec = ERROR_TABLE[code]
    error: dict[str, Any] = {
        "message": f"(#{code}) {spec.title}",
        "type": "OAuthException",
        "code": code,
        "error_data": {"messaging_product": "whatsapp", "details": details},
    }
    if subcode is not None:
        error["error_subcode"] = subcode
    error["fbtrace_id"] = fbtrace_id
    return {"error": error}


def webhook_error_object(code: int, details: str | None = None) -> dict[str, Any]:
    """The error object inside `statuses[].errors[]`: no type/fbtrace, title repeated as message."""
    spec = ERROR_TABLE[code]
    return {
        "code": code,
        "title": spec.title,
        "message": spec.title,
        "error_data": {"details": details or spec.details},
        "href": ERROR_CODES_HREF,
    }
