"""Decoders on hand-made log-probs whose best path is known; the Kneser-Ney word LM and its ARPA file."""

from __future__ import annotations

import math

import pytest
import torch
from flashlight.lib.text.decoder.kenlm import KenLM
from flashlight.lib.text.dictionary import Dictionary

from recog.config import DecodeConfig
from recog.decode.beam import BeamDecoder, prepare_language_model, write_lexicon
from recog.decode.greedy import GreedyDecoder
from recog.decode.lm import BOS, EOS, UNK, kneser_ney, write_arpa
from recog.vocab import Vocab

VOCAB = Vocab.speech()
SENTENCES = [
    "the cat sat on the mat",
    "the dog sat on the log",
    "a cat and a dog",
    "set the table",
    "the cat ran",
]


def emissions(frames: list, peak: float = 0.9) -> torch.Tensor:
    """(1, time, vocab) log-probs. A frame is a character ('-' for blank) with probability `peak`,
    or a dict {char: prob}; the remaining mass is spread evenly over the other tokens."""
    rows = []
    for frame in frames:
        chosen = {frame: peak} if isinstance(frame, str) else frame
        probs = torch.zeros(len(VOCAB))
        for char, prob in chosen.items():
            probs[0 if char == "-" else VOCAB.tokens.index(char)] = prob
        rest = probs == 0
        probs[rest] = (1 - probs.sum()) / rest.sum()
        rows.append(probs.log())
    return torch.stack(rows).unsqueeze(0)


def spelled(text: str) -> list[str]:
    """Each character on its own frame, separated by blanks: the clean path for `text`."""
    frames = ["-"]
    for char in text:
        frames += [char, "-"]
    return frames


def decode_one(decoder, log_probs: torch.Tensor):
    return decoder(log_probs, torch.tensor([log_probs.shape[1]]))[0]


# -- greedy ------------------------------------------------------------------------------------
def test_greedy_repeats_separated_by_blank_are_double_letters():
    decoder = GreedyDecoder(VOCAB)
    assert decode_one(decoder, emissions(list("hel-lo"))).text == "hello"
    assert decode_one(decoder, emissions(list("hhel-llloo"))).text == "hello"


def test_greedy_repeats_without_blank_are_merged():
    decoder = GreedyDecoder(VOCAB)
    assert decode_one(decoder, emissions(list("hello"))).text == "helo"
    assert decode_one(decoder, emissions(list("--aaa---"))).text == "a"
    assert decode_one(decoder, emissions(list("----"))).text == ""


def test_greedy_normalises_spaces_and_respects_lengths():
    decoder = GreedyDecoder(VOCAB)
    clean = emissions(list("  ab -  - cd  "))
    garbage = emissions(list("xyz" * 5))
    batch = torch.cat([torch.cat([clean, emissions(list("z"))], dim=1), garbage[:, : clean.shape[1] + 1]])
    first, second = decoder(batch, torch.tensor([clean.shape[1], 6]))
    assert first.text == "ab cd"  # leading, trailing and repeated spaces collapse; padding frame ignored
    assert second.text == "xyzxyz"
    assert first.score == pytest.approx(clean.shape[1] * math.log(0.9), rel=1e-5)  # best-path log-prob


def test_greedy_word_times_and_confidences():
    decoder = GreedyDecoder(VOCAB, frame_seconds=0.03)
    # frames: 0 blank, 1-2 'h', 3 'i', 4 blank, 5 space, 6-7 blank, 8 'y', 9 'o', 10 blank
    frames = ["-", "h", "h", "i", "-", " ", "-", "-", "y", {"o": 0.6}, "-"]
    transcript = decode_one(decoder, emissions(frames))
    assert transcript.text == "hi yo"
    first, second = transcript.words
    # a word spans from its first character's frame to one frame after its last
    assert (first.word, first.start, first.end) == ("hi", 0.03, 0.12)
    assert (second.word, second.start, second.end) == ("yo", 0.24, 0.30)
    assert first.confidence == pytest.approx(0.9, abs=1e-4)
    assert second.confidence == pytest.approx((0.9 + 0.6) / 2, abs=1e-4)
    as_dict = transcript.as_dict()
    assert as_dict["words"][1] == {"word": "yo", "start": 0.24, "end": 0.3, "confidence": pytest.approx(0.75)}


