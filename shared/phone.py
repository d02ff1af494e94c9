"""Phone numbers: E.164 parsing and the recipient's region, by the phonenumbers library."""

from __future__ import annotations

import phonenumbers

from shared.errors import InvalidRequest


def parse_e164(raw: str) -> tuple[str, str]:
    """Return (E.164 number with '+', ISO region) or raise InvalidRequest.

    A leading '+' is required: without it the country is a guess (Meta would prepend the
    business number's country code, which silently messages the wrong person abroad).
    """
    if not isinstance(raw, str) or not raw.strip().startswith("+"):
        raise InvalidRequest(
            "`to` must be an international number in E.164 form, e.g. +447700900123",
            code="invalid_phone_number",
            details={"field": "to"},
        )
    try:
        number = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException as exc:
        raise InvalidRequest(
            f"`to` is not a phone number: {exc}",
            code="invalid_phone_number",
            details={"field": "to"},
        ) from exc
    if not phonenumbers.is_valid_number(number):
        raise InvalidRequest(
            "`to` is not a valid phone number", code="invalid_phone_number", details={"field": "to"}
        )
    region = phonenumbers.region_code_for_number(number) or "ZZ"
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), region


def wa_id_of(e164: str) -> str:
    """Meta's wa_id form of a number: digits only."""
    return e164.lstrip("+")
