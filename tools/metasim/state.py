"""The simulator's in-memory world: numbers, templates, windows, buckets, and the records that
tests read.

Nothing here reads the clock or does I/O; callers pass `now` (monotonic) and `wall` (unix seconds).
"""

from __future__ import annotations

import functools
import hashlib
import random
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

import orjson
import phonenumbers

from tools.metasim.config import HELLO_WORLD, SimConfig, TemplateConfig
from tools.metasim.core import (
    FREE_ENTRY_POINT_WINDOW_SECONDS,
    TIER_LIMITS,
    Pricing,
    TemplateShape,
    TokenBucket,
    UniqueRecipientWindow,
    customer_service_window_open,
    template_shape,
)
from tools.metasim.errors import GraphError
from tools.metasim.media import MediaStore


@dataclass(slots=True)
class Template:
    id: str
    waba_id: str
    name: str
    language: str
    category: str
    status: str
    parameter_format: str
    components: list[dict[str, Any]]
    shape: TemplateShape
    paced: bool
    rejected_reason: str = "NONE"
    quality_score: str | None = None  # None: derived from the status (GREEN when approved)

    def as_graph(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "parameter_format": self.parameter_format,
            "components": self.components,
            "language": self.language,
            "status": self.status,
            "category": self.category,
            "id": self.id,
        }


@dataclass(slots=True)
class PhoneNumber:
    id: str
    waba_id: str
    portfolio_id: str
    display_phone_number: str
    country_code: str
    verified_name: str
    mps: int
    coexistence: bool
    quality_rating: str
    upgrade_mps: int
    bucket: TokenBucket
    throughput_level: str = "STANDARD"
    upgrading_until: float | None = None
    upgrading_to_mps: int | None = None

    @property
    def metadata(self) -> dict[str, str]:
        return {"display_phone_number": self.display_phone_number, "phone_number_id": self.id}


@dataclass(slots=True)
class Waba:
    id: str
    portfolio_id: str
    name: str
    phone_number_ids: list[str]
    templates: list[Template] = field(default_factory=list)
    by_key: dict[tuple[str, str], Template] = field(default_factory=dict)
    creations: deque[float] = field(default_factory=deque)  # monotonic times, last hour
    # Set by an account_update DISABLED_UPDATE (waba_ban_state DISABLE); REINSTATE clears it.
    disabled: bool = False

    def add_template(self, template: Template) -> None:
        self.templates.append(template)
        self.by_key[(template.name, template.language)] = template


@dataclass(slots=True)
class Portfolio:
    id: str
    name: str
    tier: str
    window: UniqueRecipientWindow


@dataclass(frozen=True, slots=True)
class AccessToken:
    wabas: frozenset[str] | None  # None: every WABA
    permissions: frozenset[str]
    expired: bool
    invalidated: bool


@dataclass(frozen=True, slots=True)
class InboundRef:
    """An inbound message a read receipt or a reaction may point at."""

    phone_number_id: str
    wa_id: str
    at: float  # monotonic
    type: str


@dataclass(slots=True)
class EntryPoint:
    """A user who came from a Click-to-WhatsApp ad or a Page CTA (an inbound with `referral`).

    A reply within 24 h of that message opens a 72 h free-entry-point window from the reply."""

    referral_at: float  # monotonic
    window_until: float | None = None
    conversation_id: str = ""


@dataclass(slots=True)
class RecipientTraits:
    not_on_whatsapp: bool = False
    marketing_capped: bool = False
    marketing_opted_out: bool = False


class SendRecord:
    """One accepted send. Slotted: the records must stay cheap at 100k+ sends."""

    __slots__ = (
        "accepted_at",
        "biz_opaque_callback_data",
        "body",
        "category",
        "context_message_id",
        "conversation",
        "error_code",
        "final_status",
        "input",
        "message_status",
        "phone_number_id",
        "pricing",
        "recipient",
        "template_language",
        "template_name",
        "type",
        "voice",
        "waba_id",
        "wamid",
    )

    def __init__(
        self,
        wamid: str,
        phone_number_id: str,
        waba_id: str,
        recipient: str,
        input: str,
        type: str,
        template_name: str | None,
        template_language: str | None,
        category: str,
        biz_opaque_callback_data: str | None,
        accepted_at: float,
        message_status: str,
        pricing: Pricing,
        body: bytes = b"",
        context_message_id: str | None = None,
        voice: bool = False,
        conversation: tuple[str, float] | None = None,
    ) -> None:
        self.wamid = wamid
        self.phone_number_id = phone_number_id
        self.waba_id = waba_id
        self.recipient = recipient
        self.input = input
        self.type = type
        self.template_name = template_name
        self.template_language = template_language
        self.category = category
        self.biz_opaque_callback_data = biz_opaque_callback_data
        self.accepted_at = accepted_at
        self.message_status = message_status
        self.pricing = pricing
        # The request body exactly as Meta received it (decoded only when read back).
        self.body = body
        self.context_message_id = context_message_id
        self.voice = voice
        # (id, expiration wall time) of the free-entry-point window the message was sent in.
        self.conversation = conversation
        self.final_status = "accepted"
        self.error_code: int | None = None

    def as_dict(self) -> dict[str, Any]:
        # Meta charges on delivery: only a delivered (or read) message with a regular price bills.
        delivered = self.final_status in ("delivered", "read")
        return {
            "wamid": self.wamid,
            "phone_number_id": self.phone_number_id,
            "waba_id": self.waba_id,
            "recipient": self.recipient,
            "input": self.input,
            "type": self.type,
            "template_name": self.template_name,
            "template_language": self.template_language,
            "category": self.category,
            "biz_opaque_callback_data": self.biz_opaque_callback_data,
            "accepted_at": self.accepted_at,
            "message_status": self.message_status,
            "final_status": self.final_status,
            "error_code": self.error_code,
            "pricing": {
                "type": self.pricing.type,
                "category": self.pricing.category,
                "billable": self.pricing.billable and delivered,
            },
            "context_message_id": self.context_message_id,
            "body": orjson.loads(self.body) if self.body else None,
        }


