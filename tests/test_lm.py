"""N-gram LMs: modified Kneser-Ney against hand-computed probabilities, normalisation, ARPA and compact
round trips, agreement with KenLM, character units, and the `recog lm build` command."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from recog.decode.lm import BOS, EOS, SPACE, UNK, NGramLM, _discounts, char_units, estimate, kneser_ney

TOY = ["a b", "a b", "b a"]


def prob(lm: NGramLM, context: list[str], unit: str) -> float:
    state = lm.start(bos=False)
    for word in context:
        state = lm.score(state, word)[1]
    return math.exp(lm.score(state, unit)[0])


def test_modified_discounts_follow_chen_and_goodman():
    # counts of counts n1..n4 = 4, 2, 1, 1: Y = 4 / (4 + 2*2) = 0.5
    counts = Counter({"a": 1, "b": 1, "c": 1, "d": 1, "e": 2, "f": 2, "g": 3, "h": 4})
    d1, d2, d3 = _discounts(counts)
    assert d1 == pytest.approx(1 - 2 * 0.5 * 2 / 4)  # 0.5
    assert d2 == pytest.approx(2 - 3 * 0.5 * 1 / 2)  # 1.25
    assert d3 == pytest.approx(3 - 4 * 0.5 * 1 / 1)  # 1.0
    # too few counts of counts for three discounts: one, n1 / (n1 + 2 n2)
    assert _discounts(Counter({"a": 1, "b": 1, "c": 2})) == pytest.approx((0.5, 0.5, 0.5))


def test_unigram_probabilities_by_hand():
    # one sentence: w1..w4 once, x and y twice, z three times, q four times (plus <s>, </s> once)
    # n1..n4 = 6, 2, 1, 1 -> Y = 0.6, D1 = 0.6, D2 = 1.1, D3+ = 0.6; 16 counted units (no <s>);
    # discounted mass 5*0.6 + 2*1.1 + 2*0.6 = 6.4 spread uniformly over 10 units (with <unk>)
    lm = NGramLM.build(["w1 w2 w3 w4 x x y y z z z q q q q"], order=1)
    uniform = 6.4 / 16 / 10
    assert prob(lm, [], "q") == pytest.approx((4 - 0.6) / 16 + uniform, abs=1e-6)
    assert prob(lm, [], "z") == pytest.approx((3 - 0.6) / 16 + uniform, abs=1e-6)
    assert prob(lm, [], "x") == pytest.approx((2 - 1.1) / 16 + uniform, abs=1e-6)
    assert prob(lm, [], "w1") == pytest.approx((1 - 0.6) / 16 + uniform, abs=1e-6)
    assert prob(lm, [], "never-seen") == pytest.approx(uniform, abs=1e-6)


def test_bigram_probabilities_by_hand():
    # bigram counts: <s> a 2, a b 2, b </s> 2, <s> b 1, b a 1, a </s> 1 -> n1 = n2 = 3, D = 1/3.
    # unigram continuation counts a 2, b 2, </s> 2 (D = 0.5): p(a) = 1.5/6 + 1.5/6/4 = 0.3125
    lm = NGramLM.build(TOY, order=2)
    assert prob(lm, [], "a") == pytest.approx(0.3125, abs=1e-6)
    # after 'a': b twice, </s> once; 2/3 discounted, handed to the unigrams
    assert prob(lm, ["a"], "b") == pytest.approx((2 - 1 / 3) / 3 + (2 / 3) / 3 * 0.3125, abs=1e-6)
    assert prob(lm, ["a"], EOS) == pytest.approx((1 - 1 / 3) / 3 + (2 / 3) / 3 * 0.3125, abs=1e-6)
    assert prob(lm, ["a"], "a") == pytest.approx((2 / 3) / 3 * 0.3125, abs=1e-6)
    assert lm.sentence_logprob(["a", "b"]) == pytest.approx(
        math.log(prob(lm, [BOS], "a") * prob(lm, ["a"], "b") * prob(lm, ["b"], EOS)), abs=1e-5
    )


def corpus(seed: int = 0, sentences: int = 400) -> list[str]:
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(40)]
    return [
        " ".join(rng.choice(words[: rng.randint(3, 40)]) for _ in range(rng.randint(1, 9)))
        for _ in range(sentences)
    ]


@pytest.mark.parametrize("order", [2, 3, 4])
def test_every_context_sums_to_one(order):
    sentences = corpus()
    model = estimate((s.split() for s in sentences), order)
    lm = NGramLM.from_grams(model)
    units = [u for u in lm.units if u != BOS]
    rng = random.Random(1)
    for _ in range(12):
        context = [rng.choice(["w1", "w2", "w30", BOS, "unseen"]) for _ in range(order - 1)]
        assert sum(prob(lm, context, unit) for unit in units) == pytest.approx(1.0, abs=1e-4), context


def test_arpa_round_trip_and_compact_file(tmp_path):
    lm = NGramLM.build(corpus(), order=3)
    arpa = lm.write_arpa(tmp_path / "lm.arpa")
    again = NGramLM.load(arpa)
    assert again.order == 3 and len(again) == len(lm)
    for n, (first, second) in enumerate(zip(lm.grams(), again.grams(), strict=True)):
        assert first.keys() == second.keys(), n
        for gram, (logp, backoff) in first.items():
            assert second[gram] == pytest.approx((logp, backoff), abs=2e-6)
    compact = lm.save(tmp_path / "lm.bin")
    loaded = NGramLM.load(compact)
    assert (loaded.unit, loaded.order, loaded.units) == (lm.unit, lm.order, lm.units)
    assert compact.stat().st_size < arpa.stat().st_size / 2
    for sentence in ["w1 w2 w3", "w9 unseen w1", ""]:
        assert loaded.sentence_logprob(sentence.split()) == lm.sentence_logprob(sentence.split())


def test_scores_agree_with_kenlm(tmp_path):
    # KenLM as bundled by flashlight-text, a benchmark-only peer (`make bench-decoder` installs it); the
    # ARPA round trip and KenLM-style files are checked without it (tests above and below)
    kenlm_module = pytest.importorskip(
        "flashlight.lib.text.decoder.kenlm", reason="flashlight-text not installed"
    )
    text = pytest.importorskip("flashlight.lib.text.dictionary", reason="flashlight-text not installed")
    lm = NGramLM.build(corpus(), order=3)
    path = lm.write_arpa(tmp_path / "lm.arpa")
    dictionary = text.Dictionary()
    for unit in lm.units:
        dictionary.add_entry(unit)
    kenlm = kenlm_module.KenLM(str(path), dictionary)
    rng = random.Random(2)
    for _ in range(20):
        words = [rng.choice(["w1", "w2", "w5", "w17", "w39", "zebra"]) for _ in range(rng.randint(1, 6))]
        state, ours, theirs = kenlm.start(False), lm.start(), 0.0
        for word in [*words, EOS]:
            if word == EOS:
                state, score = kenlm.finish(state)
            else:
                state, score = kenlm.score(state, dictionary.get_index(word if word in lm.index else UNK))
            theirs += score * math.log(10)
        ours = lm.sentence_logprob(words)
        assert ours == pytest.approx(theirs, abs=1e-3), words


def test_kenlm_style_arpa_with_missing_context_loads(tmp_path):
    # a trigram whose bigram prefix 'a b' is not listed: its context is added (KenLM does the same)
    path = tmp_path / "odd.arpa"
    path.write_text(
        "\\data\\\nngram 1=4\nngram 2=1\nngram 3=1\n\n\\1-grams:\n-1.0\t<unk>\n-0.5\t<s>\t-0.2\n"
        "-0.5\ta\t-0.1\n-0.6\tb\t-0.3\n-0.7\t</s>\n\n\\2-grams:\n-0.2\t<s> a\t-0.1\n\n"
        "\\3-grams:\n-0.05\ta b </s>\n\n\\end\\\n"
    )
    lm = NGramLM.load(path)
    state = lm.start(bos=False)
    state = lm.score(state, "a")[1]
    state = lm.score(state, "b")[1]
    assert lm.score(state, EOS)[0] == pytest.approx(-0.05 * math.log(10), abs=1e-6)


def test_character_lm_units_and_normalisation():
    assert char_units("ab  c") == ["a", "b", SPACE, "c"]
    lm = NGramLM.build(["the cat", "the hat", "a cat"], order=4, unit="char")
    assert lm.unit == "char" and SPACE in lm.units
    units = [u for u in lm.units if u != BOS]
    for context in [[], ["t", "h"], [BOS, "t", "h"], [SPACE, "c"], ["q", "q", "q"]]:
        assert sum(prob(lm, context, u) for u in units) == pytest.approx(1.0, abs=1e-4)
    assert prob(lm, [BOS, "t", "h"], "e") > 0.5
    assert lm.sentence_logprob(char_units("the cat")) > lm.sentence_logprob(char_units("teh cat"))


def test_lm_build_command_char_and_compact(tmp_path, capsys):
    from recog.cli import main

    text = tmp_path / "sentences.txt"
    text.write_text("the cat sat\nthe dog sat\n")
    output = tmp_path / "chars.lm"
    assert main(["lm", "build", str(text), "-o", str(output), "--order", "5", "--unit", "char"]) == 0
    assert "5-gram char" in capsys.readouterr().out
    lm = NGramLM.load(output)
    assert (lm.unit, lm.order) == ("char", 5)
    reference = NGramLM.build(["the cat sat", "the dog sat"], order=5, unit="char")
    assert lm.sentence_logprob(char_units("the cat")) == pytest.approx(
        reference.sentence_logprob(char_units("the cat"))
    )
    assert kneser_ney(["the cat sat"], 2)  # the word ARPA builder is still there for existing callers
