"""While the state writer is behind (a campaign), the wamids of a batch's statuses are not
indexed yet and the processor resolves them by their callback data: on the real database, the
batch's messages are read in one command, not one `find` per status."""

from __future__ import annotations

import math
from typing import Any

import msgspec
from pymongo.monitoring import (
    CommandFailedEvent,
    CommandListener,
    CommandStartedEvent,
    CommandSucceededEvent,
)

from services.status import core
from services.status.processor import WebhookProcessor
from services.status.repository import StatusRepository
from shared.clock import SystemClock
from shared.messages import STATUS_CHANGED, StatusChanged, WebhookReceived
from shared.mongo import ID_IN_CHUNK, make_client
from tests.integration.status.conftest import StatusWorld
from tests.unit.status.meta_examples import WABA_ID, status_item, status_webhook

MESSAGES = 60
PER_WEBHOOK = 3
STATUSES = ("sent", "delivered", "read")


class _MessageReads(CommandListener):
    """Counts the commands that read the `messages` collection."""

    def __init__(self) -> None:
        self.count = 0

    def started(self, event: CommandStartedEvent) -> None:
        name = event.command_name
        if (name == "find" and event.command.get("find") == "messages") or (
            name == "getMore" and event.command.get("collection") == "messages"
        ):
            self.count += 1

    def succeeded(self, event: CommandSucceededEvent) -> None:
        pass

    def failed(self, event: CommandFailedEvent) -> None:
        pass


def _webhook(payload: bytes) -> WebhookReceived:
    return WebhookReceived(
        event_id=core.webhook_event_id(WABA_ID, payload),
        received_at=1_750_030_000_000,
        payload=msgspec.Raw(payload),
    )


async def test_a_batch_of_unindexed_statuses_reads_its_messages_in_one_command(
    world: StatusWorld, mongodb_url: str, unique: str
) -> None:
    await world.db["messages"].insert_many(
        [
            {
                "_id": f"msg_{m}",
                "account_id": f"acc_{m % 2}",
                "recipient_region": "GB",
                "idempotency_key": f"none:msg_{m}",
                "status": "accepted",
                "history": [],
                "created_at": 1_750_000_000_000,
            }
            for m in range(MESSAGES)
        ]
    )
    # Each message's sent, delivered and read in three different webhooks (as Meta sends them),
    # a few messages per webhook; and one status whose message does not exist: parked.
    webhooks = [
        _webhook(
            status_webhook(
                *(
                    status_item(f"wamid.{m}", meta_status, 1750030070 + k, callback=f"msg_{m}")
                    for m in range(first, first + PER_WEBHOOK)
                )
            )
        )
        for k, meta_status in enumerate(STATUSES)
        for first in range(0, MESSAGES, PER_WEBHOOK)
    ]
    webhooks.append(
        _webhook(status_webhook(status_item("wamid.GONE", "sent", 1750030070, callback="msg_gone")))
    )
    reads = _MessageReads()
    client = make_client(mongodb_url, event_listeners=[reads])
    try:
        db = client[world.db.name]
        processor = WebhookProcessor(StatusRepository(db), world.publisher, SystemClock())
        await processor.handle_events(webhooks)
        in_one_query = "ferretdbVersion" not in await client.admin.command("buildInfo") or (
            await db.command("explain", {"find": "messages", "filter": {"_id": {"$in": ["x"]}}})
        ).get("filterPushdown")
    finally:
        await client.close()

    asked = MESSAGES + 1  # every message once, and msg_gone
    # Where the server answers an `_id` `$in` from its index (MongoDB, the local FerretDB
    # build), one query per ID_IN_CHUNK ids; on a stock FerretDB, shared.mongo.find_by_ids
    # looks each id up once. One find per status would be len(STATUSES) * MESSAGES + 1.
    assert reads.count == (math.ceil(asked / ID_IN_CHUNK) if in_one_query else asked)

    events: list[StatusChanged] = await world.read(
        STATUS_CHANGED, until=lambda ev: len(ev) >= len(STATUSES) * MESSAGES
    )
    assert sorted((e.event_id, e.message_id, e.account_id) for e in events) == sorted(
        (f"wamid.{m}:{s}", f"msg_{m}", f"acc_{m % 2}") for m in range(MESSAGES) for s in STATUSES
    )
    parked: list[dict[str, Any]] = await world.db["parked_statuses"].find({}).to_list(None)
    assert [doc["_id"] for doc in parked] == ["wamid.GONE:sent"]
