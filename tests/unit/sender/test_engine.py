"""The send engine's scheduling and outcome handling, in virtual time, against a fake Meta that
enforces Meta's own buckets."""

import asyncio
from collections.abc import AsyncIterator

import pytest

from services.sender import metrics
from services.sender.engine import EngineConfig
from services.sender.meta_client import Accepted, Ambiguous, NotSent, Refused
from shared.messages import InboundReceived, ThroughputChanged
from tests.unit.sender.fakes import NUMBER_ID, Harness, phone_number, settle


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    harness = Harness()
    yield harness
    await harness.close()


async def test_many_messages_go_out_at_the_numbers_rate_and_meta_never_refuses(h: Harness) -> None:
    events = [h.event() for _ in range(300)]
    start = h.clock.monotonic()
    await h.admit(*events)
    await h.timer.run_until_true(lambda: len(h.statuses("sent")) == 300, limit=10)
    assert h.meta.refusals == []
    times = sorted(h.first_call_at().values())
    assert times[39] == pytest.approx(start)  # our burst: half of Meta's second
    # After the burst, 80 per second.
    assert (times[-1] - times[40]) == pytest.approx((300 - 41) / 80, abs=0.02)
    assert sorted(h.done) == sorted(e.message_id for e in events)
    sent = h.statuses("sent")[0]
    assert sent.event_id == f"{sent.message_id}:sent:sender"
    assert sent.source == "sender" and sent.wamid and sent.phone_number_id == NUMBER_ID
    assert sent.recipient_region == "GB"
    assert all(h.store.record(mid)["state"] == "sent" for mid in h.store.sends)


async def test_sends_do_not_wait_for_each_others_answers() -> None:
    h = Harness(latency=2.0)  # Meta takes 2 s to answer each request
    try:
        await h.admit(*(h.event() for _ in range(40)))
        await h.timer.advance(0.1)
        assert len(h.meta.calls) == 40  # all in flight at once
        assert h.engine.in_flight == 40
        await h.timer.advance(2.0)
        assert len(h.statuses("sent")) == 40
        assert h.engine.in_flight == 0
    finally:
        await h.close()


async def test_in_flight_sends_are_capped_per_number() -> None:
    h = Harness(config=EngineConfig(max_in_flight_per_number=5), latency=1.0)
    try:
        await h.admit(*(h.event() for _ in range(20)))
        await h.timer.advance(0.5)
        assert len(h.meta.calls) == 5
        await h.timer.advance(1.0)
        assert len(h.meta.calls) == 10
    finally:
        await h.close()


async def test_a_hot_recipient_does_not_delay_other_recipients(h: Harness) -> None:
    parked_before = metrics.PAIR_RATE_PARKED._value.get()
    hot = [h.event("+447700000001") for _ in range(60)]
    cold = [h.event() for _ in range(200)]
    start = h.clock.monotonic()
    await h.admit(*hot[:30], *cold[:100], *hot[30:], *cold[100:])
    await h.timer.run_until_true(lambda: len(h.statuses("sent")) == 240, limit=10)
    first = h.first_call_at()
    # Every cold message went within the number's own pace: (240 - 40) / 80 s after the burst.
    assert max(first[e.message_id] for e in cold) <= start + 200 / 80 + 0.05
    assert sum(1 for e in hot if e.message_id in first) == 40
    assert metrics.PAIR_RATE_PARKED._value.get() - parked_before == 20
    # The rest of the hot recipient's messages go one per 6 s, in order, without a 131056.
    await h.timer.run_until_true(lambda: len(h.statuses("sent")) == 260, limit=200)
    hot_times = [first_at for e in hot for first_at in [h.first_call_at()[e.message_id]]]
    assert hot_times == sorted(hot_times)
    assert hot_times[40] - start == pytest.approx(6.0, abs=0.05)
    assert hot_times[59] - hot_times[40] == pytest.approx(19 * 6.0, abs=0.05)
    assert h.meta.refusals == []


async def test_the_oldest_waiting_message_age_tracks_what_is_still_unfinished(h: Harness) -> None:
    assert h.engine.oldest_waiting_age() == 0.0
    hot = [h.event("+447700000001") for _ in range(41)]
    await h.admit(*hot)
    await h.timer.advance(3.0)
    assert h.engine.oldest_waiting_age() == pytest.approx(3.0)  # the 41st waits for 6 s
    await h.timer.advance(4.0)
    assert h.engine.oldest_waiting_age() == 0.0


