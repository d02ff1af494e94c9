"""`hala` sets and removes an account's and a key's request rate limit and an account's cap on
messages in flight, on the real database; ingest's and billing's adapters read exactly what it
wrote (the contract their unit tests' fakes stand for)."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from services.admin import audit_core, cli
from services.admin.settings import AdminSettings
from services.billing.accounts import AccountThresholds
from services.billing.worker import AccountSettings
from services.ingest.core import hash_api_key
from services.ingest.rate_limits import Rate, account_rate, key_rate
from services.ingest.repository import MongoDirectory
from shared.errors import ServiceError

ANA = audit_core.Operator(name="ana", os_user="deploy", host="ops-1")
DEFAULT = Rate(100, 200)


async def test_limits_set_by_hala_are_what_ingest_and_billing_read(
    db: AsyncDatabase[dict[str, Any]], mongodb_url: str
) -> None:
    settings = AdminSettings(
        MONGODB_URL=mongodb_url, MONGODB_DATABASE=db.name, HALA_ENV="development"
    )

    async def hala(*argv: str) -> Any:
        return await cli.run(cli.build_parser().parse_args(list(argv)), settings, ANA)

    account = (
        await hala(
            "accounts",
            "create",
            "--name",
            "Limits Co",
            "--email",
            "a@x.example",
            "--phone",
            "+971501234567",
            "--business-name",
            "Limits Co LLC",
            "--fb-business-manager-id",
            "123456789012",
        )
    )["_id"]
    issued = await hala("keys", "issue", "--account", account, "--rate-limit", "5/s")
    key_hash = hash_api_key(issued["api_key"])
    plain = await hala("keys", "issue", "--account", account)
    directory, billing = MongoDirectory(db), AccountThresholds(db)

    # Nothing set: the defaults apply everywhere.
    assert account_rate(await directory.account(account), DEFAULT) == DEFAULT
    assert await billing.settings([account]) == {
        account: AccountSettings(low_balance_threshold=1_000_000, max_in_flight=None)
    }
    assert key_rate(await directory.api_key(key_hash), None) == Rate(5, 5)
    assert key_rate(await directory.api_key(hash_api_key(plain["api_key"])), None) is None

    updated = await hala(
        "accounts",
        "update",
        account,
        "--rate-limit",
        "600/min",
        "--rate-limit-burst",
        "20",
        "--max-in-flight",
        "250",
    )
    assert updated["rate_limit"] == {"per_second": 10.0, "burst": 20}
    assert account_rate(await directory.account(account), DEFAULT) == Rate(10, 20)
    assert (await billing.settings([account]))[account].max_in_flight == 250

    shown = await hala(
        "keys", "update", issued["prefix"], "--rate-limit", "2/s", "--rate-limit-burst", "4"
    )
    assert shown["rate_limit"] == {"per_second": 2.0, "burst": 4}
    assert key_rate(await directory.api_key(key_hash), None) == Rate(2, 4)

    # `default` removes each override; the other settings stay.
    await hala("accounts", "update", account, "--rate-limit", "default")
    assert account_rate(await directory.account(account), DEFAULT) == DEFAULT
    assert (await billing.settings([account]))[account].max_in_flight == 250
    await hala("accounts", "update", account, "--max-in-flight", "default")
    assert (await billing.settings([account]))[account].max_in_flight is None
    await hala("keys", "update", issued["prefix"], "--rate-limit", "default")
    assert key_rate(await directory.api_key(key_hash), None) is None
    assert "rate_limit" not in (await db.api_keys.find_one({"_id": key_hash}) or {})

    for bad in (
        ("accounts", "update", account, "--rate-limit", "fast"),
        ("accounts", "update", account, "--rate-limit", "0/s"),
        ("accounts", "update", account, "--max-in-flight", "-3"),
        ("accounts", "update", account, "--rate-limit-burst", "3"),
        ("keys", "update", issued["prefix"], "--rate-limit", "default", "--rate-limit-burst", "2"),
    ):
        with pytest.raises(ServiceError) as refused:
            await hala(*bad)
        assert refused.value.code == "invalid_field"

    # Every change and attempt was audited (a refused key update names no account).
    of_account = [e["command"] for e in await hala("audit", "--account", account)]
    assert of_account.count("accounts update") == 7 and of_account.count("keys update") == 2
    everything = [e["command"] for e in await hala("audit")]
    assert everything.count("keys update") == 3
