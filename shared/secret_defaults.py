"""Secrets with a default only in development mode.

A secret setting (a `SecretStr`) may be left unset only when `HALA_ENV=development` (what
`make run`, the tests and the bench set): it then takes its published development value.
Anywhere else an unset, empty or published-default value stops the service at start, naming
the variable, before any client is opened.

(The transport helper is making this a rule of `shared/settings.py` for every secret; this is
the same rule for the secrets added with audit and retention, to be folded into it.)
"""

from __future__ import annotations

from pydantic import SecretStr

DEVELOPMENT = "development"


def resolve_secret(value: SecretStr | None, *, variable: str, development_default: str,
                   environment: str) -> SecretStr:
    given = value.get_secret_value() if value is not None else ""
    if environment == DEVELOPMENT:
        return SecretStr(given or development_default)
    if not given:
        raise ValueError(f"{variable} is missing or empty (only HALA_ENV=development has a "
                         "default)")
    if given == development_default:
        raise ValueError(f"{variable} is the published development default; set a secret "
                         "value")
    return SecretStr(given)


# The published development values (never accepted outside development mode).
DEVELOPMENT_TOPUP_SIGNING_KEY = "dev-topup-signing-key"
DEVELOPMENT_PSEUDONYM_KEY = "dev-account-pseudonym-key"
