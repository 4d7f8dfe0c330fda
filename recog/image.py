"""Reading one line image into an ink map: (height, width) float32, 1 where there is ink, 0 paper.

Any PNG/JPEG/TIFF/BMP Pillow decodes: colour, greyscale, 16-bit, with alpha (composited on white),
dark ink on light paper or the inverse (detected from the background, which most pixels of a line
image are). Also draws `Ink` into an ink map, for training images made from pen strokes.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps, UnidentifiedImageError

from recog.ink import Ink

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
MAX_IMAGE_PIXELS = 40_000_000
"""Most pixels a line image may have, checked from the header before decoding: an IAM line at 300 dpi
is ~2500x120 (0.3 MP), a whole A4 page 8.7 MP; decoding and normalising cost ~25 bytes a pixel."""
MAX_PIXELS = MAX_IMAGE_PIXELS  # the name before issue 22
MAX_IMAGE_ASPECT = 1000
"""Widest width/height a line image may have, checked from the header before decoding: an IAM line is
~20, a tightly cropped long line ~100. Scaled to the feature height, a 100000x1 image would be millions
of column frames (the features also bound those: `recog.features.image.MAX_IMAGE_COLUMNS`)."""


class ImageError(Exception):
    """An image input that cannot be used; the message names the file and the reason."""


def _open(source: str | Path | bytes, label: str) -> Image.Image:
    if not isinstance(source, bytes):
        path = Path(source)
        if path.is_dir():
            raise ImageError(f"{label}: is a folder, not an image")
        if not path.exists():
            raise ImageError(f"{label}: file not found")
        if path.stat().st_size == 0:
            raise ImageError(f"{label}: empty file (0 bytes)")
    elif not source:
        raise ImageError(f"{label}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise ImageError(
                    f"{label}: {width}x{height} pixels is too large for a line image "
                    f"(MAX_IMAGE_PIXELS = {MAX_IMAGE_PIXELS})"
                )
            if width == 0 or height == 0:
                raise ImageError(f"{label}: image has no pixels ({width}x{height})")
            if max(width / height, height / width) > MAX_IMAGE_ASPECT:
                raise ImageError(
                    f"{label}: {width}x{height} pixels is too long and thin for a line image "
                    f"(MAX_IMAGE_ASPECT = {MAX_IMAGE_ASPECT})"
                )
            image.load()
    except PermissionError:
        raise ImageError(f"{label}: permission denied") from None
    except UnidentifiedImageError:
        raise ImageError(f"{label}: not an image Pillow can read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{label}: too many pixels (decompression bomb?)") from None
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        raise ImageError(f"{label}: broken or truncated image ({error})") from None
    return image


def to_luminance(image: Image.Image) -> np.ndarray:
    """(height, width) float32 in [0, 1], whatever the mode; transparency shows white paper."""
    try:
        image = ImageOps.exif_transpose(image)
    except (OSError, ValueError, TypeError, KeyError):  # a broken EXIF block does not spoil the pixels
        pass
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        return ((values - low) / (high - low) if high > low else np.ones_like(values)).astype(np.float32)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(paper, rgba)
    return np.asarray(image.convert("L"), dtype=np.float32) / 255.0


def ink_map(luminance: np.ndarray) -> np.ndarray:
    """1 = ink. Dark-on-light is inverted; light-on-dark (median pixel dark) is kept as it is."""
    if float(np.median(luminance)) < 0.5:
        return luminance.astype(np.float32)
    return (1.0 - luminance).astype(np.float32)


def read_image(source: str | Path | bytes, name: str | None = None) -> np.ndarray:
    """Decode a line image (path or encoded bytes) into an ink map (height, width) float32 in [0, 1]."""
    label = name or (str(source) if not isinstance(source, bytes) else "<bytes>")
    image = _open(source, label)
    try:
        luminance = to_luminance(image)
    except (OSError, ValueError) as error:
        raise ImageError(f"{label}: cannot convert pixels ({error})") from None
    return ink_map(luminance)


def encode_png(ink: np.ndarray) -> bytes:
    """An ink map as a greyscale PNG, dark ink on white as a scan would be."""
    grey = np.clip(np.rint((1.0 - ink) * 255.0), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(grey).save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def render_ink(
    ink: Ink, x_height_px: float = 16.0, pen_width: float = 2.0, margin: float = 0.5, supersample: int = 3
) -> np.ndarray:
    """Draw normalised ink (x-height 1, y down) with a round pen: (height, width) float32 ink map."""
    points = ink.points()
    scale = x_height_px * supersample
    low = points.min(axis=0) - margin
    high = points.max(axis=0) + margin
    size = np.ceil((high - low) * scale).astype(int) + 1
    size = np.maximum(size - size % supersample + supersample, supersample)
    canvas = Image.new("L", (int(size[0]), int(size[1])), 0)
    draw = ImageDraw.Draw(canvas)
    width = max(1, int(round(pen_width * supersample)))
    radius = width / 2
    for stroke in ink.strokes:
        xy = [tuple(p) for p in ((stroke - low) * scale).tolist()]
        if len(xy) > 1:
            draw.line(xy, fill=255, width=width, joint="curve")
        for x, y in (xy[0], xy[-1]):
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=255)
    small = canvas.resize((canvas.width // supersample, canvas.height // supersample), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0
