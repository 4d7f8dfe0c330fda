"""`recog.plots`: confusion counts on hand-made reference/hypothesis pairs, the pictures (valid PNGs of
real size with something drawn), `eval_plots` on real speech with a stand-in model, and a plots folder
that never touches files it did not write."""

# ruff: noqa: F811  (pytest fixtures imported from another test module)
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_transcribe import segments_recognizer, spoken_words  # noqa: F401  (fixtures)

from recog.datasets.manifest import Utterance
from recog.datasets.shards import to_int16
from recog.image import render_ink
from recog.ink import Ink
from recog.metrics import edit_distance
from recog.plots import (
    INDEX,
    PlotFolder,
    PlotsError,
    char_edits,
    confusion_markdown,
    confusion_summary,
    eval_plots,
    plot_confusions,
    plot_ink,
    plot_line_image,
    plot_spectrogram,
)


def assert_picture(path: Path, min_width: int = 300, min_height: int = 150) -> np.ndarray:
    """A PNG that opens, has a real size and more than a blank canvas; its pixels."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.width >= min_width and image.height >= min_height, image.size
        pixels = np.asarray(image.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20  # drawn, not one flat colour
    return pixels


# ---------------------------------------------------------------- confusions
def test_confusion_counts_on_hand_made_pairs():
    assert char_edits("the cat", "tha ct") == [("e", "a"), ("a", "")]
    assert char_edits("ab", "abc") == [("", "c")]
    summary = confusion_summary(
        [("the cat", "tha ct"), ("ab", "abc"), ("  see  it ", "sea it"), ("ok", "ok")]
    )
    assert (summary["substitutions"], summary["deletions"], summary["insertions"]) == (2, 1, 1)
    assert summary["reference_chars"] == 7 + 2 + 6 + 2  # spaces collapsed, as CER counts them
    assert summary["top_substitutions"] == [
        {"ref": "e", "hyp": "a", "count": 2},
    ]
    assert summary["top_deletions"] == [{"char": "a", "count": 1}]
    assert summary["top_insertions"] == [{"char": "c", "count": 1}]
    markdown = confusion_markdown(summary, "dev")
    assert "| `e` -> `a` | 2 |" in markdown and "| `c` inserted | 1 |" in markdown


def test_edits_are_a_minimum_alignment():
    rng = random.Random(3)
    for _ in range(200):
        reference = "".join(rng.choice("ab c") for _ in range(rng.randint(0, 9)))
        hypothesis = "".join(rng.choice("ab c") for _ in range(rng.randint(0, 9)))
        edits = char_edits(reference, hypothesis)
        assert len(edits) == edit_distance(reference, hypothesis), (reference, hypothesis, edits)
        assert all(ref or hyp for ref, hyp in edits)


# ---------------------------------------------------------------- pictures
def test_confusion_chart(tmp_path):
    summary = confusion_summary([("the cat sat", "tha cot st"), ("on the mat", "an the mad")])
    plot_confusions(summary, tmp_path / "confusions.png", "dev")
    assert_picture(tmp_path / "confusions.png")
    plot_confusions(confusion_summary([("ok", "ok")]), tmp_path / "none.png", "perfect")
    assert_picture(tmp_path / "none.png", min_height=80)


def test_spectrogram_with_word_boundaries(spoken_words, tmp_path):
    samples, spans = spoken_words
    words = [{"word": f"w{i}", "start": a, "end": b, "confidence": 1.0} for i, (a, b) in enumerate(spans)]
    plot_spectrogram(samples, 16000, words, tmp_path / "speech.png", "ref: ...\nhyp: ...")
    pixels = assert_picture(tmp_path / "speech.png", min_width=800)
    plot_spectrogram(samples, 16000, [], tmp_path / "bare.png")
    bare = assert_picture(tmp_path / "bare.png", min_width=800)

    def cyan(image: np.ndarray) -> int:
        return int((np.abs(image.astype(int) - [0, 255, 255]).sum(-1) < 90).sum())

    # every other word's boundaries (and its text) are drawn in cyan over the spectrogram
    assert cyan(bare) < 10 and cyan(pixels) > 500


def test_ink_coloured_by_character_and_image_with_columns(tmp_path):
    # two letters of pen strokes: a circle ("o") then a vertical bar ("l")
    angles = np.linspace(0, 2 * np.pi, 40)
    circle = np.column_stack([0.5 + 0.4 * np.cos(angles), 0.5 + 0.4 * np.sin(angles)])
    bar = np.column_stack([np.full(20, 1.4), np.linspace(-0.5, 0.9, 20)])
    ink = Ink([circle, bar])
    chars = [
        {"char": "o", "start": 0, "end": 40, "confidence": 0.9},
        {"char": "l", "start": 40, "end": 60, "confidence": 0.8},
    ]
    plot_ink(ink, chars, tmp_path / "ink.png", "ol")
    pixels = assert_picture(tmp_path / "ink.png", min_width=250)
    blue, orange = np.array([31, 119, 180]), np.array([255, 127, 14])  # tab10's first two colours
    for colour in (blue, orange):
        assert (np.abs(pixels.astype(int) - colour).sum(-1) < 40).sum() > 30
    line = render_ink(Ink([circle * [1, 1], bar]))
    columns = [
        {"char": "o", "start": 0, "end": line.shape[1] // 2, "confidence": 0.9},
        {"char": "l", "start": line.shape[1] // 2, "end": line.shape[1], "confidence": 0.8},
    ]
    plot_line_image(line, columns, tmp_path / "line.png", "ol")
    assert_picture(tmp_path / "line.png", min_width=250)


# ---------------------------------------------------------------- a set, and the folder
def test_eval_plots_draw_the_worst_utterances(segments_recognizer, spoken_words, tmp_path):
    samples, _ = spoken_words
    rate = 16000
    pieces = [samples[: 4 * rate], samples[4 * rate :], samples[2 * rate : 6 * rate]]
    utterances = [
        Utterance(key=f"u/{i}", text=text, duration=0.0) for i, text in enumerate(["ab ab", "x", "ab"])
    ]
    stored = {u.key: to_int16(piece) for u, piece in zip(utterances, pieces, strict=True)}
    result = eval_plots(segments_recognizer, utterances, stored, PlotFolder(tmp_path / "dev"), "dev", worst=2)
    names = sorted(Path(path).name for path in result["files"])
    assert names == [
        "confusions.json",
        "confusions.md",
        "confusions.png",
        "worst-1-u_1.png",
        "worst-2-u_2.png",
    ]
    for name in names:
        if name.endswith(".png"):
            assert_picture(tmp_path / "dev" / name)
    index = json.loads((tmp_path / "dev" / INDEX).read_text())
    assert sorted(index["files"]) == names
    assert json.loads((tmp_path / "dev" / "confusions.json").read_text())["utterances"] == 3


def test_a_plots_folder_never_touches_a_persons_files(tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(PlotsError, match="not empty and not an earlier plots folder"):
        PlotFolder(busy)
    folder = PlotFolder(tmp_path / "dev")
    folder.path("confusions.md").write_text("first")
    folder.finish()
    (tmp_path / "dev" / "worst-1-x.png").write_text("a person's picture")
    again = PlotFolder(tmp_path / "dev")
    again.path("confusions.md").write_text("second")  # written by the earlier run: replaced
    with pytest.raises(PlotsError, match="worst-1-x.png: exists and was not written by recog"):
        again.path("worst-1-x.png")
    assert (tmp_path / "dev" / "worst-1-x.png").read_text() == "a person's picture"
    (tmp_path / "file").write_text("x")
    with pytest.raises(PlotsError, match="exists and is not a folder"):
        PlotFolder(tmp_path / "file")
