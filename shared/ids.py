"""Identifiers: sortable, URL-safe, unguessable."""

from __future__ import annotations

import hashlib
import os
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case


def _b32(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, rem = divmod(value, 32)
        chars.append(_ALPHABET[rem])
    return "".join(reversed(chars))


def new_id(prefix: str, now_ms: int | None = None) -> str:
    """`<prefix>_` + 10 chars of millisecond time + 16 random chars (ULID layout)."""
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    return f"{prefix}_{_b32(ms, 10)}{_b32(int.from_bytes(os.urandom(10), 'big'), 16)}"


def derived_id(prefix: str, *parts: str) -> str:
    """A stable id derived from its parts (e.g. account + idempotency key)."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return f"{prefix}_{_b32(int.from_bytes(digest[:17], 'big'), 26)}"
