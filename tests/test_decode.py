"""Decoders on hand-made log-probs whose best path is known; the Kneser-Ney word LM and its ARPA file;
the beam decoder a checkpoint gets (recog's, also for checkpoints tuned for the removed flashlight one)."""

from __future__ import annotations

import dataclasses
import math
import warnings
from pathlib import Path

import pytest
import torch

from recog.checkpoint import CheckpointError, save_checkpoint
from recog.config import DecodeConfig, FeatureConfig, ModelConfig
from recog.datasets.manifest import Utterance
from recog.decode import Decoder
from recog.decode.ctc import CTCBeamDecoder
from recog.decode.greedy import GreedyDecoder
from recog.decode.lexicon import prepare_language_model, write_lexicon
from recog.decode.lm import BOS, EOS, UNK, NGramLM, build_word_lm, kneser_ney, write_arpa
from recog.features.speech import CMVN, SpeechFeatures
from recog.model import CTCModel
from recog.recognizer import Recognizer
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


def test_both_decoders_are_plain_callables_of_one_protocol():
    assert isinstance(GreedyDecoder(VOCAB), Decoder) and isinstance(CTCBeamDecoder(VOCAB), Decoder)
    log_probs = emissions(spelled("the cat"))
    for decoder in (GreedyDecoder(VOCAB), CTCBeamDecoder(VOCAB, beam=8)):
        (transcript,) = decoder(log_probs, torch.tensor([log_probs.shape[1]]))
        assert transcript.text == "the cat"


def test_beam_decoder_reads_the_lexicon_and_lm_files_training_writes(language_model):
    decoder = CTCBeamDecoder(
        VOCAB, language_model["lm"], language_model["lexicon"], beam=20, frame_seconds=0.03
    )
    assert decoder.lexicon_words == sorted({word for sentence in SENTENCES for word in sentence.split()})
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
    decoder = CTCBeamDecoder(VOCAB, lexicon=language_model["lexicon"], beam=20)
    assert decode_one(decoder, log_probs).text == "the cat sat"


def test_word_lm_picks_the_likelier_of_two_real_words(language_model):
    # 'sat' vs 'set' after 'the cat': both are words; acoustics lean to 'set', the LM to 'sat'
    frames = spelled("the cat s") + [{"e": 0.5, "a": 0.4}, "-"] + spelled("t")[1:]
    log_probs = emissions(frames)
    assert decode_one(GreedyDecoder(VOCAB), log_probs).text == "the cat set"
    lexicon_only = CTCBeamDecoder(VOCAB, lexicon=language_model["lexicon"], beam=20)
    assert decode_one(lexicon_only, log_probs).text == "the cat set"
    with_lm = CTCBeamDecoder(VOCAB, language_model["lm"], language_model["lexicon"], beam=20, lm_weight=1.0)
    assert decode_one(with_lm, log_probs).text == "the cat sat"


def test_lexicon_free_beam_decoder_follows_the_acoustics():
    decoder = CTCBeamDecoder(VOCAB, beam=20)
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


def written_arpa(tmp_path: Path) -> tuple[list[dict], Path]:
    model = kneser_ney(SENTENCES, 3)
    path = tmp_path / "words.arpa"
    write_arpa(model, path)
    header = path.read_text().split("\n\n")[0].splitlines()
    assert header == ["\\data\\", *(f"ngram {n}={len(grams)}" for n, grams in enumerate(model, start=1))]
    return model, path


def test_arpa_file_reads_back_with_the_same_probabilities(tmp_path):
    model, path = written_arpa(tmp_path)
    lm = NGramLM.load(path)  # parses the ARPA text; a malformed file raises here
    state = lm.start()
    context: tuple[str, ...] = (BOS,)
    for word in ["the", "cat", "and", "a", "log", "zebra"]:
        logp, state = lm.score(state, word)  # natural log
        expected = arpa_prob(model, context[-2:], word if word in lm.index else UNK)
        assert logp == pytest.approx(math.log(expected), abs=1e-4), word
        context = (*context, word if word in lm.index else UNK)
    assert lm.score(state, EOS)[0] == pytest.approx(math.log(arpa_prob(model, context[-2:], EOS)), abs=1e-4)


