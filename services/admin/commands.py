"""What each `hala` command does, as async functions over a database, a producer and a token vault
passed in — so tests and deploy/local/seed_demo.py call them without a subprocess.

The admin CLI is the only writer of accounts, api_keys, wabas, phone_numbers, dlq_replays and
(with status's webhooks) templates. Balances are billing's: credit is added by publishing
TopUpRequested.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from pymongo import DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from services.admin import core
from services.admin.core import from_ms
from services.admin.graph import TemplateSource
from shared.clock import Clock, SystemClock
from shared.collections import (
    ACCOUNT_HOLDS,
    ACCOUNTS,
    API_KEYS,
    AUDIT_LOG,
    BALANCES,
    BLOCKED_RECIPIENTS,
    CONVERSATIONS,
    DELIVERIES,
    DELIVERY_ATTEMPTS,
    DLQ_REPLAYS,
    EMAIL_ALERTS,
    ENDPOINT_STATES,
    GUARD_RECIPIENTS,
    GUARD_STATES,
    IDEMPOTENCY_KEYS,
    INBOUND_MESSAGES,
    LEDGER,
    MEDIA,
    MESSAGES,
    NOTIFY_EVENTS,
    NUMBER_STATES,
    OPT_OUT_KEYWORDS,
    PHONE_NUMBERS,
    SEND_OUTCOMES,
    SENDS,
    SUPPRESSIONS,
    TEMPLATES,
    TIER_USAGE,
    USER_PREFERENCES,
    WABAS,
    WAMID_INDEX,
    WEBHOOK_ENDPOINTS,
    ensure_indexes,
)
from shared.errors import DependencyUnavailable, InvalidRequest, NotFound, PermanentError
from shared.ids import new_id
from shared.kafka import KafkaConfig, make_admin, make_consumer, publish
from shared.messages import TOPUP_REQUESTED, TopUpRequested, sign_top_up
from shared.pseudonyms import keyed_hash
from shared.secrets import TokenVault
from shared.secrets import new_key as new_fernet_key

Db = AsyncDatabase[dict[str, Any]]
_SYSTEM_CLOCK = SystemClock()


async def prepare(db: Db) -> None:
    """Indexes of the collections the CLI writes (idempotent)."""
    await ensure_indexes(
        db, API_KEYS, PHONE_NUMBERS, TEMPLATES, DLQ_REPLAYS, AUDIT_LOG, BLOCKED_RECIPIENTS
    )


# --- accounts -------------------------------------------------------------------------------


async def create_account(
    db: Db,
    *,
    name: str,
    email: str,
    phone: str,
    business_name: str,
    fb_business_manager_id: str,
    low_balance_threshold: int = core.DEFAULT_LOW_BALANCE_THRESHOLD,
    clock: Clock = _SYSTEM_CLOCK,
) -> dict[str, Any]:
    now_ms = clock.now_ms()
    doc = core.account_doc(
        account_id=new_id("acc", now_ms),
        name=name,
        email=email,
        phone=phone,
        business_name=business_name,
        fb_business_manager_id=fb_business_manager_id,
        low_balance_threshold=low_balance_threshold,
        now_ms=now_ms,
    )
    await db[ACCOUNTS].insert_one(doc)
    return doc


async def get_account(db: Db, account_id: str, *, erased_ok: bool = False) -> dict[str, Any]:
    doc = await db[ACCOUNTS].find_one({"_id": account_id})
    if doc is None:
        raise NotFound(f"no account {account_id}", code="unknown_account")
    if doc.get("status") == ERASED and not erased_ok:
        raise PermanentError(f"account {account_id} was erased", code="account_erased")
    return doc


async def set_account_status(db: Db, account_id: str, status: str) -> dict[str, Any]:
    if status not in ("active", "suspended"):
        raise InvalidRequest("status is active or suspended", code="invalid_field")
    await get_account(db, account_id)
    await db[ACCOUNTS].update_one({"_id": account_id}, {"$set": {"status": status}})
    return await get_account(db, account_id)


async def update_account(
    db: Db,
    account_id: str,
    *,
    customer_service_window_check: bool | None = None,
    alert_emails: list[str] | None = None,
    low_balance_threshold: int | None = None,
    guard_rules: dict[str, Any] | None = None,
    rate_limit: dict[str, Any] | str | None = None,
    max_in_flight: int | str | None = None,
) -> dict[str, Any]:
    """Change an account's settings: `customer_service_window_check` off lets free-form
    messages to contacts whose 24 h window is closed through ingest (Meta then refuses them
    with 131047, after credit was reserved). ingest sees the change within its cache time.
    `alert_emails`: where alerts go besides the account's email (notify's emails); an empty
    list clears them. `low_balance_threshold` (micros): billing alerts when the available
    credit falls below it, from its next refresh of the account (BILLING_THRESHOLD_REFRESH_S).
    `guard_rules`: the account's overrides of guard's fraud and spam rules ({rule: {threshold,
    window_seconds, minimum}}), read by guard within a minute.
    `rate_limit` (core.rate_limit's): the account's request rate at ingest, which applies it
    within its cache time; `max_in_flight`: its cap on messages accepted and not yet final
    (0: none), which billing applies from its next refresh of the account. core.DEFAULT
    removes either override (the service's default applies again)."""
    await get_account(db, account_id)
    changes: dict[str, Any] = {}
    removed: dict[str, Any] = {}
    for name, value in (("rate_limit", rate_limit), ("max_in_flight", max_in_flight)):
        if value == core.DEFAULT:
            removed[name] = ""
        elif value is not None:
            changes[name] = value
    if customer_service_window_check is not None:
        changes["customer_service_window_check"] = customer_service_window_check
    if alert_emails is not None:
        changes["alert_emails"] = core.alert_emails(",".join(alert_emails))
    if low_balance_threshold is not None:
        changes["low_balance_threshold"] = core.low_balance_threshold(low_balance_threshold)
    if guard_rules is not None:
        changes["guard_rules"] = guard_rules
    if not changes and not removed:
        raise InvalidRequest(
            "nothing to update: give a setting, e.g. "
            "--customer-service-window-check off, --alert-emails, "
            "--low-balance-threshold, --rate-limit or --max-in-flight",
            code="invalid_request",
        )
    update: dict[str, Any] = {}
    if changes:
        update["$set"] = changes
    if removed:
        update["$unset"] = removed
    await db[ACCOUNTS].update_one({"_id": account_id}, update)
    return await get_account(db, account_id)


async def list_accounts(db: Db) -> list[dict[str, Any]]:
    return await db[ACCOUNTS].find({}).sort("created_at", 1).to_list(None)


async def find_accounts_by_name(db: Db, name: str) -> list[dict[str, Any]]:
    return await db[ACCOUNTS].find({"name": name}).sort("created_at", 1).to_list(None)


async def show_account(db: Db, account_id: str) -> dict[str, Any]:
    account = await get_account(db, account_id, erased_ok=True)
    return {
        "account": account,
        "wabas": await db[WABAS].find({"account_id": account_id}).to_list(None),
        "phone_numbers": await list_numbers(db, account_id),
        "api_keys": len(await list_keys(db, account_id)),
        "balance": await show_balance(db, account_id),
    }


# --- erasure --------------------------------------------------------------------------------

ERASED = "erased"

# The account's personal data, and its clients', wherever it is kept, by who writes it (read
# from shared/collections.py's table): deleted by `account_id`.
_BY_ACCOUNT = (
    API_KEYS,
    PHONE_NUMBERS,
    WABAS,
    MESSAGES,
    IDEMPOTENCY_KEYS,
    INBOUND_MESSAGES,
    CONVERSATIONS,
    USER_PREFERENCES,
    MEDIA,
    SENDS,
    SEND_OUTCOMES,
    WAMID_INDEX,
    WEBHOOK_ENDPOINTS,
    NOTIFY_EVENTS,
    EMAIL_ALERTS,
    SUPPRESSIONS,
    BLOCKED_RECIPIENTS,
    OPT_OUT_KEYWORDS,
    ACCOUNT_HOLDS,
    GUARD_STATES,
    GUARD_RECIPIENTS,
)
# notify's per-endpoint records: by `account_id`, or by one of the account's endpoints.
_BY_ENDPOINT = (ENDPOINT_STATES, DELIVERIES, DELIVERY_ATTEMPTS)


async def erase_account(
    db: Db, account_id: str, *, pseudonym_key: bytes, clock: Clock = _SYSTEM_CLOCK
) -> dict[str, Any]:
    """Remove the account's personal data everywhere and keep its ledger under a pseudonym.

    The account must be suspended first (ingest then refuses it) and hold no reserved credit
    (no message in flight will settle). Its profile becomes a tombstone (`status: erased`,
    the pseudonym, no personal field); its keys, numbers and their tokens, WABAs, templates,
    messages and their recipients and content, idempotency records, inbound messages,
    conversations, user preferences, media records, sends, wamids, number states, tier usage,
    webhook endpoints and notify's records of them, its suppressions, blocked numbers, opt-out
    keywords, holds and guard's windows and recipient hashes are deleted; its ledger entries
    and balance are moved to the pseudonym (HMAC-SHA256 of the account id under
    HALA_PSEUDONYM_KEY), so the amounts still add up. The audit log keeps no personal data
    (arguments are redacted), so it is left as it is (append-only).

    Idempotent: a run that stopped half-way is finished by the next one, and a run after a
    finished one changes nothing (every count is 0)."""
    account = await get_account(db, account_id, erased_ok=True)
    pseudonym = keyed_hash(account_id, pseudonym_key)
    already = account.get("status") == ERASED
    if not already:
        if account.get("status") != "suspended":
            raise PermanentError(
                "suspend the account first (`hala accounts suspend`): ingest "
                "must be refusing it before its data goes",
                code="account_not_suspended",
            )
        balance = await db[BALANCES].find_one({"_id": account_id}) or {}
        if int(balance.get("reserved", 0)):
            raise PermanentError(
                "messages in flight still hold reserved credit; erase once they settle",
                code="reservations_open",
                details={"reserved": int(balance["reserved"])},
            )
    changed: dict[str, int] = {}
    if not already:
        # First: the profile goes at once, and billing's reconciler learns the pseudonym
        # before the ledger moves to it.
        await db[ACCOUNTS].replace_one(
            {"_id": account_id},
            {
                "_id": account_id,
                "status": ERASED,
                "pseudonym": pseudonym,
                "erased_at": from_ms(clock.now_ms()),
                "created_at": account.get("created_at"),
            },
        )
        changed[ACCOUNTS] = 1
    waba_ids = [d["_id"] async for d in db[WABAS].find({"account_id": account_id}, {"_id": 1})]
    phone_ids = [
        d["_id"] async for d in db[PHONE_NUMBERS].find({"account_id": account_id}, {"_id": 1})
    ]
    portfolios = [
        d["portfolio_id"]
        async for d in db[WABAS].find(
            {"account_id": account_id, "portfolio_id": {"$exists": True}}, {"portfolio_id": 1}
        )
    ]
    endpoints = [
        d["_id"] async for d in db[WEBHOOK_ENDPOINTS].find({"account_id": account_id}, {"_id": 1})
    ]
    deletions: list[tuple[str, dict[str, Any]]] = [
        (TEMPLATES, {"waba_id": {"$in": waba_ids}}),
        (NUMBER_STATES, {"_id": {"$in": [*phone_ids, *(f"waba:{w}" for w in waba_ids)]}}),
        (TIER_USAGE, {"portfolio_id": {"$in": portfolios}}),
        *(
            (
                name,
                {
                    "$or": [
                        {"account_id": account_id},
                        {"endpoint_id": {"$in": endpoints}},
                        {"_id": {"$in": endpoints}},
                    ]
                },
            )
            for name in _BY_ENDPOINT
        ),
        *((name, {"account_id": account_id}) for name in _BY_ACCOUNT),
    ]
    for name, query in deletions:
        changed[name] = (await db[name].delete_many(query)).deleted_count
    moved = await db[LEDGER].update_many(
        {"account_id": account_id}, {"$set": {"account_id": pseudonym}}
    )
    changed[LEDGER] = moved.modified_count
    balance_doc = await db[BALANCES].find_one({"_id": account_id})
    changed[BALANCES] = 0
    if balance_doc is not None:
        await db[BALANCES].replace_one(
            {"_id": pseudonym}, {**balance_doc, "_id": pseudonym}, upsert=True
        )
        await db[BALANCES].delete_one({"_id": account_id})
        changed[BALANCES] = 1
    return {
        "account_id": account_id,
        "pseudonym": pseudonym,
        "already_erased": already,
        "changed": {k: v for k, v in changed.items() if v},
        "unchanged": not any(changed.values()),
    }


# --- WABAs and phone numbers ----------------------------------------------------------------


async def register_waba(
    db: Db,
    *,
    account_id: str,
    waba_id: str,
    portfolio_id: str,
    name: str = "",
    clock: Clock = _SYSTEM_CLOCK,
) -> dict[str, Any]:
    await get_account(db, account_id)
    existing = await db[WABAS].find_one({"_id": waba_id})
    core.check_owner(existing, account_id, f"WABA {waba_id}")
    doc = core.waba_doc(
        waba_id=waba_id,
        account_id=account_id,
        portfolio_id=portfolio_id,
        name=name,
        now_ms=clock.now_ms(),
    )
    if existing is not None:
        doc["created_at"] = existing.get("created_at", doc["created_at"])
    await db[WABAS].replace_one({"_id": waba_id}, doc, upsert=True)
    return doc


async def list_wabas(db: Db, account_id: str) -> list[dict[str, Any]]:
    return await db[WABAS].find({"account_id": account_id}).to_list(None)


async def register_number(
    db: Db,
    vault: TokenVault,
    *,
    account_id: str,
    waba_id: str,
    phone_number_id: str,
    display_phone_number: str,
    access_token: str,
    throughput_mps: int = 80,
    messaging_limit: str = "TIER_UNLIMITED",
    clock: Clock = _SYSTEM_CLOCK,
) -> dict[str, Any]:
    """Register (or update) a number; the access token is stored only encrypted."""
    await get_account(db, account_id)
    waba = await db[WABAS].find_one({"_id": waba_id})
    if waba is None or waba.get("account_id") != account_id:
        raise NotFound(
            f"WABA {waba_id} is not registered to account {account_id}", code="unknown_waba"
        )
    existing = await db[PHONE_NUMBERS].find_one({"_id": phone_number_id})
    core.check_owner(existing, account_id, f"phone number {phone_number_id}")
    if not access_token.strip():
        raise InvalidRequest("the access token is empty", code="invalid_field")
    doc = core.phone_number_doc(
        phone_number_id=phone_number_id,
        account_id=account_id,
        waba=waba,
        display_phone_number=display_phone_number,
        encrypted_token=vault.encrypt(access_token.strip()),
        throughput_mps=throughput_mps,
        messaging_limit=messaging_limit,
        now_ms=clock.now_ms(),
    )
    await db[PHONE_NUMBERS].replace_one({"_id": phone_number_id}, doc, upsert=True)
    return core.phone_number_view(doc)


async def list_numbers(db: Db, account_id: str) -> list[dict[str, Any]]:
    docs = await db[PHONE_NUMBERS].find({"account_id": account_id}).to_list(None)
    return [core.phone_number_view(d) for d in docs]


# --- API keys -------------------------------------------------------------------------------


async def issue_key(
    db: Db,
    *,
    account_id: str,
    name: str = "",
    rate_limit: dict[str, Any] | None = None,
    clock: Clock = _SYSTEM_CLOCK,
) -> tuple[str, dict[str, Any]]:
    """(the key, shown once; its stored record). Only the key's sha256 is kept. `rate_limit`
    (core.rate_limit's): the key's own request rate at ingest, on top of its account's."""
    await get_account(db, account_id)
    api_key = core.api_key_from_random(secrets.token_urlsafe(24))
    doc = core.api_key_doc(api_key, account_id=account_id, name=name, now_ms=clock.now_ms())
    if rate_limit is not None:
        doc["rate_limit"] = rate_limit
    await db[API_KEYS].insert_one(doc)
    return api_key, core.key_view(doc)


async def update_key(db: Db, ident: str, *, rate_limit: dict[str, Any] | str) -> dict[str, Any]:
    """Set a key's own request rate limit, or remove it (core.DEFAULT: only the account's and
    INGEST_KEY_RATE_LIMIT_* apply). ingest applies it within its cache time."""
    docs = await db[API_KEYS].find({}).to_list(None)
    doc = core.find_key(docs, ident)
    if rate_limit == core.DEFAULT:
        doc.pop("rate_limit", None)
        await db[API_KEYS].update_one({"_id": doc["_id"]}, {"$unset": {"rate_limit": ""}})
    else:
        doc["rate_limit"] = rate_limit
        await db[API_KEYS].update_one({"_id": doc["_id"]}, {"$set": {"rate_limit": rate_limit}})
    return core.key_view(doc)


async def revoke_key(db: Db, ident: str, *, clock: Clock = _SYSTEM_CLOCK) -> dict[str, Any]:
    docs = await db[API_KEYS].find({}).to_list(None)
    doc = core.find_key(docs, ident)
    if doc.get("revoked_at") is None:
        doc["revoked_at"] = core.from_ms(clock.now_ms())
        await db[API_KEYS].update_one(
            {"_id": doc["_id"]}, {"$set": {"revoked_at": doc["revoked_at"]}}
        )
    return core.key_view(doc)


async def list_keys(db: Db, account_id: str) -> list[dict[str, Any]]:
    docs = await db[API_KEYS].find({"account_id": account_id}).sort("created_at", 1).to_list(None)
    return [core.key_view(d) for d in docs]


async def key_is_active(db: Db, api_key: str) -> bool:
    """Does this plaintext key still work? (seed_demo reuses its stored demo key.)"""
    doc = await db[API_KEYS].find_one({"_id": core.hash_api_key(api_key)})
    return doc is not None and doc.get("revoked_at") is None


def generate_encryption_key() -> str:
    return new_fernet_key()


# --- credit ---------------------------------------------------------------------------------


async def top_up(
    db: Db,
    producer: AIOKafkaProducer,
    *,
    account_id: str,
    amount: int,
    signing_key: bytes,
    operator: str = "",
    note: str = "",
    topic_prefix: str = "",
    event_id: str | None = None,
    clock: Clock = _SYSTEM_CLOCK,
) -> TopUpRequested:
    """Ask billing to add credit, as `operator`, signed with the key billing verifies. A caller
    that retries passes the same `event_id`: billing applies each event id once."""
    if amount <= 0:
        raise InvalidRequest(
            "the amount must be a positive number of micros",
            code="invalid_field",
            details={"field": "amount"},
        )
    await get_account(db, account_id)
    now_ms = clock.now_ms()
    event = sign_top_up(
        TopUpRequested(
            event_id=event_id or new_id("topup", now_ms),
            account_id=account_id,
            amount=amount,
            requested_at=now_ms,
            note=note,
            operator=operator,
        ),
        signing_key,
    )
    await publish(producer, TOPUP_REQUESTED, event, topic_prefix)
    return event


async def show_balance(db: Db, account_id: str) -> dict[str, Any]:
    doc = await db[BALANCES].find_one({"_id": account_id}) or {}
    return {
        "account_id": account_id,
        "available": int(doc.get("available", 0)),
        "reserved": int(doc.get("reserved", 0)),
        "currency": doc.get("currency"),
        "unit": "micros",
        # messages reserved and not yet final, and the cap billing applies (0: none)
        "in_flight": int(doc.get("in_flight") or 0),
        "in_flight_limit": int(doc.get("in_flight_limit") or 0),
    }


async def show_ledger(db: Db, account_id: str, limit: int = 50) -> list[dict[str, Any]]:
    return await (
        db[LEDGER]
        .find({"account_id": account_id})
        .sort("at", DESCENDING)
        .limit(limit)
        .to_list(None)
    )


# --- templates and tokens -------------------------------------------------------------------


async def sync_templates(
    db: Db, vault: TokenVault, source: TemplateSource, *, waba_id: str, clock: Clock = _SYSTEM_CLOCK
) -> dict[str, Any]:
    """Copy the WABA's templates from Meta; templates Meta no longer lists become DELETED."""
    waba = await db[WABAS].find_one({"_id": waba_id})
    if waba is None:
        raise NotFound(f"WABA {waba_id} is not registered", code="unknown_waba")
    number = await db[PHONE_NUMBERS].find_one({"waba_id": waba_id})
    if number is None or not number.get("access_token_encrypted"):
        raise PermanentError(
            f"WABA {waba_id} has no registered phone number with a token", code="no_access_token"
        )
    items = await source.list_templates(waba_id, vault.decrypt(number["access_token_encrypted"]))
    now_ms = clock.now_ms()
    docs = [core.template_doc(waba_id, item, now_ms) for item in items]
    # One write per template: FerretDB's answer to a bulk update lacks `nModified`, which
    # PyMongo's bulk_write needs (KeyError).
    for doc in docs:
        await db[TEMPLATES].replace_one({"_id": doc["_id"]}, doc, upsert=True)
    listed = [d["_id"] for d in docs]
    gone = await db[TEMPLATES].update_many(
        {"waba_id": waba_id, "_id": {"$nin": listed}, "status": {"$ne": "DELETED"}},
        {"$set": {"status": "DELETED", "synced_at": core.from_ms(now_ms)}},
    )
    by_status: dict[str, int] = {}
    for d in docs:
        by_status[d["status"]] = by_status.get(d["status"], 0) + 1
    return {
        "waba_id": waba_id,
        "synced": len(docs),
        "deleted": gone.modified_count,
        "by_status": by_status,
    }


async def list_templates(db: Db, waba_id: str) -> list[dict[str, Any]]:
    return await db[TEMPLATES].find({"waba_id": waba_id}).sort("_id", 1).to_list(None)


async def rotate_tokens(db: Db, vault: TokenVault) -> dict[str, int]:
    """Re-encrypt every access token, and every webhook endpoint secret, under the newest key
    (then the old key can be dropped)."""
    rotated = 0
    async for doc in db[PHONE_NUMBERS].find(
        {"access_token_encrypted": {"$exists": True}}, {"access_token_encrypted": 1}
    ):
        fresh = vault.rotate(doc["access_token_encrypted"])
        await db[PHONE_NUMBERS].update_one(
            {"_id": doc["_id"]}, {"$set": {"access_token_encrypted": fresh}}
        )
        rotated += 1
    secrets_rotated = 0
    async for doc in db[WEBHOOK_ENDPOINTS].find({}, {"secrets": 1}):
        secrets = [
            {**entry, "encrypted": vault.rotate(entry["encrypted"])}
            for entry in doc.get("secrets", [])
        ]
        if secrets:
            await db[WEBHOOK_ENDPOINTS].update_one(
                {"_id": doc["_id"]}, {"$set": {"secrets": secrets}}
            )
            secrets_rotated += len(secrets)
    return {"rotated": rotated, "webhook_secrets_rotated": secrets_rotated}


# --- dead letters ---------------------------------------------------------------------------


async def dlq_topics(kafka: KafkaConfig, prefix: str) -> list[str]:
    """The platform's dead-letter topics (with the prefix) that exist on the broker."""
    admin = make_admin(kafka)
    await admin.start()
    try:
        return core.dlq_topic_names(prefix, await admin.list_topics())
    finally:
        await admin.close()


async def partitions_of(kafka: KafkaConfig, topics: list[str]) -> dict[str, list[int]]:
    """Each existing topic's partition numbers (a consumer without a group learns them only
    for topics it was assigned)."""
    if not topics:
        return {}
    admin = make_admin(kafka)
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    return {
        d["topic"]: sorted(p["partition"] for p in d["partitions"])
        for d in described
        if d["error_code"] == 0
    }


async def list_dead_letters(db: Db, kafka: KafkaConfig, prefix: str) -> list[dict[str, Any]]:
    """Every dead-letter topic with how many records it holds and how many were replayed."""
    topics = await dlq_topics(kafka, prefix)
    numbers = await partitions_of(kafka, topics)
    consumer = make_consumer(kafka, None)
    await consumer.start()
    try:
        listed = []
        for topic in topics:
            partitions = [TopicPartition(topic, p) for p in numbers.get(topic, [])]
            begins = await consumer.beginning_offsets(partitions)
            ends = await consumer.end_offsets(partitions)
            listed.append(
                {
                    "topic": topic,
                    "source_topic": topic.removesuffix(".dlq"),
                    "records": sum(ends[tp] - begins[tp] for tp in partitions),
                    "replayed": await db[DLQ_REPLAYS].count_documents(
                        {"dlq_topic": topic, "state": "replayed"}
                    ),
                }
            )
        return listed
    finally:
        await consumer.stop()


async def read_dead_letters(
    kafka: KafkaConfig,
    topic: str,
    *,
    offset: int | None = None,
    limit: int | None = None,
    partition: int | None = None,
    timeout_s: float = 30.0,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Records of `topic` from `offset` on (default: the oldest kept), at most `limit`, up to
    the end the partitions had when called."""
    numbers = (await partitions_of(kafka, [topic])).get(topic, [])
    consumer = make_consumer(kafka, None)
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        if partition is not None:
            if partition not in numbers:
                raise NotFound(f"{topic} has no partition {partition}", code="unknown_partition")
            numbers = [partition]
        deadline = time.monotonic() + timeout_s
        for number in numbers:
            tp = TopicPartition(topic, number)
            consumer.assign([tp])
            begin = (await consumer.beginning_offsets([tp]))[tp]
            end = (await consumer.end_offsets([tp]))[tp]
            first = max(begin, offset or 0)
            if first >= end:
                continue
            consumer.seek(tp, first)
            while await consumer.position(tp) < end:
                if limit is not None and len(records) >= limit:
                    return records
                if time.monotonic() > deadline:
                    raise DependencyUnavailable(
                        f"{topic}: read timed out", details={"dependency": "kafka"}
                    )
                batch = await consumer.getmany(tp, timeout_ms=500)
                for record in batch.get(tp, []):
                    if record.offset < end and (limit is None or len(records) < limit):
                        records.append(record)
        return records
    finally:
        await consumer.stop()


async def show_dead_letters(
    db: Db,
    kafka: KafkaConfig,
    prefix: str,
    topic: str,
    *,
    offset: int | None = None,
    limit: int = 20,
    partition: int | None = None,
    traceback_lines: int | None = core.TRACEBACK_LINES,
) -> list[dict[str, Any]]:
    name = core.resolve_dlq_topic(topic, prefix, await dlq_topics(kafka, prefix))
    records = await read_dead_letters(kafka, name, offset=offset, limit=limit, partition=partition)
    ids = [core.position_id(r.topic, r.partition, r.offset) for r in records]
    replays = {d["_id"]: d async for d in db[DLQ_REPLAYS].find({"_id": {"$in": ids}})}
    return [
        core.describe_dead_letter(
            r.topic,
            r.partition,
            r.offset,
            r.timestamp,
            r.key,
            r.value,
            list(r.headers or ()),
            replay=_replay_view(replays.get(i)),
            traceback_lines=traceback_lines,
        )
        for r, i in zip(records, ids, strict=True)
    ]


def _replay_view(doc: dict[str, Any] | None) -> dict[str, Any] | None:
    if doc is None:
        return None
    return {k: doc.get(k) for k in ("state", "replayed_to", "started_at", "replayed_at")}


async def replay_dead_letters(
    db: Db,
    producer: AIOKafkaProducer,
    kafka: KafkaConfig,
    prefix: str,
    topic: str,
    *,
    offset: int | None = None,
    replay_all: bool = False,
    partition: int | None = None,
    dry_run: bool = False,
    clock: Clock = _SYSTEM_CLOCK,
) -> list[dict[str, Any]]:
    """Write dead letters back to their source topic (same partition, original key, value and
    headers plus `replayed_from`), each at most once: `dlq_replays` records every one, under
    the dead letter's position and, unique too, the original record's."""
    if (offset is None) == (not replay_all):
        raise InvalidRequest(
            "name one dead letter (--offset) or all of them (--all)", code="invalid_field"
        )
    name = core.resolve_dlq_topic(topic, prefix, await dlq_topics(kafka, prefix))
    records = await read_dead_letters(
        kafka, name, offset=offset, limit=1 if offset is not None else None, partition=partition
    )
    if offset is not None:
        records = [r for r in records if r.offset == offset]
        if not records:
            raise NotFound(f"no dead letter at {name} offset {offset}", code="unknown_dead_letter")
    results = []
    for record in records:
        plan = core.replay_plan(name, record.partition, record.offset, list(record.headers or ()))
        result: dict[str, Any] = {
            "dead_letter": plan.id,
            "source": plan.source,
            "topic": plan.topic,
        }
        earlier = await db[DLQ_REPLAYS].find_one(
            {"$or": [{"_id": plan.id}, {"source": plan.source}]}
        )
        if earlier is not None:
            results.append(
                {**result, "outcome": "already_replayed", "replayed": _replay_view(earlier)}
            )
            continue
        if dry_run:
            results.append({**result, "outcome": "would_replay"})
            continue
        try:  # the claim: a second replay of the same record, even concurrent, stops here
            await db[DLQ_REPLAYS].insert_one(
                {**core.replay_doc(plan, now_ms=clock.now_ms()), "dlq_topic": name}
            )
        except DuplicateKeyError:
            results.append({**result, "outcome": "already_replayed"})
            continue
        try:
            written = await producer.send_and_wait(
                plan.topic,
                value=record.value,
                key=record.key,
                headers=plan.headers,
                partition=plan.partition,
            )
        except KafkaError:
            await db[DLQ_REPLAYS].delete_one({"_id": plan.id})  # not written: may be retried
            raise
        replayed_to = core.position_id(plan.topic, written.partition, written.offset)
        await db[DLQ_REPLAYS].update_one(
            {"_id": plan.id},
            {
                "$set": {
                    "state": "replayed",
                    "replayed_to": replayed_to,
                    "replayed_at": core.from_ms(clock.now_ms()),
                }
            },
        )
        results.append({**result, "outcome": "replayed", "replayed_to": replayed_to})
    return results
