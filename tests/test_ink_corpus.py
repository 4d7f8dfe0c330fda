"""The synthetic handwriting corpus: Hershey styles and their hold-out, letter variety, reserved
fonts, and a tiny corpus build read back through the project's own manifest and ink/image readers."""

from __future__ import annotations

import json
import shutil
import tarfile

import numpy as np
import pytest

from pipelines.hershey import DEV_STYLES, TEST_STYLES, load_styles, split_styles, thin_repeats, write_text
from pipelines.ink_corpus import build_corpus
from pipelines.outline_fonts import FontError, OutlineFont, discover_fonts, is_reserved_font, split_fonts
from recog.datasets.manifest import read_manifest
from recog.features.image import ImageFeatures
from recog.features.strokes import StrokeFeatures
from recog.image import read_image
from recog.ink import decode_ink


def test_every_latin_hershey_design_once_and_held_out_styles_never_in_train():
    styles = load_styles()
    assert {"futural", "cursive", "scriptc", "timesi", "timesr", "rowmant"} <= set(styles)
    assert "rowmans" in styles["futural"].fonts  # identical letters: one style
    assert not {"gothgrt", "gothicger", "greek", "cyrillic"} & {f for s in styles.values() for f in s.fonts}
    split = split_styles()
    assert set(split["dev"]) == set(DEV_STYLES) and set(split["test"]) == set(TEST_STYLES)
    assert not (set(split["dev"]) | set(split["test"])) & set(split["train"])
    for style in styles.values():
        assert all(c in style.glyphs for c in "abcdefghijklmnopqrstuvwxyz' ")


def test_thinning_drops_parallel_repeats_only():
    line = np.stack([np.zeros(10), np.linspace(0, 20, 10)], axis=1)
    kept = thin_repeats([line, line + [1.0, 0.0], line + [8.0, 0.0]])
    assert len(kept) == 2  # the repeat one unit away goes, the separate stroke eight away stays


def test_lines_are_reproducible_and_vary_between_writers():
    styles = [load_styles()[name] for name in split_styles()["train"]]
    first, info = write_text("hello world", styles, np.random.default_rng(1))
    again, _ = write_text("hello world", styles, np.random.default_rng(1))
    other, _ = write_text("hello world", styles, np.random.default_rng(2))
    assert all(np.array_equal(a, b) for a, b in zip(first.strokes, again.strokes, strict=True))
    assert len(first.strokes) != len(other.strokes) or not np.allclose(first.points(), other.points())
    assert sum(info["styles"].values()) == len("helloworld")


def test_reserved_fonts_are_refused(tmp_path):
    for path, family in [
        ("/usr/share/fonts/truetype/dkg-handwriting/DkgHandwriting.ttf", "DkgHandwriting"),
        ("/usr/share/fonts/truetype/kristi/Kristi.ttf", "Kristi"),
        ("/usr/share/fonts/truetype/x/a.ttf", "Dancing Script"),
        ("/usr/share/inkscape/fonts/hershey.svg", "Hershey"),
    ]:
        assert is_reserved_font(path, family)
        with pytest.raises(FontError, match="reserved"):
            OutlineFont(path, family)
    # A usable font copied under a reserved package's folder name is not discovered.
    source = next(font.path for font in discover_fonts() if "dejavu" in font.path.lower())
    (tmp_path / "ok").mkdir()
    (tmp_path / "breip").mkdir()
    shutil.copy(source, tmp_path / "ok" / "a.ttf")
    shutil.copy(source, tmp_path / "breip" / "b.ttf")
    found = discover_fonts((tmp_path,))
    assert [font.path for font in found] == [str(tmp_path / "ok" / "a.ttf")]
    # One family alone cannot be held out: everything trains, dev and test get none.
    assert split_fonts(found) == {"train": list(found), "dev": [], "test": []}


def test_tiny_corpus_build(tmp_path, capsys):
    out = build_corpus(tmp_path / "corpus", preset="tiny", workers=2)
    summary = json.loads((out / "corpus.json").read_text())
    assert (out / "DONE").exists() and summary["lines"] > 0
    splits = summary["splits"]
    assert splits["train"]["ink_lines"] == 40 and splits["train"]["outline_lines"] == 12
    assert set(splits["dev"]["letters_by_style"]) == set(DEV_STYLES)
    assert set(splits["test"]["letters_by_style"]) == set(TEST_STYLES)
    assert not set(splits["train"]["letters_by_style"]) & (set(DEV_STYLES) | set(TEST_STYLES))

    train = read_manifest(out / "train.jsonl")
    dev, test = read_manifest(out / "dev.jsonl"), read_manifest(out / "test-seen.jsonl")
    assert len(train) == 40 and all(u.shard for u in train)
    train_texts = {u.text for u in train} | {u.text for u in read_manifest(out / "train-images.jsonl")}
    assert not train_texts & ({u.text for u in dev} | {u.text for u in test})
    lm_text = set((out / "lm-text.txt").read_text().splitlines())
    assert not lm_text & {u.text for u in dev}

    images = read_manifest(out / "train-images.jsonl")
    assert {u.info["source"] for u in images} == {"hershey", "outline"}
    strokes, columns = StrokeFeatures(), ImageFeatures()
    utterance = train[0]
    with tarfile.open(utterance.shard) as shard:
        ink = decode_ink(shard.extractfile(f"{utterance.key}.ink.npz").read())
        image = read_image(shard.extractfile(f"{utterance.key}.png").read())
    assert ink.num_points == utterance.info["points"] and ink.times is not None
    assert strokes(ink).shape[0] > 4 * len(utterance.text)  # enough frames for CTC
    assert image.shape == (utterance.info["height"], utterance.info["width"])
    assert columns(image).shape[0] > len(utterance.text)

    capsys.readouterr()
    build_corpus(tmp_path / "corpus", preset="tiny", workers=2)
    assert "corpus cached" in capsys.readouterr().out