def test_arpa_file_loads_in_kenlm_with_the_same_probabilities(tmp_path):
    # KenLM as bundled by flashlight-text, a benchmark-only peer (`make bench-decoder` installs it)
    kenlm = pytest.importorskip("flashlight.lib.text.decoder.kenlm", reason="flashlight-text not installed")
    text = pytest.importorskip("flashlight.lib.text.dictionary", reason="flashlight-text not installed")
    model, path = written_arpa(tmp_path)
    dictionary = text.Dictionary()
    for word in sorted({gram[0] for gram in model[0]}):
        dictionary.add_entry(word)
    lm = kenlm.KenLM(str(path), dictionary)  # KenLM parses the ARPA text; a malformed file raises here
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


# -- which beam decoder a checkpoint gets ----------------------------------------------------------
def checkpoint(folder: Path, decode: dict, name: str = "model.pt") -> Path:
    """A speech checkpoint (untrained weights: these tests decode hand-made log-probs) carrying a
    lexicon and word LM of SENTENCES, and `decode` as its stored decode settings."""
    paths = prepare_language_model(SENTENCES, VOCAB, folder / "lm", order=3)
    features = SpeechFeatures(FeatureConfig())
    model = CTCModel(ModelConfig(hidden=8, layers=1, stack=3), features.dim, len(VOCAB))
    payload = {
        "task": "speech",
        "model_state": model.state_dict(),
        "model_config": dataclasses.asdict(model.config),
        "input_dim": features.dim,
        "vocab": VOCAB.to_list(),
        "features": dataclasses.asdict(features.config),
        "cmvn": CMVN("utterance").state(),
        "decode": decode,
        "language_model": {
            "lexicon": Path(paths["lexicon"]).read_text(),
            "arpa": Path(paths["lm"]).read_text(),
        },
    }
    save_checkpoint(payload, folder / name)
    return folder / name


def old_decode_settings(**changes) -> dict:
    """A decode dict as checkpoints stored it before recog had its own decoder: no `engine`, no recog
    pruning, flashlight's pruning (beam_size_token, beam_threshold), lm_weight on flashlight's log10 scale."""
    stored = {"beam": 50, "lm_order": 3, "lm_weight": 1.0, "word_score": 0.5, "unk_score": -10.0,
              "lexicon": True, "beam_size_token": 12, "beam_threshold": 25.0,
              "tune_lm_weights": [0.5, 1.0, 2.0], "tune_word_scores": [-1.0, 0.5, 2.0]}  # fmt: skip
    return {**stored, **changes}


UNKNOWN_WORD = emissions(spelled("the zq sat"))  # 'zq' is not in the lexicon


