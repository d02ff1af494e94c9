"""No record can stop the sender: a message whose handling raises a bug (planted in the real
repository for one marked message) is retried, then its record ends in the DLQ, the messages
after it on the same partition are sent, the worker keeps running and its offsets move on."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import TopicPartition

from services.sender import worker as sender_worker
from services.sender.repository import SenderRepository, SendRecord
from shared.kafka import make_admin, topic_name
from shared.messages import SEND_APPROVED
from tests.integration.dlq_probe import check_dead_letter, until, wait_for_dead_letters
from tests.integration.sender.conftest import A1_NUMBER, Rig

MARKED: set[str] = set()


class RepositoryWithABug(SenderRepository):
    """The real repository, raising a bug when a marked message's send is started."""

    async def start_send(self, message_id: str, **kwargs: Any) -> SendRecord | None:
        if message_id in MARKED:
            raise RuntimeError(f"a bug starting {message_id}")
        return await super().start_send(message_id, **kwargs)


async def _committed(rig: Rig, group: str) -> dict[TopicPartition, int]:
    admin = make_admin(rig.kafka)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
        return {tp: meta.offset for tp, meta in offsets.items()}
    finally:
        await admin.close()


async def test_a_message_that_raises_a_bug_is_dead_lettered_and_the_others_are_sent(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sender_worker, "SenderRepository", RepositoryWithABug)
    events = [rig.event(A1_NUMBER) for _ in range(4)]  # one number: one key, one partition
    MARKED.clear()
    MARKED.add(events[1].message_id)
    await rig.produce(*events)
    sender = await rig.start_sender()

    def alive() -> None:
        assert not sender.task.done(), sender.task

    source = topic_name(SEND_APPROVED, rig.prefix)
    [dead] = await wait_for_dead_letters(rig.kafka, f"{source}.dlq", 1, alive=alive)
    headers = check_dead_letter(
        dead,
        source_topic=source,
        source_offset=1,
        service="sender",
        error_type="RuntimeError",
        reason="unexpected",
        attempts=3,
    )
    assert b"a bug starting" in headers["error_detail"]
    assert SEND_APPROVED.decode(dead.value).message_id == events[1].message_id

    others = {e.message_id for e in events} - MARKED
    await until(
        lambda: others <= set(rig.statuses.with_status("sent")),
        30,
        "the other messages sent",
        alive=alive,
    )
    sent_to_meta = {s["biz_opaque_callback_data"] for s in await rig.sim_sends(A1_NUMBER)}
    assert sent_to_meta == others  # the marked one never reached Meta

    partition = TopicPartition(source, int(headers["source_partition"]))

    async def committed_past_it() -> bool:
        return (await _committed(rig, f"{rig.prefix}sender")).get(partition, 0) == 4

    await until(committed_past_it, 30, "the offsets past the dead letter", alive=alive)
    alive()
