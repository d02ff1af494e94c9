"""billing's pure decisions: reserve, settle once, top up, replays, duplicates, low balance."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import msgspec
import pytest

from services.billing.core import (
    Balance,
    Decision,
    InputEvent,
    LedgerEntry,
    Position,
    decide,
    entry_key,
    reserve_key,
    settlement_for,
    with_threshold,
)
from shared.errors import InvalidRequest
from shared.messages import (
    BALANCE_TOPPED_UP,
    LOW_BALANCE_ALERTED,
    SEND_APPROVED,
    STATUS_CHANGED,
    BalanceToppedUp,
    SendApproved,
    StatusChanged,
)
from shared.pricing import load_rate_card
from tests.unit.billing.events import (
    ACCOUNT,
    SEND_TOPIC,
    STATUS_TOPIC,
    TOPUP_KEY,
    TOPUP_TOPIC,
    free,
    regular,
    send_requested,
    status,
    top_up,
)

CARD = load_rate_card()
NOW = 1_764_000_000_000
GB_UTILITY = CARD.price("utility", "GB")  # 24 200
GB_MARKETING = CARD.price("marketing", "GB")  # 58 200


@dataclass
class Books:
    """The shell's write order, in memory: entries by key, then the balance."""

    balance: Balance
    entries: dict[str, LedgerEntry] = field(default_factory=dict)
    offsets: dict[str, int] = field(default_factory=dict)
    published: list[Any] = field(default_factory=list)

    def next_position(self, topic: str) -> Position:
        self.offsets[topic] = self.offsets.get(topic, -1) + 1
        return Position(topic, 0, self.offsets[topic])

    def feed(self, event: InputEvent, position: Position | None = None) -> Decision:
        topic = {
            "SendRequested": SEND_TOPIC,
            "StatusChanged": STATUS_TOPIC,
            "TopUpRequested": TOPUP_TOPIC,
        }[type(event).__name__]
        position = position or self.next_position(topic)
        reservation = (
            self.entries.get(reserve_key(event.message_id))
            if isinstance(event, StatusChanged)
            else None
        )
        existing = (
            self.entries.get(entry_key(event))
            if self.balance.has_applied(position.source, position.offset)
            else None
        )
        decision = decide(
            self.balance,
            event,
            position,
            rate_card=CARD,
            now=NOW,
            reservation=reservation,
            existing=existing,
            top_up_key=TOPUP_KEY,
        )
        tried: set[str] = set()  # a taken key: decide again from what is stored there
        while decision.entries and decision.entries[0].key not in tried:
            entry = decision.entries[0]
            tried.add(entry.key)
            if entry.key not in self.entries:
                self.entries[entry.key] = entry
                break
            decision = decide(
                self.balance,
                event,
                position,
                rate_card=CARD,
                now=NOW,
                reservation=reservation,
                existing=self.entries[entry.key],
                top_up_key=TOPUP_KEY,
            )
        if decision.balance is not None:
            self.balance = decision.balance
        self.published.extend(o.event for o in decision.outputs)
        return decision


def books(available: int = 0, threshold: int = 0) -> Books:
    opening = Balance.opening(ACCOUNT, CARD.currency, threshold)
    ledger = Books(opening)
    if available:
        ledger.feed(top_up(available, event_id="opening"))
    return ledger


# --- reserve ---------------------------------------------------------------------------------


def test_a_send_is_reserved_when_available_covers_the_price_exactly() -> None:
    ledger = books(available=GB_UTILITY)
    decision = ledger.feed(send_requested("msg_1", category="utility", region="GB"))

    assert decision.outcome == "reserved"
    assert (ledger.balance.available, ledger.balance.reserved) == (0, GB_UTILITY)
    [output] = decision.outputs
    assert output.topic is SEND_APPROVED
    assert output.event.reserved_amount == GB_UTILITY
    assert output.event.rate_card_version == CARD.version
    assert ledger.entries["msg_1:reserve"].kind == "reserve"


