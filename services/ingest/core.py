"""ingest's decisions, pure: request validation, Meta-shape translation, idempotency, template
parameter checks, the messages document, the event and the responses.

No await, no clock, no environment, no I/O: times, ids, prices and looked-up documents are passed
in. Failures are raised as the codes of services/ingest/errors.py.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import orjson
import phonenumbers

from services.ingest.errors import TEMPLATE_STATUS_META_CODES, invalid_field, reject
from shared.ids import derived_id
from shared.message_docs import from_ms, message_document
from shared.messages import SendRequested
from shared.phone import parse_e164, wa_id_of

MAX_BODY_BYTES = 64 * 1024
MAX_TEXT_BODY = 4096
MAX_CLIENT_REFERENCE = 256
MAX_IDEMPOTENCY_KEY = 255
MIN_VALIDITY_SECONDS = 30
DEFAULT_VALIDITY_SECONDS = 24 * 3600
MAX_VALIDITY_SECONDS = 30 * 24 * 3600
# An idempotency key names one message for at least this long; after it, the key may be reused.
IDEMPOTENCY_WINDOW_MS = 24 * 3600 * 1000
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100
API_KEY_PREFIX = "hw_live_"

MESSAGE_STATUSES = frozenset({"accepted", "rejected", "approved", "sent", "delivered", "read",
                              "failed", "expired", "unknown"})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


# --- the normalised request -----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SendRequest:
    """A send request from either route, validated and normalised."""

    phone_number_id: str
    recipient: str  # E.164 with '+'
    recipient_region: str
    recipient_input: str  # what the client wrote (Meta echoes it as contacts[].input)
    message_type: str
    content: dict[str, Any]
    client_reference: str | None
    validity_seconds: int

    @property
    def template_name(self) -> str:
        return str(self.content["name"])

    @property
    def template_language(self) -> str:
        return str(self.content["language"]["code"])


_V1_FIELDS = frozenset({"from", "to", "type", "template", "text", "client_reference",
                        "validity_seconds"})
_META_FIELDS = frozenset({"messaging_product", "recipient_type", "to", "type", "template", "text",
                          "biz_opaque_callback_data"})


def parse_send_request(body: Any) -> SendRequest:
    """Validate a `POST /v1/messages` body (already decoded JSON)."""
    fields = _require_object(body)
    _reject_unknown(fields, _V1_FIELDS, "")
    phone_number_id = _require_string(fields, "from", "from", max_len=64)
    to = fields.get("to")
    if to is None:
        raise invalid_field("to", "`to` is required")
    recipient, region = parse_recipient(to)
    message_type, content = _parse_content(fields)
    return SendRequest(
        phone_number_id=phone_number_id, recipient=recipient, recipient_region=region,
        recipient_input=to, message_type=message_type, content=content,
        client_reference=_parse_client_reference(fields.get("client_reference"),
                                                 "client_reference"),
        validity_seconds=_parse_validity(fields.get("validity_seconds")),
    )


def parse_meta_request(body: Any, phone_number_id: str, business_region: str | None) -> SendRequest:
    """Validate a body in Meta's own shape (`POST /{version}/{phone-number-id}/messages`).

    Like Meta, a `to` without '+' is read as a number of the business number's country.
    """
    fields = _require_object(body)
    _reject_unknown(fields, _META_FIELDS, "")
    if fields.get("messaging_product") != "whatsapp":
        raise invalid_field("messaging_product", "`messaging_product` must be \"whatsapp\"")
    if fields.get("recipient_type", "individual") != "individual":
        raise invalid_field("recipient_type", "only `recipient_type` \"individual\" is supported")
    to = fields.get("to")
    if to is None:
        raise invalid_field("to", "`to` is required")
    recipient, region = parse_meta_recipient(to, business_region)
    message_type, content = _parse_content({"type": "text", **fields})
    return SendRequest(
        phone_number_id=phone_number_id, recipient=recipient, recipient_region=region,
        recipient_input=to, message_type=message_type, content=content,
        client_reference=_parse_client_reference(fields.get("biz_opaque_callback_data"),
                                                 "biz_opaque_callback_data"),
        validity_seconds=DEFAULT_VALIDITY_SECONDS,
    )


def parse_recipient(to: Any) -> tuple[str, str]:
    """(E.164, region) or invalid_phone_number."""
    if not isinstance(to, str):
        return parse_e164(to)  # raises
    return _parse_e164_cached(to)


@lru_cache(maxsize=65536)
def _parse_e164_cached(to: str) -> tuple[str, str]:
    # The same recipients come back again and again; parsing costs more than the rest of a check.
    return parse_e164(to)


def parse_meta_recipient(to: Any, business_region: str | None) -> tuple[str, str]:
    if not isinstance(to, str) or to.strip().startswith("+") or business_region is None:
        return parse_recipient(to)
    try:
        number = phonenumbers.parse(to, business_region)
    except phonenumbers.NumberParseException as exc:
        raise reject("invalid_phone_number", f"`to` is not a phone number: {exc}",
                     field="to") from exc
    if not phonenumbers.is_valid_number(number):
        raise reject("invalid_phone_number", "`to` is not a valid phone number", field="to")
    return parse_recipient(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def region_of_display_number(display_phone_number: str | None) -> str | None:
    """The country of a business number as Meta displays it (digits, country code first)."""
    if not display_phone_number:
        return None
    try:
        number = phonenumbers.parse("+" + display_phone_number.lstrip("+"), None)
    except phonenumbers.NumberParseException:
        return None
    # Test numbers (e.g. 555 ones) are not "valid" for any region: fall back to the country
    # code's main region, which is what a national number is read against anyway.
    region = (phonenumbers.region_code_for_number(number)
              or phonenumbers.region_code_for_country_code(number.country_code))
    return None if region in (None, "ZZ") else region


def _require_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise reject("invalid_request", "the request body must be a JSON object")
    return body


def _reject_unknown(fields: dict[str, Any], known: frozenset[str], where: str) -> None:
    for name in fields:
        if name not in known:
            path = f"{where}.{name}" if where else name
            raise reject("unknown_field", f"unknown field `{path}`", field=path)


def _require_string(fields: dict[str, Any], name: str, path: str, *, max_len: int,
                    min_len: int = 1) -> str:
    value = fields.get(name)
    if value is None:
        raise invalid_field(path, f"`{path}` is required")
    if not isinstance(value, str) or not min_len <= len(value) <= max_len:
        raise invalid_field(path, f"`{path}` must be a string of {min_len} to {max_len} "
                                  "characters")
    return value


def _parse_client_reference(value: Any, path: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_CLIENT_REFERENCE or "\x00" in value:
        raise invalid_field(path, f"`{path}` must be a string of at most "
                                  f"{MAX_CLIENT_REFERENCE} characters")
    return value


def _parse_validity(value: Any) -> int:
    if value is None:
        return DEFAULT_VALIDITY_SECONDS
    if (isinstance(value, bool) or not isinstance(value, int)
            or not MIN_VALIDITY_SECONDS <= value <= MAX_VALIDITY_SECONDS):
        raise invalid_field("validity_seconds", "`validity_seconds` must be an integer from "
                                                f"{MIN_VALIDITY_SECONDS} to "
                                                f"{MAX_VALIDITY_SECONDS}")
    return value


# --- message content, one validator per type --------------------------------------------------

def _parse_text(text: Any) -> dict[str, Any]:
    if not isinstance(text, dict):
        raise invalid_field("text", "`text` must be an object")
    _reject_unknown(text, frozenset({"body", "preview_url"}), "text")
    _require_string(text, "body", "text.body", max_len=MAX_TEXT_BODY)
    if "preview_url" in text and not isinstance(text["preview_url"], bool):
        raise invalid_field("text.preview_url", "`text.preview_url` must be a boolean")
    return text


_COMPONENT_TYPES = frozenset({"header", "body", "button"})


def _parse_template(template: Any) -> dict[str, Any]:
    if not isinstance(template, dict):
        raise invalid_field("template", "`template` must be an object")
    _reject_unknown(template, frozenset({"name", "language", "components"}), "template")
    _require_string(template, "name", "template.name", max_len=512)
    language = template.get("language")
    if not isinstance(language, dict):
        raise invalid_field("template.language", "`template.language` must be an object like "
                                                 "{\"code\": \"en_US\"}")
    _reject_unknown(language, frozenset({"code", "policy"}), "template.language")
    _require_string(language, "code", "template.language.code", max_len=20)
    components = template.get("components", [])
    if not isinstance(components, list):
        raise invalid_field("template.components", "`template.components` must be an array")
    for i, component in enumerate(components):
        _check_component(component, f"template.components[{i}]")
    return template


def _check_component(component: Any, path: str) -> None:
    if not isinstance(component, dict):
        raise invalid_field(path, f"`{path}` must be an object")
    _reject_unknown(component, frozenset({"type", "sub_type", "index", "parameters"}), path)
    kind = component.get("type")
    if kind not in _COMPONENT_TYPES:
        raise invalid_field(f"{path}.type", f"`{path}.type` must be one of header, body, button")
    if kind == "button":
        if not isinstance(component.get("sub_type"), str):
            raise invalid_field(f"{path}.sub_type", f"`{path}.sub_type` is required for buttons")
        if _button_index(component) is None:
            raise invalid_field(f"{path}.index", f"`{path}.index` must be a button position "
                                                 "(0, 1, ...)")
    parameters = component.get("parameters", [])
    if not isinstance(parameters, list):
        raise invalid_field(f"{path}.parameters", f"`{path}.parameters` must be an array")
    for j, parameter in enumerate(parameters):
        if not isinstance(parameter, dict) or not isinstance(parameter.get("type"), str):
            raise invalid_field(f"{path}.parameters[{j}]",
                                f"`{path}.parameters[{j}]` must be an object with a `type`")


def _button_index(component: dict[str, Any]) -> int | None:
    index = component.get("index")
    if isinstance(index, bool):
        return None
    if isinstance(index, int) and index >= 0:
        return index
    if isinstance(index, str) and index.isdigit():
        return int(index)
    return None


# More types (image, interactive, ...) are added here: one validator each.
CONTENT_PARSERS = {"template": _parse_template, "text": _parse_text}


def _parse_content(fields: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    message_type = fields.get("type")
    if message_type is None:
        raise invalid_field("type", "`type` is required")
    if message_type not in CONTENT_PARSERS:
        raise invalid_field("type", f"`type` must be one of {', '.join(sorted(CONTENT_PARSERS))}",
                            allowed=sorted(CONTENT_PARSERS))
    for other in CONTENT_PARSERS:
        if other != message_type and other in fields:
            raise invalid_field(other, f"`{other}` cannot be sent with type {message_type}")
    if message_type not in fields:
        raise invalid_field(message_type, f"`{message_type}` is required for type "
                                          f"{message_type}")
    content = CONTENT_PARSERS[message_type](fields[message_type])
    _check_storable(content, message_type)
    return message_type, content


def _check_storable(value: Any, path: str, in_array: bool = False) -> None:
    """What the document store can hold (FerretDB: no nested arrays, no NUL in strings, no keys
    with '.' or a leading '$'). Meta's message objects never need any of these."""
    if isinstance(value, str):
        if "\x00" in value:
            raise invalid_field(path, f"`{path}` contains a NUL character")
    elif isinstance(value, dict):
        for key, item in value.items():
            if key.startswith("$") or "." in key:
                raise invalid_field(f"{path}.{key}", f"`{path}` has an invalid key {key!r}")
            _check_storable(item, f"{path}.{key}")
    elif isinstance(value, list):
        if in_array:
            raise invalid_field(path, f"`{path}` nests an array in an array")
        for i, item in enumerate(value):
            _check_storable(item, f"{path}[{i}]", in_array=True)


