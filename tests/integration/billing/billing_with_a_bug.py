"""billing as `python -m services.billing` runs it, with one bug planted in a real dependency
(tests only): the ledger raises right after writing the entry of the message named by
BILLING_TEST_BUGGY_MESSAGE_ID, as a bug between the entry and the balance would. Run as
`python -m tests.integration.billing.billing_with_a_bug`."""

from __future__ import annotations

import os
from collections.abc import Sequence

from services.billing import app
from services.billing.__main__ import main
from services.billing.core import LedgerEntry
from services.billing.ledger import Ledger

MARKED = os.environ["BILLING_TEST_BUGGY_MESSAGE_ID"]


class LedgerWithABug(Ledger):
    async def add(self, entry: LedgerEntry) -> LedgerEntry | None:
        stored = await super().add(entry)
        if entry.message_id == MARKED:
            raise RuntimeError(f"a bug after writing {entry.key}")
        return stored

    async def add_all(self, entries: Sequence[LedgerEntry]) -> set[str]:
        taken = await super().add_all(entries)
        if any(entry.message_id == MARKED for entry in entries):
            raise RuntimeError("a bug after writing a batch's entries")
        return taken


app.Ledger = LedgerWithABug  # type: ignore[misc]

if __name__ == "__main__":
    main()
