"""Outline (TrueType/OpenType) fonts for line images: discovery, the held-out split, and rendering
text as a writer might have (elastic distortion, slant, uneven baseline).

Reserved fonts are held out for the project's external evaluation: `OutlineFont` refuses to represent
them, so no code path can train on them. They are the Debian packages fonts-dkg-handwriting,
fonts-sjfonts, fonts-kristi, fonts-ecolier-court, fonts-dancingscript and fonts-breip, and
Inkscape's SVG fonts.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from recog.features.image import smooth_field

FONT_DIRS = (
    Path("/usr/share/fonts"),
    Path("/usr/local/share/fonts"),
    Path.home() / ".fonts",
    Path("/usr/share/texmf/fonts/opentype/public/tex-gyre"),  # fonts-texgyre (for TeX Gyre Chorus)
)
# Substrings of a lowercased font path or family name that mark a reserved font.
RESERVED_FONT_PARTS = ("dkg", "sjfonts", "delphine", "steve", "kristi", "ecolier", "dancing", "breip")
RESERVED_FONT_PARTS += ("inkscape",)
# Not text faces.
SKIPPED_FAMILY_PARTS = ("math", "symbol", "emoji", "dingbat")
# Packages of many upright text faces with one or two handwriting-like ones: only those are used, so
# Times and Helvetica clones do not swamp the script families (path part -> family keys kept).
ONLY_FAMILIES_UNDER = {
    "/nanum/": ("nanumpenscript", "nanumbrushscript"),
    "/urw-base35/": ("z003",),
    "/tex-gyre/": ("texgyrechorus",),
    "/texgyre/": ("texgyrechorus",),
    "/kiloji/": ("kiloji",),  # its B/D/P faces are named as families of their own
}
REQUIRED_CHARS = "abcdefghijklmnopqrstuvwxyz'"
# Held-out families, the first one installed of each list (one never serves both).
TEST_FAMILIES = ("rufscript", "humorsans", "dejavuserif")
DEV_FAMILIES = ("femkeklaver", "tomsontalks", "dejavusansmono")


class FontError(RuntimeError):
    """A font is reserved, or none can be used."""


def is_reserved_font(path: str | Path, family: str = "") -> bool:
    text = f"{path} {family}".lower()
    return Path(path).suffix.lower() == ".svg" or any(part in text for part in RESERVED_FONT_PARTS)


def is_wanted_family(path: str | Path, family: str) -> bool:
    """False for the text faces of packages that are installed for their script faces only."""
    text = str(path).lower()
    for part, keys in ONLY_FAMILIES_UNDER.items():
        if part in text:
            return family_key(family) in keys
    return True


def family_key(family: str) -> str:
    """'Cabin Sketch' and 'CabinSketch' are one family."""
    return "".join(c for c in family.lower() if c.isalnum())


@dataclass(frozen=True)
class OutlineFont:
    path: str
    family: str

    def __post_init__(self) -> None:
        if is_reserved_font(self.path, self.family):
            raise FontError(f"font {self.path} ({self.family}) is reserved for external evaluation")

    @property
    def key(self) -> str:
        return family_key(self.family)


def _covers(path: Path) -> bool:
    try:
        from fontTools.ttLib import TTFont

        with TTFont(str(path), lazy=True, fontNumber=0) as font:
            cmap = font.getBestCmap() or {}
    except Exception:  # an unreadable font is just not used
        return False
    return all(ord(c) in cmap for c in REQUIRED_CHARS)


@functools.lru_cache(maxsize=1)
def discover_fonts(dirs: tuple[Path, ...] = FONT_DIRS) -> tuple[OutlineFont, ...]:
    """Installed Latin text fonts, reserved ones left out, sorted by path."""
    found = []
    for directory in dirs:
        if not directory.is_dir():
            continue
        for path in sorted(directory.rglob("*")):
            if path.suffix.lower() not in (".ttf", ".otf") or is_reserved_font(path):
                continue
            try:
                family = ImageFont.truetype(str(path), 16).getname()[0] or path.stem
            except OSError:
                continue
            if is_reserved_font(path, family) or any(p in family.lower() for p in SKIPPED_FAMILY_PARTS):
                continue
            if not is_wanted_family(path, family):
                continue
            if _covers(path):
                found.append(OutlineFont(str(path), family))
    return tuple(found)


def split_fonts(fonts: tuple[OutlineFont, ...] | None = None) -> dict[str, list[OutlineFont]]:
    """Fonts per split: one whole family held out for dev and one for test when three or more exist."""
    fonts = discover_fonts() if fonts is None else fonts
    if not fonts:
        raise FontError("no usable outline fonts: apt-get install fonts-dejavu-core (make setup does this)")
    families = {font.key for font in fonts}
    test = next((f for f in TEST_FAMILIES if f in families), None) if len(families) >= 3 else None
    dev = next((f for f in DEV_FAMILIES if f in families and f != test), None) if test else None
    return {
        "train": [f for f in fonts if f.key not in (dev, test)],
        "dev": [f for f in fonts if f.key == dev],
        "test": [f for f in fonts if f.key == test],
    }


# ---------------------------------------------------------------- fonts to trace as ink (pipelines.skeleton_ink)
# Families drawn with hatching or outlines rather than one line per stroke: their skeletons are not
# what a pen does.
SKETCH_FAMILIES = ("cabinsketch",)
# Families whose letters the skeleton tracer gets wrong: Yusei Magic's a has a stem as short as a
# thinning spur, so its traced a's are o's (the a -> o label noise showed in corpus v4's ink).
MISTRACED_FAMILIES = ("yuseimagic",)
HEAVY_FACES = ("bold", "black", "heavy")  # in a font file's name (SemiBold included)


def _glyph_shape(face, char: str) -> np.ndarray:
    """The glyph cropped to its box, scaled to 24 x 24, blurred, mean removed (shapes compare, not
    sizes or weights)."""
    canvas = Image.new("L", (80, 80), 0)
    ImageDraw.Draw(canvas).text((10, 60), char, font=face, fill=255, anchor="ls")
    box = canvas.getbbox()
    if box is None:
        return np.zeros((24, 24))
    shape = np.asarray(canvas.crop(box).resize((24, 24)), dtype=np.float64) / 255.0
    shape = ndimage.gaussian_filter(shape, 1.0)
    return shape - shape.mean()


@functools.lru_cache(maxsize=256)
def has_lowercase(path: str) -> bool:
    """False for capitals-only fonts (their 'a' is an 'A' shape), whose ink would teach wrong letters."""
    face = load_face(path, 48)
    similarity = []
    for char in "abdegnqr":
        lower, upper = _glyph_shape(face, char), _glyph_shape(face, char.upper())
        norm = np.sqrt((lower * lower).sum() * (upper * upper).sum())
        similarity.append((lower * upper).sum() / norm if norm > 0 else 1.0)
    return float(np.mean(similarity)) < 0.6  # measured: capitals-only fonts 0.7-1.0, others 0.1-0.5


def ink_fonts(fonts: list[OutlineFont]) -> list[OutlineFont]:
    """The fonts whose skeletons read as handwriting: not sketched, not capitals only, and not the bold
    faces of a family (at line size their short branches, a t's bar, are as long as thinning spurs)."""
    return [
        f
        for f in fonts
        if f.key not in SKETCH_FAMILIES
        and f.key not in MISTRACED_FAMILIES
        and not any(w in Path(f.path).stem.lower() for w in HEAVY_FACES)
        and has_lowercase(f.path)
    ]


# ---------------------------------------------------------------- rendering
@functools.lru_cache(maxsize=256)
def load_face(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


def elastic(ink: np.ndarray, amplitude: float, cells: float, rng: np.random.Generator) -> np.ndarray:
    """Bend the image with a smooth random displacement field (`amplitude` pixels over `cells` pixels)."""
    if amplitude <= 0:
        return ink
    shape = ink.shape
    fields = [smooth_field(shape, cells, rng) * amplitude for _ in range(2)]
    rows, columns = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    return ndimage.map_coordinates(ink, [rows + fields[0], columns + fields[1]], order=1, mode="constant")


def render_text(text: str, font: OutlineFont, rng: np.random.Generator) -> np.ndarray:
    """An ink map (1 = ink) of `text` in `font`, letters bounced off the baseline, slanted and bent."""
    size = int(rng.integers(22, 44))
    face = load_face(font.path, size)
    spacing = rng.uniform(-0.04, 0.12) * size
    width = int(sum(face.getlength(c) for c in text) + spacing * len(text) + 2 * size)
    canvas = Image.new("L", (max(width, 4), int(size * 2.2)), 0)
    draw = ImageDraw.Draw(canvas)
    x, bounce = size * 0.5, rng.normal(0, 0.04 * size, len(text))
    for char, dy in zip(text, bounce, strict=True):
        draw.text((x, size * 0.5 + dy), char, font=face, fill=255)
        x += face.getlength(char) + spacing
    ink = np.asarray(canvas, dtype=np.float32) / 255.0
    shear = rng.normal(0.05, 0.15)
    if abs(shear) > 0.01:
        height = ink.shape[0]
        matrix = np.array([[1.0, 0.0], [shear, 1.0]])
        offset = np.array([0.0, -shear * height / 2])
        pad = int(abs(shear) * height) + 1
        ink = np.pad(ink, ((0, 0), (pad, pad)))
        ink = ndimage.affine_transform(ink, matrix, offset=offset, order=1)
    return np.clip(elastic(ink, rng.uniform(0, 0.06) * size, size * rng.uniform(0.6, 1.5), rng), 0, 1)