def test_a_send_is_rejected_when_available_is_one_micro_short() -> None:
    ledger = books(available=GB_UTILITY - 1)
    decision = ledger.feed(send_requested("msg_1", category="utility", region="GB"))

    assert decision.outcome == "rejected"
    assert (ledger.balance.available, ledger.balance.reserved) == (GB_UTILITY - 1, 0)
    [output] = decision.outputs
    assert output.topic is STATUS_CHANGED
    assert output.event == StatusChanged(
        event_id="msg_1:rejected",
        message_id="msg_1",
        account_id=ACCOUNT,
        status="rejected",
        occurred_at=NOW,
        source="billing",
        phone_number_id=output.event.phone_number_id,
        recipient_region="GB",
        reason="insufficient_credit",
    )


def test_the_approval_carries_the_request_unchanged() -> None:
    request = send_requested("msg_1")
    decision = books(available=10 * GB_UTILITY).feed(request)

    approved = decision.outputs[0].event
    assert isinstance(approved, SendApproved)
    assert {
        k: v
        for k, v in msgspec.structs.asdict(approved).items()
        if k not in ("reserved_amount", "rate_card_version")
    } == msgspec.structs.asdict(request)


def test_a_recipient_outside_the_listed_markets_is_priced_at_the_default_market() -> None:
    decision = books(available=10**6).feed(send_requested(category="utility", region="ZZ"))
    assert decision.outputs[0].event.reserved_amount == CARD.price("utility", "*")


# --- settle ----------------------------------------------------------------------------------


def test_a_regular_delivery_charges_metas_category_at_the_reserved_region() -> None:
    ledger = books(available=100_000)
    ledger.feed(send_requested("msg_1", category="utility", region="GB"))

    decision = ledger.feed(status("msg_1", "delivered", pricing=regular("marketing")))

    assert decision.outcome == "charged"
    charge = ledger.entries["msg_1:settle"]
    assert (charge.kind, charge.amount, charge.reserved_amount) == (
        "charge",
        GB_MARKETING,
        GB_UTILITY,
    )
    assert (ledger.balance.available, ledger.balance.reserved) == (100_000 - GB_MARKETING, 0)


def test_a_regular_read_charges_when_the_delivery_carried_no_pricing() -> None:
    ledger = books(available=100_000)
    ledger.feed(send_requested("msg_1"))

    assert ledger.feed(status("msg_1", "delivered")).outcome == "ignored"
    assert ledger.feed(status("msg_1", "read", pricing=regular())).outcome == "charged"
    assert (ledger.balance.available, ledger.balance.reserved) == (100_000 - GB_UTILITY, 0)


def test_a_message_is_settled_once() -> None:
    ledger = books(available=100_000)
    ledger.feed(send_requested("msg_1"))
    ledger.feed(status("msg_1", "delivered", pricing=regular()))
    after_charge = ledger.balance

    for later in (
        status("msg_1", "read", pricing=regular()),
        status("msg_1", "failed"),
        status("msg_1", "delivered", pricing=regular(), event_id="again"),
    ):
        decision = ledger.feed(later)
        assert decision.outcome == "duplicate"
        assert decision.balance is None

    assert (ledger.balance.available, ledger.balance.reserved) == (
        after_charge.available,
        after_charge.reserved,
    )


def test_a_delivery_meta_billed_after_an_outcome_unknown_release_is_charged_late() -> None:
    """The chaos test's undercharge: a sender killed while its call was out leaves the outcome
    unknown; status's sweeper declares it failed (`outcome_unknown`) and the reservation is
    released; Meta had the message and then reports it delivered with a regular price."""
    ledger = books(available=100_000)
    ledger.feed(send_requested("msg_1", category="utility", region="GB"))
    guessed = StatusChanged(
        event_id="msg_1:failed:outcome_unknown",
        message_id="msg_1",
        account_id=ACCOUNT,
        status="failed",
        occurred_at=NOW,
        source="sender",
        reason="outcome_unknown",
    )
    assert ledger.feed(guessed).outcome == "released"
    assert (ledger.balance.available, ledger.balance.reserved) == (100_000, 0)
    assert ledger.balance.in_flight == 0

    decision = ledger.feed(status("msg_1", "delivered", pricing=regular("marketing")))

    assert decision.outcome == "charged"
    late = ledger.entries["msg_1:late-charge"]
    # Meta's category, at the reserved region; the reservation was returned already.
    assert (late.kind, late.amount, late.reserved_amount, late.category, late.region) == (
        "charge",
        GB_MARKETING,
        0,
        "marketing",
        "GB",
    )
    assert ledger.entries["msg_1:settle"].kind == "release"  # the release stays, as written
    assert (ledger.balance.available, ledger.balance.reserved) == (100_000 - GB_MARKETING, 0)
    assert ledger.balance.in_flight == 0  # closed once, by the release

    # Charged once: the same delivery again, a priced read, another failure change nothing.
    for later in (
        status("msg_1", "delivered", pricing=regular("marketing"), event_id="again"),
        status("msg_1", "read", pricing=regular("marketing")),
        status("msg_1", "failed", source="sender"),
    ):
        assert ledger.feed(later).outcome == "duplicate"
    assert (ledger.balance.available, ledger.balance.reserved) == (100_000 - GB_MARKETING, 0)


