"""The state writer remembers its messages packed (batch_plan.pack_known): unpacking gives back
the same state and the same readings of the kept fields, and a packed entry is a fraction of
the objects it replaces."""

from __future__ import annotations

from datetime import UTC, datetime

from services.status import core
from services.status.batch_plan import Known, pack_known, unpack_known
from shared.messages import MetaError, Pricing

PRICING = Pricing(billable=True, pricing_model="PMP", type="regular", category="utility")
ERROR = MetaError(code=131047, title="Re-engagement message", details="More than 24 hours")
HISTORY = (
    core.HistoryEntry("accepted", 1_764_000_000_000, "ingest"),
    core.HistoryEntry("sent", 1_764_000_000_500, "sender"),
    core.HistoryEntry("delivered", 1_764_000_003_000, "webhook", implied=True),
    core.HistoryEntry("read", 1_764_000_004_000, "webhook", pricing=PRICING),
    core.HistoryEntry("failed", 1_764_000_005_000, "webhook", error=ERROR, reason="why"),
)
CREATED = datetime(2026, 12, 7, 0, 41, 39, 123000, tzinfo=UTC)


def test_a_packed_message_unpacks_to_the_same_state_and_kept_fields() -> None:
    state = core.MessageState(history=HISTORY, wamid="wamid.HBgL")
    doc = {"account_id": "acc_1", "recipient_region": "GB", "created_at": CREATED, "type": None}
    packed = pack_known(Known(state, doc))
    assert isinstance(packed, bytes)
    back = unpack_known(packed)
    assert back.state == state
    assert back.state.status == "read" and back.state.pricing == PRICING
    assert back.doc is not None
    assert {k: v for k, v in back.doc.items() if k != "created_at"} == {
        "account_id": "acc_1",
        "recipient_region": "GB",
        "type": None,
    }
    # the time is read only as epoch ms (core.epoch_ms), and reads the same
    assert core.epoch_ms(back.doc["created_at"]) == core.epoch_ms(CREATED) == 1_796_604_099_123


def test_no_document_and_no_history_round_trip() -> None:
    for known in (Known(core.MessageState(), None), Known(core.MessageState(), {})):
        assert unpack_known(pack_known(known)) == known


def test_a_field_msgpack_cannot_take_is_remembered_as_it_is() -> None:
    known = Known(core.MessageState(history=HISTORY[:1]), {"account_id": object()})
    assert pack_known(known) is known
    assert unpack_known(known) is known


def test_a_packed_message_is_small() -> None:
    packed = pack_known(
        Known(core.MessageState(history=HISTORY, wamid="wamid." + "A" * 48), {"type": "text"})
    )
    assert isinstance(packed, bytes) and len(packed) < 400
