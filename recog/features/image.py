"""Line images -> (T, F) float32 frames: contrast-stretched, cropped, optionally deskewed, scaled to
a fixed height with the aspect kept; a frame is one pixel column (T = width, F = height).

Also the training-time image perturbations (pen width, blur, noise, paper texture, contrast,
small rotations), applied to the ink map before normalisation and reproducible from a Generator.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from recog.image import MAX_IMAGE_PIXELS, ImageError

MAX_IMAGE_COLUMNS = 50_000
"""Most column frames one line image may give (its ink's width once scaled to the feature height): an
IAM line at height 40 gives ~1000. Checked after cropping to the ink and before scaling, so a thin
band of ink is refused, not stretched to millions of columns."""


@dataclass(frozen=True)
class ImageFeatureConfig:
    """Feature parameters; saved with the model so reading uses exactly what training used."""

    height: int = 40  # pixels per column after normalisation (the feature size F)
    deskew: bool = False  # rotate so that text lines run horizontally (costs ~ a few ms per line)
    pad: float = 0.25  # blank columns added at each end, as a fraction of the height

    def to_dict(self) -> dict:
        return asdict(self)


def stretch_contrast(ink: np.ndarray) -> np.ndarray:
    """Paper to 0 and the darkest ink to 1, so faint pencil and dark marker look alike."""
    background = float(np.median(ink))
    top = float(np.percentile(ink, 99.9))
    span = max(top - background, 0.05)
    return np.clip((ink - background) / span, 0.0, 1.0).astype(np.float32)


def crop(ink: np.ndarray, threshold: float = 0.25) -> np.ndarray:
    """The bounding box of the pixels darker than `threshold` (the whole image when there are none)."""
    rows = np.flatnonzero((ink > threshold).any(axis=1))
    columns = np.flatnonzero((ink > threshold).any(axis=0))
    if len(rows) == 0:
        return ink
    return ink[rows[0] : rows[-1] + 1, columns[0] : columns[-1] + 1]


def estimate_rotation(ink: np.ndarray, limit_degrees: float = 6.0, step: float = 0.5) -> float:
    """Degrees to rotate by so that rows of text are horizontal: the angle whose horizontal
    projection profile is sharpest (largest variance), searched on a small copy."""
    scale = min(1.0, 64.0 / max(ink.shape[0], 1), 4096.0 / max(ink.shape[1], 1))  # small: bounded work
    small = ndimage.zoom(ink, scale, order=1) if scale < 1.0 else ink
    best, best_score = 0.0, -1.0
    for angle in np.arange(-limit_degrees, limit_degrees + 1e-9, step):
        rotated = ndimage.rotate(small, angle, reshape=True, order=1) if angle else small
        score = float(np.var(rotated.sum(axis=1)))
        if score > best_score + 1e-9:
            best, best_score = float(angle), score
    return best


def rotate(ink: np.ndarray, degrees: float, name: str | None = None) -> np.ndarray:
    """`ink` turned by `degrees` on a canvas that holds all of it; ImageError past MAX_IMAGE_PIXELS
    (a long line turned by a few degrees needs width x width x sin(angle) pixels)."""
    if abs(degrees) < 1e-6:
        return ink
    cos, sin = abs(np.cos(np.radians(degrees))), abs(np.sin(np.radians(degrees)))
    rows, columns = ink.shape
    pixels = (rows * cos + columns * sin) * (rows * sin + columns * cos)
    if pixels > MAX_IMAGE_PIXELS:
        raise ImageError(
            f"{name or 'line image'}: turning {columns}x{rows} pixels by {degrees:g} degrees needs "
            f"{pixels:.3g} pixels (MAX_IMAGE_PIXELS = {MAX_IMAGE_PIXELS})"
        )
    return np.clip(ndimage.rotate(ink, degrees, reshape=True, order=1, mode="constant"), 0, 1)


def scaled_width(rows: int, columns: int, height: int, name: str | None = None) -> int:
    """Columns of a `rows` x `columns` ink box scaled to `height` rows; ImageError past MAX_IMAGE_COLUMNS."""
    width = max(1, int(round(columns * height / rows)))
    if width > MAX_IMAGE_COLUMNS:
        raise ImageError(
            f"{name or 'line image'}: its ink ({columns}x{rows} pixels) scaled to {height} rows would be "
            f"{width} columns (MAX_IMAGE_COLUMNS = {MAX_IMAGE_COLUMNS})"
        )
    return width


def resize_to_height(ink: np.ndarray, height: int, name: str | None = None) -> np.ndarray:
    """Scale to `height` rows keeping the aspect (anti-aliased when shrinking)."""
    rows, columns = ink.shape
    width = scaled_width(rows, columns, height, name)
    image = Image.fromarray(ink.astype(np.float32))
    resample = Image.Resampling.BOX if rows > 2 * height else Image.Resampling.BILINEAR
    return np.clip(np.asarray(image.resize((width, height), resample), dtype=np.float32), 0, 1)


def normalise_line(ink: np.ndarray, config: ImageFeatureConfig, name: str | None = None) -> np.ndarray:
    """Ink map of any size -> (height, width) float32 at the configured height; ImageError (naming
    `name`) when that would pass MAX_IMAGE_COLUMNS, checked before scaling."""
    ink = stretch_contrast(np.asarray(ink, dtype=np.float32))
    ink = crop(ink)
    scaled_width(*ink.shape, config.height, name)
    if config.deskew and ink.shape[1] > 2 * ink.shape[0]:
        ink = crop(rotate(ink, estimate_rotation(ink), name))
    line = resize_to_height(ink, config.height, name)
    pad = int(round(config.pad * config.height))
    return np.pad(line, ((0, 0), (pad, pad)))


class ImageFeatures:
    """Ink map -> (T, F) frames, one per column; the config travels with the model."""

    def __init__(self, config: ImageFeatureConfig | None = None):
        self.config = config or ImageFeatureConfig()

    @property
    def dim(self) -> int:
        return self.config.height

    def __call__(self, ink: np.ndarray, name: str | None = None) -> np.ndarray:
        """(width, height) frames; ImageError (naming `name`, the input's file) past the limits."""
        return np.ascontiguousarray(normalise_line(ink, self.config, name).T)

    def perturbed(
        self, ink: np.ndarray, style: PaperStyle, rng: np.random.Generator, name: str | None = None
    ) -> np.ndarray:
        return self(degrade(ink, style, rng), name)


# ---------------------------------------------------------------- perturbations
@dataclass
class PaperStyle:
    """One draw of pen, paper and scanner; sizes relative to the image height."""

    pen: float = 0.0  # grow (> 0) or thin (< 0) the strokes, in fractions of the image height
    blur: float = 0.0  # Gaussian blur sigma, fraction of the height
    ink_level: float = 1.0  # darkness of the ink (contrast)
    paper_level: float = 0.0  # greyness of the paper
    texture: float = 0.0  # amplitude of smooth paper unevenness
    grain: float = 0.0  # per-pixel noise
    rotation: float = 0.0  # degrees

    @classmethod
    def draw(cls, rng: np.random.Generator, strength: float = 1.0) -> PaperStyle:
        s = strength
        return cls(
            pen=float(rng.uniform(-0.02, 0.04) * s),
            blur=float(rng.uniform(0, 0.025) * s),
            ink_level=float(1.0 - rng.uniform(0, 0.5) * min(s, 1.6)),
            paper_level=float(rng.uniform(0, 0.25) * min(s, 2.0)),
            texture=float(rng.uniform(0, 0.15) * s),
            grain=float(rng.uniform(0, 0.08) * s),
            rotation=float(rng.normal(0, 1.0) * s),
        )


def change_pen(ink: np.ndarray, pixels: float) -> np.ndarray:
    """Thicker (grey dilation) or thinner (grey erosion) strokes by about `pixels`."""
    size = int(round(abs(pixels))) + 1
    if size < 2:
        return ink
    filter_ = ndimage.grey_dilation if pixels > 0 else ndimage.grey_erosion
    footprint = np.ones((size, size), dtype=bool)
    if size > 3:  # a round nib
        footprint = np.hypot(*np.mgrid[-1 : 1 : size * 1j, -1 : 1 : size * 1j]) <= 1.0 + 1e-9
    changed = filter_(ink, footprint=footprint)
    # Erosion can wipe out thin strokes completely; keep them at least faintly.
    return changed if pixels > 0 else np.maximum(changed, 0.35 * ink)


def smooth_field(shape: tuple[int, int], cells: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth random field in [-1, 1] varying over about `cells` pixels (bicubic upsampling of
    coarse noise; Pillow's resize is ~10x faster than scipy's spline zoom here)."""
    coarse = rng.uniform(-1, 1, (max(2, int(shape[0] / cells) + 2), max(2, int(shape[1] / cells) + 2)))
    field = Image.fromarray(coarse.astype(np.float32)).resize((shape[1], shape[0]), Image.Resampling.BICUBIC)
    return np.asarray(field, dtype=np.float32).clip(-1, 1)


def degrade(ink: np.ndarray, style: PaperStyle, rng: np.random.Generator) -> np.ndarray:
    """The ink map as another pen on other paper through another scanner might have left it."""
    ink = np.asarray(ink, dtype=np.float32)
    height = ink.shape[0]
    ink = rotate(ink, style.rotation)
    ink = change_pen(ink, style.pen * height)
    if style.blur * height > 0.3:
        ink = ndimage.gaussian_filter(ink, style.blur * height)
    ink = ink * style.ink_level
    paper = np.full(ink.shape, style.paper_level, dtype=np.float32)
    if style.texture > 0:
        paper += style.texture * smooth_field(ink.shape, max(4.0, height / 2), rng).astype(np.float32)
    out = paper + ink * (1.0 - paper)
    if style.grain > 0:
        out += rng.normal(0, style.grain, ink.shape).astype(np.float32)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


# ---------------------------------------------------------------- helpers for training and reading
def stretch_width(line: np.ndarray, factor: float) -> np.ndarray:
    """A normalised (height, width) line scaled horizontally by `factor` (letters wider or narrower)."""
    height, width = line.shape
    new_width = max(1, int(round(width * factor)))
    if new_width == width:
        return line
    image = Image.fromarray(np.ascontiguousarray(line, dtype=np.float32))
    return np.asarray(image.resize((new_width, height), Image.Resampling.BILINEAR), dtype=np.float32)


def column_sources(ink: np.ndarray, config: ImageFeatureConfig) -> tuple[np.ndarray, int, int]:
    """For each frame (column) of `ImageFeatures(config)(ink)`, the x coordinate in `ink`'s own pixels
    that its centre came from (padding columns extrapolate past the ink); and the ink's first and
    one-past-last column. With `deskew` the small rotation is not undone: columns are mapped through
    the crop and the scale only."""
    ink = stretch_contrast(np.asarray(ink, dtype=np.float32))
    columns = np.flatnonzero((ink > 0.25).any(axis=0))
    rows = np.flatnonzero((ink > 0.25).any(axis=1))
    if len(rows) == 0:
        left, width, height = 0, ink.shape[1], ink.shape[0]
    else:
        left, width = int(columns[0]), int(columns[-1] - columns[0] + 1)
        height = int(rows[-1] - rows[0] + 1)
    scaled = scaled_width(height, width, config.height)
    pad = int(round(config.pad * config.height))
    centres = np.arange(scaled + 2 * pad, dtype=np.float64) - pad + 0.5
    return left + centres * (width / scaled) - 0.5, left, left + width
