"""A signed POST naming two WABAs, on the real broker and database: one webhooks.received record
per WABA on that WABA's key, each carrying Meta's bytes of its entries, and every status ends on
the right message."""

from __future__ import annotations

import time
from typing import Any

import orjson

from services.status import core
from shared.kafka import make_consumer, topic_name
from shared.messages import WEBHOOK_RECEIVED
from tests.integration.status.conftest import StatusWorld
from tests.unit.status.meta_examples import APP_SECRET, WABA_ID, sign, status_item

OTHER_WABA = "209876543210987"


def _entry(waba_id: str, phone_number_id: str, *statuses: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": waba_id,
        "changes": [
            {
                "field": "messages",
                "value": {
                    "messaging_product": "whatsapp",
                    "metadata": {
                        "display_phone_number": "15550783881",
                        "phone_number_id": phone_number_id,
                    },
                    "statuses": list(statuses),
                },
            }
        ],
    }


async def _message(world: StatusWorld, message_id: str, account_id: str, wamid: str) -> None:
    await world.db["messages"].insert_one(
        {
            "_id": message_id,
            "account_id": account_id,
            "recipient_region": "GB",
            "recipient": "+447911123456",
            "idempotency_key": f"none:{message_id}",
            "status": "accepted",
            "history": [],
            "created_at": 1_750_000_000_000,
        }
    )
    await world.db["wamid_index"].insert_one(
        core.wamid_index_doc(wamid, core.MessageRef(message_id, account_id, "GB"))
    )


async def _keyed_records(world: StatusWorld, count: int) -> list[tuple[bytes, bytes]]:
    """(key, value) of the topic's records, once `count` are there."""
    consumer = make_consumer(world.kafka, None, topic_name(WEBHOOK_RECEIVED, world.prefix))
    await consumer.start()
    records: list[tuple[bytes, bytes]] = []
    try:
        deadline = time.monotonic() + 30
        while len(records) < count:
            assert time.monotonic() < deadline, f"only {len(records)} records"
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend((r.key, r.value) for r in batch)
        return records
    finally:
        await consumer.stop()


async def test_a_post_of_two_wabas_is_two_records_on_their_keys_and_each_status_lands(
    world: StatusWorld,
) -> None:
    await _message(world, "msg_a", "acc_a", "wamid.SPLIT_A")
    await _message(world, "msg_b", "acc_b", "wamid.SPLIT_B")
    # As the simulator (and Meta, for one app) batches: the WABAs' entries interleaved.
    raw = orjson.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [
                _entry(
                    WABA_ID, "106540352242922", status_item("wamid.SPLIT_A", "sent", 1750030070)
                ),
                _entry(
                    OTHER_WABA, "206540352242922", status_item("wamid.SPLIT_B", "sent", 1750030071)
                ),
                _entry(
                    WABA_ID,
                    "106540352242922",
                    status_item("wamid.SPLIT_A", "delivered", 1750030080),
                ),
                _entry(
                    OTHER_WABA, "206540352242922", status_item("wamid.SPLIT_B", "read", 1750030090)
                ),
            ],
        }
    )
    async with world.webhook_client(APP_SECRET) as client:
        resp = await client.post(
            "/webhooks/meta",
            data=raw,
            headers={"X-Hub-Signature-256": sign(raw), "Content-Type": "application/json"},
        )
        assert resp.status == 200, await resp.text()

    records = await _keyed_records(world, 2)
    assert sorted(key for key, _ in records) == sorted([WABA_ID.encode(), OTHER_WABA.encode()])
    for key, value in records:
        event = WEBHOOK_RECEIVED.decode_record(value)
        assert event.event_id.split(":", 1)[0] == key.decode()
        entries = orjson.loads(bytes(event.payload))["entry"]
        assert [e["id"] for e in entries] == [key.decode()] * 2

    world.start_processor()
    world.start_state_writer()

    async def converged() -> bool:
        docs = {d["_id"]: d["status"] async for d in world.db["messages"].find({})}
        return docs == {"msg_a": "delivered", "msg_b": "read"}

    await world.wait_for(converged, what="msg_a delivered and msg_b read")
    # `read` implies `delivered`: the history fills it in.
    for message_id, expected in (
        ("msg_a", ["sent", "delivered"]),
        ("msg_b", ["sent", "delivered", "read"]),
    ):
        doc = await world.db["messages"].find_one({"_id": message_id})
        assert doc is not None
        assert [h["status"] for h in doc["history"]] == expected
    await world.wait_for(world.processed_everything, what="both records committed")