def test_a_free_or_unpriced_status_after_a_release_charges_nothing() -> None:
    ledger = books(available=100_000)
    ledger.feed(send_requested("msg_1"))
    ledger.feed(status("msg_1", "failed", source="sender"))

    assert ledger.feed(status("msg_1", "delivered", pricing=free())).outcome == "duplicate"
    assert ledger.feed(status("msg_1", "read")).outcome == "ignored"
    assert "msg_1:late-charge" not in ledger.entries
    assert (ledger.balance.available, ledger.balance.reserved) == (100_000, 0)


def test_a_late_charge_redelivered_at_its_offset_is_not_applied_twice() -> None:
    ledger = books(available=100_000)
    ledger.feed(send_requested("msg_1"))
    ledger.feed(status("msg_1", "failed", source="sender"))
    delivered = status("msg_1", "delivered", pricing=regular())
    position = ledger.next_position(STATUS_TOPIC)
    assert ledger.feed(delivered, position).outcome == "charged"
    after = ledger.balance

    assert ledger.feed(delivered, position).outcome == "replayed"
    assert ledger.balance == after


def test_a_late_charge_written_before_a_crash_is_finished_on_redelivery() -> None:
    """The late-charge entry is durable, the balance write was lost: the redelivered status
    applies that entry, once."""
    ledger = books(available=100_000)
    ledger.feed(send_requested("msg_1"))
    ledger.feed(status("msg_1", "failed", source="sender"))
    before = ledger.balance
    delivered = status("msg_1", "delivered", pricing=regular())
    position = ledger.next_position(STATUS_TOPIC)
    ledger.feed(delivered, position)
    ledger.balance = before  # the balance write never happened

    decision = ledger.feed(delivered, position)

    assert decision.outcome == "charged" and decision.applied is not None
    assert decision.applied.key == "msg_1:late-charge"
    assert (ledger.balance.available, ledger.balance.reserved) == (100_000 - GB_UTILITY, 0)


@pytest.mark.parametrize("final", ["failed", "expired", "rejected"])
def test_a_failed_expired_or_rejected_message_releases_its_reservation(final: str) -> None:
    ledger = books(available=100_000)
    ledger.feed(send_requested("msg_1"))

    decision = ledger.feed(status("msg_1", final, source="sender"))

    assert decision.outcome == "released"
    assert (ledger.balance.available, ledger.balance.reserved) == (100_000, 0)
    release = ledger.entries["msg_1:settle"]
    assert (release.kind, release.amount, release.reserved_amount) == (
        "release",
        GB_UTILITY,
        GB_UTILITY,
    )


def test_a_free_delivery_releases_its_reservation() -> None:
    ledger = books(available=100_000)
    ledger.feed(send_requested("msg_1"))

    assert ledger.feed(status("msg_1", "delivered", pricing=free())).outcome == "released"
    assert (ledger.balance.available, ledger.balance.reserved) == (100_000, 0)


@pytest.mark.parametrize("step", ["sent", "unknown", "accepted", "approved"])
def test_steps_before_delivery_do_not_settle(step: str) -> None:
    ledger = books(available=100_000)
    ledger.feed(send_requested("msg_1"))
    before = ledger.balance

    decision = ledger.feed(status("msg_1", step, pricing=regular(), source="sender"))

    assert decision == Decision("ignored")
    assert ledger.balance == before


