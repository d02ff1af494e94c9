"""Builders of billing's input events for the unit tests."""

from __future__ import annotations

from typing import Any

from shared.messages import (
    SEND_REQUESTED,
    Pricing,
    SendRequested,
    StatusChanged,
    TopUpRequested,
    sign_top_up,
)

ACCOUNT = "acc_test"
SEND_TOPIC = "messages.send-requested.v1"
STATUS_TOPIC = "messages.status-changed.v1"
TOPUP_TOPIC = "billing.topup-requested.v1"
TOPUP_KEY = b"unit-topup-signing-key"  # the key the unit tests' billing and admin share


def send_requested(
    message_id: str = "msg_1",
    *,
    category: str = "utility",
    region: str = "GB",
    account_id: str = ACCOUNT,
) -> SendRequested:
    example: dict[str, Any] = dict(SEND_REQUESTED.examples[0])
    example.update(
        event_id=message_id,
        message_id=message_id,
        account_id=account_id,
        category=category,
        recipient_region=region,
    )
    return SendRequested(**example)


def status(
    message_id: str = "msg_1",
    status: Any = "delivered",
    *,
    pricing: Pricing | None = None,
    source: Any = "webhook",
    event_id: str | None = None,
    account_id: str = ACCOUNT,
) -> StatusChanged:
    return StatusChanged(
        event_id=event_id or f"{message_id}:{status}:{source}",
        message_id=message_id,
        account_id=account_id,
        status=status,
        occurred_at=1_764_000_003_000,
        source=source,
        pricing=pricing,
    )


def regular(category: str = "utility") -> Pricing:
    return Pricing(billable=True, type="regular", category=category)


def free(category: str = "utility") -> Pricing:
    return Pricing(billable=False, type="free_customer_service", category=category)


def top_up(
    amount: int, event_id: str = "topup_1", account_id: str = ACCOUNT, key: bytes | None = TOPUP_KEY
) -> TopUpRequested:
    """A top-up signed as the admin tool signs it (`key=None`: unsigned)."""
    event = TopUpRequested(
        event_id=event_id,
        account_id=account_id,
        amount=amount,
        requested_at=1_764_000_000_000,
        operator="ops@unit",
    )
    return event if key is None else sign_top_up(event, key)
