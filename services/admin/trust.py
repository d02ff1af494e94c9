"""`hala suppressions`, `hala blocks`, `hala accounts update --opt-out-keywords` and `hala
accounts release`: an operator manages an account's marketing suppressions, block list,
opt-out keywords and fraud holds, with the rules the client API keeps (shared/opt_out.py,
shared/contact_lists.py, shared/holds.py).

Each list keeps its one writer: a suppression change and a release are published (status
applies suppressions, guard applies releases), as top-ups are; blocks and keyword lists are
written here and by ingest's API (inserts, deletes and whole-document replaces only).

Async functions over a database and a producer passed in (like commands.py), so tests call
them without a subprocess.
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaProducer
from pymongo import DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from services.admin.commands import get_account
from shared import contact_lists, holds, opt_out
from shared.clock import Clock, SystemClock
from shared.collections import (
    ACCOUNT_HOLDS,
    BLOCKED_RECIPIENTS,
    OPT_OUT_KEYWORDS,
    PHONE_NUMBERS,
    SUPPRESSIONS,
)
from shared.errors import InvalidRequest, NotFound, PermanentError
from shared.ids import new_id
from shared.kafka import publish
from shared.messages import (
    ACCOUNT_RELEASE_REQUESTED,
    HOLD_RULES,
    SUPPRESSION_CHANGE_REQUESTED,
    AccountReleaseRequested,
    SuppressionChangeRequested,
)
from shared.phone import parse_e164, wa_id_of

Db = AsyncDatabase[dict[str, Any]]
Doc = dict[str, Any]
_SYSTEM_CLOCK = SystemClock()
# `--opt-out-keywords default` puts a list back to the defaults.
DEFAULT_WORD = "default"


def recipient(text: str) -> str:
    """An operator's number in international form (`+` optional) as E.164."""
    raw = text.strip()
    try:
        return parse_e164(raw if raw.startswith("+") else "+" + raw)[0]
    except InvalidRequest:
        raise InvalidRequest(
            f"--recipient {text!r} is not a phone number in international form, e.g. +447700900123",
            code="invalid_phone_number",
            details={"field": "recipient"},
        ) from None


async def _own_number(db: Db, account_id: str, phone_number_id: str) -> Doc:
    number = await db[PHONE_NUMBERS].find_one(
        {"_id": phone_number_id}, {"account_id": 1, "waba_id": 1}
    )
    if number is None or number.get("account_id") != account_id:
        raise NotFound(
            f"phone number {phone_number_id} is not registered to account {account_id}",
            code="unknown_phone_number",
        )
    return number


# --- suppressions ---------------------------------------------------------------------------


async def list_suppressions(
    db: Db, account_id: str, *, phone_number_id: str | None = None, limit: int = 50
) -> list[Doc]:
    """The account's suppressed contacts, latest first."""
    await get_account(db, account_id)
    query: Doc = {"account_id": account_id, "suppressed": True}
    if phone_number_id is not None:
        query["phone_number_id"] = phone_number_id
    docs = await (
        db[SUPPRESSIONS]
        .find(query)
        .sort([("at", DESCENDING), ("_id", DESCENDING)])
        .limit(limit)
        .to_list(None)
    )
    return [contact_lists.suppression_view(d) for d in docs]


async def change_suppression(
    db: Db,
    producer: AIOKafkaProducer,
    *,
    account_id: str,
    phone_number_id: str,
    recipient_text: str,
    suppressed: bool,
    note: str = "",
    operator: str = "",
    topic_prefix: str = "",
    clock: Clock = _SYSTEM_CLOCK,
) -> Doc:
    """Suppress (or resubscribe) a contact of one of the account's numbers: published for
    status, which applies it within a second or two (the latest change wins, whoever makes
    it)."""
    await get_account(db, account_id)
    number = await _own_number(db, account_id, phone_number_id)
    e164 = recipient(recipient_text)
    now_ms = clock.now_ms()
    event = SuppressionChangeRequested(
        event_id=new_id("supr", now_ms),
        account_id=account_id,
        waba_id=str(number["waba_id"]),
        phone_number_id=phone_number_id,
        wa_id=wa_id_of(e164),
        suppressed=suppressed,
        source="operator",
        note=note[: contact_lists.MAX_NOTE_CHARS],
        operator=operator,
        requested_at=now_ms,
    )
    await publish(producer, SUPPRESSION_CHANGE_REQUESTED, event, topic_prefix)
    return {
        "request_id": event.event_id,
        "account_id": account_id,
        "phone_number_id": phone_number_id,
        "recipient": e164,
        "suppressed": suppressed,
        "note": "status applies it shortly; see `hala suppressions list`",
    }


# --- blocks ---------------------------------------------------------------------------------


async def list_blocks(db: Db, account_id: str, *, limit: int = 50) -> list[Doc]:
    await get_account(db, account_id)
    docs = await (
        db[BLOCKED_RECIPIENTS]
        .find(contact_lists.blocked_entries(account_id))
        .sort([("created_at", DESCENDING), ("_id", DESCENDING)])
        .limit(limit)
        .to_list(None)
    )
    return [contact_lists.blocked_view(d) for d in docs]


async def block(
    db: Db, *, account_id: str, recipient_text: str, note: str = "", clock: Clock = _SYSTEM_CLOCK
) -> Doc:
    """Block a number for the account (every ingest refuses sends to it within its cache
    time, 2 s by default). Blocking a blocked number changes nothing."""
    await get_account(db, account_id)
    e164 = recipient(recipient_text)
    now_ms = clock.now_ms()
    doc = contact_lists.blocked_doc(
        account_id=account_id, e164=e164, note=note, source="operator", now_ms=now_ms
    )
    try:  # the account's marker first (shared/contact_lists.py)
        await db[BLOCKED_RECIPIENTS].insert_one(contact_lists.blocks_marker_doc(account_id, now_ms))
    except DuplicateKeyError:
        pass
    try:
        await db[BLOCKED_RECIPIENTS].insert_one(doc)
        created = True
    except DuplicateKeyError:
        doc = await db[BLOCKED_RECIPIENTS].find_one({"_id": doc["_id"]}) or doc
        created = False
    return {"account_id": account_id, "created": created, **contact_lists.blocked_view(doc)}