def test_a_delivery_without_pricing_waits_for_the_priced_status() -> None:
    assert settlement_for(status(status="delivered")) is None
    assert settlement_for(status(status="read")) is None
    assert settlement_for(status(status="read", pricing=regular())) == "charge"


def test_a_status_of_a_message_without_a_reservation_is_ignored() -> None:
    ledger = books(available=100_000)
    assert ledger.feed(status("msg_unknown", "delivered", pricing=regular())).outcome == "ignored"
    assert "msg_unknown:settle" not in ledger.entries


def test_billings_own_rejection_does_not_release_anything() -> None:
    ledger = books(available=1)
    ledger.feed(send_requested("msg_1"))  # rejected: a reject entry, no reservation

    decision = ledger.feed(status("msg_1", "rejected", source="billing"))

    assert decision.outcome == "ignored"
    assert (ledger.balance.available, ledger.balance.reserved) == (1, 0)


def test_a_status_naming_another_account_does_not_touch_the_reservation() -> None:
    ledger = books(available=100_000)
    ledger.feed(send_requested("msg_1"))
    decision = ledger.feed(status("msg_1", "failed", account_id="acc_other"))
    assert decision.outcome == "ignored"


# --- top-up ----------------------------------------------------------------------------------


def test_a_top_up_adds_to_available() -> None:
    ledger = books(available=5)
    decision = ledger.feed(top_up(1_000, event_id="topup_2"))
    assert decision.outcome == "topped_up"
    assert ledger.balance.available == 1_005
    assert ledger.entries["topup:topup_2"].amount == 1_000


def test_a_top_up_is_announced_once_with_the_balance_right_after_it() -> None:
    ledger = books(available=5)
    ledger.feed(send_requested("msg_1", category="utility"))  # nothing: rejected, 5 left
    position = ledger.next_position(TOPUP_TOPIC)
    event = top_up(100_000, event_id="topup_2")
    decision = ledger.feed(event, position)
    [output] = decision.outputs
    assert output.topic is BALANCE_TOPPED_UP
    assert output.event == BalanceToppedUp(
        event_id="topup_2:applied",
        account_id=ACCOUNT,
        amount=100_000,
        available=100_005,
        currency=CARD.currency,
        note=event.note,
        occurred_at=NOW,
    )
    assert ledger.entries["topup:topup_2"].available_after == 100_005
    ledger.feed(send_requested("msg_2", category="utility"))  # the balance moves on
    # derived from the entry: a replay of the offset and a duplicate at a new offset say the
    # same thing under the same id (downstream dedupes), never the balance of now
    replay = ledger.feed(event, position)
    duplicate = ledger.feed(event)
    assert (replay.outcome, duplicate.outcome) == ("replayed", "duplicate")
    assert [o.event for o in replay.outputs] == [output.event]
    assert [o.event for o in duplicate.outputs] == [output.event]
    assert ledger.balance.available == 100_005 - GB_UTILITY


def test_a_top_up_entry_from_before_the_announcement_is_not_announced_on_replay() -> None:
    ledger = books()
    position = ledger.next_position(TOPUP_TOPIC)
    ledger.feed(top_up(1_000, event_id="topup_old"), position)
    key = "topup:topup_old"
    ledger.entries[key] = replace(ledger.entries[key], available_after=None)
    assert ledger.feed(top_up(1_000, event_id="topup_old"), position).outputs == ()


@pytest.mark.parametrize("amount", [0, -5])
def test_a_top_up_of_nothing_or_less_is_refused(amount: int) -> None:
    with pytest.raises(InvalidRequest):
        books().feed(top_up(amount))


# --- replays and duplicates ------------------------------------------------------------------


def test_a_replayed_offset_changes_nothing_but_derives_its_outputs_again() -> None:
    ledger = books(available=100_000)
    position = ledger.next_position(SEND_TOPIC)
    first = ledger.feed(send_requested("msg_1"), position)
    entries = dict(ledger.entries)

    again = ledger.feed(send_requested("msg_1"), position)

    assert again.outcome == "replayed"
    assert again.balance is None and again.entries == ()
    assert again.outputs == first.outputs
    assert ledger.entries == entries


