"""Pure decisions of the simulated Cloud API.

No await, no clock reads, no I/O: every function that depends on time takes `now` (seconds on the
simulator's monotonic clock), and random choices are made by the caller and passed in as booleans.
Stateful helpers (buckets, windows) mutate only themselves.
"""

from __future__ import annotations

import base64
import functools
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

import msgspec
import phonenumbers

from tools.metasim import shapes
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


@functools.lru_cache(maxsize=65_536)
def _international(digits: str) -> bool:
    try:
        return phonenumbers.is_possible_number(phonenumbers.parse("+" + digits))
    except phonenumbers.NumberParseException:
        return False


def normalize_recipient(to: Any, business_country_code: str) -> str:
    """Meta's rules: formatting characters are ignored, and a number without a leading `+` gets
    the *business* number's country code prepended (`(631) 555-1234` from an Indian number ->
    916315551234). A bare digit string that already is a whole international number (a WhatsApp
    id, 11+ digits, e.g. `447912345678` — what most clients send) is taken as it is."""
    if not isinstance(to, str) or not to.strip():
        raise GraphError(100, "The parameter to is required.")
    text = to.strip()
    has_plus = text.startswith("+")
    digits = (text[1:] if has_plus else text).translate(_PHONE_FORMATTING)
    if not (digits.isascii() and digits.isdigit()):
        raise GraphError(100, f"Invalid parameter: to ({to!r}) is not a phone number.")
    if not has_plus and not (text.isdigit() and len(digits) >= 11 and _international(digits)):
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
# Outbound message validation (shapes declared in shapes.py)
# --------------------------------------------------------------------------------------------

MEDIA_TYPES = shapes.MEDIA_TYPES
MESSAGE_TYPES = frozenset(shapes.TYPE_OBJECTS)


@dataclass(frozen=True, slots=True)
class MediaUse:
    """One media object a send refers to: the top-level media, a header, a carousel card."""

    kind: str  # image | video | audio | document | sticker
    id: str | None
    link: str | None


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    type: str
    to: str
    biz_opaque_callback_data: str | None
    template_name: str | None = None
    template_language: str | None = None
    # Decoded template components (shapes.Component structs).
    template_components: list[Any] | None = None
    media: tuple[MediaUse, ...] = ()
    reaction_to: str | None = None  # the wamid a reaction targets
    voice: bool = False  # audio with voice=true: a voice message (gets `played`)
    context_message_id: str | None = None
    interactive_type: str | None = None


class _CommonFields(TypedDict):
    """The fields every outbound message type may carry."""

    biz_opaque_callback_data: str | None
    context_message_id: str | None


@dataclass(frozen=True, slots=True)
class MarkAsRead:
    message_id: str
    typing_indicator: bool = False


def decode(value: Any, shape: Any, root: str) -> Any:
    """Decode `value` as `shape`; a mismatch is the Graph error Meta answers for it."""
    try:
        return msgspec.convert(value, shape)
    except msgspec.ValidationError as exc:
        code, details = shapes.translate(exc, root)
        raise GraphError(code, details) from None


