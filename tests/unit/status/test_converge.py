"""converge(): a message's state from its status events, whatever their order or repetition."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest

from services.status.core import (
    MessageState,
    converge,
    state_fields,
    state_from_doc,
)
from shared.messages import MetaError, Pricing, StatusChanged

REGULAR = Pricing(billable=True, pricing_model="PMP", type="regular", category="utility")
RE_ENGAGEMENT = MetaError(code=131047, title="Re-engagement message", details="24 h passed")


def event(status: str, at: int, source: str = "webhook", **extra: Any) -> StatusChanged:
    return StatusChanged(
        event_id=f"wamid.X:{status}:{source}",
        message_id="msg_1",
        account_id="acc_1",
        status=status,  # type: ignore[arg-type]
        occurred_at=at,
        source=source,  # type: ignore[arg-type]
        wamid=extra.pop("wamid", "wamid.X"),
        **extra,
    )


def apply_all(events: list[StatusChanged], state: MessageState | None = None) -> MessageState:
    state = state or MessageState()
    for e in events:
        state = converge(state, e) or state
    return state


def statuses(state: MessageState) -> list[str]:
    return [e.status for e in state.history]


def test_a_fresh_message_is_accepted_with_no_history() -> None:
    assert MessageState().status == "accepted"
    assert state_from_doc({"_id": "msg_1", "status": "accepted", "history": []}) == MessageState()


def test_statuses_move_forward_in_order() -> None:
    state = apply_all(
        [
            event("sent", 1, "sender", wamid="wamid.X"),
            event("delivered", 2, pricing=REGULAR),
            event("read", 3),
        ]
    )
    assert state.status == "read"
    assert statuses(state) == ["sent", "delivered", "read"]
    assert state.wamid == "wamid.X"
    assert state.pricing == REGULAR
    assert state.status_at == 3


def test_statuses_never_go_backwards_when_events_arrive_out_of_order() -> None:
    state = apply_all([event("read", 30), event("sent", 10), event("delivered", 20)])
    assert state.status == "read"
    assert statuses(state) == ["sent", "delivered", "read"]
    assert state.entry("delivered").implied is False  # type: ignore[union-attr]
    assert state.entry("delivered").at == 20  # type: ignore[union-attr]


def test_read_implies_delivered_when_meta_skips_it() -> None:
    state = apply_all([event("sent", 10), event("read", 30)])
    assert state.status == "read"
    delivered = state.entry("delivered")
    assert delivered is not None and delivered.implied and delivered.at == 30
    assert statuses(state) == ["sent", "delivered", "read"]


def test_a_reported_delivered_replaces_the_implied_one() -> None:
    state = apply_all([event("read", 30), event("delivered", 20, pricing=REGULAR)])
    delivered = state.entry("delivered")
    assert delivered is not None and not delivered.implied and delivered.at == 20
    assert state.pricing == REGULAR


def test_a_duplicate_status_is_applied_once() -> None:
    once = apply_all([event("sent", 10), event("delivered", 20)])
    assert converge(once, event("delivered", 20)) is None
    assert converge(once, event("sent", 10)) is None


def test_a_second_report_of_a_step_keeps_the_earliest_and_fills_missing_pricing() -> None:
    state = apply_all([event("sent", 10, "sender"), event("sent", 12, "webhook", pricing=REGULAR)])
    sent = state.entry("sent")
    assert sent is not None
    assert (sent.at, sent.source, sent.pricing) == (10, "sender", REGULAR)
    assert statuses(state) == ["sent"]


@pytest.mark.parametrize("order", ["failed_first", "delivered_first"])
def test_delivery_evidence_beats_a_failure_in_either_order(order: str) -> None:
    failed = event("failed", 40, error=RE_ENGAGEMENT)
    delivered = event("delivered", 20, pricing=REGULAR)
    events = [failed, delivered] if order == "failed_first" else [delivered, failed]
    state = apply_all([event("sent", 10), *events])
    assert state.status == "delivered"
    assert state.error is None  # the overruled failure is history, not the message's error
    assert "failed" in statuses(state)
    assert state.pricing == REGULAR


@pytest.mark.parametrize("terminal", ["failed", "rejected", "expired"])
@pytest.mark.parametrize("before", ["accepted", "approved", "unknown", "sent"])
def test_failures_are_terminal_over_every_step_before_delivery(terminal: str, before: str) -> None:
    start = apply_all([event(before, 10, "sender")]) if before != "accepted" else MessageState()
    state = apply_all([event(terminal, 20, "sender", reason="why")], start)
    assert state.status == terminal
    assert state.reason == "why"
    # Later steps short of delivery do not revive it.
    for later in ("sent", "unknown", "approved"):
        state = apply_all([event(later, 30)], state)
        assert state.status == terminal


def test_a_failure_keeps_meta_error_and_the_reason() -> None:
    state = apply_all([event("sent", 10, "sender"), event("failed", 20, error=RE_ENGAGEMENT)])
    assert state.status == "failed"
    assert state.error == RE_ENGAGEMENT
    fields = state_fields(state, now_ms=99)
    assert fields["error"] == {
        "code": 131047,
        "title": "Re-engagement message",
        "details": "24 h passed",
    }
    assert fields["status"] == "failed" and fields["updated_at"] == 99


def test_the_first_wamid_is_kept() -> None:
    state = apply_all(
        [event("sent", 10, "sender", wamid="wamid.A"), event("delivered", 20, wamid="wamid.B")]
    )
    assert state.wamid == "wamid.A"


def test_the_outcome_does_not_depend_on_order_or_duplicates() -> None:
    events = [
        event("sent", 10, "sender"),
        event("sent", 11, "webhook", pricing=REGULAR),
        event("delivered", 20, pricing=REGULAR),
        event("read", 30),
        event("failed", 40, error=RE_ENGAGEMENT),
    ]
    expected = apply_all(events)
    assert expected.status == "read"
    for permutation in itertools.permutations(events):
        assert apply_all(list(permutation)) == expected
    rng = random.Random(7)
    for _ in range(50):
        shuffled = events * 3
        rng.shuffle(shuffled)
        assert apply_all(shuffled) == expected


def test_the_state_round_trips_through_the_document() -> None:
    state = apply_all(
        [
            event("unknown", 5, "sender", reason="connection_dropped"),
            event("sent", 10, "webhook", pricing=REGULAR),
            event("read", 30),
            event("failed", 40, error=RE_ENGAGEMENT),
        ]
    )
    doc = {"_id": "msg_1", **state_fields(state, now_ms=50)}
    assert state_from_doc(doc) == state
    assert doc["history"][0] == {
        "status": "unknown",
        "at": 5,
        "source": "sender",
        "reason": "connection_dropped",
    }
    assert {"status": "delivered", "at": 30, "source": "webhook", "implied": True} in doc["history"]


def test_unreadable_history_entries_are_skipped_not_fatal() -> None:
    doc = {
        "history": [
            {"status": "sent", "at": 10, "source": "sender"},
            "junk",
            {"at": 3},
            {"status": "read", "at": "x"},
            {
                "status": "delivered",
                "at": 20,
                "source": "webhook",
                "pricing": {"billable": "maybe"},
            },
        ]
    }
    state = state_from_doc(doc)
    assert statuses(state) == ["sent", "delivered"]
    assert state.pricing is None


def test_only_the_first_evidence_of_delivery_counts_as_newly_delivered() -> None:
    from services.status.core import newly_delivered

    sent = apply_all([event("sent", 1)])
    read = apply_all([event("read", 3)], sent)  # read implies delivered
    delivered = apply_all([event("delivered", 2)], sent)
    assert newly_delivered(sent, read)
    assert newly_delivered(sent, delivered)
    assert not newly_delivered(delivered, apply_all([event("read", 3)], delivered))
    assert not newly_delivered(sent, apply_all([event("failed", 2)], sent))


def test_stored_times_read_as_epoch_ms_whatever_their_form() -> None:
    from datetime import UTC, datetime

    from services.status.core import epoch_ms

    assert epoch_ms(datetime(2026, 1, 1, tzinfo=UTC)) == 1_767_225_600_000
    assert epoch_ms(1_767_225_600_000) == 1_767_225_600_000
    assert epoch_ms(None) is None and epoch_ms(True) is None


def test_ingest_accepted_entry_stored_as_a_date_survives_convergence() -> None:
    from datetime import UTC, datetime

    from services.status.core import converge, state_fields, state_from_doc

    doc = {
        "history": [
            {"status": "accepted", "at": datetime(2026, 1, 1, tzinfo=UTC), "source": "ingest"}
        ]
    }
    state = state_from_doc(doc)
    new = converge(state, event("sent", 1_767_225_601_000, source="sender", wamid="wamid.A"))
    assert new is not None
    fields = state_fields(new, 1_767_225_602_000)
    assert [(h["status"], h["at"]) for h in fields["history"]] == [
        ("accepted", 1_767_225_600_000),
        ("sent", 1_767_225_601_000),
    ]