LIMIT_VIOLATION_CODES = frozenset({130429, 131047, 131056, 131064, 2388019})


class Records:
    """Every accepted send and every limit violation, memory-bounded, with exact counters."""

    def __init__(self, max_sends: int, max_violations: int) -> None:
        self.max_sends = max_sends
        self.sends: deque[SendRecord] = deque()
        self.by_wamid: dict[str, SendRecord] = {}
        # callback data -> wamids; a "message" is identified by its biz_opaque_callback_data.
        self.by_callback: dict[str, list[str]] = {}
        self.duplicate_callbacks: dict[str, None] = {}  # ordered set
        self.violations: deque[dict[str, Any]] = deque(maxlen=max_violations)
        self.accepted_total = 0
        self.accepted_by_type: Counter[str] = Counter()
        self.errors_by_code: Counter[int] = Counter()
        self.violations_by_code: Counter[int] = Counter()
        self.inbound_total = 0
        self.read_receipts_total = 0
        self.statuses_by_kind: Counter[str] = Counter()
        # Mark-as-read / typing-indicator calls, and injected inbound messages, as they reached
        # Meta (bounded like the sends).
        self.read_receipts: deque[dict[str, Any]] = deque(maxlen=max_sends)
        self.media_uploads = 0
        self.media_downloads = 0
        self.inbound: deque[dict[str, Any]] = deque(maxlen=max_sends)

    def add_send(self, record: SendRecord) -> None:
        self.sends.append(record)
        self.by_wamid[record.wamid] = record
        if len(self.sends) > self.max_sends:
            del self.by_wamid[self.sends.popleft().wamid]
        self.accepted_total += 1
        self.accepted_by_type[record.type] += 1
        callback = record.biz_opaque_callback_data
        if callback is not None:
            wamids = self.by_callback.get(callback)
            if wamids is None:
                self.by_callback[callback] = [record.wamid]
            else:
                wamids.append(record.wamid)
                self.duplicate_callbacks[callback] = None

    def add_error(
        self,
        code: int,
        phone_number_id: str | None,
        recipient: str | None,
        callback: str | None,
        wall: float,
    ) -> None:
        self.errors_by_code[code] += 1
        if code in LIMIT_VIOLATION_CODES:
            self.violations_by_code[code] += 1
            self.violations.append(
                {
                    "code": code,
                    "phone_number_id": phone_number_id,
                    "recipient": recipient,
                    "biz_opaque_callback_data": callback,
                    "at": wall,
                }
            )

    def duplicates(self) -> list[dict[str, Any]]:
        return [
            {
                "biz_opaque_callback_data": callback,
                "count": len(self.by_callback[callback]),
                "wamids": self.by_callback[callback],
            }
            for callback in self.duplicate_callbacks
        ]


@functools.lru_cache(maxsize=65_536)
def region_of(wa_id: str) -> str | None:
    try:
        return phonenumbers.region_code_for_number(phonenumbers.parse("+" + wa_id))
    except phonenumbers.NumberParseException:
        return None


def country_code_of(display_phone_number: str) -> str:
    return str(phonenumbers.parse("+" + display_phone_number).country_code)