def test_a_replayed_rejection_is_published_again() -> None:
    ledger = books(available=1)
    position = ledger.next_position(SEND_TOPIC)
    first = ledger.feed(send_requested("msg_1"), position)
    again = ledger.feed(send_requested("msg_1"), position)
    assert again.outcome == "replayed"
    assert again.outputs == first.outputs
    assert again.outputs[0].event.status == "rejected"


def test_the_same_send_request_at_a_new_offset_reserves_once() -> None:
    ledger = books(available=100_000)
    ledger.feed(send_requested("msg_1"))

    duplicate = ledger.feed(send_requested("msg_1"))  # the producer retried after a crash

    assert duplicate.outcome == "duplicate"
    assert duplicate.balance is None
    assert duplicate.outputs[0].topic is SEND_APPROVED  # downstream dedupes by message id
    assert (ledger.balance.available, ledger.balance.reserved) == (100_000 - GB_UTILITY, GB_UTILITY)


def test_the_same_status_republished_at_a_new_offset_releases_once() -> None:
    ledger = books(available=100_000)
    ledger.feed(send_requested("msg_1"))
    failed = status("msg_1", "failed", source="sender", event_id="msg_1:failed:sender")
    ledger.feed(failed)

    # The same event id again: it is not our unfinished attempt, the first one was applied.
    duplicate = ledger.feed(failed)

    assert duplicate.outcome == "duplicate"
    assert (ledger.balance.available, ledger.balance.reserved) == (100_000, 0)


def test_the_same_top_up_at_a_new_offset_credits_once() -> None:
    ledger = books()
    ledger.feed(top_up(5_000, event_id="topup_9"))
    assert ledger.feed(top_up(5_000, event_id="topup_9")).outcome == "duplicate"
    assert ledger.balance.available == 5_000


def test_an_entry_written_without_its_balance_is_applied_when_the_event_comes_again() -> None:
    ledger = books(available=100_000)
    position = ledger.next_position(STATUS_TOPIC)
    ledger.feed(send_requested("msg_1"))
    before = ledger.balance
    first = decide(
        before,
        status("msg_1", "failed"),
        position,
        rate_card=CARD,
        now=NOW,
        reservation=ledger.entries["msg_1:reserve"],
    )
    # The process stopped after inserting the entry and before writing the balance.
    [entry] = first.entries

    resumed = decide(
        before,
        status("msg_1", "failed"),
        position,
        rate_card=CARD,
        now=NOW + 5,
        reservation=ledger.entries["msg_1:reserve"],
        existing=entry,
    )

    assert resumed.outcome == "released"
    assert resumed.entries == ()
    assert resumed.balance == first.balance


# --- low balance -----------------------------------------------------------------------------


def alerts(ledger: Books) -> list[Any]:
    return [e for e in ledger.published if type(e).__name__ == "LowBalanceAlerted"]


def test_falling_below_the_threshold_alerts_once_per_crossing() -> None:
    ledger = books(threshold=50_000)
    ledger.feed(top_up(100_000, event_id="t1"))  # above: armed
    crossing = ledger.feed(send_requested("msg_1", category="marketing"))  # 41 800 left

    assert [o.topic for o in crossing.outputs] == [SEND_APPROVED, LOW_BALANCE_ALERTED]
    alert = crossing.outputs[1].event
    assert (alert.event_id, alert.available, alert.threshold) == (
        f"{ACCOUNT}:low:1",
        41_800,
        50_000,
    )
    ledger.feed(send_requested("msg_2", category="utility"))  # 17 600: still below, no alert
    assert len(alerts(ledger)) == 1


def test_a_top_up_to_the_threshold_rearms_the_alert() -> None:
    ledger = books(threshold=50_000)
    ledger.feed(top_up(100_000, event_id="t1"))
    ledger.feed(send_requested("msg_1", category="marketing"))  # 41 800: crossing 1
    ledger.feed(top_up(8_200, event_id="t2"))  # exactly 50 000: re-armed
    assert ledger.balance.low_balance_armed
    ledger.feed(send_requested("msg_2", category="utility"))  # 25 800: crossing 2

    assert [a.event_id for a in alerts(ledger)] == [f"{ACCOUNT}:low:1", f"{ACCOUNT}:low:2"]
    assert ledger.balance.low_balance_crossings == 2