def parse_idempotency_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not 1 <= len(value) <= MAX_IDEMPOTENCY_KEY or not value.isprintable():
        raise invalid_field("Idempotency-Key", "the Idempotency-Key header must be 1 to "
                                               f"{MAX_IDEMPOTENCY_KEY} printable characters")
    return value


# --- identity and idempotency ---------------------------------------------------------------

def request_hash(request: SendRequest) -> str:
    """sha256 of the canonical JSON of the normalised request: key order, whitespace, defaults
    written out or left implicit, and `to` spelling make no difference."""
    canonical = {
        "from": request.phone_number_id, "to": request.recipient, "type": request.message_type,
        "content": request.content, "client_reference": request.client_reference,
        "validity_seconds": request.validity_seconds,
    }
    return hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).hexdigest()


def idempotency_bucket(now_ms: int) -> int:
    return now_ms // IDEMPOTENCY_WINDOW_MS


def idempotency_record_ids(account_id: str, key: str, now_ms: int) -> list[str]:
    """The ids of the records a key used within the last 24 h may have: this bucket's first.
    The 24 h bucket lets a key be reused once it is older than 24 h."""
    bucket = idempotency_bucket(now_ms)
    return [f"{account_id}:key:{b}:{key}" for b in (bucket, bucket - 1)]


