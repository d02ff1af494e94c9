"""Pure decisions of the simulated Cloud API.

No await, no clock reads, no I/O: every function that depends on time takes `now` (seconds on the
simulator's monotonic clock), and random choices are made by the caller and passed in as booleans.
Stateful helpers (buckets, windows) mutate only themselves.
"""

from __future__ import annotations

import base64
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

from tools.metasim.errors import GraphError

SUPPORTED_VERSIONS = ("v22.0", "v23.0", "v24.0", "v25.0", "v26.0")
_SUPPORTED_VERSION_SET = frozenset(SUPPORTED_VERSIONS)

# Float refills can land a hair under an integer (e.g. 6 s x 1/6 per s); a tiny epsilon keeps the
# documented "one message every 6 seconds" exact.
_EPSILON = 1e-9


def check_version(version: str | None) -> None:
    """None means the unversioned path, which Meta serves with its newest version."""
    if version is not None and version not in _SUPPORTED_VERSION_SET:
        raise GraphError(
            100,
            f"Unsupported API version {version}; this endpoint serves "
            f"{SUPPORTED_VERSIONS[0]} to {SUPPORTED_VERSIONS[-1]}.",
        )


def version_number(version: str | None) -> float:
    return float(version[1:]) if version else float(SUPPORTED_VERSIONS[-1][1:])


# --------------------------------------------------------------------------------------------
# Rate limits
# --------------------------------------------------------------------------------------------


class TokenBucket:
    """Classic token bucket: `capacity` tokens of burst, refilled at `rate` tokens per second."""

    __slots__ = ("capacity", "rate", "tokens", "updated_at")

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.updated_at = now

    def _refill(self, now: float) -> None:
        elapsed = now - self.updated_at
        if elapsed > 0:
            self.tokens = min(self.capacity, self.tokens + elapsed * self.rate)
            self.updated_at = now

    def try_take(self, now: float) -> bool:
        self._refill(now)
        if self.tokens >= 1 - _EPSILON:
            self.tokens -= 1
            return True
        return False

    def force_take(self, now: float) -> None:
        """Consume even when empty (inbound traffic is never refused); debt is capped at one
        burst."""
        self._refill(now)
        self.tokens = max(self.tokens - 1, -self.capacity)

    def available(self, now: float) -> float:
        self._refill(now)
        return self.tokens

    def is_full(self, now: float) -> bool:
        return self.available(now) >= self.capacity - _EPSILON

    def retune(self, rate: float, capacity: float, now: float) -> None:
        self._refill(now)
        self.rate = rate
        self.capacity = capacity
        self.tokens = min(self.tokens, capacity)


TIER_LIMITS: dict[str, int | None] = {
    "TIER_50": 50,
    "TIER_250": 250,
    "TIER_2K": 2_000,
    "TIER_10K": 10_000,
    "TIER_100K": 100_000,
    "TIER_UNLIMITED": None,
}


class UniqueRecipientWindow:
    """Unique recipients of business-initiated messages in a moving window, against a limit.

    Recipients are kept ordered by their latest counted send, so expiring the window is popping
    from the front: O(1) amortised per send, memory bounded by the limit.
    """

    __slots__ = ("_last_counted", "limit", "window_seconds")

    def __init__(self, limit: int | None, window_seconds: float) -> None:
        self.limit = limit
        self.window_seconds = window_seconds
        self._last_counted: OrderedDict[str, float] = OrderedDict()

    def _expire(self, now: float) -> None:
        horizon = now - self.window_seconds
        last = self._last_counted
        while last:
            recipient, at = next(iter(last.items()))
            if at > horizon:
                break
            del last[recipient]

    def admit(self, recipient: str, now: float) -> bool:
        """Count `recipient`; False (and nothing counted) when it would exceed the limit."""
        if self.limit is None:
            return True
        self._expire(now)
        last = self._last_counted
        if recipient in last:
            last.move_to_end(recipient)
            last[recipient] = now
            return True
        if len(last) >= self.limit:
            return False
        last[recipient] = now
        return True

    def count(self, now: float) -> int:
        self._expire(now)
        return len(self._last_counted)


