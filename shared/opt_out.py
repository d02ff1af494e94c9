"""Opt-out and opt-in keywords, pure: the default lists, how a user's message is normalised and
when it is a keyword.

The rule providers use for SMS (Braze, sent.dm; reference hardening.md §8), kept here: a
message is a keyword only when the *whole* message, normalised, equals one — "STOP", "stop!",
" Stop. " and "ＳＴＯＰ" are; "don't stop", "stop please" and "STOP sending me promos" are not
(a person who writes a sentence is talking, and the business should answer them). A keyword
may have several words ("stop all", "darse de baja").

Normalisation (both sides, so a list is written naturally): Unicode compatibility forms are
folded (NFKD: full-width letters, ligatures, Arabic presentation forms), case is folded, accents
on Latin letters are dropped ("arrêt" = "arret", "inscrição" = "inscricao"), Arabic diacritics,
hamza marks and the tatweel are dropped and ى/ة written as ي/ه (the spellings people type
interchangeably), invisible format characters go, and every run of what is not a letter, a
combining mark or a digit becomes one space (so "opt-out" = "opt out", "STOP!!!" = "stop").
Marks of other scripts are kept: they are part of a Devanagari word.

The defaults are a product decision (reference §8 marks localised lists UNCONFIRMED as industry
lists): short words a person sends to mean "no more messages", in the languages of our first
markets. Words that are ordinary replies in a WhatsApp conversation are left out on purpose —
CANCEL, END and QUIT (SMS lists have them) would unsubscribe a customer cancelling an order;
YES would resubscribe anyone who answers a question. An account replaces either list with its
own (GET/PUT /v1/opt-out-keywords, `hala accounts update --opt-out-keywords`).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

Keyword = Literal["stop", "start"]

# Opt-out ("stop") words per language. Multi-word entries match only as the whole message.
DEFAULT_OPT_OUT: Mapping[str, tuple[str, ...]] = {
    "en": ("STOP", "STOP ALL", "STOPALL", "UNSUBSCRIBE", "OPT OUT", "OPTOUT", "REVOKE"),
    "es": ("BAJA", "DARSE DE BAJA", "DARME DE BAJA", "PARAR", "DETENER", "CANCELAR SUSCRIPCIÓN"),
    "pt": ("SAIR", "PARAR", "DESCADASTRAR", "CANCELAR INSCRIÇÃO"),
    "fr": ("ARRÊT", "ARRETER", "DÉSABONNER", "DÉSINSCRIRE", "DÉSINSCRIPTION"),
    "ar": ("إلغاء", "إلغاء الاشتراك", "إيقاف", "توقف", "أوقف"),
    "hi": ("रोकें", "रोको", "बंद", "बंद करें", "बंद करो", "अनसब्सक्राइब"),
    "de": ("STOPP", "ABMELDEN"),
    "id": ("BERHENTI",),
}
# Opt-in ("start") words: they undo an earlier keyword opt-out of the same number.
DEFAULT_OPT_IN: Mapping[str, tuple[str, ...]] = {
    "en": ("START", "UNSTOP", "SUBSCRIBE", "RESUME"),
    "es": ("SUSCRIBIR", "REANUDAR"),
    "pt": ("INSCREVER", "RETOMAR"),
    "fr": ("REPRENDRE", "ABONNER"),
    "ar": ("اشتراك", "ابدأ"),
    "hi": ("शुरू", "शुरू करें"),
    "de": ("ANMELDEN",),
    "id": ("MULAI",),
}

# A keyword message is short: longer ones are not even normalised (a paragraph never matches).
MAX_MESSAGE_CHARS = 64
MAX_KEYWORD_CHARS = 64
MAX_KEYWORDS = 100

_ARABIC_DROPPED = frozenset(
    [chr(c) for c in range(0x064B, 0x0660)]  # harakat, shadda, sukun, hamza above/below
    + ["\u0670", "\u0640"]
)  # superscript alef; tatweel (a letter to Unicode, not to a reader)
_ARABIC_LETTERS = {"\u0649": "\u064a", "\u0629": "\u0647"}  # ى -> ي, ة -> ه
_LATIN_END = 0x0250  # Basic Latin to Latin Extended-B: the letters whose accents are dropped


def normalise(text: str) -> str:
    """The comparable form of a message or a keyword (see the module's docstring)."""
    words: list[str] = []
    word: list[str] = []
    base = ""
    for char in unicodedata.normalize("NFKD", text).casefold():
        category = unicodedata.category(char)
        if category == "Cf" or char in _ARABIC_DROPPED:
            continue
        if category == "Mn" and base and ord(base) < _LATIN_END:
            continue  # an accent on a Latin letter
        if category[0] in "LMN":
            char = _ARABIC_LETTERS.get(char, char)
            word.append(char)
            if category[0] != "M":
                base = char
            continue
        base = ""
        if word:
            words.append(unicodedata.normalize("NFC", "".join(word)))
            word = []
    if word:
        words.append(unicodedata.normalize("NFC", "".join(word)))
    return " ".join(words)


def _flatten(lists: Mapping[str, tuple[str, ...]]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(word for words in lists.values() for word in words))


DEFAULT_OPT_OUT_WORDS = _flatten(DEFAULT_OPT_OUT)
DEFAULT_OPT_IN_WORDS = _flatten(DEFAULT_OPT_IN)


@dataclass(frozen=True)
class Keywords:
    """An account's keywords in their comparable form."""

    opt_out: frozenset[str]
    opt_in: frozenset[str]

    @classmethod
    def of(cls, opt_out: Iterable[str], opt_in: Iterable[str]) -> Keywords:
        return cls(
            frozenset(filter(None, map(normalise, opt_out))),
            frozenset(filter(None, map(normalise, opt_in))),
        )

    def match(self, text: str) -> Keyword | None:
        """ "stop" or "start" when the whole message is one of the keywords, else None."""
        if not text or len(text) > MAX_MESSAGE_CHARS:
            return None
        normal = normalise(text)
        if normal in self.opt_out:
            return "stop"
        if normal in self.opt_in:
            return "start"
        return None


DEFAULT_KEYWORDS = Keywords.of(DEFAULT_OPT_OUT_WORDS, DEFAULT_OPT_IN_WORDS)


# --- an account's configuration (`opt_out_keywords`, shape in shared/collections.py) --------


@dataclass(frozen=True)
class KeywordConfig:
    """What an account configured: a list, or None for that list's defaults."""

    opt_out: tuple[str, ...] | None = None
    opt_in: tuple[str, ...] | None = None

    @property
    def effective_opt_out(self) -> tuple[str, ...]:
        return DEFAULT_OPT_OUT_WORDS if self.opt_out is None else self.opt_out

    @property
    def effective_opt_in(self) -> tuple[str, ...]:
        return DEFAULT_OPT_IN_WORDS if self.opt_in is None else self.opt_in

    def keywords(self) -> Keywords:
        if self.opt_out is None and self.opt_in is None:
            return DEFAULT_KEYWORDS
        return Keywords.of(self.effective_opt_out, self.effective_opt_in)


class KeywordError(ValueError):
    """A configuration that cannot be used: `field` names the list, `keyword` the word."""

    def __init__(self, message: str, field: str, keyword: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.keyword = keyword


def checked_list(words: Iterable[str], field: str) -> tuple[str, ...]:
    """A keyword list as stored: trimmed, each once (by its comparable form), each one that
    can match something; at most MAX_KEYWORDS."""
    kept: dict[str, str] = {}
    for word in words:
        trimmed = " ".join(str(word).split())
        if not trimmed or len(trimmed) > MAX_KEYWORD_CHARS:
            raise KeywordError(
                f"each keyword has 1 to {MAX_KEYWORD_CHARS} characters",
                field,
                trimmed[:MAX_KEYWORD_CHARS],
            )
        normal = normalise(trimmed)
        if not normal:
            raise KeywordError(
                f"{trimmed!r} has no letter or digit: it could never match", field, trimmed
            )
        kept.setdefault(normal, trimmed)
    if len(kept) > MAX_KEYWORDS:
        raise KeywordError(f"at most {MAX_KEYWORDS} keywords per list", field)
    return tuple(kept.values())


def config(opt_out: Iterable[str] | None, opt_in: Iterable[str] | None) -> KeywordConfig:
    """A checked configuration (None: that list's defaults). A word in both lists is refused:
    the same message cannot mean stop and start."""
    out = None if opt_out is None else checked_list(opt_out, "opt_out")
    into = None if opt_in is None else checked_list(opt_in, "opt_in")
    made = KeywordConfig(out, into)
    both = {normalise(w) for w in made.effective_opt_out} & {
        normalise(w) for w in made.effective_opt_in
    }
    if both:
        word = sorted(both)[0]
        raise KeywordError(
            f"{word!r} is both an opt-out and an opt-in keyword",
            "opt_in" if into is not None else "opt_out",
            word,
        )
    return made


def config_of(doc: Mapping[str, Any] | None) -> KeywordConfig:
    """The stored configuration (absent document or list: the defaults). A stored list is
    trusted as written (it was checked on the way in)."""
    if not doc:
        return KeywordConfig()

    def listed(name: str) -> tuple[str, ...] | None:
        value = doc.get(name)
        if not isinstance(value, list):
            return None
        return tuple(str(v) for v in value if isinstance(v, str))

    return KeywordConfig(listed("opt_out"), listed("opt_in"))


def config_doc(account_id: str, made: KeywordConfig, now_ms: int) -> dict[str, Any]:
    """The `opt_out_keywords` document (replaced whole by each change)."""
    return {
        "_id": account_id,
        "account_id": account_id,
        "opt_out": None if made.opt_out is None else list(made.opt_out),
        "opt_in": None if made.opt_in is None else list(made.opt_in),
        "updated_at": now_ms,
    }


def config_view(made: KeywordConfig) -> dict[str, Any]:
    """What GET /v1/opt-out-keywords and `hala` show: the lists in force and which of them are
    the defaults."""
    return {
        "opt_out": list(made.effective_opt_out),
        "opt_in": list(made.effective_opt_in),
        "opt_out_default": made.opt_out is None,
        "opt_in_default": made.opt_in is None,
    }
