"""A user's STOP reaches the send API through the real pipeline: status's processor reads the
webhook from the broker and writes the suppression, and ingest then refuses a marketing
template to that contact (422 recipient_opted_out) while a utility template and a service
message still go; START undoes it. Meta's user_preferences does the same, and so do the
client's API and the operator's `hala` (through status, the list's one writer). Blocks apply
to every type at once."""

from __future__ import annotations

import time

import msgspec
import orjson

from services.status import core as status_core
from shared.collections import AUDIT_LOG
from shared.messages import WEBHOOK_RECEIVED, WebhookReceived
from tests.integration.trust.conftest import PHONE_A, WABA_A, Trust, marketing, text, utility

CONTACT = "447912345678"


def webhook(field: str, value: dict[str, object]) -> WebhookReceived:
    payload = orjson.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": WABA_A,
                    "changes": [
                        {
                            "field": field,
                            "value": {
                                "messaging_product": "whatsapp",
                                "metadata": {
                                    "display_phone_number": "15550001001",
                                    "phone_number_id": PHONE_A,
                                },
                                **value,
                            },
                        }
                    ],
                }
            ],
        }
    )
    return WebhookReceived(
        event_id=status_core.webhook_event_id(WABA_A, payload),
        received_at=int(time.time() * 1000),
        payload=msgspec.Raw(payload),
    )


def user_wrote(body: str, wamid: str) -> WebhookReceived:
    return webhook(
        "messages",
        {
            "contacts": [{"profile": {"name": "Ana"}, "wa_id": CONTACT}],
            "messages": [
                {
                    "from": CONTACT,
                    "id": wamid,
                    "timestamp": str(int(time.time())),
                    "type": "text",
                    "text": {"body": body},
                }
            ],
        },
    )


async def test_a_users_stop_refuses_marketing_but_not_utility_and_start_undoes_it(
    trust: Trust,
) -> None:
    assert (await trust.send(marketing()))[0] == 202  # before: it goes
    await trust.publish(WEBHOOK_RECEIVED, user_wrote("Stop!", "wamid.STOP1"))
    refused = await trust.until_send(marketing(), 422, "the STOP to apply")
    assert refused["error"]["code"] == "recipient_opted_out"
    assert refused["error"]["details"]["source"] == "keyword"
    assert (await trust.send(utility()))[0] == 202
    assert (await trust.send(text()))[0] == 202
    assert (await trust.send(marketing("+16502530000")))[0] == 202  # another contact
    page = (await trust.api("GET", "/v1/suppressions"))[1]
    assert [(s["recipient"], s["source"], s["keyword"]) for s in page["data"]] == [
        ("+" + CONTACT, "keyword", "stop")
    ]

    await trust.publish(WEBHOOK_RECEIVED, user_wrote("START", "wamid.START1"))
    await trust.until_send(marketing(), 202, "the START to apply")
    assert (await trust.api("GET", "/v1/suppressions"))[1]["data"] == []


async def test_a_sentence_with_stop_in_it_suppresses_nothing(trust: Trust) -> None:
    await trust.publish(WEBHOOK_RECEIVED, user_wrote("please don't stop the offers", "wamid.SENT1"))

    async def stored() -> bool:
        return await trust.db["inbound_messages"].find_one({"_id": "wamid.SENT1"}) is not None

    await trust.until(stored, "the message to be stored")
    assert await trust.db["suppressions"].count_documents({}) == 0
    assert (await trust.send(marketing()))[0] == 202


async def test_metas_user_preferences_stop_refuses_marketing(trust: Trust) -> None:
    await trust.publish(
        WEBHOOK_RECEIVED,
        webhook(
            "user_preferences",
            {
                "contacts": [{"profile": {"name": "Ana"}, "wa_id": CONTACT}],
                "user_preferences": [
                    {
                        "wa_id": CONTACT,
                        "detail": "User requested to stop marketing",
                        "category": "marketing_messages",
                        "value": "stop",
                        "timestamp": int(time.time()),
                    }
                ],
            },
        ),
    )
    refused = await trust.until_send(marketing(), 422, "the preference to apply")
    assert refused["error"]["details"]["source"] == "user_preferences"


async def test_the_clients_api_and_the_operators_hala_go_through_status(trust: Trust) -> None:
    status, accepted = await trust.api(
        "POST",
        "/v1/suppressions",
        {"phone_number_id": PHONE_A, "recipient": "+" + CONTACT, "note": "asked by phone"},
    )
    assert status == 202 and accepted["suppressed"] is True
    await trust.until_send(marketing(), 422, "the client's suppression to apply")
    status, _ = await trust.api("DELETE", f"/v1/suppressions/{PHONE_A}/+{CONTACT}")
    assert status == 202
    await trust.until_send(marketing(), 202, "the client's resubscription to apply")

    account = trust.platform.a.account_id
    await trust.hala(
        "suppressions",
        "add",
        "--account",
        account,
        "--phone-number-id",
        PHONE_A,
        "--recipient",
        "+" + CONTACT,
        "--note",
        "complaint",
    )
    await trust.until_send(marketing(), 422, "the operator's suppression to apply")
    [listed] = await trust.hala("suppressions", "list", "--account", account)
    assert (listed["source"], listed["note"]) == ("operator", "complaint")
    commands = {e["command"] async for e in trust.db[AUDIT_LOG].find({})}
    assert commands == {"suppressions add"}  # the list is a read: not audited


async def test_a_block_refuses_every_type_at_once_and_an_unblock_lifts_it(trust: Trust) -> None:
    account = trust.platform.a.account_id
    await trust.hala("blocks", "add", "--account", account, "--recipient", "+" + CONTACT)
    for body in (text(), utility(), marketing()):
        status, answer = await trust.send(body)
        assert (status, answer["error"]["code"]) == (422, "recipient_blocked")
    assert [
        b["recipient"] for b in (await trust.api("GET", "/v1/blocked-recipients"))[1]["data"]
    ] == ["+" + CONTACT]
    assert (await trust.api("DELETE", f"/v1/blocked-recipients/+{CONTACT}"))[0] == 204
    assert (await trust.send(text()))[0] == 202


async def test_keywords_set_by_hala_replace_the_defaults(trust: Trust) -> None:
    account = trust.platform.a.account_id
    shown = await trust.hala("accounts", "update", account, "--opt-out-keywords", "HALT,Fin")
    assert shown["opt_out_keywords"]["opt_out"] == ["HALT", "Fin"]
    assert (await trust.api("GET", "/v1/opt-out-keywords"))[1]["opt_out"] == ["HALT", "Fin"]
    await trust.publish(
        WEBHOOK_RECEIVED, user_wrote("STOP", "wamid.STOP2"), user_wrote("halt", "wamid.HALT1")
    )
    await trust.until_send(marketing(), 422, "the account's own keyword to apply")
    [doc] = await trust.db["suppressions"].find().to_list(None)
    assert doc["keyword"] == "halt"  # STOP is no keyword of this account's
