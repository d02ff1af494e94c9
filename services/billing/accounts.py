"""Reads of `accounts` (the admin CLI's collection) that billing needs: each account's own
low-balance threshold (`low_balance_threshold`, micros, set by `hala accounts create/update
--low-balance-threshold`; the threshold billing applied is kept on the balance document), and
which accounts were erased and the pseudonym their ledger and balance are kept under since
(`hala accounts erase`). billing only reads them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from services.billing.mongo_errors import translated
from shared.collections import ACCOUNTS


class AccountThresholds:
    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self._accounts = db[ACCOUNTS]

    async def thresholds(self, account_ids: Sequence[str]) -> dict[str, int]:
        """The thresholds the accounts set, by account id (an account without one, or unknown
        here, is left out: billing's default applies)."""
        # Lookups by _id, all in flight at once: FerretDB pushes only a lone _id filter down.
        with translated():
            found = await asyncio.gather(*(
                self._accounts.find_one({"_id": account_id}, {"low_balance_threshold": 1})
                for account_id in account_ids))
        return {doc["_id"]: int(doc["low_balance_threshold"]) for doc in found
                if doc is not None and isinstance(doc.get("low_balance_threshold"), int)
                and not isinstance(doc.get("low_balance_threshold"), bool)
                and doc["low_balance_threshold"] >= 0}


class MongoErasedAccounts:
    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self._accounts = db[ACCOUNTS]

    async def pseudonyms(self) -> dict[str, str]:
        with translated():
            docs = await self._accounts.find(
                {"status": "erased", "pseudonym": {"$exists": True}},
                {"pseudonym": 1}).to_list(None)
        return {str(d["_id"]): str(d["pseudonym"]) for d in docs}