class World:
    """Numbers, templates and the mutable rule state, built from the config."""

    def __init__(self, config: SimConfig, now: float, rng: random.Random | None = None) -> None:
        self.config = config
        limits = config.limits
        self.limits_enabled = limits.enabled
        self.tokens: dict[str, AccessToken] = {
            t.token.get_secret_value(): AccessToken(
                None if t.wabas == "*" else frozenset(t.wabas),
                frozenset(t.permissions),
                t.expired,
                t.invalidated,
            )
            for t in config.access_tokens
        }
        self.portfolios: dict[str, Portfolio] = {}
        self.wabas: dict[str, Waba] = {}
        self.numbers: dict[str, PhoneNumber] = {}
        self.templates: dict[str, Template] = {}
        self._template_serial = 0
        for portfolio in config.portfolios:
            self.portfolios[portfolio.id] = Portfolio(
                portfolio.id,
                portfolio.name,
                portfolio.messaging_tier,
                UniqueRecipientWindow(
                    TIER_LIMITS[portfolio.messaging_tier], limits.messaging_limit_window_seconds
                ),
            )
            for waba_config in portfolio.wabas:
                waba = Waba(waba_config.id, portfolio.id, waba_config.name, [])
                self.wabas[waba.id] = waba
                for n in waba_config.phone_numbers:
                    mps = 20 if n.coexistence else n.throughput_mps
                    self.numbers[n.id] = PhoneNumber(
                        n.id,
                        waba.id,
                        portfolio.id,
                        n.display_phone_number,
                        country_code_of(n.display_phone_number),
                        n.verified_name,
                        mps,
                        n.coexistence,
                        n.quality_rating,
                        n.upgrade_mps,
                        TokenBucket(mps, mps * limits.throughput_burst_seconds, now),
                    )
                    waba.phone_number_ids.append(n.id)
                for t in waba_config.templates:
                    self.add_template(waba, t)
                if waba_config.sample_template and ("hello_world", "en_US") not in waba.by_key:
                    # Meta gives every new WABA its sample template.
                    self.add_template(waba, TemplateConfig.model_validate(HELLO_WORLD))
        self.traits: dict[str, RecipientTraits] = {}
        for wa_id in config.recipients.not_on_whatsapp:
            self.traits_of(wa_id).not_on_whatsapp = True
        for wa_id in config.recipients.marketing_capped:
            self.traits_of(wa_id).marketing_capped = True
        for wa_id in config.recipients.marketing_opted_out:
            self.traits_of(wa_id).marketing_opted_out = True
        # (phone_number_id, wa_id) -> last inbound time: the customer-service window anchor.
        self.last_inbound: dict[tuple[str, str], float] = {}
        self.pair_buckets: dict[tuple[str, str], TokenBucket] = {}
        self.pair_rate = 1.0 / limits.pair_interval_seconds
        self.pair_burst = float(limits.pair_burst)
        # Inbound wamids a read receipt or a reaction may point at, oldest dropped first.
        self.inbound_wamids: OrderedDict[str, InboundRef] = OrderedDict()
        self.max_inbound_wamids = config.records.max_sends
        # (phone_number_id, wa_id) -> the user's arrival from an ad (free entry point).
        self.entry_points: dict[tuple[str, str], EntryPoint] = {}
        # (waba_id, wa_id) of users who asked this business to stop marketing (user_preferences).
        self.marketing_stops: set[tuple[str, str]] = set()
        url_key = hashlib.sha256(b"media-url:" + config.app_secret.get_secret_value().encode())
        self.media = MediaStore(
            rng or random.Random(config.seed), url_key.digest(), config.records.max_media_bytes
        )

    # -- templates ------------------------------------------------------------------------

    def next_template_id(self) -> str:
        self._template_serial += 1
        return str(1_690_000_000_000_000 + self._template_serial)

    def add_template(self, waba: Waba, t: TemplateConfig) -> Template:
        template = Template(
            t.id or self.next_template_id(),
            waba.id,
            t.name,
            t.language,
            t.category,
            t.status,
            t.parameter_format,
            t.components,
            template_shape(t.parameter_format, t.components),
            t.paced,
        )
        waba.add_template(template)
        self.templates[template.id] = template
        return template

    # -- recipients -----------------------------------------------------------------------

    def traits_of(self, wa_id: str) -> RecipientTraits:
        traits = self.traits.get(wa_id)
        if traits is None:
            traits = self.traits[wa_id] = RecipientTraits()
        return traits

    def window_open(self, number_id: str, wa_id: str, now: float) -> bool:
        return customer_service_window_open(
            self.last_inbound.get((number_id, wa_id)),
            now,
            self.config.limits.customer_service_window_seconds,
        )

    def pair_bucket(self, number_id: str, wa_id: str, now: float) -> TokenBucket:
        key = (number_id, wa_id)
        bucket = self.pair_buckets.get(key)
        if bucket is None:
            bucket = self.pair_buckets[key] = TokenBucket(self.pair_rate, self.pair_burst, now)
        return bucket

    def record_inbound(
        self,
        number: PhoneNumber,
        wa_id: str,
        wamid: str,
        at: float,
        now: float,
        *,
        message_type: str = "text",
        opens_window: bool = True,
        referral: bool = False,
    ) -> None:
        """An inbound message uses the number's throughput and (most types) opens or refreshes
        the customer-service window; one with a `referral` starts a free entry point."""
        key = (number.id, wa_id)
        if opens_window:
            self.last_inbound[key] = max(at, self.last_inbound.get(key, at))
        if referral:
            self.entry_points[key] = EntryPoint(at)
        if self.limits_enabled:
            number.bucket.force_take(now)
        self.inbound_wamids[wamid] = InboundRef(number.id, wa_id, at, message_type)
        if len(self.inbound_wamids) > self.max_inbound_wamids:
            self.inbound_wamids.popitem(last=False)

    def window_until(self, number_id: str, wa_id: str) -> float | None:
        """Monotonic end of the customer-service window, or None if the user never wrote."""
        last = self.last_inbound.get((number_id, wa_id))
        return None if last is None else last + self.config.limits.customer_service_window_seconds

    def free_entry_point(
        self, number_id: str, wa_id: str, now: float, wall: float
    ) -> tuple[str, float] | None:
        """(conversation id, wall expiry) of the open free-entry-point window for this user, or
        None. The first reply within 24 h of the user's arrival from an ad opens it (72 h)."""
        entry = self.entry_points.get((number_id, wa_id))
        if entry is None:
            return None
        if entry.window_until is None:
            if now - entry.referral_at >= self.config.limits.customer_service_window_seconds:
                return None
            entry.window_until = now + FREE_ENTRY_POINT_WINDOW_SECONDS
            seed = f"fep:{number_id}:{wa_id}:{entry.referral_at}".encode()
            entry.conversation_id = hashlib.md5(seed).hexdigest()
        if now >= entry.window_until:
            return None
        return entry.conversation_id, wall + (entry.window_until - now)

    def marketing_stopped(self, waba_id: str, wa_id: str) -> bool:
        return (waba_id, wa_id) in self.marketing_stops

    # -- throughput upgrades --------------------------------------------------------------

    def start_upgrade(self, number: PhoneNumber, mps: int, until: float) -> None:
        number.upgrading_until = until
        number.upgrading_to_mps = mps

    def settle_upgrade(self, number: PhoneNumber, now: float) -> bool:
        """Finish a due upgrade; True exactly once, when the new throughput takes effect."""
        if number.upgrading_until is None or now < number.upgrading_until:
            return False
        mps = number.upgrading_to_mps or number.upgrade_mps
        number.mps = mps
        number.bucket.retune(mps, mps * self.config.limits.throughput_burst_seconds, now)
        number.throughput_level = "HIGH"
        number.upgrading_until = None
        number.upgrading_to_mps = None
        return True

    # -- auth -----------------------------------------------------------------------------

    def authenticate(self, token_value: str | None) -> AccessToken:
        if not token_value:
            raise GraphError(190, "An access token is required to request this resource.")
        token = self.tokens.get(token_value)
        if token is None:
            raise GraphError(190, "Invalid OAuth access token - Cannot parse access token.")
        if token.expired:
            raise GraphError(190, "Error validating access token: Session has expired.")
        if token.invalidated:
            raise GraphError(0, "Error validating access token: the session has been invalidated.")
        return token

    @staticmethod
    def authorize(token: AccessToken, waba_id: str, permission: str) -> None:
        if permission not in token.permissions:
            raise GraphError(
                10, f"Application does not have permission for this action ({permission})."
            )
        if token.wabas is not None and waba_id not in token.wabas:
            raise GraphError(
                200, "The access token has no permission on this WhatsApp Business Account."
            )

    def node_missing(self, node_id: str, method: str) -> GraphError:
        return GraphError(
            100,
            f"Unsupported {method} request. Object with ID '{node_id}' does not exist, cannot be "
            "loaded due to missing permissions, or does not support this operation.",
        )


@dataclass(frozen=True, slots=True)
class FaultRule:
    """An injected failure on Graph API requests, drawn per request with probability `rate`."""

    kind: str  # latency | error | http | hang | drop
    rate: float
    phone_number_id: str | None = None
    latency_ms: float = 0.0
    code: int = 131000  # for kind=error: a Meta error code answered in Meta's envelope
    http_status: int = 502  # for kind=http: a bare non-JSON 5xx as from a load balancer
    hang_seconds: float = 30.0
    # "before": the request is not processed; "after": the send is accepted, then the response
    # is lost (hang/drop) - the case that makes a naive retry send a message twice.
    phase: str = "before"

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "rate": self.rate,
            "phone_number_id": self.phone_number_id,
            "latency_ms": self.latency_ms,
            "code": self.code,
            "http_status": self.http_status,
            "hang_seconds": self.hang_seconds,
            "phase": self.phase,
        }