async def unblock(db: Db, *, account_id: str, recipient_text: str) -> Doc:
    await get_account(db, account_id)
    e164 = recipient(recipient_text)
    result = await db[BLOCKED_RECIPIENTS].delete_one(
        {"_id": contact_lists.blocked_id(account_id, e164)}
    )
    if not result.deleted_count:
        raise NotFound(f"{e164} is not on account {account_id}'s block list", code="not_blocked")
    return {"account_id": account_id, "recipient": e164, "unblocked": True}


# --- opt-out keywords -----------------------------------------------------------------------


def keyword_list(text: str | None) -> list[str] | None:
    """`--opt-out-keywords`: comma-separated words (as written), `default` for the defaults,
    an empty string for none."""
    if text is None or text.strip().lower() == DEFAULT_WORD:
        return None
    return [word for word in (part.strip() for part in text.split(",")) if word]


async def show_keywords(db: Db, account_id: str) -> Doc:
    return opt_out.config_view(
        opt_out.config_of(await db[OPT_OUT_KEYWORDS].find_one({"_id": account_id}))
    )


async def set_keywords(
    db: Db,
    account_id: str,
    *,
    opt_out_text: str | None,
    opt_in_text: str | None,
    clock: Clock = _SYSTEM_CLOCK,
) -> Doc:
    """Replace the account's keyword lists; a list not given keeps its current value."""
    await get_account(db, account_id)
    current = opt_out.config_of(await db[OPT_OUT_KEYWORDS].find_one({"_id": account_id}))
    out = current.opt_out if opt_out_text is None else keyword_list(opt_out_text)
    into = current.opt_in if opt_in_text is None else keyword_list(opt_in_text)
    try:
        made = opt_out.config(out, into)
    except opt_out.KeywordError as exc:
        raise InvalidRequest(
            exc.message, code="invalid_field", details={"field": exc.field, "keyword": exc.keyword}
        ) from None
    doc = opt_out.config_doc(account_id, made, clock.now_ms())
    try:
        await db[OPT_OUT_KEYWORDS].replace_one({"_id": account_id}, doc, upsert=True)
    except DuplicateKeyError:  # ingest's API created it meanwhile: replace that one
        await db[OPT_OUT_KEYWORDS].replace_one({"_id": account_id}, doc)
    return opt_out.config_view(made)


# --- guard's rules, per account -------------------------------------------------------------

RULE_FIELDS = ("threshold", "window_seconds", "minimum")


def guard_rule_overrides(current: Any, settings: list[str]) -> dict[str, dict[str, float]]:
    """`--guard-rule failure_rate.threshold=0.8` (repeatable; `failure_rate=default` drops the
    rule's overrides): the account's `guard_rules` after them. guard reads them within a
    minute."""
    rules: dict[str, dict[str, float]] = {
        str(k): dict(v) for k, v in (current or {}).items() if isinstance(v, dict)
    }
    for setting in settings:
        name, _, value = setting.partition("=")
        rule, _, field = name.strip().partition(".")
        if rule not in HOLD_RULES:
            raise InvalidRequest(
                f"--guard-rule: no rule {rule!r} (one of {', '.join(HOLD_RULES)})",
                code="invalid_field",
                details={"field": "guard_rule"},
            )
        if not field and value.strip() == DEFAULT_WORD:
            rules.pop(rule, None)
            continue
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if field not in RULE_FIELDS or number < 0:
            raise InvalidRequest(
                f"--guard-rule {setting!r}: give RULE.FIELD=NUMBER with FIELD "
                f"one of {', '.join(RULE_FIELDS)}, or RULE=default",
                code="invalid_field",
                details={"field": "guard_rule"},
            )
        rules.setdefault(rule, {})[field] = int(number) if field != "threshold" else number
    return rules


# --- holds ----------------------------------------------------------------------------------


async def show_hold(db: Db, account_id: str) -> Doc:
    return holds.hold_view(await db[ACCOUNT_HOLDS].find_one({"_id": account_id}))


async def release(
    db: Db,
    producer: AIOKafkaProducer,
    *,
    account_id: str,
    reason: str,
    operator: str = "",
    topic_prefix: str = "",
    clock: Clock = _SYSTEM_CLOCK,
) -> Doc:
    """Release an account held by the fraud and spam rules: published for guard (the holds'
    only writer), which clears the hold and starts the rules' windows afresh; ingest accepts
    the account's sends again within its cache time."""
    if not reason.strip():
        raise InvalidRequest(
            "say why the hold is released (--reason)",
            code="invalid_field",
            details={"field": "reason"},
        )
    await get_account(db, account_id)
    current = await show_hold(db, account_id)
    if not current["held"]:
        raise PermanentError(f"account {account_id} is not held", code="not_held")
    now_ms = clock.now_ms()
    event = AccountReleaseRequested(
        event_id=new_id("rel", now_ms),
        account_id=account_id,
        reason=reason.strip()[:500],
        operator=operator,
        requested_at=now_ms,
    )
    await publish(producer, ACCOUNT_RELEASE_REQUESTED, event, topic_prefix)
    return {
        "request_id": event.event_id,
        "account_id": account_id,
        "released_rules": [r["rule"] for r in current["rules"]],
        "note": "guard applies it shortly; see `hala accounts show`",
    }
