"""The send pipeline: Meta's checks in order, from an authenticated request to an accepted send.

No I/O and no clock reads: the handler passes `now`/`wall`. Refusals are raised as GraphError
carrying the recipient, and the handler records every refusal in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tools.metasim.core import (
    MarkAsRead,
    OutboundMessage,
    async_failure_code,
    check_template_components,
    check_template_status,
    decide_pricing,
    is_us_number,
    make_wamid,
    normalize_recipient,
    parse_outbound,
)
from tools.metasim.errors import MESSAGING_LIMIT_CODE, GraphError
from tools.metasim.state import PhoneNumber, Records, SendRecord, World, region_of


@dataclass(frozen=True, slots=True)
class Accepted:
    record: SendRecord
    window_open: bool
    failure_code: int | None  # decided now, reported later by webhook
    paced: bool
    reaction: bool


@dataclass(frozen=True, slots=True)
class ReadReceipt:
    message_id: str


class SendPipeline:
    def __init__(self, world: World, records: Records, wamid_salt: int) -> None:
        self.world = world
        self.records = records
        self._salt = wamid_salt
        self._serial = 0

    def submit(
        self, number: PhoneNumber, payload: Any, now: float, wall: float
    ) -> Accepted | ReadReceipt:
        """Run one authenticated `POST /<PHONE_NUMBER_ID>/messages` body through Meta's rules."""
        recipient: str | None = None
        callback: str | None = None
        try:
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
                if self.world.inbound_wamids.get(message.message_id) != number.id:
                    raise GraphError(
                        100, f"Invalid parameter: message_id {message.message_id!r} is unknown."
                    )
                self.records.read_receipts_total += 1
                return ReadReceipt(message.message_id)
            callback = message.biz_opaque_callback_data
            recipient = normalize_recipient(message.to, number.country_code)
            return self._accept(number, message, recipient, now, wall)
        except GraphError as error:
            error.recipient, error.callback_data = recipient, callback
            raise

    def _accept(
        self, number: PhoneNumber, message: OutboundMessage, recipient: str, now: float, wall: float
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
            check_template_components(template.shape, message.template_components or [])
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
            decide_pricing(world.config.pricing_rules, category, window_open),
        )
        self.records.add_send(record)
        traits = world.traits.get(recipient)
        failure = None
        if traits is not None or category == "MARKETING":
            failure = async_failure_code(
                not_on_whatsapp=traits is not None and traits.not_on_whatsapp,
                template_category=category,
                window_open=window_open,
                # Only +1 numbers need the (slow) libphonenumber region lookup.
                us_recipient=category == "MARKETING"
                and recipient.startswith("1")
                and is_us_number(recipient, region_of(recipient)),
                marketing_capped=traits is not None and traits.marketing_capped,
                marketing_opted_out=traits is not None and traits.marketing_opted_out,
            )
        return Accepted(record, window_open, failure, paced, message.type == "reaction")


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