async def test_after_a_take_over_a_recipient_gets_only_a_small_burst(h: Harness) -> None:
    now = h.clock.monotonic()
    await h.admit(*(h.event("+447700000001") for _ in range(6)), taken_over_at=now)
    await h.timer.advance(5.9)
    assert len(h.meta.calls) == 4  # Meta may still count the previous owner's burst
    await h.timer.advance(0.2)
    assert len(h.meta.calls) == 5


async def test_a_duplicate_record_of_a_message_in_flight_is_sent_once_and_both_finish() -> None:
    h = Harness(latency=1.0)
    try:
        event = h.event()
        await h.admit(event)
        await h.timer.advance(0.1)
        await h.admit(event)  # redelivered while the first is at Meta
        await h.timer.advance(2.0)
        assert h.meta.sent_ids() == [event.message_id]
        assert h.done == [event.message_id, event.message_id]
        assert len(h.statuses("sent")) == 1
    finally:
        await h.close()


async def test_a_message_already_sent_is_not_sent_again_and_its_outcome_is_republished(
    h: Harness,
) -> None:
    event = h.event()
    h.store.sends[event.message_id] = {
        "_id": event.message_id,
        "state": "sent",
        "wamid": "wamid.OLD",
        "attempts": 1,
    }
    await h.admit(event)
    assert h.meta.calls == []
    [sent] = h.statuses("sent")
    assert sent.wamid == "wamid.OLD" and sent.event_id == f"{event.message_id}:sent:sender"
    assert h.done == [event.message_id]


async def test_a_message_left_sending_by_a_crash_is_reported_unknown_never_resent(
    h: Harness,
) -> None:
    event = h.event()
    h.store.sends[event.message_id] = {"_id": event.message_id, "state": "sending", "attempts": 0}
    await h.admit(event)
    await h.timer.advance(1.0)
    assert h.meta.calls == []
    [unknown] = h.statuses("unknown")
    assert unknown.reason == "meta_outcome_ambiguous"
    assert h.store.record(event.message_id)["state"] == "unknown"


async def test_a_failed_outcome_is_republished_with_its_error(h: Harness) -> None:
    event = h.event()
    h.store.sends[event.message_id] = {
        "_id": event.message_id,
        "state": "failed",
        "attempts": 1,
        "error": {"code": 132001, "title": "Template name does not exist", "details": "x"},
    }
    await h.admit(event)
    [failed] = h.statuses("failed")
    assert failed.error is not None and failed.error.code == 132001


async def test_an_expired_message_is_not_sent(h: Harness) -> None:
    expired_before = metrics.MESSAGES_EXPIRED._value.get()
    event = h.event(expires_at=h.clock.now_ms() - 1)
    await h.admit(event)
    await h.timer.advance(1.0)
    assert h.meta.calls == []
    [expired] = h.statuses("expired")
    assert expired.event_id == f"{event.message_id}:expired:sender"
    assert h.store.record(event.message_id)["state"] == "expired"
    assert metrics.MESSAGES_EXPIRED._value.get() - expired_before == 1
    assert h.done == [event.message_id]


async def test_a_message_whose_validity_ends_while_it_waits_for_its_recipient_expires(
    h: Harness,
) -> None:
    hot = [h.event("+447700000001", expires_at=h.clock.now_ms() + 20_000) for _ in range(45)]
    await h.admit(*hot)
    await h.timer.advance(40.0)
    assert len(h.statuses("sent")) == 40 + 3  # three more at 6 s, 12 s, 18 s
    assert len(h.statuses("expired")) == 2
    assert sorted(h.done) == sorted(e.message_id for e in hot)


async def test_a_final_error_fails_the_message_with_metas_error(h: Harness) -> None:
    event = h.event()
    h.meta.script[event.message_id] = [
        Refused(
            132001, "Template name does not exist", "template name (x) does not exist in en_US", 404
        )
    ]
    await h.admit(event)
    await h.timer.advance(1.0)
    [failed] = h.statuses("failed")
    assert failed.error is not None
    assert (failed.error.code, failed.error.title) == (132001, "Template name does not exist")
    assert h.store.record(event.message_id)["state"] == "failed"
    assert len(h.meta.calls) == 1


