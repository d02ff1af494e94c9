"""ingest's decisions, pure: request validation, `to` normalisation, idempotency, template
parameter checks, replies naming our ids, the messages document, the event and the responses.

No await, no clock, no environment, no I/O: times, ids, prices and looked-up documents are passed
in. Failures are raised as the codes of services/ingest/errors.py.

Validation is one msgspec decode of the body into the declarations of services/ingest/schemas.py;
msgspec's errors are translated here into our codes. What stays hand-written: `to` (phonenumbers),
what the document store can hold, template parameters against the stored template, and whether a
message id named in a reply is one of the account's.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import msgspec
import orjson
import phonenumbers

from services.ingest.errors import TEMPLATE_STATUS_META_CODES, invalid_field, reject
from services.ingest.schemas import MetaSendRequest, V1SendRequest
from shared.errors import DependencyUnavailable, ServiceError
from shared.ids import derived_id
from shared.message_docs import from_ms, message_document
from shared.messages import SendRequested
from shared.phone import wa_id_of

MAX_BODY_BYTES = 64 * 1024
MAX_IDEMPOTENCY_KEY = 255
DEFAULT_VALIDITY_SECONDS = 24 * 3600
# An idempotency key names one message for at least this long; after it, the key may be reused.
IDEMPOTENCY_WINDOW_MS = 24 * 3600 * 1000
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100
API_KEY_PREFIX = "hw_live_"
# Our own message ids; anything else named as a reply's or reaction's target is Meta's wamid.
OUR_ID_PREFIX = "msg_"

MESSAGE_STATUSES = frozenset(
    {
        "accepted",
        "rejected",
        "approved",
        "sent",
        "delivered",
        "read",
        "failed",
        "expired",
        "unknown",
    }
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


# --- the normalised request -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendRequest:
    """A send request from either route, validated and normalised."""

    phone_number_id: str
    recipient_input: str  # what the client wrote (Meta echoes it as contacts[].input)
    message_type: str
    content: Any  # Meta's object for the type: a dict, or a list for contacts
    client_reference: str | None
    callback_data: str | None  # the client's own biz_opaque_callback_data
    reply_to: str | None  # context.message_id: a wamid or one of our message ids
    validity_seconds: int
    # E.164 with '+' and its region; None until read in the business number's country (a
    # national number), which `with_recipient` does once the number is known.
    recipient: str | None = None
    recipient_region: str | None = None

    @property
    def template_name(self) -> str:
        return str(self.content["name"])

    @property
    def template_language(self) -> str:
        return str(self.content["language"]["code"])


_V1_DECODER = msgspec.json.Decoder(V1SendRequest)
_META_DECODER = msgspec.json.Decoder(MetaSendRequest)


def parse_send_request(body: bytes | Any) -> SendRequest:
    """Validate a `POST /v1/messages` body (its bytes; a decoded body, as tests give, is encoded
    again first). A national `to` waits for `with_recipient`."""
    request, raw = _decode(_V1_DECODER, body)
    return _normalised(
        request, raw, request.from_, None, request.client_reference, request.validity_seconds
    )


def parse_meta_request(
    body: bytes | Any, phone_number_id: str, business_region: str | None
) -> SendRequest:
    """Validate a body in Meta's own shape (`POST /{version}/{phone-number-id}/messages`)."""
    request, raw = _decode(_META_DECODER, body)
    if request.recipient_type == "group":
        raise reject(
            "unsupported",
            "group messages (`recipient_type: group`) are not supported",
            field="recipient_type",
        )
    return _normalised(request, raw, phone_number_id, business_region, None, msgspec.UNSET)


def _decode(decoder: msgspec.json.Decoder[Any], body: bytes | Any) -> tuple[Any, bytes]:
    raw = bytes(body) if isinstance(body, bytes | bytearray | memoryview) else orjson.dumps(body)
    try:
        return decoder.decode(raw), raw
    except msgspec.ValidationError as exc:
        raise validation_error(str(exc)) from None
    except msgspec.DecodeError:
        raise reject("malformed_json", "the request body is not valid JSON") from None


