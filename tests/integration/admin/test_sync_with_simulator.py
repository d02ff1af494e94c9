"""`hala templates sync` against the project's Meta simulator (tools/metasim), served in-process:
the Graph API's real paging, auth and template shapes, into the real database."""

from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer
from pymongo.asynchronous.database import AsyncDatabase

from services.admin import commands
from services.admin.graph import GraphClient
from services.ingest import core as ingest_core
from shared.secrets import TokenVault, new_key
from tools.metasim.app import build_app
from tools.metasim.config import load_config

WABA, PHONE, PORTFOLIO = "102290129340398", "109731225428301", "880011223344556"


async def test_templates_sync_from_the_simulator_page_by_page(
    db: AsyncDatabase[dict[str, Any]],
) -> None:
    config = load_config()
    expected = {
        (t.name, t.language): t
        for p in config.portfolios
        for w in p.wabas
        if w.id == WABA
        for t in w.templates
    }
    vault = TokenVault(new_key())
    account = await commands.create_account(
        db,
        name="Sim Co",
        email="ops@sim.example",
        phone="+971501234567",
        business_name="Sim Co LLC",
        fb_business_manager_id="123456789012",
    )
    await commands.register_waba(
        db, account_id=account["_id"], waba_id=WABA, portfolio_id=PORTFOLIO
    )
    await commands.register_number(
        db,
        vault,
        account_id=account["_id"],
        waba_id=WABA,
        phone_number_id=PHONE,
        display_phone_number="15550001001",
        access_token="EAAsim-portfolio-a",
    )
    server = TestServer(build_app(config))
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            graph = GraphClient(session, str(server.make_url("")).rstrip("/"), "v24.0", page_size=3)
            result = await commands.sync_templates(db, vault, graph, waba_id=WABA)
    finally:
        await server.close()

    assert result["synced"] == len(expected)
    synced = {(t["name"], t["language"]): t for t in await commands.list_templates(db, WABA)}
    assert set(synced) == set(expected)
    for key, template in expected.items():
        assert synced[key]["status"] == template.status
        assert synced[key]["category"] == template.category
    order = synced[("order_confirmation", "en_US")]
    assert order["header_format"] == "IMAGE" and order["body_params"] == ["1", "2"]
    assert order["button_params"] == [{"index": 0, "count": 1}]
    named = synced[("reservation_confirmation", "en_US")]
    assert named["parameter_format"] == "NAMED"
    assert named["body_params"] == ["number_of_guests", "day"]
    # What the simulator's own example send needs is what ingest now expects.
    request = ingest_core.parse_send_request(
        {
            "from": PHONE,
            "to": "+447912345678",
            "type": "template",
            "template": {
                "name": "reservation_confirmation",
                "language": {"code": "en_US"},
                "components": [
                    {
                        "type": "body",
                        "parameters": [
                            {"type": "text", "parameter_name": "number_of_guests", "text": "4"},
                            {"type": "text", "parameter_name": "day", "text": "Saturday"},
                        ],
                    }
                ],
            },
        }
    )
    assert ingest_core.check_template(named, request) == "utility"
