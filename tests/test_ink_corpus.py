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
from pipelines.outline_fonts import (
    FontError,
    OutlineFont,
    discover_fonts,
    is_reserved_font,
    is_wanted_family,
    split_fonts,
)
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


def test_script_families_train_and_text_faces_of_big_packages_are_left_out():
    split = split_fonts()
    train = {font.key for font in split["train"]}
    assert {f.key for f in split["dev"]} == {"femkeklaver"} and {f.key for f in split["test"]} == {
        "rufscript"
    }
    assert not train & {"femkeklaver", "rufscript"}
    installed = {font.key for font in discover_fonts()}
    for key in ("lobstertwo", "nanumpenscript", "nanumbrushscript", "texgyrechorus", "z003", "kleeone"):
        assert key in train or key not in installed
    # Only the script faces of the big packages: no Times or Helvetica clones, no Nanum Gothic.
    assert not installed & {"nimbusroman", "nimbussans", "texgyretermes", "nanumgothic", "nanummyeongjo"}
    assert not is_wanted_family(
        "/usr/share/fonts/opentype/urw-base35/NimbusRoman-Regular.otf", "Nimbus Roman"
    )
    assert is_wanted_family("/usr/share/fonts/opentype/urw-base35/Z003-MediumItalic.otf", "Z003")
    assert not is_wanted_family("/usr/share/fonts/truetype/nanum/NanumGothic.ttf", "NanumGothic")
    assert is_wanted_family("/usr/share/fonts/truetype/nanum/NanumPen.ttf", "Nanum Pen Script")
    assert not any(is_reserved_font(font.path, font.family) for font in discover_fonts())


def test_tiny_corpus_build(tmp_path, capsys):
    out = build_corpus(tmp_path / "corpus", preset="tiny", workers=2)
    summary = json.loads((out / "corpus.json").read_text())
    assert (out / "DONE").exists() and summary["lines"] > 0
    splits = summary["splits"]
    assert splits["train"]["ink_lines"] == 40 and splits["train"]["outline_lines"] == 12
    assert splits["train"]["skeleton_ink_lines"] == 12  # the preset's 30 % of the ink lines
    assert all(splits[s]["skeleton_ink_lines"] == 0 for s in ("dev", "test", "dev-seen", "test-seen"))
    ink_fonts = set(summary["ink_fonts"]["train"])
    assert ink_fonts and not ink_fonts & {"femkeklaver", "Rufscript"}
    assert "skeleton_lines_per_cpu_second" in summary["speed"]
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
    assert {u.info["source"] for u in images} == {"hershey", "skeleton", "outline"}
    traced = [u for u in train if u.info["source"] == "skeleton"]
    assert len(traced) == 12
    assert all(u.info["style"] in ink_fonts and u.info["font"].endswith((".ttf", ".otf")) for u in traced)
    with tarfile.open(traced[0].shard) as shard:
        ink = decode_ink(shard.extractfile(f"{traced[0].key}.ink.npz").read())
    assert ink.num_points == traced[0].info["points"] and ink.times is not None
    assert StrokeFeatures()(ink).shape[0] > 4 * len(traced[0].text)
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


def test_mistraced_and_sketched_families_are_not_traced_as_ink_but_connected_scripts_weigh_double():
    from pipelines.ink_corpus import CONNECTED_SCRIPT_FAMILIES, _font_job
    from pipelines.outline_fonts import MISTRACED_FAMILIES, ink_fonts

    fonts = list(discover_fonts())
    assert not {font.key for font in ink_fonts(fonts)} & set(MISTRACED_FAMILIES)
    connected = [font for font in fonts if font.key in CONNECTED_SCRIPT_FAMILIES][:1]
    printed = [font for font in fonts if font.key == "dejavusans"][:1]
    if not connected or not printed:
        pytest.skip("needs a connected script font and DejaVu Sans installed")
    pair = [
        OutlineFont(connected[0].path, connected[0].family),
        OutlineFont(printed[0].path, printed[0].family),
    ]
    picks = [_font_job("train", i, "x", "skeleton", pair, 0).family for i in range(3000)]
    assert picks.count(connected[0].family) / len(picks) == pytest.approx(2 / 3, abs=0.03)
    outline = [_font_job("train", i, "x", "outline", pair, 0).family for i in range(3000)]
    assert outline.count(connected[0].family) / len(outline) == pytest.approx(1 / 2, abs=0.03)