# -- beam search with lexicon and word LM ----------------------------------------------------------
@pytest.fixture(scope="module")
def language_model(tmp_path_factory) -> dict[str, str]:
    return prepare_language_model(SENTENCES, VOCAB, tmp_path_factory.mktemp("lm"), order=3)


def test_lexicon_lists_every_word_once_with_its_spelling(tmp_path):
    path = write_lexicon(["cat", "cat", "don't", "Hello", ""], VOCAB, tmp_path / "lexicon.txt")
    assert path.read_text().splitlines() == ["cat\tc a t |", "don't\td o n ' t |"]  # unknown chars dropped


def test_beam_decoder_returns_words_on_peaked_log_probs(language_model):
    decoder = BeamDecoder(VOCAB, DecodeConfig(beam=20), language_model["lexicon"], language_model["lm"], 0.03)
    transcript = decode_one(decoder, emissions(spelled("the cat sat")))
    assert transcript.text == "the cat sat"
    assert [word.word for word in transcript.words] == ["the", "cat", "sat"]
    # 'the' is spelled on frames 1, 3, 5; 'cat' on 9, 11, 13
    assert (transcript.words[0].start, transcript.words[0].end) == (0.03, 0.18)
    assert (transcript.words[1].start, transcript.words[1].end) == (0.27, 0.42)
    assert all(word.confidence == pytest.approx(0.9, abs=1e-3) for word in transcript.words)


def test_lexicon_corrects_a_misspelling_greedy_makes(language_model):
    # 'cat' with the middle frame slightly more 's' than 'a': greedy spells a non-word
    frames = spelled("the c") + [{"s": 0.5, "a": 0.4}, "-"] + spelled("t sat")[1:]
    log_probs = emissions(frames)
    assert decode_one(GreedyDecoder(VOCAB), log_probs).text == "the cst sat"
    decoder = BeamDecoder(VOCAB, DecodeConfig(beam=20), language_model["lexicon"], None)
    assert decode_one(decoder, log_probs).text == "the cat sat"


def test_word_lm_picks_the_likelier_of_two_real_words(language_model):
    # 'sat' vs 'set' after 'the cat': both are words; acoustics lean to 'set', the LM to 'sat'
    frames = spelled("the cat s") + [{"e": 0.5, "a": 0.4}, "-"] + spelled("t")[1:]
    log_probs = emissions(frames)
    assert decode_one(GreedyDecoder(VOCAB), log_probs).text == "the cat set"
    lexicon_only = BeamDecoder(VOCAB, DecodeConfig(beam=20), language_model["lexicon"], None)
    assert decode_one(lexicon_only, log_probs).text == "the cat set"
    with_lm = BeamDecoder(VOCAB, DecodeConfig(beam=20), language_model["lexicon"], language_model["lm"])
    assert decode_one(with_lm, log_probs).text == "the cat sat"


def test_lexicon_free_beam_decoder_follows_the_acoustics():
    decoder = BeamDecoder(VOCAB, DecodeConfig(beam=20, lexicon=False))
    log_probs = emissions(spelled("zq ran"))
    transcript = decode_one(decoder, log_probs)
    assert transcript.text == "zq ran"
    assert [word.word for word in transcript.words] == ["zq", "ran"]


# -- Kneser-Ney LM -------------------------------------------------------------------------------
def arpa_prob(model: list[dict], context: tuple[str, ...], word: str) -> float:
    """p(word | context) the way an ARPA reader computes it: the n-gram's probability if listed,
    otherwise the context's backoff weight times p(word | shorter context)."""
    gram = (*context, word)
    if gram in model[len(gram) - 1]:
        return 10 ** model[len(gram) - 1][gram][0]
    if not context:
        return 10 ** model[0][(UNK,)][0]
    backoff = 10 ** model[len(context) - 1][context][1] if context in model[len(context) - 1] else 1.0
    return backoff * arpa_prob(model, context[1:], word)


