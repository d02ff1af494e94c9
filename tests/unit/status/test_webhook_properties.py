"""Property-based: whatever Meta (or a bug) sends, planning a webhook either works or refuses the
whole body with the documented error, never loses a well-formed item because of a malformed
sibling, and produces only documents the database accepts and events Kafka can carry. The
processor, over an in-memory store, never fails on one."""

from __future__ import annotations

import bson
import msgspec
from hypothesis import HealthCheck, given, settings

from services.status import core
from services.status.processor import WebhookProcessor
from shared.clock import FakeClock
from shared.errors import PermanentError
from shared.messages import WebhookReceived
from tests.unit.status.fakes import FakePublisher, FakeStore
from tests.unit.status.webhook_strategies import Case, cases

RECEIVED_AT = 1_764_000_000_000
PROPERTY_SETTINGS = settings(
    max_examples=250,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _plan(case: Case) -> core.WebhookPlan | None:
    try:
        return core.plan_webhook(case.body, RECEIVED_AT)
    except PermanentError as exc:
        assert exc.code == "malformed_webhook"
        assert case.envelope_broken, "only a body that is not an envelope may be refused"
        return None


@PROPERTY_SETTINGS
@given(cases())
def test_planning_never_fails_and_keeps_every_well_formed_item(case: Case) -> None:
    plan = _plan(case)
    if plan is None:
        return
    assert case.expected_statuses <= {(s.wamid, s.meta_status) for s in plan.statuses}
    assert case.expected_inbound <= {m.wamid for m in plan.inbound}
    acted_on = (
        len(plan.template_updates)
        + len(plan.number_updates)
        + len(plan.account_updates)
        + len(plan.waba_facts)
    )
    assert acted_on >= case.expected_other


@PROPERTY_SETTINGS
@given(cases())
def test_everything_planned_can_be_stored_and_published(case: Case) -> None:
    """What reaches MongoDB encodes as BSON (no int beyond 64 bits, no invalid text) and what
    reaches Kafka encodes as JSON."""
    plan = _plan(case)
    if plan is None:
        return
    documents: list[dict[str, object]] = []
    events: list[object] = []
    for status in plan.statuses:
        documents.append(core.parked_status_doc(status, RECEIVED_AT))
        ref = core.MessageRef("msg_1", "acc_1", "GB")
        events.append(core.status_changed_from_webhook(status, ref))
    for message in plan.inbound:
        documents.append(core.inbound_doc(message, "acc_1", RECEIVED_AT))
        documents.append(core.conversation_update(message, "acc_1", RECEIVED_AT))
        events.append(core.inbound_received(message, "acc_1", RECEIVED_AT))
    for update in plan.template_updates:
        documents.append(core.minimal_template_doc(update))
        events.append(core.template_status_changed(update))
    number = core.NumberRef("106540352242922", "acc_1", "w")
    for number_update in plan.number_updates:
        documents.append(core.number_update_fields(number_update))
        pacing = core.next_pacing(
            core.pacing_of(None, number),
            1000,
            number_update.messaging_limit,
            number_update.occurred_at,
        )
        if pacing is not None:
            documents.append(core.pacing_fields(pacing))
            events.append(
                core.throughput_changed(
                    number, pacing, number_update.event, number_update.occurred_at
                )
            )
    for account in plan.account_updates:
        documents.append(core.account_event_fields(account))
        change = core.hold_change(account)
        if change is not None:
            holds = core.apply_hold(None, *change, account.occurred_at) or {}
            documents.append({"holds": holds})
            events.append(
                core.waba_status_changed(account.waba_id, holds, account.event, account.occurred_at)
            )
    for fact in plan.waba_facts:
        documents.append(core.waba_fact_fields(fact))
    for preference in plan.user_preferences:
        documents.append(core.user_preference_doc(preference, "acc_1"))
    for document in documents:
        bson.encode(document)
    for event in events:
        msgspec.json.encode(event)


async def test_the_processor_never_fails_on_generated_webhooks() -> None:
    """Over a few hundred generated webhooks (drawn once, deterministically), the processor
    with an in-memory store handles every one that the intake would accept, and stores every
    well-formed inbound message."""
    generated: list[Case] = []

    @settings(
        max_examples=250,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(cases())
    def draw_case(case: Case) -> None:
        generated.append(case)

    draw_case()
    store, publisher = FakeStore(), FakePublisher()
    processor = WebhookProcessor(store, publisher, FakeClock(start_ms=RECEIVED_AT))
    expected: set[str] = set()
    handled = 0
    for case in generated:
        try:
            records = core.split_by_waba(case.body)  # what intake publishes
        except Exception:  # refused at intake (400): never reaches the processor
            assert case.envelope_broken
            continue
        for record in records:
            await processor.handle(
                WebhookReceived(
                    event_id=record.event_id,
                    received_at=RECEIVED_AT,
                    payload=msgspec.Raw(record.payload),
                )
            )
        handled += 1
        expected |= case.expected_inbound
    assert handled >= 180
    assert expected and expected <= set(store.inbound)