def parse_outbound(payload: Any) -> OutboundMessage | MarkAsRead:
    """Validate a `POST /<PHONE_NUMBER_ID>/messages` body the way Meta does."""
    if not isinstance(payload, dict):
        raise GraphError(100, "The request body must be a JSON object.")
    product = payload.get("messaging_product")
    if product is None:
        raise GraphError(100, "The parameter messaging_product is required.")
    if product != "whatsapp":
        raise GraphError(
            100, f'Param messaging_product must be one of {{WHATSAPP}} - got "{product}".'
        )

    if "status" in payload:
        receipt = decode(payload, shapes.ReadReceipt, "")
        return MarkAsRead(receipt.message_id, receipt.typing_indicator is not None)

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
    context_id = None
    if (context := payload.get("context")) is not None:
        context_id = decode(context, shapes.Context, "context").message_id

    body = payload.get(message_type)
    if body is None:
        raise GraphError(100, f"The parameter {message_type} is required.")
    if message_type == "template":
        body = shapes.normalise_template(body)
    obj = decode(body, shapes.TYPE_OBJECTS[message_type], message_type)
    common: _CommonFields = {
        "biz_opaque_callback_data": callback_data,
        "context_message_id": context_id,
    }
    if message_type == "template":
        return OutboundMessage(
            "template",
            to,
            template_name=obj.name,
            template_language=obj.language.code,
            template_components=obj.components,
            media=_template_media(obj.components),
            **common,
        )
    if message_type in MEDIA_TYPES:
        return OutboundMessage(
            message_type,
            to,
            media=(MediaUse(message_type, obj.id, obj.link),),
            voice=message_type == "audio" and obj.voice,
            **common,
        )
    if message_type == "interactive":
        return OutboundMessage(
            "interactive",
            to,
            media=_interactive_media(obj),
            interactive_type=type(obj).__struct_config__.tag,
            **common,
        )
    if message_type == "reaction":
        return OutboundMessage("reaction", to, reaction_to=obj.message_id, **common)
    return OutboundMessage(message_type, to, **common)


# Struct type -> (attribute holding the media object, the message kind it is sent as).
_HEADER_MEDIA: dict[type, tuple[str, str]] = {
    shapes.ImageHeader: ("image", "image"),
    shapes.VideoHeader: ("video", "video"),
    shapes.DocumentHeader: ("document", "document"),
}
_PARAM_MEDIA: dict[type, tuple[str, str]] = {
    shapes.ImageParam: ("image", "image"),
    shapes.VideoParam: ("video", "video"),
    shapes.GifParam: ("gif", "video"),
    shapes.DocumentParam: ("document", "document"),
}


def _header_use(header: Any) -> list[MediaUse]:
    found = _HEADER_MEDIA.get(type(header))
    if found is None:
        return []
    ref = getattr(header, found[0])
    return [MediaUse(found[1], ref.id, ref.link)]


def _interactive_media(obj: Any) -> tuple[MediaUse, ...]:
    uses = _header_use(getattr(obj, "header", None))
    if isinstance(obj, shapes.CarouselInteractive):
        for card in obj.action.cards:
            uses.extend(_header_use(card.header))
    return tuple(uses)


def _template_media(components: list[Any]) -> tuple[MediaUse, ...]:
    uses: list[MediaUse] = []

    def params_of(component: Any) -> None:
        for param in getattr(component, "parameters", ()):
            found = _PARAM_MEDIA.get(type(param))
            if found is not None:
                ref = getattr(param, found[0])
                uses.append(MediaUse(found[1], ref.id, ref.link))

    for component in components:
        if isinstance(component, shapes.CarouselComponent):
            for card in component.cards:
                for inner in card.components:
                    params_of(inner)
        else:
            params_of(component)
    return tuple(uses)


# --------------------------------------------------------------------------------------------
# Media rules (Meta's supported types and sizes)
# --------------------------------------------------------------------------------------------

_MB = 1024 * 1024
# MIME type -> (the message kinds it can be sent as, max bytes).
MEDIA_MIME_TYPES: dict[str, tuple[frozenset[str], int]] = {
    "audio/aac": (frozenset({"audio"}), 16 * _MB),
    "audio/amr": (frozenset({"audio"}), 16 * _MB),
    "audio/mpeg": (frozenset({"audio"}), 16 * _MB),
    "audio/mp4": (frozenset({"audio"}), 16 * _MB),
    "audio/ogg": (frozenset({"audio"}), 16 * _MB),
    "audio/opus": (frozenset({"audio"}), 16 * _MB),
    "text/plain": (frozenset({"document"}), 100 * _MB),
    "application/pdf": (frozenset({"document"}), 100 * _MB),
    "application/msword": (frozenset({"document"}), 100 * _MB),
    "application/vnd.ms-excel": (frozenset({"document"}), 100 * _MB),
    "application/vnd.ms-powerpoint": (frozenset({"document"}), 100 * _MB),
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": (
        frozenset({"document"}),
        100 * _MB,
    ),
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": (
        frozenset({"document"}),
        100 * _MB,
    ),
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": (
        frozenset({"document"}),
        100 * _MB,
    ),
    "image/jpeg": (frozenset({"image"}), 5 * _MB),
    "image/png": (frozenset({"image"}), 5 * _MB),
    # WebP only as a sticker: 500 KB animated, 100 KB static.
    "image/webp": (frozenset({"sticker"}), 500 * 1024),
    "video/mp4": (frozenset({"video"}), 16 * _MB),
    "video/3gpp": (frozenset({"video"}), 16 * _MB),
}
MAX_INBOUND_MEDIA_BYTES = 100 * _MB


