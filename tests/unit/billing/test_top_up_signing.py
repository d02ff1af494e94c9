"""Billing applies only top-ups signed with the admin tool's key: an unsigned, badly signed or
altered one is dead-lettered as permanent and moves no money, on the batch path and the
one-record path alike."""

from __future__ import annotations

import msgspec
import pytest

from services.billing.settings import BillingSettings
from shared.errors import PermanentError
from shared.messages import TOPUP_REQUESTED, sign_top_up, top_up_signature_valid
from shared.settings import DEVELOPMENT_TOPUP_SIGNING_KEY
from tests.unit.billing.events import ACCOUNT, TOPUP_KEY, top_up
from tests.unit.billing.test_worker import make_shell

UNSIGNED = top_up(5_000, "topup_unsigned", key=None)
OTHER_KEY = top_up(5_000, "topup_other_key", key=b"someone-else's key")
ALTERED = msgspec.structs.replace(top_up(5, "topup_altered"), amount=5_000_000)


@pytest.mark.parametrize(
    "forged", [UNSIGNED, OTHER_KEY, ALTERED], ids=["unsigned", "other_key", "altered_amount"]
)
async def test_a_top_up_not_signed_by_the_admin_key_is_dead_lettered_and_moves_nothing(
    forged: object,
) -> None:
    shell = make_shell()
    assert await shell.worker.handle(shell.record(TOPUP_REQUESTED, forged)) == "dead_lettered"
    [(_record, error)] = shell.publisher.dead_letters
    assert isinstance(error, PermanentError) and error.code == "unsigned_top_up"
    assert shell.publisher.failures_dead_lettered[0].reason == "permanent"
    assert shell.balances.documents == {} and shell.ledger.entries == {}


async def test_in_a_batch_only_the_forged_top_up_is_refused() -> None:
    shell = make_shell()
    outcomes = await shell.worker.handle_batch(
        [
            shell.record(TOPUP_REQUESTED, top_up(1_000, "topup_a")),
            shell.record(TOPUP_REQUESTED, UNSIGNED),
            shell.record(TOPUP_REQUESTED, top_up(2_000, "topup_b")),
        ]
    )
    assert outcomes == ["topped_up", "dead_lettered", "topped_up"]
    assert shell.balance.available == 3_000
    assert set(shell.ledger.entries) == {"topup:topup_a", "topup:topup_b"}


def test_the_signature_covers_every_field_and_the_operator() -> None:
    signed = top_up(1_000)
    assert signed.operator and top_up_signature_valid(signed, TOPUP_KEY)
    for change in (
        {"account_id": "acc_other"},
        {"note": "x"},
        {"operator": "mallory"},
        {"requested_at": 1},
        {"event_id": "topup_2"},
    ):
        assert not top_up_signature_valid(msgspec.structs.replace(signed, **change), TOPUP_KEY)
    assert top_up_signature_valid(sign_top_up(signed, b"k2"), b"k2")
    assert signed.account_id == ACCOUNT


def test_billing_has_a_signing_key_default_only_in_development() -> None:
    assert (
        BillingSettings(HALA_ENV="development").topup_key_bytes()
        == DEVELOPMENT_TOPUP_SIGNING_KEY.encode()
    )
    # The one secrets rule (shared/settings.py): the development value is refused elsewhere.
    with pytest.raises(ValueError, match="HALA_TOPUP_SIGNING_KEY is a known default"):
        BillingSettings(HALA_ENV="production")
    with pytest.raises(ValueError, match="HALA_TOPUP_SIGNING_KEY is a known default"):
        BillingSettings(HALA_ENV="production", HALA_TOPUP_SIGNING_KEY="dev-topup-signing-key")
    given = BillingSettings(
        HALA_ENV="production",
        HALA_TOPUP_SIGNING_KEY="k" * 32,
        KAFKA_SASL_USERNAME="hala-billing",
        KAFKA_SASL_PASSWORD="a-billing-password-0123456789",
    )
    assert given.topup_key_bytes() == b"k" * 32
