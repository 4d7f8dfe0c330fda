"""The character vocabulary and the WER/CER metrics on pairs with known edit distances."""

from __future__ import annotations

import pytest

from recog.metrics import ErrorRate, cer, edit_distance, wer
from recog.vocab import BLANK, Vocab


def test_speech_vocab_round_trip_with_blank_at_zero():
    vocab = Vocab.speech()
    assert vocab.tokens[0] == BLANK
    assert len(vocab) == 1 + 28  # blank, space, apostrophe, a-z
    text = "don't panic it's only a test"
    ids = vocab.encode(text)
    assert 0 not in ids
    assert len(ids) == len(text)
    assert vocab.decode(ids) == text
    assert vocab.encode(" ") == [1] and vocab.encode("a") == [3]  # fixed layout saved in checkpoints
    # blanks are dropped when decoding
    assert vocab.decode([0, *vocab.encode("ab"), 0, 0]) == "ab"
    assert vocab.word_separator == " "
    assert Vocab(vocab.to_list()) == vocab
    assert Vocab("abc").word_separator is None


def test_encode_refuses_unknown_characters_and_names_them():
    vocab = Vocab.speech()
    with pytest.raises(ValueError, match=r"'7'") as error:
        vocab.encode("route 7 north")
    assert "vocabulary" in str(error.value)
    with pytest.raises(ValueError) as error:
        vocab.encode("Hello!")
    assert "H" in str(error.value) and "!" in str(error.value)
    assert vocab.unknown_chars("Hello!") == {"H", "!"}


def test_vocab_rejects_duplicates_and_the_reserved_blank():
    with pytest.raises(ValueError, match="duplicate"):
        Vocab("abca")
    with pytest.raises(ValueError, match="reserved"):
        Vocab(["a", BLANK])


def test_edit_distance():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == 3
    assert edit_distance("abc", "") == 3
    assert edit_distance("flaw", "lawn") == 2
    assert edit_distance(["a", "b"], ["a", "b"]) == 0


@pytest.mark.parametrize(
    ("reference", "hypothesis", "word_errors", "char_errors"),
    [
        ("the cat sat", "the cat sat", 0, 0),
        ("the cat sat", "the bat sat", 1, 1),  # one substitution
        ("the cat", "the black cat", 1, 6),  # one inserted word: "black " is six characters
        ("a b c d", "a c d", 1, 2),  # one deleted word: "b " is two characters
        ("hello world", "", 2, 11),  # empty hypothesis: everything deleted
        ("the  cat ", "the cat", 0, 0),  # whitespace is normalised before scoring
    ],
)
def test_error_rates_on_known_edits(reference, hypothesis, word_errors, char_errors):
    rate = ErrorRate()
    rate.add(reference, hypothesis)
    words = len(reference.split())
    chars = len(" ".join(reference.split()))
    assert rate.word_errors == word_errors and rate.char_errors == char_errors
    assert rate.wer == pytest.approx(word_errors / words)
    assert rate.cer == pytest.approx(char_errors / chars)
    assert wer([reference], [hypothesis]) == pytest.approx(word_errors / words)
    assert cer([reference], [hypothesis]) == pytest.approx(char_errors / chars)


def test_corpus_rates_pool_errors_over_all_references():
    references = ["a b", "c d e f"]
    hypotheses = ["a x", "c d e f"]
    assert wer(references, hypotheses) == pytest.approx(1 / 6)  # not the mean of 1/2 and 0
    assert cer(references, hypotheses) == pytest.approx(1 / 10)
    rate = ErrorRate()
    for reference, hypothesis in zip(references, hypotheses, strict=True):
        rate.add(reference, hypothesis)
    assert rate.as_dict() == {
        "wer": pytest.approx(1 / 6),
        "cer": pytest.approx(0.1),
        "utterances": 2,
        "words": 6,
    }
    with pytest.raises(ValueError):
        wer(["a"], [])
