"""billing: the single writer of prepaid credit balances and the ledger (faust-streaming)."""
