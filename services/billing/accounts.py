"""Reads of `accounts` (the admin CLI's collection) that billing needs: each account's own
low-balance threshold (`low_balance_threshold`, micros, set by `hala accounts create/update
--low-balance-threshold`) and cap on messages in flight (`max_in_flight`, set by `hala accounts
update --max-in-flight`; what billing applied of both is kept on the balance document), and
which accounts were erased and the pseudonym their ledger and balance are kept under since
(`hala accounts erase`). billing only reads them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from services.billing.mongo_errors import translated
from services.billing.worker import AccountSettings
from shared.collections import ACCOUNTS


class AccountThresholds:
    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self._accounts = db[ACCOUNTS]

    async def settings(self, account_ids: Sequence[str]) -> dict[str, AccountSettings]:
        """What the accounts set, by account id (a setting an account does not have, or one
        that cannot be read, is None: billing's default applies; unknown accounts are left
        out)."""
        # Lookups by _id, all in flight at once: FerretDB pushes only a lone _id filter down.
        with translated():
            found = await asyncio.gather(
                *(
                    self._accounts.find_one(
                        {"_id": account_id}, {"low_balance_threshold": 1, "max_in_flight": 1}
                    )
                    for account_id in account_ids
                )
            )
        return {
            doc["_id"]: AccountSettings(
                _count(doc.get("low_balance_threshold")), _count(doc.get("max_in_flight"))
            )
            for doc in found
            if doc is not None
        }


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


class MongoErasedAccounts:
    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self._accounts = db[ACCOUNTS]

    async def pseudonyms(self) -> dict[str, str]:
        with translated():
            docs = await self._accounts.find(
                {"status": "erased", "pseudonym": {"$exists": True}}, {"pseudonym": 1}
            ).to_list(None)
        return {str(d["_id"]): str(d["pseudonym"]) for d in docs}