def test_a_top_up_that_stays_below_the_threshold_does_not_rearm() -> None:
    ledger = books(threshold=50_000)
    ledger.feed(top_up(100_000, event_id="t1"))
    ledger.feed(send_requested("msg_1", category="marketing"))  # 41 800: crossing 1
    ledger.feed(top_up(1_000, event_id="t2"))  # 42 800: still below
    ledger.feed(send_requested("msg_2", category="utility"))
    assert len(alerts(ledger)) == 1


def test_a_new_account_below_the_threshold_has_not_crossed_it() -> None:
    ledger = books(threshold=50_000)
    ledger.feed(top_up(30_000, event_id="t1"))
    ledger.feed(send_requested("msg_1", category="utility"))
    assert alerts(ledger) == []


def test_a_charge_above_the_reservation_can_cross_the_threshold() -> None:
    ledger = books(threshold=50_000)
    ledger.feed(top_up(100_000, event_id="t1"))
    ledger.feed(send_requested("msg_1", category="utility"))  # 75 800 available
    decision = ledger.feed(status("msg_1", "delivered", pricing=regular("marketing")))
    assert decision.outputs[0].topic is LOW_BALANCE_ALERTED
    assert decision.outputs[0].event.available == 100_000 - GB_MARKETING


def test_a_replay_of_the_crossing_event_publishes_its_alert_again_but_a_duplicate_does_not() -> (
    None
):
    ledger = books(threshold=50_000)
    ledger.feed(top_up(100_000, event_id="t1"))
    position = ledger.next_position(SEND_TOPIC)
    first = ledger.feed(send_requested("msg_1", category="marketing"), position)

    replay = ledger.feed(send_requested("msg_1", category="marketing"), position)
    duplicate = ledger.feed(send_requested("msg_1", category="marketing"))

    assert replay.outputs == first.outputs
    assert [o.topic for o in duplicate.outputs] == [SEND_APPROVED]
    assert ledger.balance.low_balance_crossings == 1


def test_the_accounts_own_threshold_decides_the_crossing() -> None:
    ledger = books(threshold=0)
    ledger.feed(top_up(100_000, event_id="t1"))
    ledger.balance = with_threshold(ledger.balance, 80_000)  # the account's, read by the worker
    crossing = ledger.feed(send_requested("msg_1", category="utility"))  # 75 800 < 80 000
    assert [o.topic for o in crossing.outputs] == [SEND_APPROVED, LOW_BALANCE_ALERTED]
    assert crossing.outputs[1].event.threshold == 80_000
    assert ledger.balance.low_balance_threshold == 80_000  # stored with the balance
    ledger.feed(send_requested("msg_2", category="utility"))
    assert len(alerts(ledger)) == 1


def test_a_changed_threshold_rearms_above_it_and_keeps_an_alert_already_given() -> None:
    balance = Balance(
        account_id=ACCOUNT,
        currency="USD",
        available=60_000,
        low_balance_threshold=50_000,
        low_balance_armed=True,
    )
    assert with_threshold(balance, 50_000) is balance
    # raised above the balance while armed: the next movement that stays below it alerts
    raised = with_threshold(balance, 70_000)
    assert (raised.low_balance_threshold, raised.low_balance_armed) == (70_000, True)
    # alerted at the old threshold, then lowered under the balance: armed again
    alerted = Balance(
        account_id=ACCOUNT,
        currency="USD",
        available=40_000,
        low_balance_threshold=50_000,
        low_balance_armed=False,
    )
    assert with_threshold(alerted, 30_000).low_balance_armed is True
    # lowered, but still above the balance: no second alert for the same fall
    assert with_threshold(alerted, 45_000).low_balance_armed is False


def test_a_rejected_send_stays_rejected_when_it_comes_again_after_a_top_up() -> None:
    ledger = books(available=1)
    ledger.feed(send_requested("msg_1"))
    ledger.feed(top_up(1_000_000, event_id="t2"))

    again = ledger.feed(send_requested("msg_1"))

    assert again.outcome == "duplicate"
    assert [o.event.status for o in again.outputs] == ["rejected"]
    assert ledger.balance.reserved == 0
