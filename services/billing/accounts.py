"""Reads of the admin CLI's `accounts` that billing needs: which accounts were erased, and the
pseudonym their ledger and balance are kept under since (`hala accounts erase`)."""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from services.billing.mongo_errors import translated
from shared.collections import ACCOUNTS


class MongoErasedAccounts:
    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self._accounts = db[ACCOUNTS]

    async def pseudonyms(self) -> dict[str, str]:
        with translated():
            docs = await self._accounts.find(
                {"status": "erased", "pseudonym": {"$exists": True}},
                {"pseudonym": 1}).to_list(None)
        return {str(d["_id"]): str(d["pseudonym"]) for d in docs}
