"""The contact list API's bodies and answers (suppressions, opt-out keywords, blocked
recipients), declared once as msgspec Structs: requests are decoded (and validated) into them
in one pass by services/ingest/contact_lists.py, and the OpenAPI document's schemas are
generated from them (services/ingest/openapi.py). A unit test keeps each answer the handlers
build equal to its declaration.

The rules beyond a type (keyword normalisation, the documents) are shared with `hala` in
shared/opt_out.py and shared/contact_lists.py.
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import UNSET, Meta, Struct, UnsetType

from shared.contact_lists import MAX_NOTE_CHARS
from shared.opt_out import MAX_KEYWORD_CHARS, MAX_KEYWORDS

Recipient = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=40,
        examples=["+447911123456"],
        description=(
            "A phone number: international (with or without `+`); for a suppression also national "
            "in the sending number's country."
        ),
    ),
]
PhoneNumberId = Annotated[
    str,
    Meta(
        pattern=r"^\d{1,64}$",
        examples=["109731225428301"],
        description="One of the account's phone numbers.",
    ),
]
Note = Annotated[str, Meta(max_length=MAX_NOTE_CHARS)]
KeywordText = Annotated[str, Meta(min_length=1, max_length=MAX_KEYWORD_CHARS)]
KeywordList = Annotated[
    list[KeywordText],
    Meta(
        max_length=MAX_KEYWORDS,
        description=(
            "Whole-message keywords; case, accents, width and punctuation do not matter, "
            "and several words are allowed (`stop all`). "
            "`null` or absent: the defaults; `[]`: none."
        ),
    ),
]
SuppressionSource = Literal["keyword", "user_preferences", "meta", "api", "operator"]


class _Body(Struct, forbid_unknown_fields=True):
    pass


class SuppressionCreate(_Body, kw_only=True):
    """`POST /v1/suppressions`: suppress a contact for marketing from one of your numbers, as if
    they had written STOP to it."""

    phone_number_id: PhoneNumberId
    recipient: Recipient
    note: Note | UnsetType = UNSET


class OptOutKeywordsUpdate(_Body, kw_only=True):
    """`PUT /v1/opt-out-keywords`: your STOP and START words, each list replacing the defaults
    (a list absent or `null` is the defaults; `{}` restores both)."""

    opt_out: KeywordList | UnsetType | None = UNSET
    opt_in: KeywordList | UnsetType | None = UNSET


class BlockedRecipientCreate(_Body, kw_only=True):
    """`POST /v1/blocked-recipients`: never send anything to this number, from any of your
    numbers."""

    recipient: Recipient
    note: Note | UnsetType = UNSET


# --- answers ----------------------------------------------------------------------------------


class _Answer(Struct, forbid_unknown_fields=True):
    pass


class SuppressionView(_Answer):
    """A contact suppressed for marketing from one of your numbers: since when, and how (their
    keyword, Meta's `user_preferences`, Meta refusing a marketing template with 131050, your
    API call, an operator). `wa_id` is the contact as
    WhatsApp names them; `recipient` its phone number when it is one."""

    phone_number_id: str
    wa_id: str
    recipient: str | None
    suppressed: bool
    source: SuppressionSource
    since: str | None
    keyword: str | None
    note: str | None


class SuppressionPage(_Answer):
    data: list[SuppressionView]
    next_cursor: str | None


class SuppressionRequestAccepted(_Answer):
    """Your change is durable and is applied within a second or two (then it shows in `GET
    /v1/suppressions`). The latest change about a contact wins, whoever made it: a STOP the
    contact writes later suppresses again."""

    request_id: str
    phone_number_id: str
    wa_id: str
    recipient: str
    suppressed: bool
    requested_at: str


class OptOutKeywordsView(_Answer):
    """The keywords in force: a user's whole message equal to one of `opt_out` suppresses them
    for marketing from the number they wrote to; one of `opt_in` undoes it."""

    opt_out: list[str]
    opt_in: list[str]
    opt_out_default: bool
    opt_in_default: bool


class BlockedRecipientView(_Answer):
    recipient: str
    note: str | None
    source: Literal["api", "operator"] | None
    created_at: str | None


class BlockedRecipientPage(_Answer):
    data: list[BlockedRecipientView]
    next_cursor: str | None