async def test_a_transient_error_is_retried_with_backoff_and_then_succeeds(h: Harness) -> None:
    event = h.event()
    h.meta.script[event.message_id] = [
        Refused(131000, "Something went wrong", "", 500),
        Refused(2, "Service temporarily unavailable", "", 503),
    ]
    await h.admit(event)
    await h.timer.advance(30.0)
    calls = [c.at for c in h.meta.calls]
    assert len(calls) == 3
    assert calls[1] - calls[0] == pytest.approx(2.0)
    assert calls[2] - calls[1] == pytest.approx(4.0)
    assert len(h.statuses("sent")) == 1
    assert h.store.record(event.message_id)["attempts"] == 3


async def test_transient_errors_fail_the_message_after_the_attempt_cap(h: Harness) -> None:
    event = h.event()
    h.meta.script[event.message_id] = [Refused(131000, "Something went wrong", "", 500)] * 5
    await h.admit(event)
    await h.timer.advance(120.0)
    assert len(h.meta.calls) == 3
    [failed] = h.statuses("failed")
    assert failed.error is not None and failed.error.code == 131000


async def test_an_ambiguous_answer_is_never_retried_and_reported_unknown(h: Harness) -> None:
    event = h.event()
    h.meta.script[event.message_id] = [Ambiguous("timeout")]
    await h.admit(event)
    await h.timer.advance(60.0)
    assert len(h.meta.calls) == 1
    [unknown] = h.statuses("unknown")
    assert unknown.reason == "meta_outcome_ambiguous"
    assert h.store.record(event.message_id)["state"] == "unknown"


async def test_an_unreachable_meta_is_retried_because_nothing_was_sent(h: Harness) -> None:
    event = h.event()
    h.meta.script[event.message_id] = [NotSent("connect_failed"), NotSent("connect_failed")]
    await h.admit(event)
    await h.timer.advance(10.0)
    assert len(h.meta.calls) == 3
    assert len(h.statuses("sent")) == 1
    assert h.store.record(event.message_id)["attempts"] == 1


async def test_a_pair_throttle_delays_that_recipient_only(h: Harness) -> None:
    throttled_before = metrics.THROTTLE_ERRORS.labels("131056")._value.get()
    hot, other = h.event("+447700000001"), h.event("+447700000002")
    h.meta.script[hot.message_id] = [Refused(131056, "Pair rate limit hit", "", 400)]
    await h.admit(hot)
    await h.timer.advance(0.1)
    await h.admit(other)
    await h.timer.advance(0.1)
    assert len(h.statuses("sent")) == 1  # the other recipient went at once
    await h.timer.advance(10.0)
    assert len(h.statuses("sent")) == 2
    calls = [c.at for c in h.meta.calls if c.event.message_id == hot.message_id]
    assert calls[1] - calls[0] == pytest.approx(6.0)  # its bucket was drained: one interval
    assert metrics.THROTTLE_ERRORS.labels("131056")._value.get() - throttled_before == 1
    # The throttled call was refused before processing: it does not count as an attempt.
    assert h.store.record(hot.message_id)["attempts"] == 1


async def test_a_number_throttle_pauses_the_whole_number(h: Harness) -> None:
    first, second = h.event(), h.event()
    h.meta.script[first.message_id] = [Refused(130429, "Rate limit hit", "", 400)]
    await h.admit(first)
    await h.timer.advance(0.01)
    await h.admit(second)
    await h.timer.advance(0.5)
    assert h.statuses("sent") == []
    await h.timer.advance(1.0)
    assert len(h.statuses("sent")) == 2


async def test_an_expired_token_holds_the_number_until_an_operator_replaces_it() -> None:
    config = EngineConfig(phone_number_refresh_seconds=30.0)
    h = Harness(config=config)
    alerts_before = metrics.ALERTS.labels("phone_number_held")._value.get()
    try:
        first, second = h.event(), h.event()
        h.meta.script[first.message_id] = [Refused(190, "Access token has expired", "", 401)]
        await h.admit(first, second)
        await h.timer.advance(120.0)
        lane = h.engine.lane_state(NUMBER_ID)
        assert lane is not None and lane.hold_reason == "token_rejected"
        assert metrics.ALERTS.labels("phone_number_held")._value.get() - alerts_before == 1
        assert metrics.NUMBERS_HELD._value.get() >= 1
        assert h.statuses("sent") == [] and len(h.meta.calls) <= 2
        calls_while_held = len(h.meta.calls)
        h.phone_numbers.numbers[NUMBER_ID] = phone_number(
            token_fingerprint="gAAAA-two", access_token="EAA-new"
        )
        await h.timer.advance(31.0)
        assert len(h.statuses("sent")) == 2
        assert {c.token for c in h.meta.calls[calls_while_held:]} == {"EAA-new"}
        assert lane.hold_reason is None
        assert h.statuses("failed") == []
    finally:
        await h.close()


