"""Encryption at rest for Meta access tokens (Fernet: authenticated encryption; MultiFernet:
rotation). The key list comes from the environment as comma-separated Fernet keys, newest first:
new tokens are encrypted with the first key, and any listed key decrypts, so a key is rotated by
prepending a new one, re-encrypting (`hala tokens rotate`), then dropping the old one.

Settings declare the key list as `TokenKeys`: a value that is not a list of Fernet keys is
refused when the settings are read, not at the first token."""

from __future__ import annotations

from typing import Annotated

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import AfterValidator, SecretStr

from shared.errors import PermanentError


def _split(keys: SecretStr | str) -> list[str]:
    raw = keys.get_secret_value() if isinstance(keys, SecretStr) else keys
    return [k.strip() for k in raw.split(",") if k.strip()]


def _fernet_keys(value: SecretStr) -> SecretStr:
    for position, key in enumerate(_split(value), start=1):
        try:
            Fernet(key.encode())
        except ValueError:
            raise ValueError(
                f"key {position} of the list is not a Fernet key (32 url-safe "
                "base64-encoded bytes; `hala keys generate-encryption-key` "
                "makes one)"
            ) from None
    return value


# Comma-separated Fernet keys, newest first (HALA_TOKEN_KEYS).
TokenKeys = Annotated[SecretStr, AfterValidator(_fernet_keys)]


class TokenVault:
    def __init__(self, keys: SecretStr | str) -> None:
        parts = _split(keys)
        if not parts:
            raise ValueError("no token encryption key configured")
        self._fernet = MultiFernet([Fernet(k.encode()) for k in parts])

    def encrypt(self, token: str) -> str:
        return self._fernet.encrypt(token.encode()).decode()

    def decrypt(self, encrypted: str) -> str:
        try:
            return self._fernet.decrypt(encrypted.encode()).decode()
        except InvalidToken as exc:
            raise PermanentError(
                "access token cannot be decrypted with the configured keys",
                code="token_key_mismatch",
            ) from exc

    def rotate(self, encrypted: str) -> str:
        """Re-encrypt under the newest key."""
        return self._fernet.rotate(encrypted.encode()).decode()


def new_key() -> str:
    return Fernet.generate_key().decode()