def base_mime(mime_type: str) -> str:
    """`audio/ogg; codecs=opus` -> `audio/ogg`."""
    return mime_type.split(";", 1)[0].strip().lower()


def check_upload(mime_type: str | None, size: int) -> str:
    """The MIME type an upload is stored with, or Meta's refusal."""
    if not mime_type:
        raise GraphError(100, "The parameter type is required.")
    spec = MEDIA_MIME_TYPES.get(base_mime(mime_type))
    if spec is None:
        raise GraphError(
            100,
            "Param file must be a file with one of the following types: "
            + ", ".join(MEDIA_MIME_TYPES)
            + f". Received file of type '{mime_type}'.",
        )
    if size == 0:
        raise GraphError(100, "The parameter file is required.")
    if size > spec[1]:
        raise GraphError(
            131053,
            f"Media file size too big. Max file size for {base_mime(mime_type)} is "
            f"{spec[1] // 1024} KB; received {size} bytes.",
        )
    return mime_type


def media_problem(kind: str, mime_type: str, voice: bool) -> str | None:
    """Why stored media of `mime_type` cannot be sent as `kind` (Meta's async 131053)."""
    spec = MEDIA_MIME_TYPES.get(base_mime(mime_type))
    if spec is None or kind not in spec[0]:
        if base_mime(mime_type) == "image/webp":
            return "Media upload error: WebP images can only be sent in sticker messages."
        return f"Media upload error: media of type {mime_type} cannot be sent as {kind}."
    if voice and base_mime(mime_type) not in ("audio/ogg", "audio/opus"):
        return "Media upload error: voice messages must be OGG audio with the OPUS codec."
    return None


# --------------------------------------------------------------------------------------------
# Templates
# --------------------------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")
TEMPLATE_NAME = re.compile(r"^[a-z0-9_]{1,512}$")
TEMPLATE_CATEGORIES = ("MARKETING", "UTILITY", "AUTHENTICATION")
_MEDIA_HEADER_FORMATS = {
    "IMAGE": shapes.ImageParam,
    "VIDEO": shapes.VideoParam,
    "DOCUMENT": shapes.DocumentParam,
    "GIF": shapes.GifParam,
    "LOCATION": shapes.LocationParam,
    "PRODUCT": shapes.ProductParam,
}
# Template button types that take one parameter at send time, and the one that may take one.
_BUTTON_NEEDS_PARAM = frozenset({"COPY_CODE", "OTP", "CATALOG", "MPM"})
_BUTTON_MAY_TAKE_PARAM = frozenset({"QUICK_REPLY", "FLOW"})
# A send's button `sub_type` -> the template button types it can address.
_SUB_TYPE_KINDS = {
    "url": frozenset({"URL", "OTP"}),
    "quick_reply": frozenset({"QUICK_REPLY"}),
    "copy_code": frozenset({"COPY_CODE", "OTP"}),
    "otp": frozenset({"OTP"}),
    "flow": frozenset({"FLOW"}),
    "catalog": frozenset({"CATALOG"}),
    "mpm": frozenset({"MPM"}),
    "voice_call": frozenset({"VOICE_CALL", "PHONE_NUMBER"}),
}
# The parameter type each button kind takes.
_BUTTON_PARAM = {
    "URL": shapes.TextParam,
    "OTP": shapes.TextParam,
    "QUICK_REPLY": shapes.PayloadParam,
    "COPY_CODE": shapes.CouponCodeParam,
    "FLOW": shapes.ActionParam,
    "CATALOG": shapes.ActionParam,
    "MPM": shapes.ActionParam,
}
_BODY_PARAMS = (shapes.TextParam, shapes.CurrencyParam, shapes.DateTimeParam)
# Meta refuses text parameters with new lines, tabs or more than 4 consecutive spaces.
_BAD_PARAM_TEXT = re.compile(r"[\n\t]| {5,}")


