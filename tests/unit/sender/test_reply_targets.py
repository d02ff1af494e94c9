"""A reply or a reaction naming one of our message ids goes out quoting that message's wamid,
looked up just before the call; one naming a message that never got a wamid fails without any
call to Meta."""

from collections.abc import AsyncIterator

import pytest

from services.sender.meta_client import request_body
from tests.unit.sender.fakes import Harness


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    harness = Harness()
    yield harness
    await harness.close()


def _sent(h: Harness, message_id: str, wamid: str) -> None:
    h.store.outcomes[message_id] = {
        "_id": message_id,
        "state": "sent",
        "wamid": wamid,
        "attempts": 1,
    }


async def test_a_reply_naming_our_sent_message_quotes_its_wamid(h: Harness) -> None:
    _sent(h, "msg_quoted", "wamid.QUOTED")
    event = h.event(
        message_type="text",
        content={"body": "see above"},
        category="service",
        reply_to="msg_quoted",
    )
    await h.admit(event)
    [call] = h.meta.calls
    assert call.event.reply_to == "wamid.QUOTED"
    assert request_body(call.event)["context"] == {"message_id": "wamid.QUOTED"}
    assert [s.message_id for s in h.statuses("sent")] == [event.message_id]


async def test_a_reaction_to_our_sent_message_targets_its_wamid(h: Harness) -> None:
    _sent(h, "msg_liked", "wamid.LIKED")
    event = h.event(
        message_type="reaction",
        category="service",
        content={"message_id": "msg_liked", "emoji": "\U0001f44d"},
    )
    await h.admit(event)
    [call] = h.meta.calls
    assert request_body(call.event)["reaction"] == {
        "message_id": "wamid.LIKED",
        "emoji": "\U0001f44d",
    }


async def test_naming_a_message_that_never_got_a_wamid_fails_without_calling_meta(
    h: Harness,
) -> None:
    h.store.sends["msg_stuck"] = {"_id": "msg_stuck", "state": "failed", "attempts": 1}
    reply = h.event(
        message_type="text", content={"body": "x"}, category="service", reply_to="msg_stuck"
    )
    reaction = h.event(
        message_type="reaction",
        category="service",
        content={"message_id": "msg_never_seen", "emoji": ""},
    )
    await h.admit(reply, reaction)
    assert h.meta.calls == []
    failed = h.statuses("failed")
    assert {f.message_id for f in failed} == {reply.message_id, reaction.message_id}
    assert {f.reason for f in failed} == {"context_message_not_sent"}
    assert sorted(h.done) == sorted([reply.message_id, reaction.message_id])


async def test_a_reply_naming_a_wamid_goes_out_as_it_is(h: Harness) -> None:
    event = h.event(
        message_type="text",
        content={"body": "x"},
        category="service",
        reply_to="wamid.FROM_THE_USER",
    )
    await h.admit(event)
    [call] = h.meta.calls
    assert call.event == event
    assert request_body(call.event)["context"] == {"message_id": "wamid.FROM_THE_USER"}