def load_quietly(path: Path) -> Recognizer:
    """Recognizer.load, failing the test if it warns."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return Recognizer.load(path)


def test_a_new_checkpoint_beam_decodes_with_recog_and_spells_words_outside_the_lexicon(tmp_path):
    stored = dataclasses.asdict(DecodeConfig(beam=20, lm_weight=0.5, unk_score=-3.0))
    assert "engine" not in stored and "beam_size_token" not in stored
    recognizer = load_quietly(checkpoint(tmp_path, stored))
    assert recognizer.decode_config.lm_weight == 0.5  # recog's own weights: not converted
    assert isinstance(recognizer.decoder("beam"), CTCBeamDecoder)
    (transcript,) = recognizer.decode([UNKNOWN_WORD[0]], "beam")
    assert transcript.text == "the zq sat" and "<unk>" not in transcript.text
    # frames of 0.03 s (hop 10 ms x 3 stacked); 'zq' is spelled on frames 9 and 11
    assert recognizer.frame_seconds == pytest.approx(0.03)
    assert [(w.word, w.start, w.end) for w in transcript.words][1] == ("zq", 0.27, 0.36)
    assert all(w.confidence == pytest.approx(0.9, abs=1e-3) for w in transcript.words)
    # the lexicon still corrects a misspelling the acoustics barely prefer
    frames = spelled("the c") + [{"s": 0.5, "a": 0.4}, "-"] + spelled("t sat")[1:]
    assert recognizer.decode([emissions(frames)[0]], "beam")[0].text == "the cat sat"


@pytest.mark.parametrize(
    "stored",
    [
        old_decode_settings(beam=20, lm_weight=2.0, unk_score=-3.0),  # from before the engine key
        {
            **dataclasses.asdict(DecodeConfig(beam=20, lm_weight=1.0, unk_score=-3.0)),
            "lm_weight": 2.0,
            "engine": "flashlight",
            "beam_size_token": 12,
            "beam_threshold": 25.0,
        },  # fmt: skip
    ],
    ids=["no engine", "engine flashlight"],
)
def test_a_checkpoint_tuned_for_flashlight_loads_on_recogs_decoder_with_a_warning(tmp_path, stored):
    path = checkpoint(tmp_path, stored)
    with pytest.warns(UserWarning, match="tuned for the flashlight decoder") as caught:
        recognizer = Recognizer.load(path)
    (message,) = [str(w.message) for w in caught if "flashlight" in str(w.message)]
    assert message.startswith(f"{path}: ") and f"recog lm tune --model {path}" in message
    assert "lm_weight 2 -> 0.8686" in message
    # the same fusion on recog's natural-log scale: 2 x log10 p = (2 / ln 10) x ln p
    assert recognizer.decode_config.lm_weight == pytest.approx(2.0 / math.log(10))
    assert (recognizer.decode_config.beam, recognizer.decode_config.unk_score) == (20, -3.0)
    decoder = recognizer.decoder("beam")
    assert isinstance(decoder, CTCBeamDecoder) and decoder.lm_weight == pytest.approx(0.8686, abs=1e-4)
    (transcript,) = recognizer.decode([UNKNOWN_WORD[0]], "beam")
    assert transcript.text == "the zq sat"  # recog spells the word flashlight wrote as <unk>
    recognizer.configure_beam(beam=10)
    assert recognizer.decoder("beam").options.beam == 10


def test_a_checkpoint_of_recogs_engine_with_flashlight_fields_loads_unchanged_and_quietly(tmp_path):
    stored = {**dataclasses.asdict(DecodeConfig(beam=20, lm_weight=0.7)), "engine": "recog",
              "beam_size_token": 12, "beam_threshold": 25.0}  # fmt: skip
    recognizer = load_quietly(checkpoint(tmp_path, stored))
    assert recognizer.decode_config == DecodeConfig(beam=20, lm_weight=0.7)


def test_a_checkpoint_naming_an_unknown_engine_is_a_clear_error(tmp_path):
    stored = {**dataclasses.asdict(DecodeConfig()), "engine": "kenlm"}
    with pytest.raises(CheckpointError, match="unknown decoding engine 'kenlm'"):
        Recognizer.load(checkpoint(tmp_path, stored))


def test_another_lm_brings_its_words_and_none_searches_the_lexicon_alone(tmp_path):
    path = checkpoint(tmp_path, dataclasses.asdict(DecodeConfig(beam=20, lm_weight=0.5, unk_score=-1000.0)))
    recognizer = Recognizer.load(path)
    banned = recognizer.decode([UNKNOWN_WORD[0]], "beam")[0].text
    assert banned != "the zq sat"  # an unknown word costs too much with the checkpoint's lexicon
    other = build_word_lm(["the zq sat", "a zq ran"], tmp_path / "other.arpa", 2)
    recognizer.configure_beam(beam=12, lm=str(other))
    decoder = recognizer.decoder("beam")
    assert isinstance(decoder, CTCBeamDecoder) and decoder.options.beam == 12
    assert {"zq", "cat", "mat"} <= set(decoder.lexicon_words)  # the LM's words join the lexicon
    assert recognizer.decode([UNKNOWN_WORD[0]], "beam")[0].text == "the zq sat"
    recognizer.configure_beam(lm="none")
    decoder = recognizer.decoder("beam")
    assert decoder.lm is None and "zq" not in decoder.lexicon_words
    frames = spelled("the c") + [{"s": 0.5, "a": 0.4}, "-"] + spelled("t sat")[1:]
    assert recognizer.decode([emissions(frames)[0]], "beam")[0].text == "the cat sat"


def test_tune_beam_picks_the_unknown_word_score_from_the_grid(tmp_path):
    path = checkpoint(tmp_path, dataclasses.asdict(DecodeConfig(beam=20)))
    recognizer = Recognizer.load(path)
    recognizer.log_probs = lambda inputs: [UNKNOWN_WORD[0] for _ in inputs]  # no model: hand-made
    recognizer.stored_input = lambda stored: stored
    utterances = [Utterance("u1", "the zq sat")]
    result = recognizer.tune_beam(utterances, {"u1": None}, (0.5,), (0.0,), (-1000.0, -2.0))
    assert [row["unk_score"] for row in result["grid"]] == [-1000.0, -2.0]
    assert result["best"]["unk_score"] == -2.0 and result["best"]["wer"] == 0.0
    assert recognizer.decode_config.unk_score == -2.0 and recognizer.decode_config.word_score == 0.0
    assert recognizer.decode([UNKNOWN_WORD[0]], "beam")[0].text == "the zq sat"  # the decoder kept the best
