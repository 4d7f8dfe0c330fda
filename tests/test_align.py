"""Forced alignment (`recog.decode.align`, `recog align`): the Viterbi search on hand-made log-probs,
word times on speech whose word boundaries are known, real espeak-ng speech through the command line
with the tiny trained model (JSON, CTM, SRT), ink points and image columns, and bad inputs."""

# ruff: noqa: F811  (pytest fixtures imported from other test modules)
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from conftest import run_recog, synthesize
from test_read import corpus_members, image_model, ink_model, write_json  # noqa: F401  (fixtures)
from test_transcribe import WORDS, segments_recognizer, spoken_words, tiny_model  # noqa: F401  (fixtures)

from recog.cli import main
from recog.decode.align import (
    MAX_CELLS,
    AlignError,
    align,
    boundaries,
    check_alignable,
    force_align,
    frames_needed,
    labels_for,
    normalise_text,
    viterbi,
)
from recog.image import read_image
from recog.ink import decode_ink
from recog.recognizer import Recognizer
from recog.vocab import Vocab

SENTENCE = "The cat sat on the mat."
WRITTEN = "the cat sat on the mat"


def hand_made(path: list[int], vocab_size: int, peak: float = 0.9) -> torch.Tensor:
    """(time, vocab) log-probs whose best path is `path`."""
    probs = np.full((len(path), vocab_size), (1 - peak) / (vocab_size - 1))
    probs[np.arange(len(path)), path] = peak
    return torch.from_numpy(np.log(probs))


# ---------------------------------------------------------------- the search, by hand
def test_viterbi_finds_the_known_best_path_and_its_probability():
    vocab = Vocab("abc ")
    a, b, c = vocab.encode("abc")
    path = [0, a, a, 0, 0, b, 0, 0, c, c, 0, 0]
    log_probs = hand_made(path, len(vocab)).numpy()
    spans, total = viterbi(log_probs, [a, b, c])
    assert spans == [(1, 2), (5, 5), (8, 9)]
    assert total == pytest.approx(log_probs[np.arange(len(path)), path].sum())
    assert align(log_probs, [a, b, c]) == spans
    # a doubled letter needs a blank between its halves: three frames cannot spell "aa b"
    assert frames_needed(vocab.encode("aa b")) == 5
    assert align(hand_made([a, a, b], len(vocab)).numpy(), vocab.encode("aab")) is None
    assert align(hand_made([a, 0, a, b], len(vocab)).numpy(), vocab.encode("aab")) == [(0, 0), (2, 2), (3, 3)]
    # the text decides, not the frames' favourite: "cab" over a path that reads "abc"
    spans, _ = viterbi(log_probs, [c, a, b])
    assert [first <= last for first, last in spans] == [True] * 3
    assert spans[0][1] < spans[1][0] and spans[1][1] < spans[2][0]


def test_times_are_cut_in_the_middle_of_the_blanks_and_the_edges_are_the_characters_own():
    vocab = Vocab.speech()
    frames = list("--ca-t---") + [" "] * 6 + list("-s-a-tt--")  # 24 frames of 30 ms
    log_probs = hand_made([0 if ch == "-" else vocab.tokens.index(ch) for ch in frames], len(vocab))
    found = force_align(log_probs, "cat sat", vocab, 0.03)
    spans = align(log_probs.numpy(), vocab.encode("cat sat"))
    assert spans == [(2, 2), (3, 3), (5, 5), (9, 14), (16, 16), (18, 18), (20, 21)]
    assert boundaries(spans) == [2.0, 3.0, 4.5, 7.5, 15.5, 17.5, 19.5, 22.0]
    assert [(w["word"], w["start"], w["end"]) for w in found["words"]] == [
        ("cat", 0.06, 0.225),  # from c's frame to the middle of the blanks after t (frames 6-8)
        ("sat", 0.465, 0.66),  # from the middle of the blank before s to one past the last t
    ]
    assert "".join(ch["char"] for ch in found["chars"]) == "cat sat"
    assert found["chars"][0]["confidence"] == pytest.approx(0.9)


def test_text_is_written_with_the_vocabulary_and_the_rest_is_named():
    vocab = Vocab.speech()
    assert normalise_text("Hello, World!  It\u2019s a well-known caf\u00e9 \u2014 3 cats.", vocab) == (
        "hello world it's a well known cafe cats",
        ",!3.",
    )
    with pytest.raises(AlignError, match=r"notes\.txt: characters outside the model's vocabulary: '!' 'X'"):
        labels_for("aX!", vocab, "notes.txt")
    with pytest.raises(AlignError, match="too short for the text: 3 model frames for 4 characters"):
        check_alignable(3, vocab.encode("abcd"), "x.wav")
    with pytest.raises(AlignError, match="too long to align in one piece"):
        check_alignable(MAX_CELLS, vocab.encode("ab"), "x.wav")