async def test_maintenance_holds_the_number_for_a_while_then_resumes(h: Harness) -> None:
    event = h.event()
    h.meta.script[event.message_id] = [Refused(131057, "Account in maintenance mode", "", 500)]
    await h.admit(event)
    await h.timer.advance(30.0)
    assert h.statuses("sent") == []
    await h.timer.advance(20.0)
    assert len(h.statuses("sent")) == 1


async def test_held_messages_expire_when_their_validity_runs_out(h: Harness) -> None:
    event = h.event(expires_at=h.clock.now_ms() + 60_000)
    h.meta.script[event.message_id] = [Refused(368, "Temporarily blocked", "", 403)]
    await h.admit(event)
    await h.timer.advance(90.0)
    assert [c.status for c in h.published] == ["expired"]


async def test_an_unconfigured_phone_number_fails_the_message(h: Harness) -> None:
    event = h.event(phone_number_id="999")
    await h.admit(event)
    [failed] = h.statuses("failed")
    assert failed.reason == "phone_number_not_configured"
    assert h.meta.calls == []


async def test_a_throughput_upgrade_raises_the_rate_live(h: Harness) -> None:
    await h.admit(*(h.event() for _ in range(400)))
    await h.timer.advance(1.0)
    sent_at_80 = len(h.meta.calls)
    assert sent_at_80 == pytest.approx(40 + 80, abs=2)
    upgrade = ThroughputChanged(
        event_id="u1",
        phone_number_id=NUMBER_ID,
        waba_id="w",
        messages_per_second=1000,
        occurred_at=h.clock.now_ms(),
    )
    h.meta.set_mps(NUMBER_ID, 1000)
    h.engine.apply_throughput(upgrade)
    await h.timer.advance(0.3)
    # Sends already holding a token keep its time; the 1,000 mps bucket first repays the debt
    # they ran up (at most a number's in-flight cap, 60 at 80 mps): then 1,000 per second.
    assert 240 <= len(h.meta.calls) - sent_at_80 <= 300
    assert h.meta.refusals == []
    # An older event arriving late changes nothing.
    h.engine.apply_throughput(
        ThroughputChanged(
            event_id="u0",
            phone_number_id=NUMBER_ID,
            waba_id="w",
            messages_per_second=80,
            occurred_at=upgrade.occurred_at - 1000,
        )
    )
    lane = h.engine.lane_state(NUMBER_ID)
    assert lane is not None and lane.pacer.mps == 1000


def users_write(h: Harness, count: int, heard: bool) -> None:
    """Users write to the number: Meta counts each; the engine hears of them when `heard`."""
    for i in range(count):
        h.meta.inbound(NUMBER_ID)
        if heard:
            h.engine.count_inbound(
                InboundReceived(
                    event_id=f"in{i}",
                    phone_number_id=NUMBER_ID,
                    waba_id="w",
                    sender="1",
                    wamid=f"wamid.in{i}",
                    message_type="text",
                    sent_at=h.clock.now_ms(),
                )
            )


@pytest.mark.parametrize("heard", [True, False])
async def test_inbound_messages_we_hear_of_keep_meta_from_refusing_our_sends(
    h: Harness, heard: bool
) -> None:
    await h.admit(*(h.event() for _ in range(400)))
    await h.timer.advance(1.0)  # sending at the number's full rate
    users_write(h, 60, heard)  # a burst of users writing to the number
    await h.timer.advance(3.0)
    if heard:
        assert h.meta.refusals == []
    else:
        assert h.meta.refusals  # what the count prevents


