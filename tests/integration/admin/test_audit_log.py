"""`hala` writes an audit entry for every command that changes something, before it reports
success and for a failed attempt too, on the real database; `hala audit` reads them back."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from services.admin import audit_core, cli
from services.admin.settings import AdminSettings
from shared.collections import AUDIT_LOG
from shared.errors import ServiceError
from shared.messages import TOPUP_REQUESTED
from tests.conftest import Broker
from tests.integration.ingest.kafka_probe import read_published

ANA = audit_core.Operator(name="ana", os_user="deploy", host="ops-1")


async def test_changes_and_failed_attempts_are_audited_and_reads_are_not(
    db: AsyncDatabase[dict[str, Any]], mongodb_url: str, broker: Broker, unique: str
) -> None:
    prefix = f"t{unique}."
    await broker.grant(prefix, [TOPUP_REQUESTED])
    settings = AdminSettings(
        MONGODB_URL=mongodb_url,
        MONGODB_DATABASE=db.name,
        HALA_TOPIC_PREFIX=prefix,
        HALA_ENV="development",
        **broker.settings("admin"),
    )

    async def hala(*argv: str) -> Any:
        return await cli.run(cli.build_parser().parse_args(list(argv)), settings, ANA)

    account = await hala(
        "accounts",
        "create",
        "--name",
        "Audit Co",
        "--email",
        "a@x.example",
        "--phone",
        "+971501234567",
        "--business-name",
        "Audit Co LLC",
        "--fb-business-manager-id",
        "123456789012",
    )
    account_id = account["_id"]
    await hala("accounts", "list")
    await hala("accounts", "show", account_id)
    issued = await hala("keys", "issue", "--account", account_id)
    await hala("keys", "revoke", issued["api_key"])
    topup = await hala("credits", "topup", "--account", account_id, "--amount", "5000000")
    with pytest.raises(ServiceError):
        await hala("accounts", "suspend", "acc_missing")
    assert await db[AUDIT_LOG].count_documents({}) == 5  # no entry for the two reads

    entries = await hala("audit", "--account", account_id)
    assert [e["command"] for e in entries] == [
        "credits topup",
        "keys revoke",
        "keys issue",
        "accounts create",
    ]
    assert {(e["operator"], e["host"], e["outcome"]) for e in entries} == {("ana", "ops-1", "ok")}
    assert entries[1]["arguments"]["key"] == issued["api_key"][:16] + "…"
    assert issued["api_key"] not in repr(await db[AUDIT_LOG].find().to_list(None))
    # The top-up carries the same operator to billing.
    [record] = await read_published(broker.setup, TOPUP_REQUESTED, prefix)
    assert TOPUP_REQUESTED.decode(record.value).operator == "ana@ops-1" == topup["operator"]

    [failed] = await hala("audit", "--account", "acc_missing")
    assert (failed["command"], failed["outcome"], failed["error"]["code"]) == (
        "accounts suspend",
        "error",
        "unknown_account",
    )
    assert len(await hala("audit", "--limit", "2")) == 2
    assert await hala("audit", "--since", "2999-01-01") == []
    assert len(await hala("audit", "--since", "1h")) == 5