def customer_service_window_open(
    last_inbound_at: float | None, now: float, window_seconds: float
) -> bool:
    return last_inbound_at is not None and now - last_inbound_at < window_seconds


# --------------------------------------------------------------------------------------------
# Recipients and ids
# --------------------------------------------------------------------------------------------

_PHONE_FORMATTING = str.maketrans("", "", " -().")


def normalize_recipient(to: Any, business_country_code: str) -> str:
    """Meta's documented rule: formatting characters are ignored, and a number without a leading
    `+` gets the *business* number's country code prepended (send E.164 with `+` to avoid it)."""
    if not isinstance(to, str) or not to.strip():
        raise GraphError(100, "The parameter to is required.")
    text = to.strip()
    has_plus = text.startswith("+")
    digits = (text[1:] if has_plus else text).translate(_PHONE_FORMATTING)
    if not (digits.isascii() and digits.isdigit()):
        raise GraphError(100, f"Invalid parameter: to ({to!r}) is not a phone number.")
    if not has_plus:
        digits = business_country_code + digits
    if not 7 <= len(digits) <= 15:
        raise GraphError(100, f"Invalid parameter: to ({to!r}) is not a phone number.")
    return digits


def make_wamid(wa_id: str, serial: int, salt: int) -> str:
    """Shaped like Meta's: base64 of a small binary record holding the recipient and an id."""
    inner = f"{salt:08X}{serial:010X}".encode()
    raw = (
        b"\x1c\x18"
        + bytes((len(wa_id),))
        + wa_id.encode()
        + b"\x15\x02\x00\x12\x18\x12"
        + inner
        + b"\x00"
    )
    return "wamid." + base64.b64encode(raw).decode()


# --------------------------------------------------------------------------------------------
# Outbound message validation
# --------------------------------------------------------------------------------------------

MEDIA_TYPES = frozenset({"image", "video", "document", "audio", "sticker"})
MESSAGE_TYPES = frozenset(
    {"text", "template", "interactive", "reaction", "location", "contacts", *MEDIA_TYPES}
)
_INTERACTIVE_TYPES = frozenset(
    {"button", "list", "cta_url", "flow", "product", "product_list", "location_request_message"}
)


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    type: str
    to: str
    biz_opaque_callback_data: str | None
    template_name: str | None = None
    template_language: str | None = None
    template_components: list[Any] | None = None


@dataclass(frozen=True, slots=True)
class MarkAsRead:
    message_id: str