def _normalised(
    request: V1SendRequest | MetaSendRequest,
    raw: bytes,
    phone_number_id: str,
    business_region: str | None,
    client_reference: Any,
    validity_seconds: Any,
) -> SendRequest:
    content = msgspec.to_builtins(getattr(request, request.type))
    callback_data = _given(request.biz_opaque_callback_data)
    client_reference = _given(client_reference)
    if _may_not_be_storable(raw):
        _check_storable(content, request.type)
        for value, name in (
            (callback_data, "biz_opaque_callback_data"),
            (client_reference, "client_reference"),
        ):
            if value is not None:
                _check_storable(value, name)
    context = _given(request.context)
    found = _recipient(request.to, business_region)
    if found is None and (business_region is not None or not _may_be_national(request.to)):
        raise _invalid_recipient()
    return SendRequest(
        phone_number_id=phone_number_id,
        recipient_input=request.to,
        message_type=request.type,
        content=content,
        client_reference=client_reference,
        callback_data=callback_data,
        reply_to=context.message_id if context is not None else None,
        validity_seconds=_given(validity_seconds) or DEFAULT_VALIDITY_SECONDS,
        recipient=found[0] if found else None,
        recipient_region=found[1] if found else None,
    )


def _given(value: Any) -> Any:
    return None if value is msgspec.UNSET else value


# msgspec's errors read "<rule> - at `$.<path>`"; rules our declarations add read "[field] rule".
_AT = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")
_NAMED = re.compile(r"`([^`]*)`")  # a JSON key may be empty: "unknown field ``"


def validation_error(text: str) -> ServiceError:
    """Our error for one of msgspec's validation messages: `unknown_field` or `invalid_field`
    with the field's path (and the rule broken), `invalid_phone_number` for a `to` that is not a
    string, `invalid_request` for a body that is not an object."""
    at = _AT.search(text)
    path = at["path"] if at else ""
    rule = text[: at.start()] if at else text
    if rule.startswith("Object contains unknown field"):
        field = _join(path, _NAMED.search(rule)[1])  # type: ignore[index]
        return reject("unknown_field", f"unknown field `{field}`", field=field)
    if rule.startswith("Object missing required field"):
        field = _join(path, _NAMED.search(rule)[1])  # type: ignore[index]
        return invalid_field(field, f"`{field}` is required")
    if rule.startswith("["):
        name, _, rule = rule[1:].partition("] ")
        field = _join(path, name)
        return invalid_field(field, rule, rule=rule)
    if not path:
        return reject("invalid_request", "the request body must be a JSON object")
    if path == "to":
        return reject("invalid_phone_number", "`to` must be a phone number as a string", field="to")
    return invalid_field(path, f"`{path}`: {rule}", rule=rule)


def _join(path: str, name: str) -> str:
    if not path:
        return name
    return f"{path}{name}" if name.startswith("[") else f"{path}.{name}"


# --- the recipient ----------------------------------------------------------------------------

# What Meta accepts around the digits: a leading '+', spaces, dashes, dots, parentheses.
_PHONE_SHAPE = re.compile(r"^\+?[0-9 ().\-]{2,40}$")
_NOT_DIGITS = re.compile(r"\D")


def with_recipient(request: SendRequest, business_region: str | None) -> SendRequest:
    """The request with its E.164 recipient: a number that was not valid internationally is
    read as a national number of the business number's country, as Meta does."""
    if request.recipient is not None:
        return request
    found = _recipient(request.recipient_input, business_region)
    if found is None:
        raise _invalid_recipient()
    return replace(request, recipient=found[0], recipient_region=found[1])


def normalised_recipient(value: str, business_region: str | None, field: str) -> str:
    """A number a client names outside a send (a suppression, a block) as E.164: international
    first, else national in `business_region` when given; else 400 invalid_phone_number."""
    found = _recipient(value, business_region)
    if found is None:
        raise reject(
            "invalid_phone_number",
            f"`{field}` is not a valid phone number: give it "
            "in international form, e.g. +447700900123",
            field=field,
        )
    return found[0]


def _may_be_national(to: str) -> bool:
    raw = to.strip()
    return not raw.startswith("+") and _PHONE_SHAPE.match(raw) is not None


def _invalid_recipient() -> ServiceError:
    return reject(
        "invalid_phone_number",
        "`to` is not a valid phone number: give it in "
        "international form, e.g. +447700900123 or 447700900123",
        field="to",
    )


@lru_cache(maxsize=65536)
def _recipient(to: str, business_region: str | None) -> tuple[str, str] | None:
    """(E.164, region), or None. International first: '+' and the digits; then, unless the
    client wrote a '+', national in `business_region`. Cached: the same recipients come back
    again and again, and parsing costs more than the rest of a request's checks."""
    raw = to.strip()
    if not _PHONE_SHAPE.match(raw):
        return None
    number = _valid("+" + _NOT_DIGITS.sub("", raw), None)
    if number is None and not raw.startswith("+") and business_region is not None:
        number = _valid(raw, business_region)
    if number is None:
        return None
    region = phonenumbers.region_code_for_number(number) or "ZZ"
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), region


