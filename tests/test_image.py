"""Line images: reading any format and polarity, normalisation to a fixed height, perturbations,
and errors that name the file and the reason."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image, ImageDraw

from recog.features.image import ImageFeatureConfig, ImageFeatures, PaperStyle, degrade, estimate_rotation
from recog.image import ImageError, encode_png, read_image, render_ink
from recog.ink import Ink


def line_image(width: int = 300, height: int = 60) -> Image.Image:
    """Dark 'writing' (bars and a ring) on light paper."""
    image = Image.new("L", (width, height), 235)
    draw = ImageDraw.Draw(image)
    for x in range(20, width - 40, 30):
        draw.line([(x, 15), (x + 8, 45)], fill=20, width=4)
    draw.ellipse((width - 35, 20, width - 10, 45), outline=20, width=4)
    return image


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def test_light_on_dark_reads_like_dark_on_light():
    normal = line_image()
    inverted = Image.eval(normal, lambda v: 255 - v)
    a, b = read_image(encode(normal, "PNG")), read_image(encode(inverted, "PNG"))
    np.testing.assert_allclose(a, b, atol=1 / 255)
    assert a.max() > 0.8 and np.median(a) < 0.1  # ink is 1, paper near 0


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "TIFF", "BMP"])
def test_formats_and_colour_give_the_same_ink(fmt):
    grey = read_image(encode(line_image(), "PNG"))
    colour = Image.merge("RGB", [line_image()] * 3)  # grey values as RGB
    if fmt == "JPEG":
        colour = colour.convert("RGB")
    ink = read_image(encode(colour, fmt))
    assert ink.shape == grey.shape and ink.dtype == np.float32
    assert np.abs(ink - grey).mean() < 0.02


def test_blue_ink_on_yellow_paper_and_transparent_background():
    paper = Image.new("RGB", (200, 50), (250, 240, 160))
    ImageDraw.Draw(paper).line([(20, 25), (180, 25)], fill=(20, 30, 160), width=5)
    ink = read_image(encode(paper, "PNG"))
    assert ink[25, 100] > 0.5 and ink[5, 5] < 0.2
    clear = Image.new("RGBA", (200, 50), (0, 0, 0, 0))  # transparent black: must read as white paper
    ImageDraw.Draw(clear).line([(20, 25), (180, 25)], fill=(0, 0, 0, 255), width=5)
    ink = read_image(encode(clear, "PNG"))
    assert ink[25, 100] > 0.9 and ink[5, 5] < 0.05


def test_sixteen_bit_greyscale():
    values = np.full((40, 120), 60000, dtype=np.uint16)
    values[15:25, 10:110] = 1000
    ink = read_image(encode(Image.fromarray(values), "PNG"))
    assert ink[20, 50] > 0.9 and ink[2, 2] < 0.05


def test_normalised_height_and_kept_aspect():
    config = ImageFeatureConfig(height=32, pad=0.0)
    frames = ImageFeatures(config)(read_image(encode(line_image(300, 60), "PNG")))
    assert frames.shape[1] == 32 and frames.dtype == np.float32  # (T = width, F = height)
    ink_rows, ink_columns = 31, 290 - 20 + 1  # the drawn ink spans about this box (with pen width)
    expected = ink_columns * 32 / ink_rows
    assert abs(frames.shape[0] - expected) / expected < 0.1
    assert frames.max() == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("size", [(1, 1), (3, 1000), (1000, 3), (7, 5)])
def test_odd_sizes_and_blank_pages_still_give_frames(size):
    image = Image.new("L", size, 255)
    if size[0] > 2 and size[1] > 2:
        image.putpixel((1, 1), 0)
    frames = ImageFeatures(ImageFeatureConfig(height=24))(read_image(encode(image, "PNG")))
    assert frames.shape[1] == 24 and frames.shape[0] >= 1 and np.all(np.isfinite(frames))


def test_deskew_finds_a_rotation():
    ink = read_image(encode(line_image(400, 60), "PNG"))
    from recog.features.image import rotate

    tilted = rotate(ink, 4.0)
    assert abs(estimate_rotation(tilted) + 4.0) <= 1.0


def test_perturbations_are_reproducible_and_keep_the_ink_visible():
    ink = read_image(encode(line_image(), "PNG"))

    def perturbed(seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        return degrade(ink, PaperStyle.draw(rng), rng)

    np.testing.assert_array_equal(perturbed(3), perturbed(3))
    assert not np.array_equal(perturbed(3), perturbed(4))
    frames = ImageFeatures()(perturbed(3))
    assert frames.shape[1] == 40 and frames.max() > 0.8


def test_rendered_ink_round_trips_through_png():
    ink = Ink([[[0, 0], [3, -1], [6, 0]], [[2, -2]]])
    drawn = render_ink(ink, x_height_px=12, pen_width=2)
    assert drawn.max() > 0.9 and drawn[0, 0] == 0
    np.testing.assert_allclose(read_image(encode_png(drawn)), drawn, atol=1 / 255)


def test_broken_files_name_the_file_and_the_reason(tmp_path):
    cases = {
        "missing.png": None,
        "empty.png": b"",
        "text.jpg": b"this is not an image at all",
        "truncated.png": encode(line_image(), "PNG")[:200],
    }
    reasons = {
        "missing.png": "file not found",
        "empty.png": "empty file",
        "text.jpg": "not an image",
        "truncated.png": "broken or truncated",
    }
    for name, data in cases.items():
        path = tmp_path / name
        if data is not None:
            path.write_bytes(data)
        with pytest.raises(ImageError) as caught:
            read_image(path)
        assert str(caught.value).startswith(f"{path}: ") and reasons[name] in str(caught.value)
    with pytest.raises(ImageError, match="is a folder"):
        read_image(tmp_path)


def test_huge_images_are_refused_before_decoding(tmp_path):
    path = tmp_path / "huge.png"
    Image.new("1", (20000, 2500), 1).save(path)  # 50 megapixels, a few kilobytes on disk
    started = time.perf_counter()
    with pytest.raises(ImageError, match="too large for a line image"):
        read_image(path)
    assert time.perf_counter() - started < 1.0
