"""Ink traced from outline fonts: thinning, the skeleton's strokes on simple glyphs, a traced line's
extent and writing order, and which fonts may be traced."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from pipelines.outline_fonts import FontError, OutlineFont, discover_fonts, has_lowercase, ink_fonts
from pipelines.skeleton_ink import render_line, skeleton_ink, thin, trace


def _font(name: str) -> OutlineFont:
    found = [font for font in discover_fonts() if font.path.endswith(f"/{name}")]
    if not found:
        pytest.skip(f"{name} is not installed (make setup installs it)")
    return found[0]


@pytest.fixture(scope="module")
def sans() -> OutlineFont:
    return _font("DejaVuSans.ttf")


def _to_pixels(points: np.ndarray, rendering) -> np.ndarray:
    """x-height units back to (row, column) pixel indices of the rendering."""
    xy = points * rendering.x_height + [rendering.left, rendering.baseline]
    return np.rint(xy[:, ::-1]).astype(int)


def test_thinning_leaves_a_one_pixel_line_and_keeps_small_dots():
    mask = np.zeros((20, 40), dtype=bool)
    mask[8:13, 3:30] = True  # a bar five pixels thick
    mask[2:4, 35:37] = True  # a 2 x 2 dot, which plain Zhang-Suen erases
    skeleton = thin(mask)
    assert not (skeleton & ~mask).any()
    bar = skeleton[:, :32]
    assert (bar.sum(axis=0)[6:27] == 1).all()  # one pixel thick along the bar
    assert 20 <= bar.sum() <= 27
    assert skeleton[2:4, 35:37].sum() == 1


@pytest.mark.parametrize(("char", "strokes"), [("l", 1), ("o", 1), ("x", 2), ("i", 2)])
def test_simple_glyphs_become_the_strokes_a_pen_makes(sans, char, strokes):
    rendering = render_line(char, sans, 48)
    ink = trace(rendering, char)
    assert len(ink.strokes) == strokes
    # Every traced point lies on the glyph's ink (allowing the one-pixel smoothing of corners).
    near_ink = ndimage.binary_dilation(rendering.mask)
    for stroke in ink.strokes:
        rows, columns = _to_pixels(stroke, rendering).T
        assert near_ink[rows, columns].all()
    if char == "o":  # one closed loop round the counter
        loop = ink.strokes[0]
        assert np.hypot(*(loop[0] - loop[-1])) < 0.05
        assert np.ptp(loop[:, 1]) > 0.8  # spans the x-height (units of x-height)
    if char == "l":  # one near-vertical line from the ascender down to the baseline, written downwards
        line = ink.strokes[0]
        assert line[0, 1] < line[-1, 1] and np.ptp(line[:, 0]) < 0.1
        assert line[0, 1] < -1.2 and line[-1, 1] > -0.3
    if char == "i":  # the dot is a short separate stroke above the stem
        dot, stem = sorted(ink.strokes, key=len)
        assert dot[:, 1].max() < stem[:, 1].min()


def test_a_traced_line_covers_the_text_and_runs_left_to_right(sans):
    rendering = render_line("mix of ink", sans, 40)
    ink = trace(rendering, "mix of ink")
    rows, columns = np.nonzero(rendering.mask)
    x_min, y_min, x_max, y_max = ink.bounds()
    scale = rendering.x_height
    # The skeleton runs down the middle of the strokes: inside the ink's box by at most a stroke width.
    assert 0 <= (x_min * scale + rendering.left) - columns.min() < 6
    assert 0 <= columns.max() - (x_max * scale + rendering.left) < 6
    assert 0 <= (y_min * scale + rendering.baseline) - rows.min() < 6
    assert abs(y_max) < 0.35  # nothing of "mix of ink" goes below the baseline
    starts = [float(stroke[:, 0].min()) for stroke in ink.strokes]
    assert starts == sorted(starts)
    # Words stay apart: the gaps between the three words are the two widest.
    xs = np.sort(ink.points()[:, 0])
    gaps = np.sort(np.diff(xs))[-2:]
    assert gaps.min() > 0.4


def test_connected_script_is_traced_in_long_strokes():
    script = _font("lobster.otf")
    ink = skeleton_ink("minimum", script, np.random.default_rng(0))
    # Joins carry the pen from letter to letter (the word is 6-7 x-heights wide); stems that an m or
    # n would retrace are strokes of their own, but no letter falls apart into pixel runs.
    assert max(float(np.ptp(stroke[:, 0])) for stroke in ink.strokes) > 1.5
    assert len(ink.strokes) <= 2 * len("minimum")


def test_ink_fonts_leave_out_capitals_only_sketch_and_bold_faces():
    fonts = discover_fonts()
    kept = {font.path for font in ink_fonts(list(fonts))}
    for font in fonts:
        name = font.path.rsplit("/", 1)[-1]
        if name in ("TomsonTalks.ttf", "Humor-Sans.ttf") or font.key == "cabinsketch" or "Bold" in name:
            assert font.path not in kept
    for name in ("DejaVuSans.ttf", "lobster.otf", "NanumPen.ttf"):
        if any(f.path.endswith(name) for f in fonts):
            assert any(path.endswith(name) for path in kept)
    assert has_lowercase(_font("DejaVuSans.ttf").path)


def test_reserved_fonts_cannot_be_traced():
    with pytest.raises(FontError, match="reserved"):
        skeleton_ink(
            "a", OutlineFont("/usr/share/fonts/truetype/x/DancingScript.ttf", "Dancing Script"), None
        )