_RFC4648_TO_CROCKFORD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567",
                                        b"0123456789abcdefghjkmnpqrstvwxyz")


def new_message_id(now_ms: int, random_bytes: bytes) -> str:
    """The id shared.ids.new_id("msg") makes (ULID layout: 10 chars of time, 16 random), built
    with one base32 encode instead of a Python loop per character: it runs on every request."""
    value = (now_ms << 80) | int.from_bytes(random_bytes[:10], "big")
    # 20 bytes = 32 base32 chars; the value fits in 128 bits, so the first 6 chars are zeros.
    encoded = base64.b32encode(value.to_bytes(20, "big")).translate(_RFC4648_TO_CROCKFORD)
    return "msg_" + encoded[6:].decode()


def keyed_message_id(account_id: str, key: str, now_ms: int) -> str:
    """Derived from (account, key, 24 h bucket): a retried request can't create a second message."""
    return derived_id("msg", account_id, key, str(idempotency_bucket(now_ms)))


def message_to_replay(existing: list[dict[str, Any]], body_hash: str,
                      now_ms: int) -> dict[str, Any] | None:
    """The message a request with an already-used key answers with, or None for a new message.

    Raises idempotency_key_reused when the key was used within 24 h for a different body.
    """
    live = [doc for doc in existing if now_ms - to_ms(doc["created_at"]) < IDEMPOTENCY_WINDOW_MS]
    if not live:
        return None
    doc = max(live, key=lambda d: to_ms(d["created_at"]))
    if doc.get("body_hash") != body_hash:
        raise reject("idempotency_key_reused", "this Idempotency-Key was used for a different "
                     "request within the last 24 hours", message_id=doc["_id"])
    return doc


