"""`billing_checkpoints`: where billing's periodic jobs got to, one document per job, written
only by billing (the reservation sweeper's position, the reconciler's position and the totals
of everything before it). A job reads its document at the start of a run and replaces it after
each page, so a restart resumes from the last page finished: no run reads the whole ledger
again."""

from __future__ import annotations

from typing import Any, Protocol

from pymongo.asynchronous.database import AsyncDatabase

from services.billing.mongo_errors import translated
from shared.collections import BILLING_CHECKPOINTS

Doc = dict[str, Any]


class CheckpointStore(Protocol):
    async def load(self, job: str) -> Doc | None: ...

    async def save(self, job: str, state: Doc) -> None: ...


class MongoCheckpoints:
    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self._docs = db[BILLING_CHECKPOINTS]

    async def load(self, job: str) -> Doc | None:
        with translated():
            doc = await self._docs.find_one({"_id": job})
        if doc is None:
            return None
        doc.pop("_id", None)
        return doc

    async def save(self, job: str, state: Doc) -> None:
        with translated():
            await self._docs.replace_one({"_id": job}, {"_id": job, **state}, upsert=True)
