"""The state writer on the real broker and database, a campaign's backlog and another tenant on
one partition of messages.status-changed.v1: the other tenant's record, read behind the backlog,
is written in one of the next batches, not after the backlog (batches fair by account,
shared/pipeline.py `BatchPolicy.fair_by_key`)."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner

from shared.messages import STATUS_CHANGED, StatusChanged
from tests.integration.status.conftest import StatusWorld

BACKLOG = 3_000  # within the state writer's read-ahead (STATUS_STATE_WRITER_PAUSE_AT, 4,000)
CAMPAIGN = "acc_campaign"


def _partition(account_id: str) -> int:
    every = list(range(STATUS_CHANGED.partitions))
    return int(DefaultPartitioner()(account_id.encode(), every, every))


def _same_partition_account(account_id: str) -> str:
    """Another account whose records land on `account_id`'s partition (Kafka's partitioner)."""
    n = 0
    while _partition(f"acc_other_{n}") != _partition(account_id):
        n += 1
    return f"acc_other_{n}"


def _sent(message_id: str, account_id: str, at: int) -> StatusChanged:
    return StatusChanged(
        event_id=f"wamid.{message_id}:sent:sender",
        message_id=message_id,
        account_id=account_id,
        status="sent",
        occurred_at=at,
        source="sender",
        wamid=f"wamid.{message_id}",
    )


async def test_another_tenants_status_is_written_before_a_backlog_on_its_partition(
    world: StatusWorld,
) -> None:
    other = _same_partition_account(CAMPAIGN)
    backlog = [(STATUS_CHANGED, _sent(f"msg_a{n}", CAMPAIGN, 1_000 + n)) for n in range(BACKLOG)]
    await world.inputs.publish_all(backlog)
    await world.publish(STATUS_CHANGED, _sent("msg_b", other, 9_000))  # behind all of them
    world.start_state_writer()

    messages = world.db["messages"]

    async def backlog_written() -> bool:
        return await messages.count_documents({"account_id": CAMPAIGN}) == BACKLOG

    await world.wait_for(backlog_written, within_seconds=120, what="the backlog written")
    b = await messages.find_one({"_id": "msg_b"})
    assert b is not None and b["status"] == "sent" and b["account_id"] == other
    # Each batch's writes carry its time: the campaign's messages written no later than the
    # other tenant's are those of the batches up to its own, a fraction of the backlog.
    written_before = await messages.count_documents(
        {"account_id": CAMPAIGN, "updated_at": {"$lte": b["updated_at"]}}
    )
    assert written_before < BACKLOG // 2
    # and every one of the backlog was written (once: the documents are keyed by message id)
    assert await messages.count_documents({"account_id": CAMPAIGN, "status": "sent"}) == BACKLOG