def _require_dict(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise GraphError(100, f"The parameter {name} is required.")
    return value


def _require_text(value: Any, name: str, max_len: int) -> str:
    if not isinstance(value, str) or not value:
        raise GraphError(100, f"The parameter {name} is required.")
    if len(value) > max_len:
        raise GraphError(100, f"Param {name} must be at most {max_len} characters long.")
    return value


def parse_outbound(payload: Any) -> OutboundMessage | MarkAsRead:
    """Validate a `POST /<PHONE_NUMBER_ID>/messages` body the way Meta does (code 100)."""
    if not isinstance(payload, dict):
        raise GraphError(100, "The request body must be a JSON object.")
    product = payload.get("messaging_product")
    if product is None:
        raise GraphError(100, "The parameter messaging_product is required.")
    if product != "whatsapp":
        raise GraphError(
            100, f'Param messaging_product must be one of {{WHATSAPP}} - got "{product}".'
        )

    if payload.get("status") == "read":
        message_id = payload.get("message_id")
        if not isinstance(message_id, str) or not message_id:
            raise GraphError(100, "The parameter message_id is required.")
        return MarkAsRead(message_id)

    recipient_type = payload.get("recipient_type", "individual")
    if recipient_type != "individual":
        raise GraphError(
            100, f'Param recipient_type must be "individual" - got "{recipient_type}".'
        )
    to = payload.get("to")
    if not isinstance(to, str) or not to.strip():
        raise GraphError(100, "The parameter to is required.")
    message_type = payload.get("type", "text")
    if message_type not in MESSAGE_TYPES:
        raise GraphError(
            100, f"Param type must be one of {{{', '.join(sorted(MESSAGE_TYPES)).upper()}}}."
        )
    callback_data = payload.get("biz_opaque_callback_data")
    if callback_data is not None:
        if not isinstance(callback_data, str):
            raise GraphError(100, "Param biz_opaque_callback_data must be a string.")
        if len(callback_data) > 512:
            raise GraphError(
                100, "Param biz_opaque_callback_data must be at most 512 characters long."
            )

    body = payload.get(message_type)
    if message_type == "text":
        text = _require_dict(body, "text")
        _require_text(text.get("body"), "text['body']", 4096)
        return OutboundMessage("text", to, callback_data)
    if message_type == "template":
        template = _require_dict(body, "template")
        name = _require_text(template.get("name"), "template['name']", 512)
        language = _require_dict(template.get("language"), "template['language']")
        code = _require_text(language.get("code"), "template['language']['code']", 20)
        components = template.get("components", [])
        if not isinstance(components, list):
            raise GraphError(100, "Param template['components'] must be an array.")
        return OutboundMessage("template", to, callback_data, name, code, components)
    if message_type in MEDIA_TYPES:
        media = _require_dict(body, message_type)
        has_id, has_link = "id" in media, "link" in media
        if has_id == has_link:
            raise GraphError(100, f"Param {message_type} must have exactly one of id or link.")
        if "caption" in media:
            _require_text(media["caption"], f"{message_type}['caption']", 1024)
        return OutboundMessage(message_type, to, callback_data)
    if message_type == "interactive":
        _validate_interactive(_require_dict(body, "interactive"))
        return OutboundMessage("interactive", to, callback_data)
    if message_type == "reaction":
        reaction = _require_dict(body, "reaction")
        _require_text(reaction.get("message_id"), "reaction['message_id']", 512)
        if not isinstance(reaction.get("emoji"), str):
            raise GraphError(100, "The parameter reaction['emoji'] is required.")
        return OutboundMessage("reaction", to, callback_data)
    if message_type == "location":
        location = _require_dict(body, "location")
        for key in ("latitude", "longitude"):
            if key not in location:
                raise GraphError(100, f"The parameter location['{key}'] is required.")
        return OutboundMessage("location", to, callback_data)
    if not isinstance(body, list) or not body:
        raise GraphError(100, "The parameter contacts is required.")
    return OutboundMessage("contacts", to, callback_data)


def _validate_interactive(interactive: dict[str, Any]) -> None:
    kind = interactive.get("type")
    if kind not in _INTERACTIVE_TYPES:
        raise GraphError(
            100, f"Param interactive['type'] must be one of {sorted(_INTERACTIVE_TYPES)}."
        )
    if kind not in ("button", "list"):
        return
    body = _require_dict(interactive.get("body"), "interactive['body']")
    _require_text(body.get("text"), "interactive['body']['text']", 1024)
    action = _require_dict(interactive.get("action"), "interactive['action']")
    if kind == "button":
        buttons = action.get("buttons")
        if not isinstance(buttons, list) or not 1 <= len(buttons) <= 3:
            raise GraphError(
                100, "Param interactive['action']['buttons'] must have 1 to 3 buttons."
            )
        titles = set()
        for button in buttons:
            reply = _require_dict(_require_dict(button, "button").get("reply"), "button['reply']")
            _require_text(reply.get("id"), "button['reply']['id']", 256)
            titles.add(_require_text(reply.get("title"), "button['reply']['title']", 20))
        if len(titles) != len(buttons):
            raise GraphError(100, "Button titles must be unique.")
        return
    _require_text(action.get("button"), "interactive['action']['button']", 20)
    sections = action.get("sections")
    if not isinstance(sections, list) or not 1 <= len(sections) <= 10:
        raise GraphError(100, "Param interactive['action']['sections'] must have 1 to 10 sections.")
    rows = [
        row for section in sections for row in _require_dict(section, "section").get("rows", [])
    ]
    if not 1 <= len(rows) <= 10:
        raise GraphError(100, "A list message must have 1 to 10 rows in total.")
    for row in rows:
        _require_text(_require_dict(row, "row").get("id"), "row['id']", 200)
        _require_text(row.get("title"), "row['title']", 24)


# --------------------------------------------------------------------------------------------
# Templates
# --------------------------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")
TEMPLATE_NAME = re.compile(r"^[a-z0-9_]{1,512}$")
TEMPLATE_CATEGORIES = ("MARKETING", "UTILITY", "AUTHENTICATION")
_MEDIA_HEADER_FORMATS = frozenset({"IMAGE", "VIDEO", "DOCUMENT"})


def placeholders(text: str) -> tuple[str, ...]:
    """Distinct placeholder names in order of first appearance: ("1", "2") or ("first_name",)."""
    return tuple(dict.fromkeys(_PLACEHOLDER.findall(text)))


@dataclass(frozen=True, slots=True)
class TemplateShape:
    """What a send must supply for a template, derived once from its components."""

    parameter_format: str
    header_format: str | None
    header_params: tuple[str, ...]
    body_params: tuple[str, ...]
    button_params: tuple[tuple[int, int], ...]  # (button index, parameters expected)


def template_shape(parameter_format: str, components: list[dict[str, Any]]) -> TemplateShape:
    header_format = None
    header_params: tuple[str, ...] = ()
    body_params: tuple[str, ...] = ()
    button_params: list[tuple[int, int]] = []
    for component in components:
        kind = str(component.get("type", "")).upper()
        if kind == "HEADER":
            header_format = str(component.get("format", "TEXT")).upper()
            if header_format == "TEXT":
                header_params = placeholders(component.get("text", ""))
        elif kind == "BODY":
            body_params = placeholders(component.get("text", ""))
        elif kind == "BUTTONS":
            for index, button in enumerate(component.get("buttons", [])):
                button_kind = str(button.get("type", "")).upper()
                if button_kind == "URL" and placeholders(button.get("url", "")):
                    button_params.append((index, 1))
                elif button_kind in ("COPY_CODE", "OTP"):
                    button_params.append((index, 1))
    return TemplateShape(
        parameter_format.upper(), header_format, header_params, body_params, tuple(button_params)
    )


def check_template_status(status: str, name: str, language: str) -> None:
    if status == "APPROVED":
        return
    if status == "PAUSED":
        raise GraphError(132015, f"Template {name} ({language}) is paused.")
    if status == "DISABLED":
        raise GraphError(132016, f"Template {name} ({language}) is disabled.")
    raise GraphError(
        132001, f"template name ({name}) is not approved in {language} (status {status})."
    )


def _params_of(component: dict[str, Any], where: str) -> list[dict[str, Any]]:
    params = component.get("parameters", [])
    if not isinstance(params, list) or not all(isinstance(p, dict) for p in params):
        raise GraphError(100, f"Param {where}['parameters'] must be an array of objects.")
    return params


def _check_text_params(
    where: str, params: list[dict[str, Any]], expected: tuple[str, ...], named: bool
) -> None:
    if len(params) != len(expected):
        raise GraphError(
            132000,
            f"{where}: number of localizable_params ({len(params)}) does not match the expected "
            f"number of params ({len(expected)})",
        )
    for param in params:
        if param.get("type") == "text" and not isinstance(param.get("text"), str):
            raise GraphError(100, f"The parameter {where}['parameters'][]['text'] is required.")
    if named:
        names = [param.get("parameter_name") for param in params]
        if any(not isinstance(n, str) for n in names):
            raise GraphError(132012, f"{where}: named template parameters need parameter_name.")
        if set(names) != set(expected):
            raise GraphError(
                132000,
                f"{where}: parameter names {sorted(names)} do not match the expected "
                f"{sorted(expected)}",
            )


def check_template_components(shape: TemplateShape, components: list[Any]) -> None:
    """Compare the parameters a send supplies with what the template expects (132000/132012)."""
    header: dict[str, Any] | None = None
    body: dict[str, Any] | None = None
    buttons: dict[int, dict[str, Any]] = {}
    for component in components:
        if not isinstance(component, dict):
            raise GraphError(100, "Param template['components'] must be an array of objects.")
        kind = str(component.get("type", "")).lower()
        if kind == "header":
            header = component
        elif kind == "body":
            body = component
        elif kind == "button":
            try:
                buttons[int(component.get("index", -1))] = component
            except (TypeError, ValueError):
                raise GraphError(100, "Param button['index'] must be an integer.") from None
        else:
            raise GraphError(
                100, f"Param component['type'] must be header, body or button - got {kind!r}."
            )

    named = shape.parameter_format == "NAMED"
    if shape.header_format in _MEDIA_HEADER_FORMATS:
        expected_type = shape.header_format.lower()
        if header is None:
            raise GraphError(
                132012, f"header: Format mismatch, expected {shape.header_format}, received UNKNOWN"
            )
        params = _params_of(header, "header")
        if len(params) != 1:
            raise GraphError(
                132000,
                f"header: number of localizable_params ({len(params)}) does not match the expected "
                "number of params (1)",
            )
        media = params[0].get(expected_type)
        if params[0].get("type") != expected_type or not isinstance(media, dict):
            raise GraphError(
                132012,
                f"header: Format mismatch, expected {shape.header_format}, received "
                f"{str(params[0].get('type', 'UNKNOWN')).upper()}",
            )
        if ("id" in media) == ("link" in media):
            raise GraphError(
                100, f"Param header {expected_type} must have exactly one of id or link."
            )
    else:
        params = _params_of(header, "header") if header else []
        _check_text_params("header", params, shape.header_params, named)

    _check_text_params("body", _params_of(body, "body") if body else [], shape.body_params, named)

    for index, expected_count in shape.button_params:
        button = buttons.get(index)
        supplied = len(_params_of(button, "button")) if button else 0
        if supplied != expected_count:
            raise GraphError(
                132000,
                f"button at index {index}: number of localizable_params ({supplied}) does not "
                "match "
                f"the expected number of params ({expected_count})",
            )


def check_template_name(name: Any) -> str:
    if not isinstance(name, str) or not TEMPLATE_NAME.fullmatch(name):
        raise GraphError(
            100,
            "Param name must be at most 512 characters, lowercase letters, digits and underscores.",
        )
    return name


# --------------------------------------------------------------------------------------------
# Pricing (per-message pricing, PMP)
# --------------------------------------------------------------------------------------------

PricingRules = Literal["pmp-2025-07", "pmp-2026-10"]


@dataclass(frozen=True, slots=True)
class Pricing:
    type: str  # regular | free_customer_service | free_entry_point
    category: str  # marketing | utility | authentication | service

    @property
    def billable(self) -> bool:
        return self.type == "regular"

    def as_webhook(self) -> dict[str, Any]:
        return {
            "billable": self.billable,
            "pricing_model": "PMP",
            "type": self.type,
            "category": self.category,
        }


_SERVICE_FREE = Pricing("free_customer_service", "service")
_SERVICE_PAID = Pricing("regular", "service")
_UTILITY_FREE = Pricing("free_customer_service", "utility")
_REGULAR = {c: Pricing("regular", c.lower()) for c in TEMPLATE_CATEGORIES}


def decide_pricing(
    rules: PricingRules, template_category: str | None, window_open: bool
) -> Pricing:
    """pmp-2025-07: non-template messages and utility templates inside an open customer-service
    window are free. pmp-2026-10: both become regular (billable); the rest is unchanged."""
    if template_category is None:
        return _SERVICE_FREE if rules == "pmp-2025-07" else _SERVICE_PAID
    if template_category == "UTILITY" and window_open and rules == "pmp-2025-07":
        return _UTILITY_FREE
    return _REGULAR[template_category]


# --------------------------------------------------------------------------------------------
# Delivery outcomes and the status timeline of one accepted message
# --------------------------------------------------------------------------------------------


def is_us_number(wa_id: str, region: str | None) -> bool:
    """Marketing templates are not delivered to US numbers. `region` comes from libphonenumber;
    an unassigned +1 area code (like the fictional 555 range) counts as US."""
    return wa_id.startswith("1") and region in ("US", None)


def async_failure_code(
    *,
    not_on_whatsapp: bool,
    template_category: str | None,
    window_open: bool,
    us_recipient: bool,
    marketing_capped: bool,
    marketing_opted_out: bool,
) -> int | None:
    """A failure Meta reports only by webhook, after answering the send with 200."""
    if not_on_whatsapp:
        return 131026
    if template_category == "MARKETING":
        if us_recipient:
            return 131049
        if marketing_opted_out:
            return 131050
        # Marketing sent inside a window the user opened does not count towards the per-user cap.
        if marketing_capped and not window_open:
            return 131049
    return None


@dataclass(frozen=True, slots=True)
class PlannedStatus:
    status: str  # sent | delivered | read | failed
    event_offset: float  # when it happened, seconds after acceptance (orders timestamps)
    emit_offset: float  # when the webhook is emitted, seconds after acceptance
    with_pricing: bool
    error_code: int | None = None


@dataclass(frozen=True, slots=True)
class StatusDelays:
    sent: float
    delivered: float  # after sent
    read: float  # after delivered


def plan_statuses(
    *,
    delays: StatusDelays,
    reaction: bool,
    failure_code: int | None,
    fail_after_sent: bool,
    will_read: bool,
    skip_delivered: bool,
    out_of_order: bool,
    hold_seconds: float = 0.0,
) -> list[PlannedStatus]:
    """The status webhooks one accepted message produces.

    `pricing` rides on `sent` and on exactly one of delivered/read (read when delivered is
    skipped); failures carry no pricing. A reaction only ever gets `sent`.
    """
    sent_at = hold_seconds + delays.sent
    if failure_code is not None:
        if fail_after_sent:
            return [
                PlannedStatus("sent", sent_at, sent_at, True),
                PlannedStatus(
                    "failed",
                    sent_at + delays.delivered,
                    sent_at + delays.delivered,
                    False,
                    failure_code,
                ),
            ]
        return [PlannedStatus("failed", sent_at, sent_at, False, failure_code)]
    if reaction:
        return [PlannedStatus("sent", sent_at, sent_at, False)]
    delivered_at = sent_at + delays.delivered
    read_at = delivered_at + delays.read
    plan = []
    deliver_skipped = will_read and skip_delivered
    if out_of_order and not deliver_skipped:
        # Emitted swapped: `delivered` reaches the receiver before `sent`; timestamps stay true.
        plan.append(PlannedStatus("sent", sent_at, delivered_at, True))
        plan.append(PlannedStatus("delivered", delivered_at, sent_at, True))
    else:
        plan.append(PlannedStatus("sent", sent_at, sent_at, True))
        if not deliver_skipped:
            plan.append(PlannedStatus("delivered", delivered_at, delivered_at, True))
    if will_read:
        plan.append(PlannedStatus("read", read_at, read_at, deliver_skipped))
    return plan


STATUS_RANK = {"accepted": 0, "held": 0, "sent": 1, "delivered": 2, "read": 3}


def later_status(current: str, new: str) -> str:
    """Statuses only move forward; `failed` is terminal."""
    if current == "failed":
        return current
    if new == "failed":
        return new
    return new if STATUS_RANK[new] > STATUS_RANK[current] else current


def retry_delay(attempt: int, initial: float, max_interval: float) -> float:
    """Exponential backoff after the `attempt`-th failed delivery (1-based): initial, 2x, 4x ..."""
    return min(initial * 2 ** (attempt - 1), max_interval)
