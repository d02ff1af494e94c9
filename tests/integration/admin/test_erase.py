"""`hala accounts erase` on the real database: every collection that holds the account's or its
contacts' personal data loses it, the ledger and the balance stay under a pseudonym (amounts
intact, reconciled without drift), another account is untouched, the command is audited, and a
second run changes nothing."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from services.admin import audit_core, cli, commands
from services.admin.settings import AdminSettings
from services.billing.accounts import MongoErasedAccounts
from services.billing.balances import Balances
from services.billing.checkpoints import MongoCheckpoints
from services.billing.core import Balance, LedgerEntry
from services.billing.ledger import Ledger
from services.billing.reconcile import Reconciler
from shared.clock import FakeClock
from shared.collections import (
    ACCOUNTS,
    AUDIT_LOG,
    BALANCES,
    CONVERSATIONS,
    DELIVERIES,
    DELIVERY_ATTEMPTS,
    EMAIL_ALERTS,
    ENDPOINT_STATES,
    IDEMPOTENCY_KEYS,
    INBOUND_MESSAGES,
    LEDGER,
    MEDIA,
    MESSAGES,
    NOTIFY_EVENTS,
    NUMBER_STATES,
    SEND_OUTCOMES,
    SENDS,
    TIER_USAGE,
    USER_PREFERENCES,
    WAMID_INDEX,
    WEBHOOK_ENDPOINTS,
)
from shared.errors import ServiceError
from shared.pseudonyms import keyed_hash
from shared.secrets import TokenVault, new_key
from shared.settings import DEVELOPMENT_PSEUDONYM_KEY
from tests.conftest import Broker
from tests.integration.ingest.conftest import META_TEMPLATES, StaticTemplates

ANA = audit_core.Operator(name="ana", os_user="deploy", host="ops-1")
CONTACT = "447912345678"  # a WhatsApp user who wrote to the account
PERSONAL = (
    "Erin Example",
    "erin@erase.example",
    "+971501112233",
    "Erin Trading LLC",
    CONTACT,
    "EAA-erin-token",
    "my address is 1 Main St",
)


async def _tenant(
    db: AsyncDatabase[dict[str, Any]],
    vault: TokenVault,
    *,
    name: str,
    email: str,
    phone: str,
    business: str,
    waba: str,
    portfolio: str,
    number: str,
) -> tuple[str, str]:
    account = await commands.create_account(
        db,
        name=name,
        email=email,
        phone=phone,
        business_name=business,
        fb_business_manager_id="123456789012",
    )
    account_id = str(account["_id"])
    await commands.register_waba(db, account_id=account_id, waba_id=waba, portfolio_id=portfolio)
    await commands.register_number(
        db,
        vault,
        account_id=account_id,
        waba_id=waba,
        phone_number_id=number,
        display_phone_number="15550001001",
        access_token=f"EAA-{name.split()[0].lower()}-token",
    )
    await commands.sync_templates(
        db, vault, StaticTemplates({waba: META_TEMPLATES["102290129340398"]}), waba_id=waba
    )
    api_key, _ = await commands.issue_key(db, account_id=account_id, name="backend")
    return account_id, api_key


async def _what_the_services_wrote(
    db: AsyncDatabase[dict[str, Any]],
    account_id: str,
    waba: str,
    portfolio: str,
    number: str,
    tag: str,
) -> None:
    """One document per collection, shaped as its writer writes it."""
    message = f"msg_{tag}"
    await db[MESSAGES].insert_one(
        {
            "_id": message,
            "account_id": account_id,
            "phone_number_id": number,
            "recipient": f"+{CONTACT}",
            "content": '{"body": "my address is 1 Main St"}',
            "status": "delivered",
            "created_at": 1,
        }
    )
    await db[IDEMPOTENCY_KEYS].insert_one(
        {
            "_id": f"{account_id}:key:1:k",
            "account_id": account_id,
            "recipient": f"+{CONTACT}",
            "message_id": message,
        }
    )
    await db[INBOUND_MESSAGES].insert_one(
        {
            "_id": f"wamid.in.{tag}",
            "account_id": account_id,
            "wa_id": CONTACT,
            "contact_name": "Zed",
            "content": '{"text": {"body": "hi"}}',
        }
    )
    await db[CONVERSATIONS].insert_one(
        {
            "_id": f"{number}:{CONTACT}",
            "account_id": account_id,
            "wa_id": CONTACT,
            "contact_name": "Zed",
        }
    )
    await db[USER_PREFERENCES].insert_one(
        {
            "_id": f"{number}:{CONTACT}:marketing",
            "account_id": account_id,
            "wa_id": CONTACT,
            "value": "stop",
        }
    )
    await db[MEDIA].insert_one(
        {"_id": f"9{len(tag)}1{number}", "account_id": account_id, "phone_number_id": number}
    )
    await db[SENDS].insert_one({"_id": message, "account_id": account_id, "state": "sending"})
    await db[SEND_OUTCOMES].insert_one(
        {"_id": message, "account_id": account_id, "wamid": f"wamid.out.{tag}"}
    )
    await db[WAMID_INDEX].insert_one(
        {"_id": f"wamid.out.{tag}", "message_id": message, "account_id": account_id}
    )
    await db[NUMBER_STATES].insert_many(
        [{"_id": number, "messages_per_second": 80}, {"_id": f"waba:{waba}", "held": False}]
    )
    await db[TIER_USAGE].insert_one(
        {
            "_id": f"{portfolio}:hmac-sha256:{tag}",
            "portfolio_id": portfolio,
            "recipient": f"hmac-sha256:{tag}",
            "last_at": 1,
        }
    )
    endpoint = f"we_{tag}"
    await db[WEBHOOK_ENDPOINTS].insert_one(
        {"_id": endpoint, "account_id": account_id, "url": f"https://{tag}.example/hook"}
    )
    await db[ENDPOINT_STATES].insert_one({"_id": endpoint, "failing_since": None})
    await db[NOTIFY_EVENTS].insert_one(
        {"_id": f"evt_{tag}", "account_id": account_id, "data": {"from": CONTACT}}
    )
    await db[DELIVERIES].insert_one({"_id": f"{endpoint}:evt_{tag}", "endpoint_id": endpoint})
    await db[DELIVERY_ATTEMPTS].insert_one(
        {"_id": f"{endpoint}:evt_{tag}:1", "endpoint_id": endpoint}
    )
    await db[EMAIL_ALERTS].insert_one({"_id": f"alert_{tag}", "account_id": account_id})
    # billing: a top-up, a reservation and its charge, and the balance that applied them
    entries = [
        LedgerEntry(
            key=f"topup:{tag}",
            account_id=account_id,
            kind="topup",
            amount=1_000_000,
            at=10,
            source="t:0",
            source_offset=0,
            source_event_id=tag,
        ),
        LedgerEntry(
            key=f"{message}:reserve",
            account_id=account_id,
            kind="reserve",
            amount=24_200,
            at=11,
            source="s:0",
            source_offset=0,
            source_event_id=message,
            message_id=message,
        ),
        LedgerEntry(
            key=f"{message}:settle",
            account_id=account_id,
            kind="charge",
            amount=24_200,
            reserved_amount=24_200,
            at=12,
            source="c:0",
            source_offset=0,
            source_event_id=f"{message}:delivered",
            message_id=message,
        ),
    ]
    assert await Ledger(db).add_all(entries) == set()
    await Balances(db).save(
        Balance(
            account_id,
            "USD",
            available=1_000_000 - 24_200,
            reserved=0,
            applied={"t:0": 0, "s:0": 0, "c:0": 0},
        ),
        12,
    )


def _of(
    account_id: str, snapshot: dict[str, list[dict[str, Any]]]
) -> dict[str, list[dict[str, Any]]]:
    """The documents of one account (billing's checkpoint holds every account: left out)."""
    return {
        n: [d for d in docs if account_id in repr(d) or "otto" in repr(d)]
        for n, docs in snapshot.items()
        if n != "billing_checkpoints"
    }


async def _snapshot(db: AsyncDatabase[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    names = sorted(n for n in await db.list_collection_names() if n != AUDIT_LOG)
    return {n: await db[n].find().sort("_id", 1).to_list(None) for n in names}


async def test_erasing_an_account_removes_its_personal_data_and_keeps_its_ledger_anonymous(
    db: AsyncDatabase[dict[str, Any]], mongodb_url: str, broker: Broker
) -> None:
    vault = TokenVault(new_key())
    erin, _ = await _tenant(
        db,
        vault,
        name="Erin Example",
        email="erin@erase.example",
        phone="+971501112233",
        business="Erin Trading LLC",
        waba="117552438690213",
        portfolio="880011223344557",
        number="118243906275101",
    )
    other, other_key = await _tenant(
        db,
        vault,
        name="Otto Other",
        email="otto@keep.example",
        phone="+971504445566",
        business="Otto LLC",
        waba="102290129340398",
        portfolio="880011223344556",
        number="109731225428301",
    )
    await _what_the_services_wrote(
        db, erin, "117552438690213", "880011223344557", "118243906275101", "erin"
    )
    await _what_the_services_wrote(
        db, other, "102290129340398", "880011223344556", "109731225428301", "otto"
    )
    other_before = _of(other, await _snapshot(db))
    settings = AdminSettings(
        MONGODB_URL=mongodb_url,
        MONGODB_DATABASE=db.name,
        HALA_ENV="development",
        **broker.settings("admin"),
    )

    async def hala(*argv: str) -> Any:
        return await cli.run(cli.build_parser().parse_args(list(argv)), settings, ANA)

    with pytest.raises(ServiceError) as refused:
        await hala("accounts", "erase", erin, "--yes")
    assert refused.value.code == "account_not_suspended"
    await hala("accounts", "suspend", erin)
    with pytest.raises(ServiceError) as unconfirmed:
        await hala("accounts", "erase", erin)
    assert unconfirmed.value.code == "confirmation_required"
    reconciler = Reconciler(
        Ledger(db), Balances(db), FakeClock(), MongoCheckpoints(db), erased=MongoErasedAccounts(db)
    )
    assert (await reconciler.run_once()).drift == 0

    erased = await hala("accounts", "erase", erin, "--yes")

    pseudonym = keyed_hash(erin, DEVELOPMENT_PSEUDONYM_KEY.encode())
    assert erased["pseudonym"] == pseudonym and not erased["unchanged"]
    # billing's next reconciliation moves the totals it keeps to the pseudonym too.
    assert (await reconciler.run_once()).drift == 0
    after = await _snapshot(db)
    for name, docs in after.items():
        for doc in docs:
            text = repr(doc)
            assert erin not in text or name == ACCOUNTS, (name, doc)
            for personal in PERSONAL:
                assert personal not in text or "otto" in text or other in text, (name, doc)
    [tombstone] = [d for d in after[ACCOUNTS] if d["_id"] == erin]
    assert set(tombstone) == {"_id", "status", "pseudonym", "erased_at", "created_at"}
    assert (tombstone["status"], tombstone["pseudonym"]) == ("erased", pseudonym)
    # The money stays, under the pseudonym, and still reconciles.
    kept = {
        d["_id"]: (d["kind"], d["amount"]) for d in after[LEDGER] if d["account_id"] == pseudonym
    }
    assert kept == {
        "topup:erin": ("topup", 1_000_000),
        "msg_erin:reserve": ("reserve", 24_200),
        "msg_erin:settle": ("charge", 24_200),
    }
    [balance] = [d for d in after[BALANCES] if d["_id"] == pseudonym]
    assert (balance["available"], balance["reserved"]) == (975_800, 0)
    # Nothing of the other account changed, and it still works.
    assert _of(other, after) == other_before
    assert await commands.key_is_active(db, other_key)
    # The erased account cannot come back.
    with pytest.raises(ServiceError) as gone:
        await hala("accounts", "activate", erin)
    assert gone.value.code == "account_erased"

    again = await hala("accounts", "erase", erin, "--yes")
    assert (again["already_erased"], again["unchanged"], again["changed"]) == (True, True, {})
    assert await _snapshot(db) == after

    audited = await hala("audit", "--account", erin)
    assert [(e["command"], e["outcome"]) for e in audited][:6] == [
        ("accounts erase", "ok"),
        ("accounts activate", "error"),
        ("accounts erase", "ok"),
        ("accounts erase", "error"),
        ("accounts suspend", "ok"),
        ("accounts erase", "error"),
    ]
    assert "Erin" not in repr(await db[AUDIT_LOG].find().to_list(None))
