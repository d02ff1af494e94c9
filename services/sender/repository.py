"""MongoDB access of the sender: `sends`, `send_outcomes` and `tier_usage` (written only here),
`phone_numbers` (read, cached briefly).

`sends` (_id = message_id): state sending|expired|failed, phone_number_id, account_id, error
{code, title, details}, reason, attempts, created_at, updated_at (ms). The insert of `sending`
before a Graph API call is the guard against sending twice: its unique _id turns a second
attempt into a duplicate-key error. An outcome reached without calling Meta (expired, number not
configured) is inserted here directly, in place of the guard.

`send_outcomes` (_id = message_id): the outcome of an attempt: state sent|failed|unknown,
phone_number_id, account_id, wamid, error, reason, attempts, updated_at. A separate document
inserted (not an update of the guard) because inserts are written in batches: on FerretDB an
insert_many of a hundred documents costs about what one update does, and updates cannot be
batched there. The outcome, when there is one, is what a message's record says.

`tier_usage` (_id = portfolio:recipient key): portfolio_id, recipient (a keyed hash of the
number, never the number), last_at (ms). Entries past the tier's 24 h window are deleted by
retention.py.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, PyMongoError

from shared.clock import Clock
from shared.collections import PHONE_NUMBERS, SEND_OUTCOMES, SENDS, TIER_USAGE
from shared.errors import PermanentError
from shared.mongo import InsertBatcher, unavailable
from shared.secrets import TokenVault

TERMINAL_STATES = frozenset({"sent", "failed", "expired", "unknown"})


@dataclass(frozen=True)
class SendRecord:
    message_id: str
    state: str
    wamid: str | None = None
    error: dict[str, Any] | None = None
    reason: str | None = None
    attempts: int = 0

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> SendRecord:
        return cls(
            doc["_id"],
            doc.get("state", "sending"),
            doc.get("wamid"),
            doc.get("error"),
            doc.get("reason"),
            int(doc.get("attempts", 0)),
        )


@dataclass(frozen=True)
class PhoneNumber:
    id: str
    account_id: str
    waba_id: str
    portfolio_id: str
    throughput_mps: int
    messaging_limit: str
    status: str  # active | held
    # The ciphertext identifies the token: when an operator replaces it, this changes.
    token_fingerprint: str
    access_token: str | None = field(repr=False)  # None: it could not be decrypted
    token_problem: str | None = None


class SenderRepository:
    def __init__(self, db: AsyncDatabase[dict[str, Any]], vault: TokenVault) -> None:
        self._sends = db[SENDS]
        self._send_inserts = InsertBatcher(self._sends)
        self._outcomes = db[SEND_OUTCOMES]
        # Outcomes are off the path to Meta: waiting 10 ms for company costs no throughput.
        self._outcome_inserts = InsertBatcher(self._outcomes, max_batch=500, linger_seconds=0.01)
        # Updates (rare now: a transient error's attempt count, a late outcome replacing
        # `unknown`) cannot be batched on FerretDB; a few at a time keep them from queueing
        # ahead of the inserts that the next requests to Meta wait for.
        self._update_slots = asyncio.Semaphore(16)
        self._tier_usage = db[TIER_USAGE]
        self._phone_numbers = db[PHONE_NUMBERS]
        self._vault = vault

    # -- sends -----------------------------------------------------------------------------------

    async def find_send(self, message_id: str) -> SendRecord | None:
        """What is recorded of a message: its outcome if it has one, else its `sends` record."""
        try:
            doc = await self._outcomes.find_one({"_id": message_id}) or await self._sends.find_one(
                {"_id": message_id}
            )
        except PyMongoError as exc:
            raise unavailable(exc) from exc
        return SendRecord.from_doc(doc) if doc else None

    async def record_outcome(
        self,
        message_id: str,
        state: str,
        *,
        phone_number_id: str,
        account_id: str,
        attempts: int,
        now_ms: int,
        wamid: str | None = None,
        error: dict[str, Any] | None = None,
        reason: str | None = None,
    ) -> SendRecord | None:
        """Record the outcome of an attempt (its `sending` record exists). None: recorded. A
        record: an outcome was there already and stays (only `unknown` gives way to what Meta
        actually answered)."""
        doc = {
            "_id": message_id,
            "state": state,
            "phone_number_id": phone_number_id,
            "account_id": account_id,
            "attempts": attempts,
            "wamid": wamid,
            "error": error,
            "reason": reason,
            "updated_at": now_ms,
        }
        if await self._outcome_inserts.insert(doc):
            return None
        try:
            existing = await self._outcomes.find_one({"_id": message_id})
            if existing is None or (existing.get("state") == "unknown" and state != "unknown"):
                async with self._update_slots:
                    await self._outcomes.replace_one({"_id": message_id}, doc, upsert=True)
                return None
        except DuplicateKeyError:
            return None  # a concurrent upsert of the same outcome won
        except PyMongoError as exc:
            raise unavailable(exc) from exc
        return SendRecord.from_doc(existing)

    async def start_send(
        self, message_id: str, *, phone_number_id: str, account_id: str, now_ms: int
    ) -> SendRecord | None:
        """Record `sending` before calling Meta. None: go ahead. A record: this message was
        already attempted (by us earlier or by a previous owner) - do not send it again."""
        return await self._insert_or_existing(
            {
                "_id": message_id,
                "state": "sending",
                "phone_number_id": phone_number_id,
                "account_id": account_id,
                "attempts": 0,
                "created_at": now_ms,
                "updated_at": now_ms,
            }
        )

    async def record_unsent_outcome(
        self,
        message_id: str,
        state: str,
        *,
        phone_number_id: str,
        account_id: str,
        now_ms: int,
        reason: str | None = None,
        error: dict[str, Any] | None = None,
    ) -> SendRecord | None:
        """A terminal state reached without calling Meta (expired). None: recorded; a record:
        an earlier outcome exists and wins."""
        return await self._insert_or_existing(
            {
                "_id": message_id,
                "state": state,
                "phone_number_id": phone_number_id,
                "account_id": account_id,
                "attempts": 0,
                "reason": reason,
                "error": error,
                "created_at": now_ms,
                "updated_at": now_ms,
            }
        )

    async def _insert_or_existing(self, doc: dict[str, Any]) -> SendRecord | None:
        if await self._send_inserts.insert(doc):
            return None
        existing = await self.find_send(doc["_id"])
        # Deleted between the two calls (an abandoned attempt): report it as still sending,
        # the caller then treats the outcome as unknown rather than sending again.
        return existing or SendRecord(doc["_id"], "sending")

    async def update_send(
        self,
        message_id: str,
        *,
        state: str,
        attempts: int,
        now_ms: int,
        wamid: str | None = None,
        error: dict[str, Any] | None = None,
        reason: str | None = None,
    ) -> None:
        update = {
            "state": state,
            "attempts": attempts,
            "updated_at": now_ms,
            "wamid": wamid,
            "error": error,
            "reason": reason,
        }
        try:
            async with self._update_slots:
                await self._sends.update_one({"_id": message_id}, {"$set": update})
        except PyMongoError as exc:
            raise unavailable(exc) from exc

    async def abandon_send(self, message_id: str) -> None:
        """Forget a `sending` record whose request never left us (the message goes back to the
        queue; a later attempt inserts it again)."""
        try:
            await self._sends.delete_one({"_id": message_id, "state": "sending"})
        except PyMongoError as exc:
            raise unavailable(exc) from exc

    # -- tier usage ------------------------------------------------------------------------------

    async def load_tier_usage(self, portfolio_id: str, since_ms: int) -> list[tuple[str, int]]:
        try:
            cursor = self._tier_usage.find(
                {"portfolio_id": portfolio_id, "last_at": {"$gt": since_ms}},
                {"recipient": 1, "last_at": 1},
            )
            return [(doc["recipient"], int(doc["last_at"])) async for doc in cursor]
        except PyMongoError as exc:
            raise unavailable(exc) from exc

    async def record_tier_use(self, portfolio_id: str, recipient: str, at_ms: int) -> None:
        try:
            await self._tier_usage.update_one(
                {"_id": f"{portfolio_id}:{recipient}"},
                {"$set": {"portfolio_id": portfolio_id, "recipient": recipient, "last_at": at_ms}},
                upsert=True,
            )
        except DuplicateKeyError:
            pass  # a concurrent upsert of the same key won; its time is as good as ours
        except PyMongoError as exc:
            raise unavailable(exc) from exc

    async def delete_tier_usage_before(self, cutoff_ms: int) -> int:
        """Forget recipients last sent to before `cutoff_ms` (past the tier's 24 h window)."""
        try:
            result = await self._tier_usage.delete_many({"last_at": {"$lt": cutoff_ms}})
        except PyMongoError as exc:
            raise unavailable(exc) from exc
        return result.deleted_count

    # -- phone numbers ---------------------------------------------------------------------------

    async def load_phone_number(self, phone_number_id: str) -> PhoneNumber | None:
        try:
            doc = await self._phone_numbers.find_one({"_id": phone_number_id})
        except PyMongoError as exc:
            raise unavailable(exc) from exc
        return None if doc is None else self._phone_number(doc)

    def _phone_number(self, doc: dict[str, Any]) -> PhoneNumber:
        encrypted = str(doc.get("access_token_encrypted") or "")
        token: str | None = None
        problem: str | None = None
        if not encrypted:
            problem = "token_missing"
        else:
            try:
                token = self._vault.decrypt(encrypted)
            except PermanentError as exc:
                problem = exc.code
        return PhoneNumber(
            id=str(doc["_id"]),
            account_id=str(doc.get("account_id", "")),
            waba_id=str(doc.get("waba_id", "")),
            portfolio_id=str(doc.get("portfolio_id", "")),
            throughput_mps=int(doc.get("throughput_mps") or 80),
            messaging_limit=str(doc.get("messaging_limit") or "TIER_UNLIMITED"),
            status=str(doc.get("status") or "active"),
            token_fingerprint=encrypted,
            access_token=token,
            token_problem=problem,
        )


class PhoneNumberDirectory:
    """Phone numbers read through a short-lived cache: a replaced token or a changed status is
    seen within `refresh_seconds`, without a database read per message."""

    def __init__(
        self, repository: SenderRepository, clock: Clock, refresh_seconds: float = 30.0
    ) -> None:
        self._repository = repository
        self._clock = clock
        self._refresh = refresh_seconds
        self._cache: dict[str, tuple[float, PhoneNumber | None]] = {}

    async def get(self, phone_number_id: str) -> PhoneNumber | None:
        cached = self._cache.get(phone_number_id)
        now = self._clock.monotonic()
        if cached is not None and now - cached[0] < self._refresh:
            return cached[1]
        number = await self._repository.load_phone_number(phone_number_id)
        self._cache[phone_number_id] = (now, number)
        return number

    def peek(self, phone_number_id: str) -> PhoneNumber | None:
        cached = self._cache.get(phone_number_id)
        return cached[1] if cached else None