def _valid(text: str, region: str | None) -> phonenumbers.PhoneNumber | None:
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    return number if phonenumbers.is_valid_number(number) else None


@lru_cache(maxsize=4096)
def region_of_display_number(display_phone_number: str | None) -> str | None:
    """The country of a business number as Meta displays it (digits, country code first).
    Cached: it is asked on every send, of a few numbers, and parsing one cost ~20 % of a
    request's CPU in ingest's event loop (bench/README.md, "ingest CPU per request")."""
    if not display_phone_number:
        return None
    try:
        number = phonenumbers.parse("+" + display_phone_number.lstrip("+"), None)
    except phonenumbers.NumberParseException:
        return None
    # Test numbers (e.g. 555 ones) are not "valid" for any region: fall back to the country
    # code's main region, which is what a national number is read against anyway.
    country_code = number.country_code
    region = phonenumbers.region_code_for_number(number) or (
        phonenumbers.region_code_for_country_code(country_code)
        if country_code is not None
        else None
    )
    return None if region in (None, "ZZ") else region


# --- replies and reactions naming our ids ------------------------------------------------------


def our_message_refs(request: SendRequest) -> list[str]:
    """Our message ids the request names (its reply's target, its reaction's target): each
    must be one of the account's messages, and is sent as its wamid."""
    refs = [request.reply_to] if request.reply_to else []
    if request.message_type == "reaction":
        refs.append(request.content["message_id"])
    return [ref for ref in refs if ref.startswith(OUR_ID_PREFIX)]


def check_referenced_message(doc: dict[str, Any] | None, message_id: str) -> str | None:
    """The wamid of a named message of the account, or None when it has none yet (the sender
    resolves it before sending). Another account's message is as unknown as no message."""
    if doc is None:
        raise reject(
            "unknown_context_message",
            f"{message_id} is not one of this account's messages",
            message_id=message_id,
        )
    wamid = doc.get("wamid")
    return str(wamid) if wamid else None


def with_wamids(request: SendRequest, wamids: dict[str, str]) -> SendRequest:
    """The request with the named message ids that have a wamid replaced by it."""
    if not wamids:
        return request
    reply_to = wamids.get(request.reply_to or "", request.reply_to)
    content = request.content
    if request.message_type == "reaction" and content["message_id"] in wamids:
        content = {**content, "message_id": wamids[content["message_id"]]}
    return replace(request, reply_to=reply_to, content=content)


def _may_not_be_storable(raw: bytes) -> bool:
    """Whether the body needs the walk below (which costs more than the rest of a request's
    checks). A NUL can only arrive escaped (`\\u0000`); keys and nested arrays are free only
    in a flow's data objects (`flow_action_data`, `flow_action_payload.data`): every other
    object is a declared Struct with no nested arrays."""
    return b"\\u0000" in raw or b"flow_action" in raw


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
        raise invalid_field(
            "Idempotency-Key",
            f"the Idempotency-Key header must be 1 to {MAX_IDEMPOTENCY_KEY} printable characters",
        )
    return value


# --- identity and idempotency ---------------------------------------------------------------


