"""Billing reserves every message type ingest accepts (each topic example), prices every
non-template message as `service`, and the approval it publishes carries the whole request on
to the sender (content of any shape, the client's callback data, the reply target)."""

from __future__ import annotations

from typing import get_args

import orjson

from services.billing.core import Balance, Position, decide
from shared.messages import SEND_APPROVED, SEND_REQUESTED, MessageType, SendApproved
from shared.pricing import load_rate_card

CARD = load_rate_card()


def test_every_message_type_is_reserved_and_approved_with_the_whole_request() -> None:
    kinds = set()
    for offset, example in enumerate(SEND_REQUESTED.examples):
        event = SEND_REQUESTED.decode(orjson.dumps(example))
        decision = decide(
            Balance(event.account_id, "USD", available=10_000_000),
            event,
            Position(SEND_REQUESTED.name, 0, offset),
            rate_card=CARD,
            now=1_764_000_000_000,
        )
        [output] = decision.outputs
        approved = output.event
        assert isinstance(approved, SendApproved)
        assert approved.reserved_amount == CARD.price(event.category, event.recipient_region)
        assert (
            approved.message_type,
            approved.content,
            approved.callback_data,
            approved.reply_to,
        ) == (event.message_type, event.content, event.callback_data, event.reply_to)
        assert SEND_APPROVED.decode(SEND_APPROVED.encode(approved)[1]) == approved
        if event.message_type != "template":
            assert event.category == "service"
        kinds.add(event.message_type)
    assert kinds == set(get_args(MessageType))  # an example of every type