# ---------------------------------------------------------------- times against known word boundaries
def test_word_times_match_where_the_words_are_spoken(segments_recognizer, spoken_words):
    """The stand-in model marks where each word's sound starts ('a') and ends ('b'): aligning "ab" per
    word must give each word's true start and end (within two output frames)."""
    samples, spans = spoken_words
    log_probs = segments_recognizer.log_probs([samples])[0]
    text = f" {' '.join(['ab'] * len(WORDS))} "  # this model writes silence as spaces
    found = force_align(log_probs, text, segments_recognizer.vocab, segments_recognizer.frame_seconds)
    assert len(found["words"]) == len(spans)
    for word, (start, end) in zip(found["words"], spans, strict=True):
        assert abs(word["start"] - start) <= 0.07 and abs(word["end"] - end) <= 0.07, (found["words"], spans)


# ---------------------------------------------------------------- real speech, the command line
@pytest.fixture(scope="module")
def sentence(tmp_path_factory) -> Path:
    return synthesize(WRITTEN, tmp_path_factory.mktemp("align") / "cat.wav", words_per_minute=150)


def test_recog_align_gives_ordered_word_times_within_the_audio_for_exactly_the_text(
    tiny_model, sentence, tmp_path
):
    text_file = tmp_path / "cat.txt"
    text_file.write_text(SENTENCE + "\n")
    result = run_recog("align", "--model", str(tiny_model), str(sentence), str(text_file))
    record = json.loads(result.stdout)
    duration = soundfile.info(str(sentence)).duration
    assert record["text"] == WRITTEN and record["dropped"] == "."
    assert "dropped characters the model lacks: '.'" in result.stderr
    assert record["duration"] == pytest.approx(duration, abs=0.002)
    assert [w["word"] for w in record["words"]] == WRITTEN.split()
    assert "".join(ch["char"] for ch in record["chars"]) == WRITTEN
    edges = [edge for w in record["words"] for edge in (w["start"], w["end"])]
    assert edges == sorted(edges) and 0 <= edges[0] and edges[-1] <= duration
    assert all(w["end"] > w["start"] for w in record["words"])
    assert all(0 < w["confidence"] <= 1 for w in record["words"])

    ctm = run_recog("align", "--model", str(tiny_model), str(sentence), "--text", WRITTEN, "--format", "ctm")
    rows = [line.split() for line in ctm.stdout.splitlines()]
    assert [row[4] for row in rows] == WRITTEN.split()
    for row, word in zip(rows, record["words"], strict=True):
        assert row[0] == "cat" and row[1] == "1" and len(row) == 6
        assert float(row[2]) == pytest.approx(word["start"], abs=1e-3)
        assert float(row[3]) == pytest.approx(word["end"] - word["start"], abs=2e-3)
        assert 0 < float(row[5]) <= 1

    out = tmp_path / "cat.srt"
    args = ["align", "--model", str(tiny_model), str(sentence), str(text_file), "--format", "srt"]
    run_recog(*args, "--words-per-cue", "2", "-o", str(out))
    cues = re.findall(
        r"(\d+)\n(\d\d):(\d\d):(\d\d),(\d{3}) --> (\d\d):(\d\d):(\d\d),(\d{3})\n(.+)\n", out.read_text()
    )
    assert [int(cue[0]) for cue in cues] == [1, 2, 3]
    assert [cue[9] for cue in cues] == ["the cat", "sat on", "the mat"]
    times = [
        (int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000)
        for cue in cues
        for h, m, s, ms in (cue[1:5], cue[5:9])
    ]
    assert times == sorted(times) and times[-1] <= duration + 1e-3


def test_eval_plots_from_the_command_line(tiny_model, tiny_corpus, tmp_path):
    """`recog eval --plots` (here because this module has the trained model): per set a confusion
    summary and the worst utterances drawn; a rerun replaces only what it wrote."""
    from PIL import Image

    manifest = tiny_corpus / "test.jsonl"
    plots = tmp_path / "plots"
    args = ["eval", "--model", str(tiny_model), str(manifest), "--decoder", "greedy", "--plots", str(plots)]
    run_recog(*args)
    folder = plots / "test"
    summary = json.loads((folder / "confusions.json").read_text())
    assert summary["utterances"] > 0 and summary["reference_chars"] > 0
    pictures = sorted(folder.glob("worst-*.png"))
    assert [p.name.split("-")[1] for p in pictures] == ["1", "2", "3"]
    for picture in [*pictures, folder / "confusions.png"]:
        with Image.open(picture) as image:
            image.verify()
        with Image.open(picture) as image:
            assert image.width >= 300 and image.height >= 200
    run_recog(*args)  # an earlier plots folder is rewritten
    (folder / "mine.txt").write_text("a person's notes")
    (plots / "other").mkdir()
    (plots / "other" / "x.txt").write_text("keep")
    other = tmp_path / "other.jsonl"
    other.write_text(manifest.read_text())
    result = run_recog("eval", "--model", str(tiny_model), str(other), "--plots", str(plots), check=False)
    assert result.returncode == 2 and "not empty and not an earlier plots folder" in result.stderr
    assert (plots / "other" / "x.txt").read_text() == "keep"


