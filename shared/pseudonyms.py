"""Keyed hashes: what we keep instead of a phone number or an erased account's id.

HMAC-SHA256 under a secret key: the same input always gives the same pseudonym (so support can
still match a number they are given, and counts per recipient still work), but without the key
nobody can reverse one by hashing every phone number (a plain hash of a phone number is
reversed in minutes). Each use has its own key setting, so one leaked key exposes one use.
"""

from __future__ import annotations

import hashlib
import hmac

PREFIX = "hmac-sha256:"


def keyed_hash(value: str, key: bytes) -> str:
    if not key:
        raise ValueError("a keyed hash needs a key")
    return PREFIX + hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


def is_keyed_hash(value: str) -> bool:
    return value.startswith(PREFIX)
