"""The admin commands end to end on the real database and broker (and the `hala` console script
itself), with Meta's template list served by a small in-process Graph API."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pymongo
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pymongo.asynchronous.database import AsyncDatabase

from services.admin import commands
from services.admin.graph import GraphClient
from services.ingest.repository import MongoDirectory
from shared.collections import ACCOUNTS, API_KEYS, PHONE_NUMBERS, TEMPLATES
from shared.errors import ServiceError
from shared.kafka import make_producer
from shared.messages import TOPUP_REQUESTED, top_up_signature_valid
from shared.secrets import TokenVault, new_key
from tests.conftest import Broker
from tests.integration.ingest.kafka_probe import read_published

REPO = Path(__file__).resolve().parents[3]
WABA, PHONE, PORTFOLIO = "102290129340398", "109731225428301", "880011223344556"


async def _account(db: AsyncDatabase[dict[str, Any]], name: str = "Demo Co") -> str:
    account = await commands.create_account(
        db,
        name=name,
        email="ops@demo.example",
        phone="+971501234567",
        business_name="Demo Co LLC",
        fb_business_manager_id="123456789012",
    )
    return str(account["_id"])


async def _with_number(
    db: AsyncDatabase[dict[str, Any]], vault: TokenVault, token: str = "EAAsim-portfolio-a"
) -> str:
    account_id = await _account(db)
    await commands.register_waba(
        db, account_id=account_id, waba_id=WABA, portfolio_id=PORTFOLIO, name="WABA A1"
    )
    await commands.register_number(
        db,
        vault,
        account_id=account_id,
        waba_id=WABA,
        phone_number_id=PHONE,
        display_phone_number="15550001001",
        access_token=token,
        throughput_mps=80,
    )
    return account_id


async def test_accounts_are_created_suspended_and_reactivated(
    db: AsyncDatabase[dict[str, Any]],
) -> None:
    account_id = await _account(db)
    doc = await db[ACCOUNTS].find_one({"_id": account_id})
    assert account_id.startswith("acc_") and doc is not None
    assert doc["status"] == "active" and doc["low_balance_threshold"] == 1_000_000
    assert (await commands.set_account_status(db, account_id, "suspended"))["status"] == "suspended"
    assert (await commands.set_account_status(db, account_id, "active"))["status"] == "active"
    assert [a["_id"] for a in await commands.list_accounts(db)] == [account_id]
    with pytest.raises(ServiceError):
        await commands.set_account_status(db, "acc_missing", "active")


async def test_the_customer_service_window_check_is_on_by_default_and_switched_per_account(
    db: AsyncDatabase[dict[str, Any]],
) -> None:
    account_id = await _account(db)
    doc = await db[ACCOUNTS].find_one({"_id": account_id})
    assert doc is not None and doc["customer_service_window_check"] is True
    off = await commands.update_account(db, account_id, customer_service_window_check=False)
    assert off["customer_service_window_check"] is False and off["status"] == "active"
    on = await commands.update_account(db, account_id, customer_service_window_check=True)
    assert on["customer_service_window_check"] is True
    with pytest.raises(ServiceError):
        await commands.update_account(db, account_id)  # nothing to update
    with pytest.raises(ServiceError):
        await commands.update_account(db, "acc_missing", customer_service_window_check=False)


async def test_a_number_is_registered_with_its_token_encrypted(
    db: AsyncDatabase[dict[str, Any]],
) -> None:
    vault = TokenVault(new_key())
    account_id = await _with_number(db, vault)
    stored = await db[PHONE_NUMBERS].find_one({"_id": PHONE})
    assert stored is not None and "EAAsim-portfolio-a" not in str(stored)
    assert vault.decrypt(stored["access_token_encrypted"]) == "EAAsim-portfolio-a"
    assert stored["portfolio_id"] == PORTFOLIO and stored["waba_id"] == WABA
    [listed] = await commands.list_numbers(db, account_id)
    assert "access_token_encrypted" not in listed and listed["throughput_mps"] == 80
    # ingest reads the number without its token
    seen_by_ingest = await MongoDirectory(db).phone_number(PHONE)
    assert seen_by_ingest is not None and "access_token_encrypted" not in seen_by_ingest
    shown = await commands.show_account(db, account_id)
    assert shown["phone_numbers"] == [listed] and shown["balance"]["available"] == 0

    other = await _account(db, "Other")
    with pytest.raises(ServiceError) as info:
        await commands.register_waba(db, account_id=other, waba_id=WABA, portfolio_id=PORTFOLIO)
    assert info.value.code == "already_registered"


async def test_keys_are_issued_once_stored_hashed_listed_and_revoked_by_prefix(
    db: AsyncDatabase[dict[str, Any]],
) -> None:
    account_id = await _account(db)
    api_key, record = await commands.issue_key(db, account_id=account_id, name="ci")
    assert api_key.startswith("hw_live_") and len(api_key) == 40
    stored = await db[API_KEYS].find_one({"_id": record["key_id"]})
    assert stored is not None and api_key not in str(stored)
    assert await commands.key_is_active(db, api_key)
    [listed] = await commands.list_keys(db, account_id)
    assert listed["prefix"] == api_key[:16] and listed["revoked_at"] is None

    revoked = await commands.revoke_key(db, api_key[:16])
    assert revoked["revoked_at"] is not None
    assert not await commands.key_is_active(db, api_key)
    _, record2 = await commands.issue_key(db, account_id=account_id)
    assert (await commands.revoke_key(db, record2["key_id"][:12]))["key_id"] == record2["key_id"]


async def test_a_top_up_publishes_topup_requested_keyed_by_account(
    db: AsyncDatabase[dict[str, Any]], broker: Broker, unique: str
) -> None:
    prefix = f"t{unique}."
    await broker.grant(prefix)
    account_id = await _account(db)
    producer = make_producer(broker.as_service("admin"))  # only it may write top-ups
    await producer.start()
    try:
        event = await commands.top_up(
            db,
            producer,
            account_id=account_id,
            amount=5_000_000,
            note="first credit",
            topic_prefix=prefix,
            signing_key=b"it-topup-key",
            operator="ana@ops-1",
        )
        with pytest.raises(ServiceError):
            await commands.top_up(
                db,
                producer,
                account_id="acc_missing",
                amount=1,
                topic_prefix=prefix,
                signing_key=b"it-topup-key",
            )
    finally:
        await producer.stop()
    [record] = await read_published(broker.setup, TOPUP_REQUESTED, prefix)
    assert record.key == account_id.encode()
    published = TOPUP_REQUESTED.decode(record.value)
    assert published == event and published.amount == 5_000_000
    assert published.event_id.startswith("topup_") and published.note == "first credit"
    # Who asked travels with it, under the signature billing verifies.
    assert published.operator == "ana@ops-1"
    assert top_up_signature_valid(published, b"it-topup-key")
    assert not top_up_signature_valid(published, b"another key")


def _graph_app(templates: list[dict[str, Any]], token: str, page_size: int = 2) -> web.Application:
    """Meta's template list with cursor paging, for one token."""

    async def list_templates(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {token}":
            return web.json_response({"error": {"code": 190, "message": "bad token"}}, status=401)
        start = int(request.query.get("after", "0"))
        data = templates[start : start + page_size]
        paging: dict[str, Any] = {
            "cursors": {"before": str(start), "after": str(start + len(data))}
        }
        if start + page_size < len(templates):
            paging["next"] = f"https://graph.facebook.com/v24.0/x?after={start + page_size}"
        return web.json_response({"data": data, "paging": paging})

    app = web.Application()
    app.router.add_get("/v24.0/{waba_id}/message_templates", list_templates)
    return app


def _template(name: str, status: str = "APPROVED", body: str = "Hi {{1}}") -> dict[str, Any]:
    return {
        "id": f"1{len(name)}",
        "name": name,
        "language": "en_US",
        "category": "UTILITY",
        "status": status,
        "components": [{"type": "BODY", "text": body}],
    }


async def test_templates_are_synced_from_meta_through_every_page(
    db: AsyncDatabase[dict[str, Any]],
) -> None:
    vault = TokenVault(new_key())
    await _with_number(db, vault)
    listed = [
        _template("a"),
        _template("b", "PENDING"),
        _template("c"),
        _template("d", body="{{1}} and {{2}}"),
        _template("e", "PAUSED"),
    ]
    server = TestServer(_graph_app(listed, "EAAsim-portfolio-a"))
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            graph = GraphClient(session, str(server.make_url("")), "v24.0")
            result = await commands.sync_templates(db, vault, graph, waba_id=WABA)
            assert result["synced"] == 5 and result["by_status"]["APPROVED"] == 3
            doc = await db[TEMPLATES].find_one({"_id": f"{WABA}:d:en_US"})
            assert doc is not None and doc["body_params"] == ["1", "2"]

            # Meta no longer lists "a": it can't be sent any more.
            listed.pop(0)
            result = await commands.sync_templates(db, vault, graph, waba_id=WABA)
            assert result["deleted"] == 1
            gone = await db[TEMPLATES].find_one({"_id": f"{WABA}:a:en_US"})
            assert gone is not None and gone["status"] == "DELETED"
    finally:
        await server.close()


async def test_a_refused_token_fails_the_sync_with_metas_code(
    db: AsyncDatabase[dict[str, Any]],
) -> None:
    vault = TokenVault(new_key())
    await _with_number(db, vault, token="EAAsim-expired")
    server = TestServer(_graph_app([_template("a")], "EAAsim-portfolio-a"))
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            graph = GraphClient(session, str(server.make_url("")), "v24.0")
            with pytest.raises(ServiceError) as info:
                await commands.sync_templates(db, vault, graph, waba_id=WABA)
            assert info.value.code == "graph_error" and info.value.details["meta_code"] == 190
    finally:
        await server.close()


async def test_rotating_tokens_re_encrypts_them_under_the_newest_key(
    db: AsyncDatabase[dict[str, Any]],
) -> None:
    old_key, new = new_key(), new_key()
    await _with_number(db, TokenVault(old_key))
    assert (await commands.rotate_tokens(db, TokenVault(f"{new},{old_key}")))["rotated"] == 1
    stored = await db[PHONE_NUMBERS].find_one({"_id": PHONE})
    assert stored is not None
    assert TokenVault(new).decrypt(stored["access_token_encrypted"]) == "EAAsim-portfolio-a"


def test_the_hala_console_script_runs_the_commands(
    mongodb_url: str, broker: Broker, unique: str
) -> None:
    """The real entry point in a subprocess, as an operator runs it."""
    env = {
        **os.environ,
        **broker.env("admin"),
        "MONGODB_URL": mongodb_url,
        "MONGODB_DATABASE": f"it_{unique}",
        "HALA_TOPIC_PREFIX": f"t{unique}.",
        "HALA_TOKEN_KEYS": new_key(),
        "HALA_OPERATOR": "ana",
    }
    hala = [str(Path(sys.executable).with_name("hala"))]

    def run(*argv: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            [*hala, *argv],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            input=stdin,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    try:
        account_id = run(
            "accounts",
            "create",
            "--name",
            "Cli Co",
            "--email",
            "a@cli.example",
            "--phone",
            "+971501234567",
            "--business-name",
            "Cli Co LLC",
            "--fb-business-manager-id",
            "123456789012",
        ).strip()
        assert account_id.startswith("acc_")
        run(
            "wabas",
            "register",
            "--account",
            account_id,
            "--waba-id",
            WABA,
            "--portfolio-id",
            PORTFOLIO,
        )
        out = run(
            "numbers",
            "register",
            "--account",
            account_id,
            "--waba-id",
            WABA,
            "--phone-number-id",
            PHONE,
            "--display-phone-number",
            "15550001001",
            "--access-token",
            "-",
            stdin="EAAsim-secret-token\n",
        )
        assert "EAAsim-secret-token" not in out
        issued = orjson.loads(run("keys", "issue", "--account", account_id, "--json"))
        assert issued["api_key"].startswith("hw_live_")
        keys = orjson.loads(run("--json", "keys", "list", "--account", account_id))
        assert [k["prefix"] for k in keys] == [issued["api_key"][:16]]
        assert "api_key" not in keys[0]
        shown = orjson.loads(run("accounts", "show", account_id, "--json"))
        assert shown["account"]["status"] == "active" and shown["api_keys"] == 1
        missing = subprocess.run(
            [*hala, "accounts", "show", "acc_missing"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert missing.returncode == 1 and "unknown_account" in missing.stderr
        # Each change was audited with who did it; the read-only commands were not.
        audited = orjson.loads(run("audit", "--account", account_id, "--json"))
        assert [e["command"] for e in audited] == [
            "keys issue",
            "numbers register",
            "wabas register",
            "accounts create",
        ]
        assert {e["operator"] for e in audited} == {"ana"}
        assert audited[1]["arguments"]["access_token"] == "[redacted]"
        assert "EAAsim-secret-token" not in run("audit", "--json")
        assert issued["api_key"] not in run("audit", "--json")
    finally:
        client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(mongodb_url)
        client.drop_database(f"it_{unique}")
        client.close()


async def test_preparing_the_collections_twice_is_harmless(
    db: AsyncDatabase[dict[str, Any]],
) -> None:
    await commands.prepare(db)  # the fixture already did once: every `hala` run does it again
    await commands.prepare(db)
    assert "account_id_1" in await db[PHONE_NUMBERS].index_information()
