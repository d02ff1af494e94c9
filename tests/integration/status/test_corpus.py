"""Every real webhook of the corpus (tests/corpus/webhooks/SOURCES.md), posted signed to a real
status service (its HTTP app, processor and state writer on the real broker and database): every
POST gets 200, the service stays up, and what each webhook says lands where it belongs."""

from __future__ import annotations

import json
from typing import Any

from services.status import core
from shared.messages import STATUS_CHANGED, THROUGHPUT_CHANGED, WABA_STATUS_CHANGED
from tests.corpus.webhooks import corpus_files, load
from tests.integration.status.conftest import HANDSHAKE, StatusWorld
from tests.unit.status.meta_examples import APP_SECRET, sign

ACCOUNT = "acc_corpus"
KNOWN_WAMID = "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUFERjg0NDEzNDdFODU3MUMxMAA="  # Meta's status
UPGRADED_NUMBER = "106540352242922"  # display 15550783881 in Meta's examples


def _changes(payload: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(field, entry id, value) of every change."""
    return [
        (change.get("field", ""), str(entry.get("id", "")), change.get("value") or {})
        for entry in payload.get("entry", [])
        for change in entry.get("changes", [])
    ]


def _expectations() -> dict[str, Any]:
    """What the corpus holds, read off the raw JSON."""
    numbers: dict[str, tuple[str, str]] = {}  # phone number id -> (display number, WABA)
    inbound: set[str] = set()
    conversations: set[str] = set()
    templates: set[str] = set()
    preferences: set[str] = set()
    statuses: set[tuple[str, str]] = set()
    for path in corpus_files():
        for field, waba_id, value in _changes(load(path)[1]):
            metadata = value.get("metadata") or {}
            number_id = metadata.get("phone_number_id", "")
            if number_id:
                numbers.setdefault(number_id, (metadata.get("display_phone_number", ""), waba_id))
            for message in value.get("messages") or [] if field == "messages" else []:
                inbound.add(message["id"])
                contact = message.get("from") or message.get("from_user_id")
                conversations.add(f"{number_id}:{contact}")
            for echo in value.get("message_echoes") or []:
                inbound.add(echo["id"])
            for preference in value.get("user_preferences") or []:
                preferences.add(f"{number_id}:{preference['wa_id']}:{preference['category']}")
            for status in value.get("statuses") or [] if field == "messages" else []:
                if status["status"] in ("sent", "delivered", "read", "failed"):
                    statuses.add((status["id"], status["status"]))
            if field == "message_template_status_update" and value.get("event"):
                templates.add(
                    core.template_doc_id(
                        waba_id,
                        value["message_template_name"],
                        core.normalise_language(value["message_template_language"]),
                    )
                )
    return {
        "numbers": numbers,
        "inbound": inbound,
        "conversations": conversations,
        "templates": templates,
        "preferences": preferences,
        "statuses": statuses,
    }


async def test_every_real_webhook_is_accepted_and_lands_where_it_belongs(
    world: StatusWorld,
) -> None:
    expected = _expectations()
    for number_id, (display, waba_id) in expected["numbers"].items():
        await world.db["phone_numbers"].insert_one(
            {
                "_id": number_id,
                "account_id": ACCOUNT,
                "waba_id": waba_id,
                "display_phone_number": display,
                "throughput_mps": 80,
                "messaging_limit": "TIER_2K",
            }
        )
    # One of Meta's status examples belongs to a message we sent; the others are not ours.
    await world.db["messages"].insert_one(
        {
            "_id": "msg_known",
            "account_id": ACCOUNT,
            "recipient_region": "US",
            "status": "accepted",
            "history": [],
            "created_at": 1_750_000_000_000,
        }
    )
    await world.db["wamid_index"].insert_one(
        core.wamid_index_doc(KNOWN_WAMID, core.MessageRef("msg_known", ACCOUNT, "US"))
    )
    world.start_processor()
    world.start_state_writer()

    async with world.webhook_client(APP_SECRET) as client:
        for path in corpus_files():
            raw, _ = load(path)
            response = await client.post(
                "/webhooks/meta",
                data=raw,
                headers={"X-Hub-Signature-256": sign(raw), "Content-Type": "application/json"},
            )
            assert response.status == 200, (path.name, await response.text())
        await world.wait_for(
            world.processed_everything, within_seconds=120, what="every webhook processed"
        )
        # The receiver still answers (the handshake is its cheapest route).
        health = await client.get("/webhooks/meta", params=HANDSHAKE)
        assert health.status == 200
    world.check_workers()  # the processor and the state writer are still running

    db = world.db
    stored = {d["_id"]: d for d in await db["inbound_messages"].find().to_list(None)}
    assert set(stored) == expected["inbound"]
    assert all(d["account_id"] == ACCOUNT for d in stored.values())
    assert all(isinstance(json.loads(d["content"]), dict) for d in stored.values())
    conversations = {d["_id"] for d in await db["conversations"].find().to_list(None)}
    assert expected["conversations"] <= conversations

    templates = {d["_id"]: d for d in await db["templates"].find().to_list(None)}
    assert expected["templates"] <= set(templates)
    assert all(d["shape_known"] is False for d in templates.values())

    preferences = {d["_id"] for d in await db["user_preferences"].find().to_list(None)}
    assert preferences == expected["preferences"]

    # statuses: ours converge the message; the others wait, parked, for a wamid we never sent
    async def known_message_sent() -> bool:
        doc = await db["messages"].find_one({"_id": "msg_known"})
        return doc is not None and doc.get("wamid") == KNOWN_WAMID

    await world.wait_for(known_message_sent, what="msg_known's status applied")
    published = await world.read(
        STATUS_CHANGED, until=lambda ev: any(e.message_id == "msg_known" for e in ev)
    )
    assert {e.status for e in published if e.message_id == "msg_known"} >= {"sent"}
    parked = {d["_id"] for d in await db["parked_statuses"].find().to_list(None)}
    assert {f"{w}:{s}" for w, s in expected["statuses"] if w != KNOWN_WAMID} == parked

    # tier and throughput: the number keeps its upgrade through the later tier change, and the
    # last event of the number (the compacted topic's state: one key, one partition, in order)
    # carries what number_states holds
    state = await db["number_states"].find_one({"_id": UPGRADED_NUMBER})
    assert state is not None and state["messages_per_second"] == 1000

    def ours(events: list[Any]) -> list[Any]:
        return [e for e in events if e.phone_number_id == UPGRADED_NUMBER]

    throughput = ours(
        await world.read(
            THROUGHPUT_CHANGED,
            until=lambda ev: (
                bool(ours(ev))
                and (ours(ev)[-1].messages_per_second, ours(ev)[-1].messaging_limit)
                == (1000, state["messaging_limit"])
            ),
        )
    )
    assert any(e.messages_per_second == 80 for e in throughput)  # the tier change came first

    # account_update: the ban held the WABA, REINSTATE lifted it, the deletion holds it again
    def uninstalled(events: list[Any]) -> list[Any]:
        return [e for e in events if e.waba_id == "184943124712545"]

    wabas = await world.read(
        WABA_STATUS_CHANGED,
        until=lambda ev: (
            any(e.held and e.reasons == ["banned"] for e in ev) and bool(uninstalled(ev))
        ),
    )
    assert uninstalled(wabas)[-1].held
    assert "app_uninstalled" in uninstalled(wabas)[-1].reasons
    waba_state = await db["number_states"].find_one({"_id": "waba:102290129340398"})
    assert waba_state is not None and "deleted" in core.held_reasons(waba_state["holds"])