def hash_api_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def api_key_from_header(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise reject("unauthorized", "send `Authorization: Bearer <api key>`")
    return token


def check_api_key(key_doc: dict[str, Any] | None) -> str:
    """The account id of a valid key."""
    if key_doc is None:
        raise reject("unauthorized", "unknown API key")
    if key_doc.get("revoked_at") is not None:
        raise reject("api_key_revoked", "this API key has been revoked")
    return str(key_doc["account_id"])


def check_account(account: dict[str, Any] | None) -> dict[str, Any]:
    if account is None:
        raise reject("unauthorized", "unknown API key")
    if account.get("status") != "active":
        raise reject("account_suspended", "this account is suspended")
    return account


def check_phone_number(phone: dict[str, Any] | None, account_id: str,
                       phone_number_id: str) -> dict[str, Any]:
    # Same answer whether the number is unknown or another account's: existence is not revealed.
    if phone is None or phone.get("account_id") != account_id:
        raise reject("foreign_phone_number", f"phone number {phone_number_id} is not one of "
                     "this account's numbers", field="from")
    return phone


# --- templates ------------------------------------------------------------------------------

_MEDIA_HEADER_FORMATS = frozenset({"IMAGE", "VIDEO", "DOCUMENT", "LOCATION"})


def check_template(template: dict[str, Any] | None, request: SendRequest) -> str:
    """Check the template is sendable with these parameters; return the pricing category."""
    name, language = request.template_name, request.template_language
    if template is None:
        raise reject("unknown_template", f"no template {name!r} in language {language!r}",
                     name=name, language=language)
    status = str(template.get("status", "")).upper()
    if status != "APPROVED":
        raise reject("template_not_approved", f"template {name!r} ({language}) is {status}",
                     name=name, language=language, status=status)
    check_template_parameters(template, request.content.get("components", []))
    return str(template.get("category", "MARKETING")).lower()


def _mismatch(component: str, expected: Any, supplied: Any, why: str) -> Exception:
    return reject("template_parameter_mismatch", f"{component}: {why}", component=component,
                  expected=expected, supplied=supplied)


def check_template_parameters(template: dict[str, Any], components: list[dict[str, Any]]) -> None:
    """Compare supplied parameters with the template's shape (stored by `hala templates sync`:
    parameter_format, header_format, header_params, body_params, button_params as
    [{index, count}])."""
    by_kind: dict[str, dict[str, Any]] = {}
    buttons: dict[int, dict[str, Any]] = {}
    for component in components:
        if component["type"] == "button":
            buttons[_button_index(component) or 0] = component
        else:
            by_kind[component["type"]] = component
    named = str(template.get("parameter_format", "POSITIONAL")).upper() == "NAMED"

    header_format = template.get("header_format")
    header = by_kind.get("header")
    header_params = header.get("parameters", []) if header else []
    if header_format in _MEDIA_HEADER_FORMATS:
        wanted = header_format.lower()
        if len(header_params) != 1 or header_params[0].get("type") != wanted:
            raise _mismatch("header", wanted, [p.get("type") for p in header_params],
                            f"the template's header needs one {wanted} parameter")
    else:
        _check_text_parameters("header", header_params, template.get("header_params", []), named)

    body = by_kind.get("body")
    _check_text_parameters("body", body.get("parameters", []) if body else [],
                           template.get("body_params", []), named)

    expected_buttons = {int(b["index"]): int(b["count"]) for b in
                        template.get("button_params", [])}
    for index in sorted(set(expected_buttons) | set(buttons)):
        supplied = len(buttons[index].get("parameters", [])) if index in buttons else 0
        expected = expected_buttons.get(index, 0)
        if supplied != expected:
            raise _mismatch(f"button[{index}]", expected, supplied,
                            f"expected {expected} parameters, got {supplied}")


def _check_text_parameters(component: str, params: list[dict[str, Any]], expected: list[str],
                           named: bool) -> None:
    if len(params) != len(expected):
        raise _mismatch(component, len(expected), len(params),
                        f"expected {len(expected)} parameters, got {len(params)}")
    if named:
        names = [p.get("parameter_name") for p in params]
        if sorted(map(str, names)) != sorted(expected):
            raise _mismatch(component, sorted(expected), names,
                            "named parameters must match the template's parameter names")


# --- credit ---------------------------------------------------------------------------------

def has_credit(balance: dict[str, Any] | None, price: int) -> bool:
    return balance is not None and int(balance.get("available", 0)) >= price


def insufficient_credit(price: int) -> Exception:
    return reject("insufficient_credit", "the account's available credit is below the price of "
                  "this message", price=price, unit="micros")


# --- the document, the event, the responses ---------------------------------------------------

def send_requested(*, message_id: str, account_id: str, request: SendRequest,
                   phone: dict[str, Any], category: str, now_ms: int) -> SendRequested:
    """The event of an accepted request: status makes the message's document from it."""
    return SendRequested(
        event_id=message_id, message_id=message_id, account_id=account_id,
        portfolio_id=phone.get("portfolio_id") or "", waba_id=phone["waba_id"],
        phone_number_id=request.phone_number_id, recipient=request.recipient,
        recipient_region=request.recipient_region,
        message_type=request.message_type,  # type: ignore[arg-type]  # validated by the parser
        content=request.content, category=category,  # type: ignore[arg-type]
        accepted_at=now_ms, expires_at=now_ms + request.validity_seconds * 1000,
        client_reference=request.client_reference)


def accepted_message(event: SendRequested, request: SendRequest) -> dict[str, Any]:
    """The message as ingest answers it: status's document-to-be, plus what the client wrote
    as `to` when it differs (Meta's shape echoes it)."""
    doc = message_document(event)
    if request.recipient_input != request.recipient:
        doc["recipient_input"] = request.recipient_input
    return doc


def idempotency_record(doc: dict[str, Any], key: str, body_hash: str,
                       now_ms: int) -> dict[str, Any]:
    """What ingest keeps of a keyed request: its message (to answer a retry the same way) and
    the body's hash (to refuse the key's reuse for another body)."""
    record_id = idempotency_record_ids(doc["account_id"], key, now_ms)[0]
    return {**doc, "_id": record_id, "message_id": doc["_id"], "body_hash": body_hash}


def message_of_record(record: dict[str, Any]) -> dict[str, Any]:
    doc = dict(record)
    doc["_id"] = doc.pop("message_id")
    return doc


def stored_content(doc: dict[str, Any]) -> dict[str, Any] | None:
    """A messages doc's content: JSON text since ingest stores it so, an object in older docs."""
    content = doc.get("content")
    return orjson.loads(content) if isinstance(content, str) else content


def send_requested_event(doc: dict[str, Any],
                         content: dict[str, Any] | None = None) -> SendRequested:
    """The event for a messages doc (also rebuilt from the doc when a replay re-publishes).
    `content` spares decoding the stored text again when the caller still has it."""
    return SendRequested(
        event_id=doc["_id"], message_id=doc["_id"], account_id=doc["account_id"],
        portfolio_id=doc.get("portfolio_id") or "", waba_id=doc["waba_id"],
        phone_number_id=doc["phone_number_id"], recipient=doc["recipient"],
        recipient_region=doc["recipient_region"], message_type=doc["type"],
        content=content if content is not None else stored_content(doc) or {},
        category=doc["category"], accepted_at=to_ms(doc["created_at"]),
        expires_at=to_ms(doc["expires_at"]), client_reference=doc.get("client_reference"),
    )


def accepted_response(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": doc["_id"], "status": "accepted", "from": doc["phone_number_id"],
        "to": doc["recipient"], "type": doc["type"],
        "client_reference": doc.get("client_reference"),
        "accepted_at": iso(doc["created_at"]), "expires_at": iso(doc["expires_at"]),
    }


def meta_accepted_response(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "contacts": [{"input": doc.get("recipient_input", doc["recipient"]),
                      "wa_id": wa_id_of(doc["recipient"])}],
        "messages": [{"id": doc["_id"], "message_status": "accepted"}],
    }


def meta_error_body(code: str, message: str, details: dict[str, Any], meta_code: int,
                    trace_id: str) -> dict[str, Any]:
    """Meta's Graph error envelope; our own code leads `error_data.details`."""
    meta_code = _template_status_code(meta_code, details)
    return {"error": {
        "message": f"(#{meta_code}) {message}",
        "type": "OAuthException",
        "code": meta_code,
        "error_data": {"messaging_product": "whatsapp", "details": f"{code}: {message}"},
        "fbtrace_id": trace_id,
    }}


def _template_status_code(meta_code: int, details: dict[str, Any]) -> int:
    return TEMPLATE_STATUS_META_CODES.get(str(details.get("status", "")), meta_code)


# --- reading messages -----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ListQuery:
    limit: int
    status: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    after: tuple[datetime, str] | None = None  # (created_at, id) of the last item seen


def parse_list_query(params: dict[str, str]) -> ListQuery:
    unknown = set(params) - {"status", "since", "until", "limit", "cursor"}
    if unknown:
        name = sorted(unknown)[0]
        raise reject("unknown_field", f"unknown query parameter `{name}`", field=name)
    status = params.get("status")
    if status is not None and status not in MESSAGE_STATUSES:
        raise invalid_field("status", "`status` must be one of "
                                      + ", ".join(sorted(MESSAGE_STATUSES)))
    limit_raw = params.get("limit", str(DEFAULT_PAGE_SIZE))
    if not limit_raw.isdigit() or not 1 <= int(limit_raw) <= MAX_PAGE_SIZE:
        raise invalid_field("limit", f"`limit` must be an integer from 1 to {MAX_PAGE_SIZE}")
    cursor = params.get("cursor")
    return ListQuery(limit=int(limit_raw), status=status, since=_parse_time(params, "since"),
                     until=_parse_time(params, "until"),
                     after=decode_cursor(cursor) if cursor else None)


def _parse_time(params: dict[str, str], name: str) -> datetime | None:
    raw = params.get(name)
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw.replace(" ", "+"))  # '+' arrives as ' ' in queries
    except ValueError:
        raise invalid_field(name, f"`{name}` must be an ISO 8601 time, e.g. "
                                  "2026-11-24T10:00:00Z") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def encode_cursor(doc: dict[str, Any]) -> str:
    raw = orjson.dumps([to_ms(doc["created_at"]), doc["_id"]])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created_ms, message_id = orjson.loads(base64.urlsafe_b64decode(padded))
        if not isinstance(created_ms, int) or not isinstance(message_id, str):
            raise ValueError
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise reject("invalid_cursor", "`cursor` is not one this API returned",
                     field="cursor") from None
    return from_ms(created_ms), message_id


