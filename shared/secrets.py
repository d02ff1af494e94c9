"""Encryption at rest for Meta access tokens (Fernet: authenticated encryption; MultiFernet:
rotation). The key list comes from the environment as comma-separated Fernet keys, newest first:
new tokens are encrypted with the first key, and any listed key decrypts, so a key is rotated by
prepending a new one, re-encrypting (`hala tokens rotate`), then dropping the old one."""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import SecretStr

from shared.errors import PermanentError


class TokenVault:
    def __init__(self, keys: SecretStr | str) -> None:
        raw = keys.get_secret_value() if isinstance(keys, SecretStr) else keys
        parts = [k.strip() for k in raw.split(",") if k.strip()]
        if not parts:
            raise ValueError("no token encryption key configured")
        self._fernet = MultiFernet([Fernet(k.encode()) for k in parts])

    def encrypt(self, token: str) -> str:
        return self._fernet.encrypt(token.encode()).decode()

    def decrypt(self, encrypted: str) -> str:
        try:
            return self._fernet.decrypt(encrypted.encode()).decode()
        except InvalidToken as exc:
            raise PermanentError("access token cannot be decrypted with the configured keys",
                                 code="token_key_mismatch") from exc

    def rotate(self, encrypted: str) -> str:
        """Re-encrypt under the newest key."""
        return self._fernet.rotate(encrypted.encode()).decode()


def new_key() -> str:
    return Fernet.generate_key().decode()
