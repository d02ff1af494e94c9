"""The send pipeline: Meta's checks in order, from an authenticated request to an accepted send.

No I/O and no clock reads: the handler passes `now`/`wall`. Refusals are raised as GraphError
carrying the recipient, and the handler records every refusal in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from tools.metasim.core import (
    MarkAsRead,
    OutboundMessage,
    async_failure_code,
    check_template_components,
    check_template_status,
    decide_pricing,
    is_us_number,
    make_wamid,
    media_problem,
    normalize_recipient,
    parse_outbound,
)
from tools.metasim.errors import MESSAGING_LIMIT_CODE, GraphError
from tools.metasim.state import PhoneNumber, Records, SendRecord, World, region_of

# Meta does not deliver a reaction to a message older than this (async 131009).
REACTION_MAX_AGE_SECONDS = 30 * 86_400


@dataclass(frozen=True, slots=True)
class Accepted:
    record: SendRecord
    window_open: bool
    failure_code: int | None  # decided now, reported later by webhook
    paced: bool
    reaction: bool
    failure_details: str | None = None
    voice: bool = False


@dataclass(frozen=True, slots=True)
class ReadReceipt:
    message_id: str
    typing_indicator: bool = False


class SendPipeline:
    def __init__(self, world: World, records: Records, wamid_salt: int) -> None:
        self.world = world
        self.records = records
        self._salt = wamid_salt
        self._serial = 0

    def submit(
        self,
        number: PhoneNumber,
        payload: Any,
        now: float,
        wall: float,
        raw: bytes = b"",
        version: float = 24.0,
    ) -> Accepted | ReadReceipt:
        """Run one authenticated `POST /<PHONE_NUMBER_ID>/messages` body through Meta's rules.

        `raw` is the body as received; accepted sends keep it for `/_sim/sends`."""
        recipient: str | None = None
        callback: str | None = None
        try:
            if self.world.wabas[number.waba_id].disabled:
                raise GraphError(
                    368, "The WhatsApp Business Account is disabled for a policy violation."
                )
            if number.upgrading_until is not None and now < number.upgrading_until:
                raise GraphError(131057)
            # Throughput counts every message request that reaches processing, including ones
            # then refused by a later rule (Meta: the limit is "inclusive of ... all message
            # types"). A request refused *by* the throughput check consumes nothing, otherwise a
            # throttled sender could never get back "within the allowed level" as Meta describes.
            if self.world.limits_enabled and not number.bucket.try_take(now):
                raise GraphError(130429)
            message = parse_outbound(payload)
            if isinstance(message, MarkAsRead):
                return self._read_receipt(number, message, raw, wall)
            callback = message.biz_opaque_callback_data
            recipient = normalize_recipient(message.to, number.country_code)
            return self._accept(number, message, recipient, now, wall, raw, version)
        except GraphError as error:
            error.recipient, error.callback_data = recipient, callback
            raise

    def _read_receipt(
        self, number: PhoneNumber, message: MarkAsRead, raw: bytes, wall: float
    ) -> ReadReceipt:
        inbound = self.world.inbound_wamids.get(message.message_id)
        if inbound is None:
            raise GraphError(
                100, f"Invalid parameter: message_id {message.message_id!r} is unknown."
            )
        if inbound.phone_number_id != number.id:
            raise GraphError(
                100,
                f"Invalid parameter: message_id {message.message_id!r} was not received by "
                f"phone number {number.id}.",
            )
        self.records.read_receipts_total += 1
        self.records.read_receipts.append(
            {
                "phone_number_id": number.id,
                "message_id": message.message_id,
                "wa_id": inbound.wa_id,
                "typing_indicator": message.typing_indicator,
                "at": wall,
                "body": raw.decode() if raw else None,
            }
        )
        return ReadReceipt(message.message_id, message.typing_indicator)

    def _accept(
        self,
        number: PhoneNumber,
        message: OutboundMessage,
        recipient: str,
        now: float,
        wall: float,
        raw: bytes,
        version: float,
    ) -> Accepted:
        world = self.world
        limits_on = world.limits_enabled
        window_open = world.window_open(number.id, recipient, now)
        category: str | None = None
        paced = False
        if message.type == "template":
            waba = world.wabas[number.waba_id]
            name, language = message.template_name or "", message.template_language or ""
            template = waba.by_key.get((name, language))
            if template is None:
                raise GraphError(132001, f"template name ({name}) does not exist in {language}")
            check_template_status(template.status, name, language)
            check_template_components(template.shape, message.template_components or [], version)
            category = template.category
            paced = template.paced
        elif limits_on and not window_open:
            raise GraphError(131047)

        if limits_on:
            pair = world.pair_bucket(number.id, recipient, now)
            if pair.available(now) < 1 - 1e-9:
                raise GraphError(131056)
            # A template outside an open window is business-initiated: it counts one unique user
            # against the portfolio's messaging limit for a moving 24 h.
            if category is not None and not window_open:
                portfolio = world.portfolios[number.portfolio_id]
                if not portfolio.window.admit(recipient, now):
                    raise GraphError(
                        MESSAGING_LIMIT_CODE,
                        f"Portfolio messaging limit {portfolio.tier} reached for "
                        "business-initiated "
                        "messages in a moving 24 hours.",
                    )
            pair.try_take(now)

        entry_point = world.free_entry_point(number.id, recipient, now, wall)
        self._serial += 1
        record = SendRecord(
            make_wamid(recipient, self._serial, self._salt),
            number.id,
            number.waba_id,
            recipient,
            message.to,
            message.type,
            message.template_name,
            message.template_language,
            category.lower() if category else "service",
            message.biz_opaque_callback_data,
            wall,
            "held_for_quality_assessment" if paced else "accepted",
            decide_pricing(
                world.config.pricing_rules, category, window_open, entry_point is not None
            ),
            raw,
            message.context_message_id,
            message.voice,
            entry_point,
        )
        self.records.add_send(record)
        failure, details = self._failure(
            number, message, recipient, category, window_open, now, wall
        )
        return Accepted(
            record,
            window_open,
            failure,
            paced,
            message.type == "reaction",
            details,
            message.voice,
        )

    def _failure(
        self,
        number: PhoneNumber,
        message: OutboundMessage,
        recipient: str,
        category: str | None,
        window_open: bool,
        now: float,
        wall: float,
    ) -> tuple[int | None, str | None]:
        """The failure Meta will report by webhook for an accepted send, with its details."""
        world = self.world
        traits = world.traits.get(recipient)
        if traits is not None and traits.not_on_whatsapp:
            return 131026, None
        if message.media:
            if (problem := self._media_problem(number, message, now)) is not None:
                return 131053, problem
        if message.reaction_to is not None:
            problem = self._reaction_problem(number, recipient, message, now, wall)
            if problem is not None:
                return 131009, problem
        if category != "MARKETING" and traits is None:
            return None, None
        opted_out = (traits is not None and traits.marketing_opted_out) or (
            category == "MARKETING" and world.marketing_stopped(number.waba_id, recipient)
        )
        code = async_failure_code(
            not_on_whatsapp=False,
            template_category=category,
            window_open=window_open,
            # Only +1 numbers need the (slow) libphonenumber region lookup.
            us_recipient=category == "MARKETING"
            and recipient.startswith("1")
            and is_us_number(recipient, region_of(recipient)),
            marketing_capped=traits is not None and traits.marketing_capped,
            marketing_opted_out=opted_out,
        )
        return code, None

    def _media_problem(
        self, number: PhoneNumber, message: OutboundMessage, now: float
    ) -> str | None:
        for use in message.media:
            if use.id is not None:
                item = self.world.media.live(use.id, now)
                if item is None or item.waba_id != number.waba_id:
                    return (
                        f"Media upload error: media id {use.id} does not exist, expired or "
                        "belongs to another WhatsApp Business Account."
                    )
                problem = media_problem(use.kind, item.mime_type, message.voice)
                if problem is not None:
                    return problem
            elif use.link is not None:
                host = urlsplit(use.link).hostname or ""
                # The reserved .invalid TLD stands for a link Meta cannot fetch.
                if host == "invalid" or host.endswith(".invalid"):
                    return (
                        "Media upload error: Downloading media from weblink failed with http "
                        "code 404"
                    )
        return None

    def _reaction_problem(
        self,
        number: PhoneNumber,
        recipient: str,
        message: OutboundMessage,
        now: float,
        wall: float,
    ) -> str | None:
        target = message.reaction_to or ""
        inbound = self.world.inbound_wamids.get(target)
        if inbound is not None:
            same_chat = inbound.phone_number_id == number.id and inbound.wa_id == recipient
            kind, age = inbound.type, now - inbound.at
        elif (sent := self.records.by_wamid.get(target)) is not None:
            same_chat = sent.phone_number_id == number.id and sent.recipient == recipient
            # Sends record wall time; the age is measured on the same clock.
            kind, age = sent.type, wall - sent.accepted_at
        else:
            return f"Reaction target {target} is unknown."
        if not same_chat:
            return f"Reaction target {target} is not in this conversation."
        if kind == "reaction":
            return "A reaction cannot be reacted to."
        if age > REACTION_MAX_AGE_SECONDS:
            return f"Reaction target {target} is older than 30 days."
        return None


def success_body(accepted: Accepted) -> dict[str, Any]:
    record = accepted.record
    message: dict[str, str] = {"id": record.wamid}
    # message_status is a pacing signal: it rides on template sends only.
    if record.type == "template":
        message["message_status"] = record.message_status
    return {
        "messaging_product": "whatsapp",
        "contacts": [{"input": record.input, "wa_id": record.recipient}],
        "messages": [message],
    }