def placeholders(text: str) -> tuple[str, ...]:
    """Distinct placeholder names in order of first appearance: ("1", "2") or ("first_name",)."""
    return tuple(dict.fromkeys(_PLACEHOLDER.findall(text)))


@dataclass(frozen=True, slots=True)
class TemplateButton:
    index: int
    kind: str  # Meta's template button type: URL, QUICK_REPLY, COPY_CODE, OTP, FLOW ...
    params: int  # parameters a send must supply for it


@dataclass(frozen=True, slots=True)
class TemplateShape:
    """What a send must supply for a template, derived once from its components."""

    parameter_format: str
    header_format: str | None
    header_params: tuple[str, ...]
    body_params: tuple[str, ...]
    button_params: tuple[tuple[int, int], ...]  # (button index, parameters expected)
    buttons: tuple[TemplateButton, ...] = ()
    header_text: str = ""
    body_text: str = ""
    limited_time_offer: bool = False
    carousel_cards: int = 0


def template_shape(parameter_format: str, components: list[dict[str, Any]]) -> TemplateShape:
    header_format = None
    header_params: tuple[str, ...] = ()
    body_params: tuple[str, ...] = ()
    header_text = body_text = ""
    buttons: list[TemplateButton] = []
    limited_time_offer = False
    cards = 0
    for component in components:
        kind = str(component.get("type", "")).upper()
        if kind == "HEADER":
            header_format = str(component.get("format", "TEXT")).upper()
            if header_format == "TEXT":
                header_text = str(component.get("text", ""))
                header_params = placeholders(header_text)
        elif kind == "BODY":
            body_text = str(component.get("text", ""))
            body_params = placeholders(body_text)
        elif kind == "BUTTONS":
            for index, button in enumerate(component.get("buttons", [])):
                button_kind = str(button.get("type", "")).upper()
                if button_kind == "URL":
                    params = 1 if placeholders(button.get("url", "")) else 0
                else:
                    params = 1 if button_kind in _BUTTON_NEEDS_PARAM else 0
                buttons.append(TemplateButton(index, button_kind, params))
        elif kind == "LIMITED_TIME_OFFER":
            limited_time_offer = True
        elif kind == "CAROUSEL":
            cards = len(component.get("cards", []))
    return TemplateShape(
        parameter_format.upper(),
        header_format,
        header_params,
        body_params,
        tuple((b.index, b.params) for b in buttons if b.params),
        tuple(buttons),
        header_text,
        body_text,
        limited_time_offer,
        cards,
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


def _param_value(param: Any) -> str:
    if isinstance(param, shapes.TextParam):
        return param.text
    if isinstance(param, shapes.CurrencyParam):
        return param.currency.fallback_value
    if isinstance(param, shapes.DateTimeParam):
        return param.date_time.fallback_value
    return ""


def _check_text_params(
    where: str,
    params: list[Any],
    expected: tuple[str, ...],
    named: bool,
    text: str,
    max_len: int,
    version: float,
) -> None:
    if len(params) != len(expected):
        raise GraphError(
            132000,
            f"{where}: number of localizable_params ({len(params)}) does not match the expected "
            f"number of params ({len(expected)})",
        )
    if not params:
        return
    allowed = _BODY_PARAMS if where == "body" else (shapes.TextParam,)
    for param in params:
        if not isinstance(param, allowed):
            kind = type(param).__struct_config__.tag
            raise GraphError(132012, f"{where}: parameter of type {kind} is not allowed here")
        if _BAD_PARAM_TEXT.search(_param_value(param)):
            raise GraphError(
                132018 if version >= 23.0 else 100,
                f"{where}: Param text cannot have new-line/tab characters or more than 4 "
                "consecutive spaces",
            )
    if named:
        names = [param.parameter_name for param in params]
        if any(n is None for n in names):
            raise GraphError(132012, f"{where}: named template parameters need parameter_name.")
        if set(names) != set(expected):
            raise GraphError(
                132000,
                f"{where}: parameter names {sorted(names)} do not match the expected "
                f"{sorted(expected)}",
            )
        values = {param.parameter_name: _param_value(param) for param in params}
    else:
        values = {name: _param_value(param) for name, param in zip(expected, params, strict=True)}
    slots = text.count("{{")
    if len(text) + slots * max(map(len, values.values()), default=0) <= max_len:
        return  # cannot be too long: skip the substitution
    hydrated = _PLACEHOLDER.sub(lambda m: values.get(m[1], m[0]), text)
    if len(hydrated) > max_len:
        raise GraphError(
            132005, f"{where}: hydrated text is {len(hydrated)} characters; at most {max_len}."
        )


def _decode_components(components: list[Any]) -> list[Any]:
    if components and isinstance(components[0], dict):
        template = shapes.normalise_template({"components": components})
        decoded: list[Any] = decode(
            template["components"], list[shapes.Component], "template['components']"
        )
        return decoded
    return components


def check_template_components(
    shape: TemplateShape, components: list[Any], version: float = 24.0
) -> None:
    """Compare the parameters a send supplies with what the template expects (132000/132012).

    `components` are decoded `shapes.Component` structs (raw dicts are decoded first)."""
    header = body = None
    buttons: dict[int, Any] = {}
    extra: list[Any] = []
    for component in _decode_components(components):
        if isinstance(component, shapes.HeaderComponent):
            header = component
        elif isinstance(component, shapes.BodyComponent):
            body = component
        elif isinstance(component, shapes.ButtonComponent):
            buttons[int(component.index)] = component
        else:
            extra.append(component)

    named = shape.parameter_format == "NAMED"
    expected_media = _MEDIA_HEADER_FORMATS.get(shape.header_format or "")
    if expected_media is not None:
        if header is None:
            raise GraphError(
                132012, f"header: Format mismatch, expected {shape.header_format}, received UNKNOWN"
            )
        params = header.parameters
        if len(params) != 1:
            raise GraphError(
                132000,
                f"header: number of localizable_params ({len(params)}) does not match the expected "
                "number of params (1)",
            )
        if not isinstance(params[0], expected_media):
            raise GraphError(
                132012,
                f"header: Format mismatch, expected {shape.header_format}, received "
                f"{str(type(params[0]).__struct_config__.tag).upper()}",
            )
    else:
        _check_text_params(
            "header",
            header.parameters if header else [],
            shape.header_params,
            named,
            shape.header_text,
            60,
            version,
        )

    _check_text_params(
        "body",
        body.parameters if body else [],
        shape.body_params,
        named,
        shape.body_text,
        1024,
        version,
    )

    by_index = {b.index: b for b in shape.buttons}
    for index, supplied in buttons.items():
        button = by_index.get(index)
        if button is None:
            raise GraphError(132000, f"button at index {index}: the template has no such button")
        if button.kind not in _SUB_TYPE_KINDS.get(supplied.sub_type, frozenset()):
            raise GraphError(
                132012,
                f"button at index {index}: sub_type {supplied.sub_type} does not match the "
                f"template's {button.kind} button",
            )
        params = supplied.parameters
        limit = 1 if button.params or button.kind in _BUTTON_MAY_TAKE_PARAM else 0
        if len(params) > limit:
            raise GraphError(
                132000,
                f"button at index {index}: number of localizable_params ({len(params)}) does not "
                f"match the expected number of params ({button.params})",
            )
        expected_param = _BUTTON_PARAM.get(button.kind)
        for param in params:
            if expected_param is not None and not isinstance(param, expected_param):
                raise GraphError(
                    132012,
                    f"button at index {index}: parameter of type "
                    f"{type(param).__struct_config__.tag} does not fit a {button.kind} button",
                )
            if button.kind == "OTP" and len(_param_value(param)) > 15:
                raise GraphError(132005, f"button at index {index}: a code has at most 15 chars")
    for index, expected_count in shape.button_params:
        button = buttons.get(index)
        supplied_count = len(button.parameters) if button else 0
        if supplied_count != expected_count:
            raise GraphError(
                132000,
                f"button at index {index}: number of localizable_params ({supplied_count}) does "
                f"not match the expected number of params ({expected_count})",
            )

    for component in extra:
        if isinstance(component, shapes.LimitedTimeOfferComponent) and not shape.limited_time_offer:
            raise GraphError(132000, "limited_time_offer: the template has no such component")
        if isinstance(component, shapes.CarouselComponent):
            if not shape.carousel_cards:
                raise GraphError(132000, "carousel: the template has no carousel")
            if len(component.cards) != shape.carousel_cards:
                raise GraphError(
                    132000,
                    f"carousel: {len(component.cards)} cards supplied, the template has "
                    f"{shape.carousel_cards}",
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
# Inside an open free-entry-point window every message is free, templates too.
FREE_ENTRY_POINT = Pricing("free_entry_point", "referral_conversion")
FREE_ENTRY_POINT_WINDOW_SECONDS = 72 * 3600


def decide_pricing(
    rules: PricingRules,
    template_category: str | None,
    window_open: bool,
    free_entry_point: bool = False,
) -> Pricing:
    """pmp-2025-07: non-template messages and utility templates inside an open customer-service
    window are free. pmp-2026-10: both become regular (billable); the rest is unchanged. Inside a
    free-entry-point window (72 h from the first reply to a user who came from an ad) all is
    free under both rules."""
    if free_entry_point:
        return FREE_ENTRY_POINT
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
    status: str  # sent | delivered | read | played | failed
    event_offset: float  # when it happened, seconds after acceptance (orders timestamps)
    emit_offset: float  # when the webhook is emitted, seconds after acceptance
    with_pricing: bool
    error_code: int | None = None
    error_details: str | None = None


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
    voice: bool = False,
    failure_details: str | None = None,
) -> list[PlannedStatus]:
    """The status webhooks one accepted message produces.

    `pricing` rides on `sent` and on exactly one of delivered/read (read when delivered is
    skipped); failures carry no pricing. A reaction only ever gets `sent` (or `failed`). A voice
    message that is read is also `played` (first play), after another read delay.
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
                    failure_details,
                ),
            ]
        return [PlannedStatus("failed", sent_at, sent_at, False, failure_code, failure_details)]
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
        if voice:
            played_at = read_at + delays.read
            plan.append(PlannedStatus("played", played_at, played_at, False))
    return plan


STATUS_RANK = {"accepted": 0, "held": 0, "sent": 1, "delivered": 2, "read": 3, "played": 4}


def later_status(current: str, new: str) -> str:
    """Statuses only move forward; `failed` is terminal."""
    if current == "failed":
        return current
    if new == "failed":
        return new
    return new if STATUS_RANK[new] > STATUS_RANK[current] else current


def retry_delay(attempt: int, initial: float, max_interval: float) -> float:
    """Exponential backoff after the `attempt`-th failed delivery (1-based): initial, 2x, 4x ..."""
    factor: int = 2 ** (attempt - 1)
    return min(initial * factor, max_interval)