@pytest.mark.parametrize("heard", [True, False])
async def test_inbound_heard_before_any_send_of_the_number_still_holds_it_back(
    h: Harness, heard: bool
) -> None:
    h.meta.set_mps(NUMBER_ID, 20)
    h.phone_numbers.numbers[NUMBER_ID] = phone_number(throughput_mps=20)
    users_write(h, 40, heard)  # users write first (it opens their windows), then we send
    await h.timer.advance(0.05)
    await h.admit(*(h.event() for _ in range(60)))
    await h.timer.advance(5.0)
    assert len(h.meta.calls) >= 60
    assert (h.meta.refusals == []) is heard


async def test_tier_full_new_recipients_wait_for_the_window_and_expire(h: Harness) -> None:
    h.phone_numbers.numbers[NUMBER_ID] = phone_number(messaging_limit="TIER_50")
    events = [h.event(expires_at=h.clock.now_ms() + 60_000) for _ in range(55)]
    repeat = h.event(events[0].recipient)
    await h.admit(*events, repeat)
    await h.timer.advance(90.0)
    assert len(h.statuses("sent")) == 51  # 50 places, and a repeat recipient is free
    assert len(h.statuses("expired")) == 5
    assert len(h.store.tier_usage) == 50


async def test_tier_places_taken_elsewhere_count(h: Harness) -> None:
    h.phone_numbers.numbers[NUMBER_ID] = phone_number(messaging_limit="TIER_50")
    for i in range(50):
        await h.store.record_tier_use(
            h.phone_numbers.numbers[NUMBER_ID].portfolio_id, f"+1555{i:07}", h.clock.now_ms() - 1000
        )
    event = h.event(expires_at=h.clock.now_ms() + 60_000)
    await h.admit(event)
    await h.timer.advance(90.0)
    assert [c.status for c in h.published] == ["expired"]


async def test_service_messages_do_not_use_the_tier(h: Harness) -> None:
    h.phone_numbers.numbers[NUMBER_ID] = phone_number(messaging_limit="TIER_50")
    events = [
        h.event(message_type="text", content={"body": "hi"}, category="service") for _ in range(60)
    ]
    await h.admit(*events)
    await h.timer.advance(5.0)
    assert len(h.statuses("sent")) == 60
    assert h.store.tier_usage == {}


async def test_revoked_partitions_lose_their_queued_messages_which_are_never_sent(
    h: Harness,
) -> None:
    hot = [h.event("+447700000001") for _ in range(45)]
    await h.admit(*hot, partition="p0")
    await h.timer.advance(1.0)
    assert len(h.statuses("sent")) == 40
    await h.engine.revoke({"p0"})
    await settle()
    assert h.engine.queued == 0
    await h.timer.advance(60.0)
    assert len(h.meta.calls) == 40
    assert len(h.done) == 40  # the 5 dropped are not done: they will be redelivered
    # Redelivered after a later assignment, they are sent (nothing recorded for them).
    now = h.clock.monotonic()
    await h.admit(*hot[40:], partition="p0", taken_over_at=now)
    await h.timer.advance(60.0)
    assert len(h.statuses("sent")) == 45
    assert len({c.event.message_id for c in h.meta.calls}) == 45


async def test_revocation_waits_for_sends_at_meta_and_they_still_finish() -> None:
    h = Harness(latency=1.0)
    try:
        event = h.event()
        await h.admit(event)
        await h.timer.advance(0.1)
        revoking = asyncio.ensure_future(h.engine.revoke({"p0"}))
        await h.timer.advance(1.0)
        await revoking
        assert len(h.statuses("sent")) == 1
        assert h.done == [event.message_id]
    finally:
        await h.close()


async def test_a_refusal_without_metas_envelope_fails_the_message(h: Harness) -> None:
    event = h.event()
    h.meta.script[event.message_id] = [Refused(None, "HTTP 404", "", 404)]
    await h.admit(event)
    await h.timer.advance(1.0)
    [failed] = h.statuses("failed")
    assert failed.reason == "meta_http_404" and failed.error is None


async def test_accepted_scripted_answers_are_used_as_given(h: Harness) -> None:
    event = h.event()
    h.meta.script[event.message_id] = [Accepted("wamid.FIXED", "held_for_quality_assessment")]
    await h.admit(event)
    await h.timer.advance(1.0)
    [sent] = h.statuses("sent")
    assert sent.wamid == "wamid.FIXED"