# ---------------------------------------------------------------- ink and images
@pytest.mark.parametrize("task", ["ink", "image"])
def test_ink_points_and_image_columns_lie_within_the_input(task, ink_model, image_model, tmp_path):
    from recog.align import align_input

    run = ink_model if task == "ink" else image_model
    recognizer = Recognizer.load(run["out"] / "best.pt")
    manifest = "test.jsonl" if task == "ink" else "test-images.jsonl"
    member = "ink.npz" if task == "ink" else "png"
    data = corpus_members(run["corpus"], manifest, member, 1)[0]
    text = json.loads((run["corpus"] / manifest).read_text().splitlines()[0])["text"]
    if task == "ink":
        path = write_json(decode_ink(data), tmp_path / "line.json")
        size = decode_ink(data).num_points
    else:
        path = tmp_path / "line.png"
        path.write_bytes(data)
        size = read_image(path).shape[1]
    record = align_input(recognizer, str(path), text.upper() + "!")
    assert record["text"] == text and record["dropped"] == "!"
    assert record["unit"] == ("points" if task == "ink" else "columns")
    assert [w["word"] for w in record["words"]] == text.split()
    edges = [edge for ch in record["chars"] for edge in (ch["start"], ch["end"])]
    assert edges == sorted(edges) and 0 <= edges[0] and edges[-1] <= size
    assert all(w["end"] > w["start"] for w in record["words"])


def test_ctm_and_srt_need_times(image_model, tmp_path, capsys):
    png = tmp_path / "line.png"
    png.write_bytes(corpus_members(image_model["corpus"], "test-images.jsonl", "png", 1)[0])
    code = main(
        ["align", "--model", str(image_model["out"] / "best.pt"), str(png), "--text", "a", "--format", "ctm"]
    )
    assert code == 2
    assert "--format ctm needs a speech model; this image model gives columns" in capsys.readouterr().err


# ---------------------------------------------------------------- bad input
def test_bad_inputs_are_one_line_naming_the_file(tiny_model, sentence, tmp_path, capsys):
    model = str(tiny_model)

    def fails(*args: str) -> str:
        assert main(["align", "--model", model, *args]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1, captured.err
        return lines[0]

    missing = tmp_path / "missing.wav"
    assert fails(str(missing), "--text", "hello") == f"recog: align: {missing}: file not found"
    noise = tmp_path / "noise.wav"
    noise.write_bytes(b"RIFF not really a wav")
    assert str(noise) in fails(str(noise), "--text", "hello")
    assert (
        fails(str(sentence), "--text", "?! 123")
        == "recog: align: --text: the text is empty (all of it outside the model's characters: '?!123')"
    )
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    assert fails(str(sentence), str(empty)) == f"recog: align: {empty}: the text is empty"
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\u00e9".encode("latin-1"))
    assert fails(str(sentence), str(latin1)).startswith(f"recog: align: {latin1}: not UTF-8 text")
    short = tmp_path / "short.wav"
    soundfile.write(short, np.zeros(4000, np.float32), 16000)  # 0.25 s: 8 output frames
    assert re.search(
        r"short\.wav: input too short for the text: \d model frames for 22 characters",
        fails(str(short), "--text", WRITTEN),
    )
    assert "one of them" in fails(str(sentence))

    # -o never replaces a file silently
    out = tmp_path / "out.json"
    out.write_text("a person's file")
    assert (
        fails(str(sentence), "--text", WRITTEN, "-o", str(out))
        == f"recog: align: -o {out}: already exists; pass --force to replace it"
    )
    assert out.read_text() == "a person's file"
    assert main(["align", "--model", model, str(sentence), "--text", WRITTEN, "-o", str(out), "--force"]) == 0
    assert json.loads(out.read_text())["text"] == WRITTEN
    assert sorted(p.name for p in tmp_path.iterdir() if "partial" in p.name) == []
