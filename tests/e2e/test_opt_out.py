"""Opt-out through the whole platform and the simulator: a user writes "STOP" to a business
number in (simulated) WhatsApp; Meta's signed webhook reaches status, which suppresses the
contact for that number's marketing; the next marketing template to them is refused by ingest
with 422 recipient_opted_out (never reaching Meta, which would fail it with 131050), while a
utility template still goes out and is delivered."""

from __future__ import annotations

from typing import Any

import aiohttp

from tests.e2e.conftest import Stack, eventually, seed_accounts

TOP_UP = 20_000_000
RECIPIENT = "+447911123456"


def template(number: str, name: str, params: list[str]) -> dict[str, Any]:
    return {
        "from": number,
        "to": RECIPIENT,
        "type": "template",
        "template": {
            "name": name,
            "language": {"code": "en_US"},
            "components": [
                {"type": "body", "parameters": [{"type": "text", "text": p} for p in params]}
            ],
        },
    }


async def send(stack: Stack, api_key: str, body: dict[str, Any]) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{stack.url('ingest')}/v1/messages",
            json=body,
            headers={"Authorization": f"Bearer {api_key}"},
        ) as resp,
    ):
        return resp.status, await resp.json()


async def test_an_inbound_stop_makes_the_next_marketing_template_refused(stack: Stack) -> None:
    account = (await seed_accounts(stack, TOP_UP))[0]
    number = account.numbers[0]
    promo = template(number, "promo", ["Ana", "20%"])
    status, first = await send(stack, account.api_key, promo)
    assert status == 202, first
    accepted_promos = {first["id"]}

    await stack.sim(
        "POST",
        "/_sim/inbound",
        json={"phone_number_id": number, "from": RECIPIENT.lstrip("+"), "text": "STOP"},
    )

    refusal: dict[str, Any] = {}

    async def refused() -> bool | int:
        got, body = await send(stack, account.api_key, promo)
        if got == 202:  # not applied yet: this one goes to Meta like the first
            accepted_promos.add(body["id"])
        refusal.update(body)
        return True if got == 422 else got

    await eventually(refused, within=60, every=0.5, what="the STOP to refuse marketing")
    assert refusal["error"]["code"] == "recipient_opted_out"
    assert refusal["error"]["details"]["source"] == "keyword"

    status, receipt = await send(stack, account.api_key, template(number, "receipt", ["A-1234"]))
    assert status == 202, receipt

    async def delivered() -> bool | str:
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"{stack.url('ingest')}/v1/messages/{receipt['id']}",
                headers={"Authorization": f"Bearer {account.api_key}"},
            ) as resp,
        ):
            state = (await resp.json()).get("status")
        return True if state in ("delivered", "read") else str(state)

    await eventually(delivered, within=90, what="the utility template delivered")

    async def promos_at_meta() -> list[dict[str, Any]]:
        sends = (await stack.sim("GET", "/_sim/sends", params={"phone_number_id": number}))["sends"]
        return [s for s in sends if s["template_name"] == "promo"]

    async def accepted_promos_sent() -> bool | int:
        sent = len(await promos_at_meta())
        return True if sent >= len(accepted_promos) else sent

    await eventually(accepted_promos_sent, within=60, what="the promos accepted before")
    # the promos accepted before the STOP applied reached Meta, the refused ones never did
    # (every send carries our message id as its callback data)
    assert {s["biz_opaque_callback_data"] for s in await promos_at_meta()} == accepted_promos
