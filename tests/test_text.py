"""Transcript normalisation (recog.text): the rules a model is trained and scored with."""

from __future__ import annotations

import unicodedata

import pytest

from recog.config import ConfigError, load_config
from recog.text import TextConfig, corpus_chars


def test_defaults_keep_the_text_but_compose_unicode_and_tidy_spaces():
    decomposed = "cafe\u0301  Zoe\u0308\tOK"
    assert TextConfig()(decomposed) == unicodedata.normalize("NFC", "café Zoë OK")
    assert TextConfig(unicode="none")("cafe\u0301") == "cafe\u0301"
    assert TextConfig(unicode="NFKC")("\ufb01ne") == "fine"  # the fi ligature folded


def test_case_punctuation_and_digits_fold_as_configured():
    rules = TextConfig(case="lower", punctuation="drop", digits="drop")
    assert rules("\u201cDon\u2019t\u201d \u2014 Mother-in-law, 42 times!") == "don't mother-in-law times"
    assert rules("'quoted' well-known -dash- x_y") == "quoted well-known dash x y"
    assert TextConfig(case="upper")("Mr. Smith") == "MR. SMITH"
    assert TextConfig(digits="drop")("Room 101, floor 3") == "Room , floor"


def test_corpus_chars_put_space_first_and_keep_every_script():
    assert corpus_chars(["Ab c", "добрый", "é"]) == [" ", "A", "b", "c", "é", "б", "д", "й", "о", "р", "ы"]


def test_the_text_section_is_checked_and_checkpoints_without_it_keep_text_as_is():
    assert load_config(None, ["text.case=lower", "text.vocab=corpus"]).text == TextConfig(
        case="lower", vocab="corpus"
    )
    with pytest.raises(ConfigError, match="text.vocab: expected one of default, corpus"):
        load_config(None, ["text.vocab=mine"])
    assert TextConfig.from_state(None) is None and TextConfig.from_state({}) is None
    assert TextConfig.from_state({"case": "lower", "future_field": 1}) == TextConfig(case="lower")