def request_hash(request: SendRequest) -> str:
    """sha256 of the canonical JSON of the normalised request: key order, whitespace, defaults
    written out or left implicit, and `to` spelling make no difference."""
    canonical = {
        "from": request.phone_number_id,
        "to": request.recipient,
        "type": request.message_type,
        "content": request.content,
        "client_reference": request.client_reference,
        "callback_data": request.callback_data,
        "reply_to": request.reply_to,
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


_RFC4648_TO_CROCKFORD = bytes.maketrans(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", b"0123456789abcdefghjkmnpqrstvwxyz"
)


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


def message_to_replay(
    existing: list[dict[str, Any]], body_hash: str, now_ms: int
) -> dict[str, Any] | None:
    """The message a request with an already-used key answers with, or None for a new message.

    Raises idempotency_key_reused when the key was used within 24 h for a different body.
    """
    live = [doc for doc in existing if now_ms - to_ms(doc["created_at"]) < IDEMPOTENCY_WINDOW_MS]
    if not live:
        return None
    doc = max(live, key=lambda d: to_ms(d["created_at"]))
    if doc.get("body_hash") != body_hash:
        raise reject(
            "idempotency_key_reused",
            "this Idempotency-Key was used for a different request within the last 24 hours",
            message_id=doc["_id"],
        )
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


def check_phone_number(
    phone: dict[str, Any] | None, account_id: str, phone_number_id: str
) -> dict[str, Any]:
    # Same answer whether the number is unknown or another account's: existence is not revealed.
    if phone is None or phone.get("account_id") != account_id:
        raise reject(
            "foreign_phone_number",
            f"phone number {phone_number_id} is not one of this account's numbers",
            field="from",
        )
    return phone


# --- templates ------------------------------------------------------------------------------

_MEDIA_HEADER_FORMATS = frozenset({"IMAGE", "VIDEO", "GIF", "DOCUMENT", "LOCATION", "PRODUCT"})


def check_template(template: dict[str, Any] | None, request: SendRequest) -> str:
    """Check the template is sendable with these parameters; return the pricing category."""
    name, language = request.template_name, request.template_language
    if template is None:
        raise reject(
            "unknown_template",
            f"no template {name!r} in language {language!r}",
            name=name,
            language=language,
        )
    status = str(template.get("status", "")).upper()
    if status != "APPROVED":
        raise reject(
            "template_not_approved",
            f"template {name!r} ({language}) is {status}",
            name=name,
            language=language,
            status=status,
        )
    if template.get("shape_known") is not False:
        # A template status learnt of from a webhook has no components yet: Meta checks them.
        check_template_parameters(template, request.content.get("components") or [])
    return str(template.get("category", "MARKETING")).lower()


def _mismatch(component: str, expected: Any, supplied: Any, why: str) -> Exception:
    return reject(
        "template_parameter_mismatch",
        f"{component}: {why}",
        component=component,
        expected=expected,
        supplied=supplied,
    )


def check_template_parameters(template: dict[str, Any], components: list[dict[str, Any]]) -> None:
    """Compare supplied parameters with the template's shape (stored by `hala templates sync`:
    parameter_format, header_format, header_params, body_params, button_params as
    [{index, count}])."""
    by_kind: dict[str, dict[str, Any]] = {}
    buttons: dict[int, dict[str, Any]] = {}
    for component in components:
        kind = component["type"].lower()  # Meta takes both spellings; so do the schemas
        if kind == "button":
            buttons[int(component["index"])] = component
        else:
            by_kind[kind] = component
    named = str(template.get("parameter_format", "POSITIONAL")).upper() == "NAMED"

    header_format = template.get("header_format")
    header = by_kind.get("header")
    header_params = (header.get("parameters") or []) if header else []
    if header_format in _MEDIA_HEADER_FORMATS:
        wanted = header_format.lower()
        if len(header_params) != 1 or header_params[0].get("type") != wanted:
            raise _mismatch(
                "header",
                wanted,
                [p.get("type") for p in header_params],
                f"the template's header needs one {wanted} parameter",
            )
    else:
        _check_text_parameters("header", header_params, template.get("header_params", []), named)

    body = by_kind.get("body")
    _check_text_parameters(
        "body",
        (body.get("parameters") or []) if body else [],
        template.get("body_params", []),
        named,
    )

    expected_buttons = {int(b["index"]): int(b["count"]) for b in template.get("button_params", [])}
    for index in sorted(set(expected_buttons) | set(buttons)):
        supplied = len(buttons[index].get("parameters") or []) if index in buttons else 0
        expected = expected_buttons.get(index, 0)
        if supplied != expected:
            raise _mismatch(
                f"button[{index}]",
                expected,
                supplied,
                f"expected {expected} parameters, got {supplied}",
            )


def _check_text_parameters(
    component: str, params: list[dict[str, Any]], expected: list[str], named: bool
) -> None:
    if len(params) != len(expected):
        raise _mismatch(
            component,
            len(expected),
            len(params),
            f"expected {len(expected)} parameters, got {len(params)}",
        )
    if named:
        names = [p.get("parameter_name") for p in params]
        if sorted(map(str, names)) != sorted(expected):
            raise _mismatch(
                component,
                sorted(expected),
                names,
                "named parameters must match the template's parameter names",
            )


# --- credit ---------------------------------------------------------------------------------


def has_credit(balance: dict[str, Any] | None, price: int) -> bool:
    return balance is not None and int(balance.get("available", 0)) >= price


def insufficient_credit(price: int) -> Exception:
    return reject(
        "insufficient_credit",
        "the account's available credit is below the price of this message",
        price=price,
        unit="micros",
    )


def publish_unconfirmed(error: DependencyUnavailable, message_id: str) -> DependencyUnavailable:
    """The 503 for a message whose event the broker did not confirm in time but may have
    written: still a 503 (nothing says it was accepted), but never a plain "unavailable", which
    a client may read as "not sent" and send again. It names the message, so a keyless client
    can look it up (GET /v1/messages/{id}) before sending it again; a keyed one retries safely."""
    return DependencyUnavailable(
        "the message may have been accepted: the broker did not confirm it in time; retry with "
        "the same Idempotency-Key, or look the message up before sending it again",
        details={**error.details, "message_id": message_id},
    )


# --- the document, the event, the responses ---------------------------------------------------


def send_requested(
    *,
    message_id: str,
    account_id: str,
    request: SendRequest,
    phone: dict[str, Any],
    category: str,
    now_ms: int,
) -> SendRequested:
    """The event of an accepted request: status makes the message's document from it."""
    return SendRequested(
        event_id=message_id,
        message_id=message_id,
        account_id=account_id,
        portfolio_id=phone.get("portfolio_id") or "",
        waba_id=phone["waba_id"],
        phone_number_id=request.phone_number_id,
        recipient=request.recipient or "",
        recipient_region=request.recipient_region or "",
        message_type=request.message_type,  # type: ignore[arg-type]  # validated by the parser
        content=request.content,
        category=category,  # type: ignore[arg-type]
        accepted_at=now_ms,
        expires_at=now_ms + request.validity_seconds * 1000,
        client_reference=request.client_reference,
        callback_data=request.callback_data,
        reply_to=request.reply_to,
    )


def accepted_message(event: SendRequested, request: SendRequest) -> dict[str, Any]:
    """The message as ingest answers it: status's document-to-be, plus what the client wrote
    as `to` when it differs (Meta's shape echoes it)."""
    doc = message_document(event)
    if request.recipient_input != request.recipient:
        doc["recipient_input"] = request.recipient_input
    return doc


def idempotency_record(
    doc: dict[str, Any], key: str, body_hash: str, now_ms: int
) -> dict[str, Any]:
    """What ingest keeps of a keyed request: its message (to answer a retry the same way) and
    the body's hash (to refuse the key's reuse for another body)."""
    record_id = idempotency_record_ids(doc["account_id"], key, now_ms)[0]
    return {**doc, "_id": record_id, "message_id": doc["_id"], "body_hash": body_hash}


def message_of_record(record: dict[str, Any]) -> dict[str, Any]:
    doc = dict(record)
    doc["_id"] = doc.pop("message_id")
    return doc


def stored_content(doc: dict[str, Any]) -> Any:
    """A messages doc's content: JSON text since ingest stores it so, an object in older docs."""
    content = doc.get("content")
    return orjson.loads(content) if isinstance(content, str) else content


def send_requested_event(
    doc: dict[str, Any], content: dict[str, Any] | None = None
) -> SendRequested:
    """The event for a messages doc (also rebuilt from the doc when a replay re-publishes).
    `content` spares decoding the stored text again when the caller still has it."""
    return SendRequested(
        event_id=doc["_id"],
        message_id=doc["_id"],
        account_id=doc["account_id"],
        portfolio_id=doc.get("portfolio_id") or "",
        waba_id=doc["waba_id"],
        phone_number_id=doc["phone_number_id"],
        recipient=doc["recipient"],
        recipient_region=doc["recipient_region"],
        message_type=doc["type"],
        content=content if content is not None else stored_content(doc) or {},
        category=doc["category"],
        accepted_at=to_ms(doc["created_at"]),
        expires_at=to_ms(doc["expires_at"]),
        client_reference=doc.get("client_reference"),
        callback_data=doc.get("callback_data"),
        reply_to=doc.get("reply_to"),
    )


def accepted_response(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": doc["_id"],
        "status": "accepted",
        "from": doc["phone_number_id"],
        "to": doc["recipient"],
        "type": doc["type"],
        "client_reference": doc.get("client_reference"),
        "biz_opaque_callback_data": doc.get("callback_data"),
        "accepted_at": iso(doc["created_at"]),
        "expires_at": iso(doc["expires_at"]),
    }


def meta_accepted_response(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "contacts": [
            {
                "input": doc.get("recipient_input", doc["recipient"]),
                "wa_id": wa_id_of(doc["recipient"]),
            }
        ],
        "messages": [{"id": doc["_id"], "message_status": "accepted"}],
    }


def meta_error_body(
    code: str, message: str, details: dict[str, Any], meta_code: int, trace_id: str
) -> dict[str, Any]:
    """Meta's Graph error envelope; our own code leads `error_data.details`."""
    meta_code = _template_status_code(meta_code, details)
    return {
        "error": {
            "message": f"(#{meta_code}) {message}",
            "type": "OAuthException",
            "code": meta_code,
            "error_data": {"messaging_product": "whatsapp", "details": f"{code}: {message}"},
            "fbtrace_id": trace_id,
        }
    }


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
        raise invalid_field(
            "status", "`status` must be one of " + ", ".join(sorted(MESSAGE_STATUSES))
        )
    limit_raw = params.get("limit", str(DEFAULT_PAGE_SIZE))
    if not limit_raw.isdigit() or not 1 <= int(limit_raw) <= MAX_PAGE_SIZE:
        raise invalid_field("limit", f"`limit` must be an integer from 1 to {MAX_PAGE_SIZE}")
    cursor = params.get("cursor")
    return ListQuery(
        limit=int(limit_raw),
        status=status,
        since=_parse_time(params, "since"),
        until=_parse_time(params, "until"),
        after=decode_cursor(cursor) if cursor else None,
    )


def _parse_time(params: dict[str, str], name: str) -> datetime | None:
    raw = params.get(name)
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw.replace(" ", "+"))  # '+' arrives as ' ' in queries
    except ValueError:
        raise invalid_field(
            name, f"`{name}` must be an ISO 8601 time, e.g. 2026-11-24T10:00:00Z"
        ) from None
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
        raise reject(
            "invalid_cursor", "`cursor` is not one this API returned", field="cursor"
        ) from None
    return from_ms(created_ms), message_id


