"""The conversation reads, the window lookup and the media store behave the same on the real
database as the in-memory stand-ins the unit tests use: same lookups, same ordering, same pages
walked with the same cursors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from pymongo import AsyncMongoClient

from services.ingest import conversations as conv
from services.ingest.repository import CachedWindows, MongoInbox, MongoMediaStore
from shared.clock import FakeClock
from shared.collections import CONVERSATIONS, INBOUND_MESSAGES, MEDIA, MESSAGES, ensure_indexes
from shared.message_docs import from_ms
from tests.unit.ingest.fakes import FakeInbox, FakeMediaStore, FakeMessageStore

NOW = 1_764_000_000_000
PHONE, OTHER_PHONE = "109731225428301", "109731225428302"
WA_ID = "447912345678"


@pytest.fixture(params=["fake", "mongo"])
async def world(
    request: pytest.FixtureRequest, mongo: AsyncMongoClient[dict[str, Any]], unique: str
) -> AsyncIterator[tuple[Any, Any, Any]]:
    """(inbox, media store, a function that puts a document into a collection)."""
    if request.param == "fake":
        messages = FakeMessageStore()
        inbox = FakeInbox(FakeClock(NOW), messages)
        inbox.windows_open_by_default = False
        media = FakeMediaStore()
        tables = {
            CONVERSATIONS: inbox.conversation_docs,
            INBOUND_MESSAGES: inbox.inbound,
            MESSAGES: messages.docs,
            MEDIA: media.docs,
        }

        async def put_fake(collection: str, doc: dict[str, Any]) -> None:
            tables[collection][doc["_id"]] = doc

        yield inbox, media, put_fake
        return
    db = mongo[f"it_{unique}"]
    await ensure_indexes(db, MESSAGES, INBOUND_MESSAGES, CONVERSATIONS, MEDIA)

    async def put_mongo(collection: str, doc: dict[str, Any]) -> None:
        await db[collection].insert_one(dict(doc))

    try:
        yield MongoInbox(db), MongoMediaStore(db), put_mongo
    finally:
        await mongo.drop_database(db.name)


def _inbound(
    wamid: str,
    ms: int,
    *,
    account: str = "acc",
    phone: str = PHONE,
    wa_id: str = WA_ID,
    **extra: Any,
) -> dict[str, Any]:
    """As status's processor stores it."""
    item = {
        "from": wa_id,
        "id": wamid,
        "timestamp": str(ms // 1000),
        "type": "text",
        "text": {"body": wamid},
    }
    return {
        "_id": wamid,
        "account_id": account,
        "waba_id": "w",
        "phone_number_id": phone,
        "wa_id": wa_id,
        "direction": "inbound",
        "type": "text",
        "content": orjson.dumps(item).decode(),
        "sent_at": ms,
        "received_at": ms + 100,
        "opens_window": True,
        **extra,
    }


def _outbound(
    message_id: str, ms: int, *, account: str = "acc", phone: str = PHONE, wa_id: str = WA_ID
) -> dict[str, Any]:
    """As status's state writer stores our sends."""
    return {
        "_id": message_id,
        "account_id": account,
        "phone_number_id": phone,
        "recipient": "+" + wa_id,
        "type": "text",
        "content": '{"body":"x"}',
        "status": "sent",
        "created_at": from_ms(ms),
    }


def _conversation(
    wa_id: str,
    last_ms: int,
    *,
    account: str = "acc",
    phone: str = PHONE,
    expires: int | None = None,
) -> dict[str, Any]:
    doc = {
        "_id": f"{phone}:{wa_id}",
        "account_id": account,
        "waba_id": "w",
        "phone_number_id": phone,
        "wa_id": wa_id,
        "last_message_at": last_ms,
    }
    if expires is not None:
        doc["window_expires_at"] = expires
    return doc


async def test_the_window_is_read_from_the_conversation_of_that_number_and_contact(
    world: tuple[Any, Any, Any],
) -> None:
    inbox, _, put = world
    await put(CONVERSATIONS, _conversation("525512345678", NOW, expires=NOW + 3600_000))
    await put(CONVERSATIONS, _conversation("447912345679", NOW, expires=NOW - 1))
    await put(CONVERSATIONS, _conversation(WA_ID, NOW, phone=OTHER_PHONE, expires=NOW + 3600_000))
    windows = CachedWindows(inbox, FakeClock(NOW), closed_seconds=1.0)
    # Meta wrote the Mexican user as 52…; we send to +52 1…: found under either spelling
    opened = await windows.window(PHONE, conv.wa_id_candidates("+5215512345678"))
    assert opened == conv.Window(True, NOW + 3600_000)
    assert await windows.window(PHONE, ["447912345679"]) == conv.Window(False, NOW - 1)
    assert await windows.window(PHONE, [WA_ID]) == conv.Window(False, None)  # other number's


async def test_inbound_messages_are_found_by_wamid_and_by_media_id(
    world: tuple[Any, Any, Any],
) -> None:
    inbox, _, put = world
    await put(INBOUND_MESSAGES, _inbound("wamid.1", NOW, media_id="4455"))
    await put(INBOUND_MESSAGES, _inbound("wamid.2", NOW, account="other", direction="echo"))
    found = await inbox.inbound_message("wamid.1")
    assert (found["account_id"], found["phone_number_id"]) == ("acc", PHONE)
    assert (await inbox.inbound_message("wamid.2"))["direction"] == "echo"
    assert await inbox.inbound_message("wamid.none") is None
    assert (await inbox.inbound_with_media("4455"))["account_id"] == "acc"
    assert await inbox.inbound_with_media("9999") is None


async def test_the_contacts_page_latest_first_and_the_cursor_walks_each_once(
    world: tuple[Any, Any, Any],
) -> None:
    inbox, _, put = world
    times = {
        "4479000001": NOW,
        "4479000002": NOW + 5,
        "4479000003": NOW + 5,
        "4479000004": NOW - 9,
        "4479000005": NOW + 1,
    }
    for wa_id, ms in times.items():
        await put(CONVERSATIONS, _conversation(wa_id, ms))
    await put(CONVERSATIONS, _conversation("4479000009", NOW + 99, account="other"))
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        query = conv.parse_conversation_query(
            {"limit": "2", **({"cursor": cursor} if cursor else {})}
        )
        docs = await inbox.conversations("acc", query)
        page = conv.conversation_page(docs, query.limit, [])
        seen += [d["wa_id"] for d in docs[: query.limit]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["4479000003", "4479000002", "4479000005", "4479000001", "4479000004"]


async def test_a_contacts_last_message_of_each_direction(world: tuple[Any, Any, Any]) -> None:
    inbox, _, put = world
    await put(INBOUND_MESSAGES, _inbound("wamid.old", NOW))
    await put(INBOUND_MESSAGES, _inbound("wamid.new", NOW + 10))
    await put(INBOUND_MESSAGES, _inbound("wamid.elsewhere", NOW + 20, phone=OTHER_PHONE))
    await put(MESSAGES, _outbound("msg_a", NOW + 5))
    await put(MESSAGES, _outbound("msg_b", NOW + 15))
    await put(MESSAGES, _outbound("msg_c", NOW + 25, account="other"))
    assert (await inbox.last_inbound("acc", PHONE, WA_ID))["_id"] == "wamid.new"
    assert (await inbox.last_outbound("acc", PHONE, "+" + WA_ID))["_id"] == "msg_b"
    assert await inbox.last_inbound("acc", PHONE, "4470000000") is None
    assert await inbox.last_outbound("other", PHONE, "+4470000000") is None


@pytest.mark.parametrize("order", ["desc", "asc"])
async def test_a_contacts_messages_of_both_directions_page_in_time_order(
    world: tuple[Any, Any, Any], order: str
) -> None:
    inbox, _, put = world
    for i, ms in enumerate((0, 2000, 2000, 7000)):
        await put(INBOUND_MESSAGES, _inbound(f"wamid.{i}", NOW + ms))
    for i, ms in enumerate((1000, 2000, 5000)):
        await put(MESSAGES, _outbound(f"msg_{i}", NOW + ms))
    await put(INBOUND_MESSAGES, _inbound("wamid.other", NOW + 3000, account="other"))
    await put(INBOUND_MESSAGES, _inbound("wamid.n2", NOW + 3000, phone=OTHER_PHONE))
    await put(MESSAGES, _outbound("msg_other", NOW + 3000, wa_id="4470000000"))
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        params = {
            "limit": "3",
            "order": order,
            "phone_number_id": PHONE,
            **({"cursor": cursor} if cursor else {}),
        }
        query = conv.parse_thread_query(WA_ID, params)
        page = conv.thread_page(
            await inbox.thread_inbound("acc", query),
            await inbox.thread_outbound("acc", query),
            query,
        )
        seen += [item["id"] for item in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    oldest_first = ["wamid.0", "msg_0", "msg_1", "wamid.1", "wamid.2", "msg_2", "wamid.3"]
    assert seen == (oldest_first if order == "asc" else oldest_first[::-1])
    # without the number filter the other number's message is in the contact's thread
    query = conv.parse_thread_query(WA_ID, {"limit": "50"})
    every = conv.thread_page(
        await inbox.thread_inbound("acc", query), await inbox.thread_outbound("acc", query), query
    )
    assert len(every["data"]) == 8 and every["next_cursor"] is None


async def test_uploaded_media_is_recorded_replaced_and_marked_deleted(
    world: tuple[Any, Any, Any],
) -> None:
    _, media, _ = world
    doc = {
        "_id": "1234",
        "account_id": "acc",
        "phone_number_id": PHONE,
        "mime_type": "image/png",
        "file_size": 3,
        "sha256": "ab",
        "uploaded_at": NOW,
        "deleted_at": None,
    }
    await media.insert(doc)
    await media.insert({**doc, "file_size": 4})  # Meta gave the same id again
    assert (await media.get("1234"))["file_size"] == 4
    await media.mark_deleted("1234", NOW + 1)
    assert (await media.get("1234"))["deleted_at"] == NOW + 1
    assert await media.get("nope") is None
