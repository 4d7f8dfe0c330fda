"""recog's CTC prefix beam search on hand-made log-probs whose best labelling is known, against brute
force on tiny inputs, with word and character LMs, a lexicon, hotwords, n-best lists and word times."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from recog.decode.ctc import CTCBeamDecoder
from recog.decode.lm import NGramLM
from recog.decode.transcript import Transcript, Word
from recog.vocab import Vocab

VOCAB = Vocab.speech()
SENTENCES = [
    "the cat sat on the mat",
    "the dog sat on the log",
    "a cat and a dog",
    "set the table",
    "the cat ran",
]
WORDS = sorted({word for sentence in SENTENCES for word in sentence.split()})
EXACT = {"token_min_logp": -1e9, "blank_skip_threshold": 1.0, "beam_prune": 1e9}  # no pruning at all


def emissions(frames: list, vocab: Vocab = VOCAB, peak: float = 0.9) -> np.ndarray:
    """(time, vocab) log-probs. A frame is a character ('-' for blank) with probability `peak`, or a
    dict {char: prob}; the rest of the mass is spread evenly over the other tokens."""
    rows = []
    for frame in frames:
        chosen = {frame: peak} if isinstance(frame, str) else frame
        probs = np.zeros(len(vocab))
        for char, p in chosen.items():
            probs[0 if char == "-" else vocab.tokens.index(char)] = p
        rest = probs == 0
        probs[rest] = (1 - probs.sum()) / max(rest.sum(), 1)
        rows.append(np.log(np.maximum(probs, 1e-30)))
    return np.array(rows, np.float32)


def spelled(text: str) -> list[str]:
    frames = ["-"]
    for char in text:
        frames += [char, "-"]
    return frames


def text_of(decoder: CTCBeamDecoder, log_probs: np.ndarray) -> str:
    return decoder(log_probs)[0].text


def test_repeats_need_a_blank_between_them():
    decoder = CTCBeamDecoder(VOCAB, beam=8)
    assert text_of(decoder, emissions(list("hel-lo"))) == "hello"
    assert text_of(decoder, emissions(list("hhel-llloo"))) == "hello"
    assert text_of(decoder, emissions(list("hello"))) == "helo"
    assert text_of(decoder, emissions(list("----"))) == ""
    assert text_of(decoder, emissions(list("  ab -  - cd  "))) == "ab cd"


def test_prefix_search_finds_the_labelling_greedy_misses():
    # two frames, blank 0.6 / 'a' 0.4 each: the best path is blank-blank (0.36), but the labelling
    # 'a' collects aa, a-, -a = 0.16 + 0.24 + 0.24 = 0.64
    frames = [{"-": 0.6 - 1e-6, "a": 0.4 - 1e-6}] * 2
    log_probs = emissions(frames)
    assert VOCAB.decode(log_probs.argmax(axis=1).tolist()) == ""
    transcript = CTCBeamDecoder(VOCAB, beam=4, **EXACT)(log_probs)[0]
    assert transcript.text == "a"
    assert transcript.score == pytest.approx(math.log(0.64), abs=1e-4)


def brute_force(log_probs: np.ndarray, vocab: Vocab) -> dict[str, float]:
    """ln p of every labelling by summing over all paths (spaces collapsed, leading ones dropped:
    the text a decoder reports)."""
    totals: dict[str, float] = {}
    frames, size = log_probs.shape
    for path in itertools.product(range(size), repeat=frames):
        labels = [t for i, t in enumerate(path) if t != 0 and (i == 0 or t != path[i - 1])]
        text = " ".join(vocab.decode(labels).split())
        logp = float(sum(log_probs[i, t] for i, t in enumerate(path)))
        totals[text] = float(np.logaddexp(totals.get(text, -np.inf), logp))
    return totals


@pytest.mark.parametrize("seed", range(6))
def test_agrees_with_brute_force_on_tiny_inputs(seed):
    vocab = Vocab("ab")
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.5, (7, len(vocab)))
    log_probs = (logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))).astype(np.float32)
    exact = brute_force(log_probs, vocab)
    ranked = sorted(exact.items(), key=lambda item: -item[1])
    hypotheses = CTCBeamDecoder(vocab, beam=500, nbest=3, **EXACT).nbest(log_probs)[0]
    assert [h.text for h in hypotheses] == [text for text, _ in ranked[:3]]
    for hypothesis, (_, logp) in zip(hypotheses, ranked, strict=False):
        assert hypothesis.score == pytest.approx(logp, abs=1e-4)


def reference_beam_search(log_probs: np.ndarray, beam: int, space: int) -> tuple[float, list[int]]:
    """Textbook CTC prefix beam search, every prefix extended by every token, the `beam` best kept
    (spaces never double; a leading space adds nothing)."""
    add = np.logaddexp
    beams: dict[tuple, tuple[float, float]] = {(): (0.0, -np.inf)}  # prefix -> (ends in blank, in token)
    for row in log_probs.astype(np.float64):
        grown: dict[tuple, list[float]] = {}
        for prefix, (blank, token) in beams.items():
            total, last = add(blank, token), prefix[-1] if prefix else space
            stay = grown.setdefault(prefix, [-np.inf, -np.inf])
            stay[0] = add(stay[0], total + row[0])
            stay[1] = add(stay[1], token + row[last])
            if last == space:
                stay[1] = add(stay[1], blank + row[space])
            for c in range(1, len(row)):
                if c == last and c == space:
                    continue
                child = grown.setdefault((*prefix, c), [-np.inf, -np.inf])
                child[1] = add(child[1], (blank if c == last else total) + row[c])
        ranked = sorted(grown.items(), key=lambda item: -add(*item[1]))[:beam]
        beams = {prefix: (blank, token) for prefix, (blank, token) in ranked}
    prefix, (blank, token) = max(beams.items(), key=lambda item: add(*item[1]))
    return float(add(blank, token)), list(prefix)


@pytest.mark.parametrize("seed", range(8))
def test_a_narrow_beam_agrees_with_the_textbook_search(seed):
    # the floor, token pruning and deferred nodes must not change which prefixes survive (a narrow beam
    # over long inputs prunes on every frame; a regression once dropped merges into surviving prefixes)
    vocab = Vocab(" ab")
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2.0, (30, len(vocab)))
    log_probs = (logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))).astype(np.float32)
    score, ids = reference_beam_search(log_probs, 3, vocab.tokens.index(" "))
    transcript = CTCBeamDecoder(vocab, beam=3, **EXACT)(log_probs)[0]
    assert transcript.text == " ".join(vocab.decode(ids).split())
    assert transcript.score == pytest.approx(score, abs=1e-6)


def test_pruning_keeps_the_answer_on_peaked_input_and_batches_match():
    rng = np.random.default_rng(0)
    texts = ["the cat sat", "a dog ran on", "set the table"]
    inputs = []
    for text in texts:
        log_probs = emissions(spelled(text), peak=0.97)
        inputs.append(log_probs + rng.normal(0, 0.05, log_probs.shape).astype(np.float32))
    exact = CTCBeamDecoder(VOCAB, beam=16, **EXACT)
    fast = CTCBeamDecoder(VOCAB, beam=16, workers=2)
    assert [t.text for t in exact(inputs)] == texts == [t.text for t in fast(inputs)]
    # a padded (batch, time, vocab) tensor with lengths gives the same as one at a time
    longest = max(len(x) for x in inputs)
    padded = torch.zeros(len(inputs), longest, len(VOCAB))
    for row, item in enumerate(inputs):
        padded[row, : len(item)] = torch.from_numpy(item)
    lengths = torch.tensor([len(x) for x in inputs])
    assert [t.text for t in fast(padded, lengths)] == texts


def transcript_from_tokens(ids, frames, posteriors, score, vocab, frame_seconds):
    """The per-hypothesis assembly recog did in Python before the batch kernel (the reference)."""
    space, words, begin = vocab.tokens.index(" "), [], 0
    for end in [*(i for i, token in enumerate(ids) if token == space), len(ids)]:
        if end > begin:
            text = "".join(vocab.tokens[i] for i in ids[begin:end])
            confidence = sum(posteriors[begin:end]) / (end - begin)
            words.append(Word(text, round(frames[begin] * frame_seconds, 3),
                              round((frames[end - 1] + 1) * frame_seconds, 3), round(confidence, 4)))  # fmt: skip
        begin = end + 1
    return Transcript(" ".join(w.word for w in words), float(score), words)


def random_batch(seed: int, count: int) -> list[np.ndarray]:
    """Unpeaked, speech-like log-probs of many lengths (some empty), spaces and repeats included."""
    rng = np.random.default_rng(seed)
    batch = []
    for _ in range(count):
        logits = rng.normal(0.0, 2.0, (int(rng.integers(0, 70)), len(VOCAB)))
        logits[:, 0] += rng.normal(1.0, 2.0)
        logits[:, VOCAB.tokens.index(" ")] += 1.0
        batch.append((logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))).astype(np.float32))
    return batch


@pytest.mark.parametrize("with_lm", [False, True])
def test_one_batch_call_gives_what_one_utterance_at_a_time_gives(with_lm, word_lm):
    empty = np.zeros((0, len(VOCAB)), np.float32)
    batch = random_batch(3, 40) + [empty] + [emissions(spelled(text)) for text in SENTENCES]
    options = {"lm": word_lm, "lexicon": WORDS, "lm_weight": 0.8, "word_score": 0.5} if with_lm else {}
    decoder = CTCBeamDecoder(VOCAB, beam=12, nbest=3, hotwords={"the cat": 2.0}, **options)
    together = decoder.nbest(batch)
    assert together == [decoder.nbest(item)[0] for item in batch]
    assert together == CTCBeamDecoder(VOCAB, beam=12, nbest=3, hotwords={"the cat": 2.0}, workers=3,
                                      **options).nbest(batch)  # fmt: skip
    assert [(h[0].text, h[0].score, h[0].words) for h in together] == [
        (t.text, t.score, t.words) for t in decoder(batch)
    ]
    assert together[-1][0].text == SENTENCES[-1]
    assert any(not len(item) for item in batch) and all(hypotheses for hypotheses in together)
    # padded (batch, time, vocab) with lengths: the same again
    longest = max(len(item) for item in batch)
    padded = np.zeros((len(batch), longest, len(VOCAB)), np.float32)
    for row, item in enumerate(batch):
        padded[row, : len(item)] = item
    assert decoder.nbest(padded, [len(item) for item in batch]) == together


def test_batch_words_times_and_confidences_match_the_per_token_reference(word_lm):
    """Word times and confidences the kernel assembles equal those rebuilt from the tokens, the frames
    they were emitted on and their posteriors (the assembly the per-utterance path used to do)."""
    from recog.decode.kernels import beam_search

    batch = [*random_batch(5, 30), np.zeros((0, len(VOCAB)), np.float32)]
    decoder = CTCBeamDecoder(VOCAB, lm=word_lm, lexicon=WORDS, beam=10, frame_seconds=0.04)
    transcripts = decoder(batch)
    options = decoder.options
    offsets = np.concatenate([[0], np.cumsum([len(item) for item in batch])]).astype(np.int64)
    counts, scores, lengths, _, tokens, frames, probs, *_ = beam_search(
        np.concatenate(batch), offsets, options.beam, options.token_min_logp, len(VOCAB),
        math.log(options.blank_skip_threshold), options.beam_prune, 1, decoder._scorer)  # fmt: skip
    at = 0
    for transcript, count, item in zip(transcripts, counts, batch, strict=True):
        if not count:
            assert transcript == Transcript("", 0.0, []) and not len(item)
            continue
        length = lengths[at]
        start = lengths[:at].sum()
        ids, times = tokens[start : start + length].tolist(), frames[start : start + length].tolist()
        posteriors = probs[start : start + length].tolist()
        assert posteriors == pytest.approx([math.exp(item[f, i]) for f, i in zip(times, ids, strict=True)])
        assert transcript == transcript_from_tokens(ids, times, posteriors, scores[at], VOCAB, 0.04)
        at += 1


def test_word_times_and_confidences():
    decoder = CTCBeamDecoder(VOCAB, beam=10, frame_seconds=0.03)
    frames = spelled("the cat ") + ["-", "s", {"a": 0.6}, "t", "-"]
    transcript = decoder(emissions(frames))[0]
    assert transcript.text == "the cat sat"
    the, cat, sat = transcript.words
    # 'the' is spelled on frames 1, 3, 5; 'cat' on 9, 11, 13; 'sat' on 18, 19, 20
    assert (the.word, the.start, the.end) == ("the", 0.03, 0.18)
    assert (cat.start, cat.end) == (0.27, 0.42)
    assert (sat.start, sat.end) == (0.54, 0.63)
    assert the.confidence == pytest.approx(0.9, abs=1e-3)
    assert sat.confidence == pytest.approx((0.9 + 0.6 + 0.9) / 3, abs=1e-3)


@pytest.fixture(scope="module")
def word_lm() -> NGramLM:
    return NGramLM.build(SENTENCES, order=3)


def test_lexicon_corrects_a_misspelling_and_penalises_unknown_words(word_lm):
    frames = spelled("the c") + [{"s": 0.5, "a": 0.4}, "-"] + spelled("t sat")[1:]
    log_probs = emissions(frames)
    assert text_of(CTCBeamDecoder(VOCAB, beam=20), log_probs) == "the cst sat"
    assert text_of(CTCBeamDecoder(VOCAB, lexicon=WORDS, beam=20), log_probs) == "the cat sat"
    # a clearly spoken unknown word survives the penalty; a prohibitive penalty replaces it
    clear = emissions(spelled("the zq sat"))
    assert text_of(CTCBeamDecoder(VOCAB, lexicon=WORDS, beam=20, unk_score=-5.0), clear) == "the zq sat"
    banned = text_of(CTCBeamDecoder(VOCAB, lexicon=WORDS, beam=20, unk_score=-1000.0), clear)
    assert "zq" not in banned.split()


def test_word_lm_picks_the_likelier_of_two_real_words(word_lm):
    frames = spelled("the cat s") + [{"e": 0.5, "a": 0.4}, "-"] + spelled("t")[1:]
    log_probs = emissions(frames)
    assert text_of(CTCBeamDecoder(VOCAB, lexicon=WORDS, beam=20), log_probs) == "the cat set"
    with_lm = CTCBeamDecoder(VOCAB, lm=word_lm, lexicon=WORDS, beam=20, lm_weight=1.0)
    assert with_lm(log_probs)[0].text == "the cat sat"
    # the score is acoustics plus the weighted LM log-prob of the whole sentence (no insertion bonus)
    transcript = with_lm.configure(beam=400, **EXACT)(log_probs)[0]
    acoustic = CTCBeamDecoder(VOCAB, beam=400, **EXACT)
    lm_part = word_lm.sentence_logprob(["the", "cat", "sat"])
    forced = [h for h in acoustic.configure(nbest=20).nbest(log_probs)[0] if h.text == "the cat sat"][0]
    assert transcript.score == pytest.approx(forced.score + lm_part, abs=0.02)  # beams keep different paths


def test_character_lm_repairs_a_spelling():
    lm = NGramLM.build(SENTENCES * 3, order=5, unit="char")
    frames = spelled("th") + [{"a": 0.5, "e": 0.4}, "-"] + spelled(" cat")[1:]
    log_probs = emissions(frames)
    assert text_of(CTCBeamDecoder(VOCAB, beam=20), log_probs) == "tha cat"
    assert text_of(CTCBeamDecoder(VOCAB, lm=lm, beam=20, lm_weight=0.8), log_probs) == "the cat"


def test_hotwords_change_the_output_where_they_should_and_nowhere_else():
    ambiguous = emissions(spelled("a ") + ["-", "z", "-", {"i": 0.5, "e": 0.4}, "-"] + spelled("bra")[1:])
    plain = CTCBeamDecoder(VOCAB, beam=20)
    boosted = CTCBeamDecoder(VOCAB, beam=20, hotwords={"zebra": 3.0})
    assert text_of(plain, ambiguous) == "a zibra"
    assert text_of(boosted, ambiguous) == "a zebra"
    for text in ["the cat sat", "zero bravo", "a zibra is not a zebra"[:7]]:
        log_probs = emissions(spelled(text))
        assert boosted(log_probs)[0].words == plain(log_probs)[0].words, text
    # a hotword inside another word does not count: only whole words are boosted
    inside = emissions(spelled("zibras"))
    assert text_of(boosted, inside) == text_of(plain, inside) == "zibras"


def test_nbest_lists_distinct_texts_best_first():
    frames = spelled("c") + [{"a": 0.5, "u": 0.3, "o": 0.15}, "-"] + spelled("t")[1:]
    hypotheses = CTCBeamDecoder(VOCAB, beam=20, nbest=3).nbest(emissions(frames))[0]
    assert [h.text for h in hypotheses] == ["cat", "cut", "cot"]
    assert hypotheses[0].score > hypotheses[1].score > hypotheses[2].score


def test_wrong_vocabulary_size_is_a_clear_error():
    with pytest.raises(ValueError, match="29"):
        CTCBeamDecoder(VOCAB)(np.zeros((5, 10), np.float32))


def test_token_indexed_trie_rows_search_like_the_edge_lists(word_lm, monkeypatch):
    import recog.decode.ctc as ctc

    batch = random_batch(5, 20) + [emissions(spelled(text)) for text in SENTENCES]
    options = {"lm": word_lm, "lexicon": WORDS, "lm_weight": 0.8, "word_score": 0.5, "beam": 12, "nbest": 3}
    dense = CTCBeamDecoder(VOCAB, **options)
    nodes = dense._scorer.lex_nodes
    assert nodes[0, 1] == len(VOCAB)  # the root (9 first letters) has a row indexed by token
    packed = ctc._packed_trie
    monkeypatch.setattr(ctc, "_packed_trie", lambda trie, size: packed(trie, size, dense_from=10**9))
    sparse = CTCBeamDecoder(VOCAB, **options)
    assert sparse._scorer.lex_nodes[0, 1] == 9  # every node scans its edge list
    assert dense.nbest(batch) == sparse.nbest(batch)


def test_log_add_table_matches_numpy():
    from numba import njit

    from recog.decode.kernels import _logaddexp

    log_add = njit(lambda a, b: _logaddexp(a, b))
    rng = np.random.default_rng(0)
    a = rng.uniform(-300.0, 0.0, 20000)
    b = a - rng.uniform(0.0, 45.0, 20000) * rng.random(20000) ** 2  # many small differences
    got = np.array([log_add(x, y) for x, y in zip(a, b, strict=True)])
    assert np.abs(got - np.logaddexp(a, b)).max() < 1e-9
    assert log_add(b[0], a[0]) == log_add(a[0], b[0])
    assert log_add(-1.0, -np.inf) == -1.0 and log_add(-np.inf, -np.inf) == -np.inf
    assert log_add(0.0, 0.0) == pytest.approx(math.log(2.0), abs=1e-12)


def test_decoding_leaves_the_garbage_collector_as_it_found_it():
    import gc

    decoder = CTCBeamDecoder(VOCAB, beam=8)
    log_probs = emissions(spelled("the cat"))
    assert gc.isenabled()
    assert text_of(decoder, log_probs) == "the cat"
    assert gc.isenabled()
    gc.disable()
    try:
        assert text_of(decoder, log_probs) == "the cat"
        assert not gc.isenabled()  # a caller's choice to keep it off is kept
    finally:
        gc.enable()