def page(docs: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    """`docs` holds up to limit + 1 items: the extra one only says that there is a next page."""
    shown = docs[:limit]
    next_cursor = encode_cursor(shown[-1]) if len(docs) > limit and shown else None
    return {"data": [message_view(d, with_content=False) for d in shown],
            "next_cursor": next_cursor}


def price_view(reserve: dict[str, Any] | None, settle: dict[str, Any] | None,
               currency: str) -> dict[str, Any] | None:
    """What the message costs, from billing's ledger: reserved until Meta reports delivery,
    then charged at Meta's category (or released when it failed or was free)."""
    if reserve is None:
        return None
    if reserve.get("kind") == "reject":
        state, amount = "rejected", 0
    elif settle is None:
        state, amount = "reserved", int(reserve.get("amount", 0))
    elif settle.get("kind") == "charge":
        state, amount = "charged", int(settle.get("amount", 0))
    else:
        state, amount = "released", 0
    return {"state": state, "amount": amount, "currency": currency, "unit": "micros"}


def message_view(doc: dict[str, Any], *, with_content: bool = True,
                 price: dict[str, Any] | None = None) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": doc["_id"], "status": doc.get("status"), "from": doc.get("phone_number_id"),
        "to": doc.get("recipient"), "type": doc.get("type"), "category": doc.get("category"),
        "client_reference": doc.get("client_reference"),
        "accepted_at": iso(doc.get("created_at")), "expires_at": iso(doc.get("expires_at")),
        "history": [_history_entry(h) for h in doc.get("history", [])],
        "wamid": doc.get("wamid"), "price": price, "pricing": doc.get("pricing"),
        "error": doc.get("error"),
    }
    if with_content:
        view["content"] = stored_content(doc)
    return view


def _history_entry(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: (iso(v) if k == "at" else v) for k, v in entry.items()}


def balance_view(balance: dict[str, Any] | None, currency: str) -> dict[str, Any]:
    balance = balance or {}
    return {"available": int(balance.get("available", 0)),
            "reserved": int(balance.get("reserved", 0)),
            "currency": balance.get("currency") or currency, "unit": "micros"}


# --- time -----------------------------------------------------------------------------------

def to_ms(value: datetime | int) -> int:
    """Documents hold BSON dates; integer milliseconds are accepted too."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return (value - _EPOCH) // _ONE_MS
    return int(value)


def iso(value: datetime | int | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime) and value.tzinfo is UTC and not value.microsecond % 1000:
        # Our own documents' times (whole milliseconds, UTC): no round trip through an int.
        return value.isoformat(timespec="milliseconds")[:-6] + "Z"
    moment = from_ms(to_ms(value))
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