def page_ids(docs: list[dict[str, Any]], limit: int) -> list[str]:
    """The ids of the messages a page shows (`docs` holds up to limit + 1)."""
    return [doc["_id"] for doc in docs[:limit]]


def page(
    docs: list[dict[str, Any]], limit: int, prices: dict[str, dict[str, Any] | None] | None = None
) -> dict[str, Any]:
    """`docs` holds up to limit + 1 items: the extra one only says that there is a next page.
    `prices`: each shown message's price (price_view), by id."""
    shown = docs[:limit]
    next_cursor = encode_cursor(shown[-1]) if len(docs) > limit and shown else None
    prices = prices or {}
    return {
        "data": [message_view(d, with_content=False, price=prices.get(d["_id"])) for d in shown],
        "next_cursor": next_cursor,
    }


def price_view(
    reserve: dict[str, Any] | None, settle: dict[str, Any] | None, currency: str
) -> dict[str, Any] | None:
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


def message_view(
    doc: dict[str, Any], *, with_content: bool = True, price: dict[str, Any] | None = None
) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": doc["_id"],
        "status": doc.get("status"),
        "from": doc.get("phone_number_id"),
        "to": doc.get("recipient"),
        "type": doc.get("type"),
        "category": doc.get("category"),
        "client_reference": doc.get("client_reference"),
        "biz_opaque_callback_data": doc.get("callback_data"),
        "reply_to": doc.get("reply_to"),
        "accepted_at": iso(doc.get("created_at")),
        "expires_at": iso(doc.get("expires_at")),
        "history": [_history_entry(h) for h in doc.get("history", [])],
        "wamid": doc.get("wamid"),
        "price": price,
        "pricing": doc.get("pricing"),
        "error": doc.get("error"),
    }
    if with_content:
        view["content"] = stored_content(doc)
    return view


def _history_entry(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: (iso(v) if k == "at" else v) for k, v in entry.items()}


def balance_view(balance: dict[str, Any] | None, currency: str) -> dict[str, Any]:
    balance = balance or {}
    return {
        "available": int(balance.get("available", 0)),
        "reserved": int(balance.get("reserved", 0)),
        "currency": balance.get("currency") or currency,
        "unit": "micros",
        # billing's count of messages in flight and the account's cap on them (0: none)
        "in_flight": int(balance.get("in_flight") or 0),
        "max_in_flight": int(balance.get("in_flight_limit") or 0),
    }


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
