"""The unit tests' FakeStore and the real repository on FerretDB answer alike."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from services.notify.core import accepted_event_id
from services.notify.repository import NotifyRepository
from shared.collections import (
    DELIVERIES,
    DELIVERY_ATTEMPTS,
    EMAIL_ALERTS,
    NOTIFY_EVENTS,
    ensure_indexes,
)
from tests.unit.notify.fakes import FakeStore


@pytest.fixture(params=["fake", "ferretdb"])
async def store(
    request: pytest.FixtureRequest, mongo: AsyncMongoClient[dict[str, Any]], unique: str
) -> AsyncIterator[Any]:
    if request.param == "fake":
        yield FakeStore()
        return
    db = mongo[f"it_{unique}"]
    await ensure_indexes(db, NOTIFY_EVENTS, DELIVERIES, DELIVERY_ATTEMPTS, EMAIL_ALERTS)
    yield NotifyRepository(db)
    await mongo.drop_database(f"it_{unique}")


async def insert_event(store: Any, doc: dict[str, Any]) -> bool:
    [inserted] = await store.insert_events([doc])
    return bool(inserted)


async def insert_delivery(store: Any, doc: dict[str, Any]) -> bool:
    [inserted] = await store.insert_deliveries([doc])
    return bool(inserted)


def delivery(i: int, next_at: int, attempts: int = 0) -> dict[str, Any]:
    return {
        "_id": f"we_1:evt_{i:02d}",
        "endpoint_id": "we_1",
        "event_id": f"evt_{i:02d}",
        "event_type": "message.sent",
        "account_id": "acc",
        "kind": "live",
        "state": "pending",
        "attempts": attempts,
        "next_at": next_at,
        "created_at": 1,
        "source_at": 1,
    }


async def test_inserts_are_once_per_id(store: Any) -> None:
    event = {
        "_id": "evt_1",
        "account_id": "acc",
        "type": "message.sent",
        "format": "standard",
        "at": 10,
        "source_at": 10,
        "created_at": 10,
        "payload": "{}",
    }
    assert await insert_event(store, event) is True
    assert await insert_event(store, event) is False
    assert await insert_delivery(store, delivery(1, 5)) is True
    assert await insert_delivery(store, delivery(1, 5)) is False
    alert = {"_id": "balance_low:x", "account_id": "acc", "state": "pending", "next_at": 0}
    assert await store.insert_alert(alert) is True
    assert await store.insert_alert(alert) is False
    assert [a["_id"] for a in await store.due_alerts(1, 10)] == ["balance_low:x"]
    await store.update_alert("balance_low:x", {"state": "sent"})
    assert await store.due_alerts(1, 10) == []


async def test_a_batch_insert_answers_each_document_in_order(store: Any) -> None:
    assert await insert_delivery(store, delivery(2, 5)) is True
    batch = [delivery(1, 5), delivery(2, 5), delivery(1, 5), delivery(3, 5)]
    assert await store.insert_deliveries(batch) == [True, False, False, True]
    assert await store.insert_deliveries([]) == []
    assert sorted(d["_id"] for d in await store.unattempted_deliveries("", 10)) == [
        "we_1:evt_01",
        "we_1:evt_02",
        "we_1:evt_03",
    ]


async def test_due_deliveries_come_in_time_order_and_settled_ones_never(store: Any) -> None:
    for i, next_at in enumerate((30, 10, 20, 99)):
        await insert_delivery(store, delivery(i, next_at, attempts=1))
    await insert_delivery(store, delivery(9, 5))  # never attempted
    assert [d["_id"] for d in await store.due_deliveries(50, 10)] == [
        "we_1:evt_09",
        "we_1:evt_01",
        "we_1:evt_02",
        "we_1:evt_00",
    ]
    await asyncio.gather(
        store.mark_delivered("we_1:evt_01", 40), store.mark_delivered("we_1:evt_02", 41)
    )
    await store.update_delivery("we_1:evt_00", {"state": "failed", "next_at": None})
    assert [d["_id"] for d in await store.due_deliveries(50, 10)] == ["we_1:evt_09"]
    assert [d["_id"] for d in await store.unattempted_deliveries("", 10)] == ["we_1:evt_09"]
    assert await store.unattempted_deliveries("we_1:evt_09", 10) == []


async def test_events_by_range_and_the_accepted_details(store: Any) -> None:
    for at in (100, 200, 300):
        await insert_event(
            store,
            {
                "_id": f"evt_{at}",
                "account_id": "acc",
                "type": "t",
                "format": "standard",
                "at": at,
                "source_at": at,
                "created_at": at,
                "payload": "{}",
            },
        )
    await insert_event(
        store,
        {
            "_id": "evt_other",
            "account_id": "other",
            "type": "t",
            "format": "standard",
            "at": 200,
            "source_at": 200,
            "created_at": 200,
            "payload": "{}",
        },
    )
    assert [e["_id"] for e in await store.events_in_range("acc", 150, 300, 10)] == [
        "evt_200",
        "evt_300",
    ]
    assert sorted(await store.events_by_ids(["evt_100", "evt_none"])) == ["evt_100"]
    await insert_event(
        store,
        {
            "_id": accepted_event_id("msg_1"),
            "account_id": "acc",
            "type": "message.accepted",
            "format": "standard",
            "at": 1,
            "source_at": 1,
            "created_at": 1,
            "payload": "{}",
            "details": {"client_reference": "r"},
        },
    )
    assert (await store.message_details("msg_1"))["client_reference"] == "r"
    assert await store.message_details("msg_2") is None
    assert await store.sweep(250) >= 3
    assert [e["_id"] for e in await store.events_in_range("acc", 0, 1000, 10)] == ["evt_300"]


async def test_endpoint_states_saved_at_once_for_a_new_endpoint_all_land(store: Any) -> None:
    """Several attempts at one endpoint can fail together and each save the endpoint's health:
    their upserts race to create the document, and FerretDB answers the losers with a duplicate
    key (MongoDB retries such an upsert itself). Every save still lands, none raises."""
    await asyncio.gather(
        *(
            store.save_endpoint_state(f"we_{e}", "acc_a", {"failures": i, "state": "failing"})
            for e in range(20)
            for i in range(8)
        )
    )
    states = {s["_id"]: s for s in await store.endpoint_states()}
    assert sorted(states) == sorted(f"we_{e}" for e in range(20))
    assert all(s["account_id"] == "acc_a" and s["failures"] in range(8) for s in states.values())
