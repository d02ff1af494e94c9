"""`hala webhooks` and the account's alert settings on the real database and broker: the same
rules as the client API, endpoints only the named account's, test and replay requests
published for notify, and the console script itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pymongo
import pytest
from pymongo.asynchronous.database import AsyncDatabase

from services.admin import commands, webhooks
from shared.collections import ACCOUNTS, DELIVERY_ATTEMPTS, ENDPOINT_STATES, WEBHOOK_ENDPOINTS
from shared.errors import ServiceError
from shared.kafka import make_producer
from shared.messages import NOTIFY_REQUESTED
from shared.secrets import TokenVault, new_key
from tests.conftest import Broker
from tests.integration.ingest.kafka_probe import read_published

pytestmark = pytest.mark.integration

Db = AsyncDatabase[dict[str, Any]]
DAY_MS = 24 * 3600 * 1000


async def _account(db: Db, name: str) -> str:
    account = await commands.create_account(
        db,
        name=name,
        email=f"ops@{name.lower()}.example",
        phone="+971501234567",
        business_name=f"{name} LLC",
        fb_business_manager_id="123456789012",
    )
    return str(account["_id"])


async def test_an_operator_manages_a_clients_endpoints_by_the_api_rules(db: Db) -> None:
    vault = TokenVault(new_key())
    account = await _account(db, "Alpha")
    other = await _account(db, "Beta")
    created = await webhooks.create_endpoint(
        db,
        vault,
        account_id=account,
        url="https://hooks.example.com/in",
        events=["message.*", "message.*", "balance.low"],
        description="CRM",
    )
    endpoint_id, secret = created["endpoint"]["id"], created["secret"]
    stored = await db[WEBHOOK_ENDPOINTS].find_one({"_id": endpoint_id})
    assert stored is not None and stored["account_id"] == account
    assert stored["events"] == ["message.*", "balance.low"]
    assert vault.decrypt(stored["secrets"][0]["encrypted"]) == secret
    assert secret not in repr(stored)
    assert [e["id"] for e in await webhooks.list_endpoints(db, account)] == [endpoint_id]
    assert await webhooks.list_endpoints(db, other) == []

    # the same refusals as the client API
    for kwargs, code in (
        ({"url": "http://hooks.example.com/in"}, "insecure_url"),
        ({"url": "https://10.0.0.1/in"}, "private_address"),
        ({"url": "http://127.0.0.1:9/in"}, "insecure_url"),
        ({"events": ["message.seen"]}, "unknown_event_type"),
    ):
        arguments = {"url": "https://hooks.example.com/in", "events": ["*"], **kwargs}
        with pytest.raises(ServiceError) as raised:
            await webhooks.create_endpoint(db, vault, account_id=account, **arguments)
        assert raised.value.code == code
    # development mode lets loopback http through
    local = await webhooks.create_endpoint(
        db,
        vault,
        account_id=account,
        url="http://127.0.0.1:9/in",
        events=["*"],
        allow_loopback_http=True,
    )
    assert local["endpoint"]["url"] == "http://127.0.0.1:9/in"

    # another account's endpoint is not found, whatever the command
    with pytest.raises(ServiceError) as raised:
        await webhooks.show_endpoint(db, other, endpoint_id)
    assert raised.value.code == "unknown_webhook_endpoint"
    with pytest.raises(ServiceError):
        await webhooks.delete_endpoint(db, other, endpoint_id)

    # notify disabled it; the operator enables it again
    await db[ENDPOINT_STATES].insert_one(
        {
            "_id": endpoint_id,
            "disabled_at": stored["enabled_at"] + 1,
            "disabled_reason": "failing_for_3_days",
        }
    )
    shown = await webhooks.show_endpoint(db, account, endpoint_id)
    assert shown["receiving"] is False
    assert shown["health"]["disabled_reason"] == "failing_for_3_days"
    enabled = await webhooks.update_endpoint(db, account, endpoint_id, {"enabled": True})
    assert enabled["receiving"] is True
    with pytest.raises(ServiceError) as raised:
        await webhooks.update_endpoint(db, account, endpoint_id, {})
    assert raised.value.code == "invalid_request"

    rotated = await webhooks.rotate_secret(db, vault, account, endpoint_id)
    stored = await db[WEBHOOK_ENDPOINTS].find_one({"_id": endpoint_id})
    assert stored is not None
    assert [vault.decrypt(s["encrypted"]) for s in stored["secrets"]] == [secret, rotated["secret"]]
    assert stored["secrets"][0]["expires_at"] == stored["secrets"][1]["created_at"] + DAY_MS

    await db[DELIVERY_ATTEMPTS].insert_many(
        [
            {
                "_id": f"{endpoint_id}:evt_{n}:1",
                "endpoint_id": endpoint_id,
                "event_id": f"evt_{n}",
                "event_type": "message.read",
                "attempt": 1,
                "at": 1_764_000_000_000 + n,
                "http_status": 200,
                "latency_ms": 3,
                "error": None,
                "outcome": "delivered",
            }
            for n in range(3)
        ]
    )
    deliveries = await webhooks.list_deliveries(db, account, endpoint_id, limit=2)
    assert [d["event_id"] for d in deliveries] == ["evt_2", "evt_1"]

    assert (await webhooks.delete_endpoint(db, account, endpoint_id))["deleted"] is True
    assert [e["id"] for e in await webhooks.list_endpoints(db, account)] == [
        local["endpoint"]["id"]
    ]
    with pytest.raises(ServiceError):
        await webhooks.show_endpoint(db, account, endpoint_id)


async def test_test_and_replay_are_published_for_notify(
    db: Db, broker: Broker, unique: str
) -> None:
    prefix = f"t{unique}."
    await broker.grant(prefix, [NOTIFY_REQUESTED])
    producer = make_producer(broker.as_service("admin"))  # as `hala` publishes them
    await producer.start()
    try:
        account = await _account(db, "Alpha")
        endpoint_id = (
            await webhooks.create_endpoint(
                db,
                TokenVault(new_key()),
                account_id=account,
                url="https://hooks.example.com/in",
                events=["*"],
            )
        )["endpoint"]["id"]
        test = await webhooks.send_test(db, producer, account, endpoint_id, topic_prefix=prefix)
        replay = await webhooks.replay(
            db, producer, account, endpoint_id, since=1_763_978_400_000, topic_prefix=prefix
        )
        with pytest.raises(ServiceError) as raised:
            await webhooks.replay(db, producer, account, endpoint_id, topic_prefix=prefix)
        assert raised.value.code == "invalid_field"
        records = await read_published(broker.setup, NOTIFY_REQUESTED, prefix)
        events = sorted(
            (NOTIFY_REQUESTED.decode(r.value) for r in records), key=lambda e: e.requested_at
        )
        assert [(e.event_id, e.kind, e.account_id, e.endpoint_id) for e in events] == [
            (test["request_id"], "test", account, endpoint_id),
            (replay["request_id"], "replay", account, endpoint_id),
        ]
        assert events[1].since == 1_763_978_400_000 and events[1].until is not None
    finally:
        await producer.stop()


async def test_an_accounts_alert_emails_and_threshold_are_stored(db: Db) -> None:
    account = await _account(db, "Alpha")
    updated = await commands.update_account(
        db, account, alert_emails=["a@x.example", "b@y.example"], low_balance_threshold=2_500_000
    )
    assert updated["alert_emails"] == ["a@x.example", "b@y.example"]
    assert updated["low_balance_threshold"] == 2_500_000
    cleared = await commands.update_account(db, account, alert_emails=[])
    assert cleared["alert_emails"] == [] and cleared["low_balance_threshold"] == 2_500_000
    with pytest.raises(ServiceError):
        await commands.update_account(db, account, alert_emails=["nope"])
    with pytest.raises(ServiceError):
        await commands.update_account(db, account, low_balance_threshold=-1)


def test_the_hala_console_script_runs_the_webhook_commands(
    mongodb_url: str, broker: Broker, unique: str
) -> None:
    """The real entry point in a subprocess, as an operator runs it (as hala-admin)."""
    database = f"it_{unique}"
    env = {
        **os.environ,
        **broker.env("admin"),
        "MONGODB_URL": mongodb_url,
        "MONGODB_DATABASE": database,
        "HALA_TOPIC_PREFIX": f"t{unique}.",
        "HALA_TOKEN_KEYS": new_key(),
        "HALA_ENV": "development",
    }
    hala = [str(Path(sys.executable).with_name("hala"))]

    def run(*argv: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*hala, *argv], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert (done.returncode == 0) is ok, done.stderr
        return done

    try:
        account = run(
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
        ).stdout.strip()
        run(
            "accounts",
            "update",
            account,
            "--alert-emails",
            "ops@cli.example,cfo@cli.example",
            "--low-balance-threshold",
            "2500000",
        )
        created = orjson.loads(
            run(
                "webhooks",
                "create",
                "--account",
                account,
                "--url",
                "http://127.0.0.1:9/hook",
                "--events",
                "message.*,balance.*",
                "--json",
            ).stdout
        )
        assert created["secret"].startswith("whsec_")
        endpoint_id = created["endpoint"]["id"]
        listed = orjson.loads(run("webhooks", "list", "--account", account, "--json").stdout)
        assert [e["id"] for e in listed] == [endpoint_id]
        assert (
            created["secret"]
            not in run("webhooks", "show", endpoint_id, "--account", account).stdout
        )
        disabled = orjson.loads(
            run(
                "webhooks", "update", endpoint_id, "--account", account, "--disable", "--json"
            ).stdout
        )
        assert disabled["enabled"] is False
        refused = run(
            "webhooks",
            "create",
            "--account",
            account,
            "--url",
            "https://10.0.0.1/hook",
            "--events",
            "*",
            ok=False,
        )
        assert refused.returncode == 1 and "private_address" in refused.stderr
        missing = run("webhooks", "show", "we_" + "0" * 26, "--account", account, ok=False)
        assert "unknown_webhook_endpoint" in missing.stderr

        client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(mongodb_url)
        try:
            stored = client[database][ACCOUNTS].find_one({"_id": account})
        finally:
            client.close()
        assert stored is not None
        assert stored["alert_emails"] == ["ops@cli.example", "cfo@cli.example"]
        assert stored["low_balance_threshold"] == 2_500_000
    finally:
        client = pymongo.MongoClient(mongodb_url)
        client.drop_database(database)
        client.close()


async def test_rotating_the_encryption_key_re_encrypts_webhook_secrets(db: Db) -> None:
    old_key, new = new_key(), new_key()
    account = await _account(db, "Alpha")
    created = await webhooks.create_endpoint(
        db,
        TokenVault(old_key),
        account_id=account,
        url="https://hooks.example.com/in",
        events=["*"],
    )
    endpoint_id = created["endpoint"]["id"]
    await webhooks.rotate_secret(db, TokenVault(old_key), account, endpoint_id)
    result = await commands.rotate_tokens(db, TokenVault(f"{new},{old_key}"))
    assert result["webhook_secrets_rotated"] == 2
    stored = await db[WEBHOOK_ENDPOINTS].find_one({"_id": endpoint_id})
    assert stored is not None
    # the old key can be dropped now: the new one alone decrypts both
    assert TokenVault(new).decrypt(stored["secrets"][0]["encrypted"]) == created["secret"]
    assert TokenVault(new).decrypt(stored["secrets"][1]["encrypted"]).startswith("whsec_")