@pytest.mark.parametrize("order", [2, 3])
def test_kneser_ney_probabilities_sum_to_one_in_every_context(order):
    model = kneser_ney(SENTENCES, order)
    assert len(model) == order
    words = sorted({gram[0] for gram in model[0]} - {BOS})
    assert EOS in words and UNK in words and "cat" in words
    contexts = [(), (BOS,), ("the",), ("cat",), ("sat",), ("zebra",)]
    if order == 3:
        contexts += [
            (BOS, "the"),
            ("the", "cat"),
            ("on", "the"),
            ("a", "dog"),
            ("sat", "zebra"),
            ("zebra", "the"),
        ]
    for context in contexts:
        total = sum(arpa_prob(model, context, word) for word in words)
        assert total == pytest.approx(1.0, abs=1e-6), context
    # seen continuations beat unseen ones, and discounting leaves mass for the unseen
    assert arpa_prob(model, ("the",), "cat") > arpa_prob(model, ("the",), "and")
    assert 0 < arpa_prob(model, ("the",), "and") < 0.05
    assert model[0][(BOS,)][0] == -99.0  # <s> is never predicted


def test_kneser_ney_lower_orders_count_contexts_not_occurrences():
    # 'francisco' and 'dog' occur equally often, but 'francisco' only ever follows 'san': after an
    # unseen history, Kneser-Ney must expect 'dog' (five different left contexts) far more
    sentences = ["san francisco"] * 5 + [f"{owner} dog" for owner in ("a", "the", "my", "his", "her")]
    model = kneser_ney(sentences, 2)
    francisco = arpa_prob(model, ("zebra",), "francisco")
    dog = arpa_prob(model, ("zebra",), "dog")
    assert dog > 3 * francisco
    # ...while after 'san' the bigram itself is near certain
    assert arpa_prob(model, ("san",), "francisco") > 0.8


def test_arpa_file_loads_in_the_flashlight_decoder_with_the_same_probabilities(tmp_path):
    model = kneser_ney(SENTENCES, 3)
    path = tmp_path / "words.arpa"
    write_arpa(model, path)
    header = path.read_text().split("\n\n")[0].splitlines()
    assert header == ["\\data\\", *(f"ngram {n}={len(grams)}" for n, grams in enumerate(model, start=1))]

    dictionary = Dictionary()
    for word in sorted({gram[0] for gram in model[0]}):
        dictionary.add_entry(word)
    lm = KenLM(str(path), dictionary)  # KenLM parses the ARPA text; a malformed file raises here
    state = lm.start(False)
    context: tuple[str, ...] = (BOS,)
    for word in ["the", "cat", "and", "a", "log"]:
        state, score = lm.score(state, dictionary.get_index(word))  # log10
        assert score == pytest.approx(math.log10(arpa_prob(model, context[-2:], word)), abs=1e-4), word
        context = (*context, word)
    state, score = lm.finish(state)
    assert score == pytest.approx(math.log10(arpa_prob(model, context[-2:], EOS)), abs=1e-4)


def test_lm_build_command_writes_the_same_model(tmp_path, capsys):
    from recog.cli import main

    text = tmp_path / "sentences.txt"
    text.write_text("\n".join(SENTENCES) + "\n\n")
    output = tmp_path / "cli.arpa"
    assert main(["lm", "build", str(text), "-o", str(output), "--order", "2"]) == 0
    assert f"wrote {output} (2-gram, {len(SENTENCES)} sentences)" in capsys.readouterr().out
    write_arpa(kneser_ney(SENTENCES, 2), tmp_path / "library.arpa")
    assert output.read_text() == (tmp_path / "library.arpa").read_text()
