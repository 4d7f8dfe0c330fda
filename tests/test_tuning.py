"""recog.decode.tuning: the grid search behind `recog train`, `recog lm tune` and the decoder benchmark,
on hand-made log-probs whose best weights are known."""

from __future__ import annotations

import numpy as np
import pytest

from recog.decode.ctc import CTCBeamDecoder
from recog.decode.lm import NGramLM
from recog.decode.tuning import MAX_GRID_POINTS, grid_search, tune
from recog.vocab import Vocab

VOCAB = Vocab.speech()
SENTENCES = ["the cat sat on the mat", "the dog sat on the log", "a cat and a dog", "set the table"]
WORDS = sorted({word for sentence in SENTENCES for word in sentence.split()})


def emissions(frames: list, peak: float = 0.9) -> np.ndarray:
    """(time, vocab) log-probs: a frame is a character ('-' blank) with probability `peak`, or {char: p}."""
    rows = []
    for frame in frames:
        chosen = {frame: peak} if isinstance(frame, str) else frame
        probs = np.zeros(len(VOCAB))
        for char, prob in chosen.items():
            probs[0 if char == "-" else VOCAB.tokens.index(char)] = prob
        probs[probs == 0] = (1 - probs.sum()) / (probs == 0).sum()
        rows.append(np.log(probs))
    return np.array(rows, np.float32)


def spelled(text: str) -> list:
    return ["-", *[frame for char in text for frame in (char, "-")]]


@pytest.fixture
def decoder() -> CTCBeamDecoder:
    return CTCBeamDecoder(VOCAB, lm=NGramLM.build(SENTENCES, order=3), lexicon=WORDS, beam=20)


# acoustics lean to 'set' after 'the cat'; the LM knows 'the cat sat'
LEANING = emissions(spelled("the cat s") + [{"e": 0.5, "a": 0.4}, "-"] + spelled("t")[1:])
OUTSIDE = emissions(spelled("the zq sat"))  # 'zq' is clearly spoken and not in the lexicon


def test_tune_picks_the_lm_weight_that_fixes_the_dev_set_and_keeps_it(decoder):
    result = tune(decoder, [LEANING], ["the cat sat"], [0.0, 1.0], [0.0])
    assert [(row["lm_weight"], row["wer"]) for row in result["grid"]] == [
        (0.0, pytest.approx(1 / 3)),
        (1.0, 0.0),
    ]
    assert result["best"]["lm_weight"] == 1.0 and result["best"]["wer"] == 0.0
    assert decoder.lm_weight == 1.0 and decoder(LEANING)[0].text == "the cat sat"  # left at the best
    # no unknown-word scores given: the decoder's own is the only one tried
    assert {row["unk_score"] for row in result["grid"]} == {decoder.unk_score}


def test_tune_searches_every_combination_and_picks_the_unknown_word_score(decoder):
    result = tune(
        decoder, [OUTSIDE, LEANING], ["the zq sat", "the cat sat"], [0.0, 1.0], [0.0, 0.5], [-1000.0, -2.0]
    )
    assert len(result["grid"]) == 8
    assert {(r["lm_weight"], r["word_score"], r["unk_score"]) for r in result["grid"]} == {
        (w, s, u) for w in (0.0, 1.0) for s in (0.0, 0.5) for u in (-1000.0, -2.0)
    }
    best = result["best"]
    assert (best["lm_weight"], best["unk_score"], best["wer"]) == (1.0, -2.0, 0.0)
    assert min(result["grid"], key=lambda r: (r["wer"], r["cer"])) is best
    assert decoder.unk_score == -2.0 and [t.text for t in decoder([OUTSIDE, LEANING])] == [
        "the zq sat",
        "the cat sat",
    ]


def test_ties_on_wer_are_broken_by_cer():
    rows = grid_search(lambda point: {"wer": 0.5, "cer": abs(point["x"] - 2) / 10}, {"x": [0, 1, 2, 3]})
    assert [row["x"] for row in rows] == [0, 1, 2, 3]
    assert min(rows, key=lambda r: (r["wer"], r["cer"]))["x"] == 2


def test_grid_search_visits_the_product_last_axis_fastest():
    seen = []
    rows = grid_search(lambda point: seen.append(dict(point)) or {"n": len(seen)}, {"a": (1, 2), "b": "xyz"})
    assert [(row["a"], row["b"], row["n"]) for row in rows] == [
        (1, "x", 1), (1, "y", 2), (1, "z", 3), (2, "x", 4), (2, "y", 5), (2, "z", 6)
    ]  # fmt: skip


def test_empty_or_oversized_grids_are_refused_before_any_decoding(decoder):
    calls = []
    with pytest.raises(ValueError, match="no values for word_score"):
        tune(decoder, [LEANING], ["the cat sat"], [1.0], [])
    with pytest.raises(ValueError, match=f"more than {MAX_GRID_POINTS}"):
        grid_search(calls.append, {"a": range(200), "b": range(200)})
    assert calls == []
    with pytest.raises(ValueError, match="1 log-probs but 2 reference texts"):
        tune(decoder, [LEANING], ["the cat sat", "a dog"], [1.0], [0.0])
