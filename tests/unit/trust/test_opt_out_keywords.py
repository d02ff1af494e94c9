"""Opt-out keywords: the whole message, normalised, must be a keyword — in every default
language, whatever the case, accents, width, punctuation or Arabic spelling; never a sentence
that merely contains one."""

from __future__ import annotations

import pytest

from shared import opt_out
from shared.opt_out import DEFAULT_KEYWORDS, KeywordError, Keywords, config, normalise


@pytest.mark.parametrize(
    "text",
    [
        "STOP",
        "stop",
        "Stop",
        " stop ",
        "STOP!",
        "stop.",
        "¡STOP!",
        "STOP 🛑",
        "ＳＴＯＰ",
        "Stop\n",
        "stop all",
        "STOP  ALL",
        "Unsubscribe",
        "opt-out",
        "OPT OUT",
        "optout",
        "baja",
        "Darse de baja",
        "PARAR",
        "cancelar suscripcion",
        "Cancelar suscripción",
        "sair",
        "Descadastrar",
        "cancelar inscrição",
        "arrêt",
        "ARRET",
        "désabonner",
        "desinscrire",
        "إلغاء",
        "الغاء",
        "إلغاء الاشتراك",
        "توقف",
        "إيقاف",
        "ايقاف",
        "أوقف",
        "اوقف",
        "إلغـــاء",
        "إِلْغَاء",
        "रोकें",
        "बंद करो",
        "बंद",
        "STOPP",
        "abmelden",
        "berhenti",
    ],
)
def test_every_default_opt_out_word_matches_in_its_usual_spellings(text: str) -> None:
    assert DEFAULT_KEYWORDS.match(text) == "stop"


@pytest.mark.parametrize(
    "text",
    [
        "START",
        "start",
        "Unstop",
        "subscribe!",
        "reanudar",
        "retomar",
        "reprendre",
        "ابدأ",
        "اشتراك",
        "शुरू",
        "शुरू करें",
        "mulai",
        "Anmelden",
    ],
)
def test_default_opt_in_words_match(text: str) -> None:
    assert DEFAULT_KEYWORDS.match(text) == "start"


@pytest.mark.parametrize(
    "text",
    [
        "don't stop",
        "Please stop",
        "stop please",
        "STOP sending me promos",
        "stopped",
        "stops",
        "non-stop",
        "bus stop",
        "s t o p",
        "st op",
        "STOP2",
        "cancel",
        "CANCEL",
        "end",
        "quit",
        "yes",
        "YES",
        "ok",
        "",
        "   ",
        "!!!",
        "🛑",
        "no",
        "baja el precio",
        "quiero darme de baja de la promo",
        "لا تتوقف",
        "मत रोको",
        "startup",
        "stop " * 20,
    ],
)
def test_sentences_and_conversational_words_are_not_keywords(text: str) -> None:
    assert DEFAULT_KEYWORDS.match(text) is None


def test_normalisation_folds_width_case_accents_punctuation_and_arabic_spelling() -> None:
    assert normalise("  ＯＰＴ-Out!! ") == "opt out"
    assert normalise("Arrêt") == "arret"
    assert normalise("don't") == "don t"
    assert normalise("إلغاء") == normalise("الغاء") == normalise("إِلْغَـاء")
    assert normalise("رسالة") == normalise("رساله")  # ta marbuta
    # Devanagari vowel signs are part of the word (not accents to drop)
    assert normalise("रोकें") != normalise("रक")
    assert normalise("STOP\u200b") == "stop"  # a zero-width space is invisible


def test_a_long_message_is_never_a_keyword() -> None:
    assert Keywords.of(["x" * 70], []).match("x" * 70) is None


def test_an_account_list_replaces_the_defaults_for_that_list_only() -> None:
    made = config(["CANCEL", "Fin"], None)
    keywords = made.keywords()
    assert keywords.match("cancel") == "stop" and keywords.match("FIN!") == "stop"
    assert keywords.match("STOP") is None  # the opt-out defaults are replaced
    assert keywords.match("start") == "start"  # the opt-in defaults still apply
    assert opt_out.config_view(made)["opt_in_default"] is True


def test_an_empty_list_turns_that_direction_off() -> None:
    keywords = config([], []).keywords()
    assert keywords.match("STOP") is None and keywords.match("START") is None


def test_a_configuration_is_checked_and_tidied() -> None:
    assert config(["  Stop   all ", "STOP ALL", "stop-all"], []).opt_out == ("Stop all",)
    with pytest.raises(KeywordError) as both:
        config(["GO"], ["go!"])
    assert both.value.field == "opt_in"
    with pytest.raises(KeywordError):
        config(["..."], None)  # nothing that could ever match
    with pytest.raises(KeywordError):
        config(["x" * 65], None)
    with pytest.raises(KeywordError):
        config([f"w{i}" for i in range(101)], None)
    with pytest.raises(KeywordError):
        config(None, ["STOP"])  # clashes with the default opt-out list


def test_a_stored_configuration_reads_back() -> None:
    doc = opt_out.config_doc("acc_1", config(["Halt"], None), 1)
    assert opt_out.config_of(doc) == config(["Halt"], None)
    assert opt_out.config_of(None).keywords() is DEFAULT_KEYWORDS
