"""Synthetic handwriting from the single-stroke Hershey fonts (`hershey-fonts` package).

Every Latin Hershey font whose lowercase letters are distinct becomes a *style*; fonts with identical
letters (rowmans = futural = meteorology, ...) are one style. Duplex and triplex fonts draw thick parts
with two or three parallel lines, which no pen does: those repeats are thinned away. A line of text is
written by a random writer: fonts mixed within the line, each letter's shape perturbed (size, shear,
stroke-end hooks, split and merged strokes, reversed strokes, i-dots and t-bars written after the
word), then the line-level habits of recog.features.strokes.WriterStyle and a pen clock for times.
"""

from __future__ import annotations

import functools
import hashlib
import io
import tarfile
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from recog.features.strokes import WriterStyle, perturb, resample_stroke
from recog.ink import Ink

LETTERS = "abcdefghijklmnopqrstuvwxyz"
# Not Latin, or symbols only.
NON_LATIN_FONTS = frozenset(
    {"cyrilc_1", "cyrillic", "greek", "greekc", "greeks", "japanese", "markers", "mathlow", "mathupp"}
    | {"symbolic", "timesg"}
)
# German blackletter: 's' is a long s and 'k', 'x' and 'y' look like other letters; the labels would lie.
WRONG_LETTER_FONTS = frozenset({"gothgrt", "gothicger"})
# Held-out styles: never written in train, so dev and test measure unseen letter forms.
DEV_STYLES = ("timesi",)
TEST_STYLES = ("scriptc",)
STYLE_KINDS = {
    "futural": "print",
    "futuram": "print",
    "cursive": "cursive",
    "scriptc": "cursive",
    "timesr": "serif",
    "rowmant": "serif",
    "timesi": "italic",
    "timesib": "italic",
    "gothgbt": "gothic",
    "gothicita": "gothic",
}
THIN_RADIUS = 2.2  # font units (an x-height is about 14): parallel repeats closer than this are dropped


@dataclass(frozen=True)
class Glyph:
    """One character in x-height units: y down, baseline at 0, x from the left side bearing."""

    strokes: tuple[np.ndarray, ...]
    advance: float


@dataclass(frozen=True)
class Style:
    """A distinct letter design, with the Hershey fonts that draw it."""

    name: str
    fonts: tuple[str, ...]
    kind: str
    glyphs: dict[str, Glyph]


def _arc_length(stroke: np.ndarray) -> float:
    return float(np.hypot(*np.diff(stroke, axis=0).T).sum()) if len(stroke) > 1 else 0.0


def thin_repeats(strokes: list[np.ndarray], radius: float = THIN_RADIUS) -> list[np.ndarray]:
    """Drop strokes that run alongside a longer kept stroke (the extra lines of duplex/triplex fonts)."""
    order = sorted(range(len(strokes)), key=lambda i: -_arc_length(strokes[i]))
    kept: list[int] = []
    dense_kept: list[np.ndarray] = []
    for index in order:
        dense = resample_stroke(strokes[index], 0.5)[0]
        if dense_kept and len(strokes[index]) > 1:
            distance, _ = cKDTree(np.concatenate(dense_kept)).query(dense)
            if np.mean(distance <= radius) >= 0.85:
                continue
        kept.append(index)
        dense_kept.append(dense)
    return [strokes[i] for i in sorted(kept)]


def _load_fonts() -> dict:
    """All built-in fonts, decompressing the package's font archive once (its own loader
    decompresses the whole archive for every font, about a second each)."""
    from HersheyFonts import HersheyFonts

    archive = HersheyFonts()._HersheyFonts__get_compressed_font_bytes()
    fonts = {}
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r") as tar:
        for member in tar.getmembers():
            if member.name in NON_LATIN_FONTS or member.name in WRONG_LETTER_FONTS:
                continue
            font = HersheyFonts()
            font.read_from_string_lines(tar.extractfile(member).read().decode().splitlines())
            fonts[member.name] = font
    return fonts


@functools.lru_cache(maxsize=1)
def load_styles() -> dict[str, Style]:
    """Every usable Hershey letter design, keyed by the name of its first font."""
    by_letters: dict[str, list[str]] = {}
    fonts = {}
    for name, font in sorted(_load_fonts().items()):
        glyphs = font.all_glyphs
        if not all(c in glyphs and glyphs[c].strokes for c in LETTERS):
            continue
        signature = hashlib.sha1(repr([glyphs[c].strokes for c in LETTERS]).encode()).hexdigest()
        by_letters.setdefault(signature, []).append(name)
        fonts[name] = font
    styles = {}
    for names in by_letters.values():
        name = next((n for n in names if n in STYLE_KINDS), names[0])
        raw = fonts[name].all_glyphs
        baseline = float(fonts[name].render_options["base_line"])
        x_height = baseline - min(y for stroke in raw["x"].strokes for _, y in stroke)
        glyphs = {}
        for char in LETTERS + "'":
            if char not in raw:
                continue
            glyph = raw[char]
            strokes = [np.asarray(s, dtype=np.float64) for s in glyph.strokes if len(s)]
            strokes = thin_repeats(strokes)
            shifted = [(s - [glyph.left_offset, baseline]) / x_height for s in strokes]
            glyphs[char] = Glyph(tuple(shifted), glyph.char_width / x_height)
        glyphs[" "] = Glyph((), raw[" "].char_width / x_height if " " in raw else 0.8)
        styles[name] = Style(name, tuple(names), STYLE_KINDS.get(name, "other"), glyphs)
    return styles


def split_styles() -> dict[str, list[str]]:
    """Style names per corpus split: dev and test styles are held out of train entirely."""
    names = sorted(load_styles())
    held = set(DEV_STYLES) | set(TEST_STYLES)
    missing = held - set(names)
    if missing:
        raise RuntimeError(
            f"hershey-fonts lacks the held-out styles {sorted(missing)}: pip install hershey-fonts"
        )
    return {"train": [n for n in names if n not in held], "dev": list(DEV_STYLES), "test": list(TEST_STYLES)}


# ---------------------------------------------------------------- letter-form variety
@dataclass(frozen=True)
class LetterVariety:
    """Probabilities of each glyph-shape change (per stroke or per letter)."""

    hook: float = 0.15  # curl at a stroke end
    split: float = 0.06  # lift the pen inside a stroke
    merge: float = 0.35  # join a letter's strokes, or a letter to the next, when they nearly touch
    reverse: float = 0.06  # draw a stroke the other way round
    delay: float = 0.5  # write a word's i-dots and t-bars after the word
    font_switch_word: float = 0.12
    font_switch_letter: float = 0.04
    size: float = 0.08  # per-letter size change (standard deviation, relative)
    shear: float = 0.08  # per-letter extra slant (standard deviation)
    shift: float = 0.05  # per-letter vertical offset (standard deviation, x-heights)


def _hook(stroke: np.ndarray, at_end: bool, rng: np.random.Generator) -> np.ndarray:
    """Continue a stroke end along a small arc that turns sharply (a flick of the pen)."""
    if len(stroke) < 2 or _arc_length(stroke) < 0.2:
        return stroke
    tip, before = (stroke[-1], stroke[-2]) if at_end else (stroke[0], stroke[1])
    heading = np.arctan2(*(tip - before)[::-1])
    turn = rng.choice([-1, 1]) * rng.uniform(1.0, 2.6)
    length = rng.uniform(0.08, 0.25)
    angles = heading + np.linspace(0, turn, 5)[1:]
    steps = np.stack([np.cos(angles), np.sin(angles)], axis=1) * (length / 4)
    curl = tip + np.cumsum(steps, axis=0)
    return np.vstack([stroke, curl]) if at_end else np.vstack([curl[::-1], stroke])


def vary_glyph(glyph: Glyph, variety: LetterVariety, rng: np.random.Generator) -> list[np.ndarray]:
    """One written instance of a glyph: its strokes with a random shape change or two."""
    scale = float(np.exp(rng.normal(0, variety.size)))
    shear = float(rng.normal(0, variety.shear))
    shift = float(rng.normal(0, variety.shift))
    strokes = []
    for stroke in glyph.strokes:
        stroke = stroke.copy()
        stroke[:, 0] -= shear * stroke[:, 1]
        stroke = stroke * scale + [0.0, shift]
        if rng.random() < variety.reverse:
            stroke = stroke[::-1]
        for at_end in (False, True):
            if rng.random() < variety.hook:
                stroke = _hook(stroke, at_end, rng)
        if len(stroke) > 3 and rng.random() < variety.split:
            cut = int(rng.integers(1, len(stroke) - 1))
            gap = rng.normal(0, 0.03, 2)
            strokes += [stroke[: cut + 1], stroke[cut:] + gap]
        else:
            strokes.append(stroke)
    merged = [strokes[0]] if strokes else []
    for stroke in strokes[1:]:
        if np.hypot(*(stroke[0] - merged[-1][-1])) < 0.35 and rng.random() < variety.merge:
            merged[-1] = np.vstack([merged[-1], stroke])
        else:
            merged.append(stroke)
    return merged


def _is_delayable(stroke: np.ndarray) -> bool:
    """Dots and short bars that writers often add after finishing the word."""
    return _arc_length(stroke) < 0.7 and np.ptp(stroke[:, 1]) < 0.35


def write_text(
    text: str,
    styles: list[Style],
    rng: np.random.Generator,
    variety: LetterVariety | None = None,
    writer: WriterStyle | None = None,
) -> tuple[Ink, dict]:
    """Ink for one line in x-height units (no times yet), and what was drawn (styles used)."""
    variety = variety or LetterVariety()
    main = styles[int(rng.integers(len(styles)))]
    spacing = float(rng.uniform(0.85, 1.15))
    word_gap = float(rng.uniform(0.5, 1.2))
    strokes: list[np.ndarray] = []
    used: dict[str, int] = {}
    x = 0.0
    for word in text.split(" "):
        style = main
        if len(styles) > 1 and rng.random() < variety.font_switch_word:
            style = styles[int(rng.integers(len(styles)))]
        word_strokes: list[np.ndarray] = []
        delayed: list[np.ndarray] = []
        for char in word:
            letter_style = style
            if len(styles) > 1 and rng.random() < variety.font_switch_letter:
                letter_style = styles[int(rng.integers(len(styles)))]
            glyph = letter_style.glyphs.get(char) or main.glyphs[char]
            used[letter_style.name] = used.get(letter_style.name, 0) + 1
            pieces = [p + [x, 0.0] for p in vary_glyph(glyph, variety, rng)]
            if pieces and word_strokes and rng.random() < variety.merge:
                if np.hypot(*(pieces[0][0] - word_strokes[-1][-1])) < 0.3:  # a cursive join
                    word_strokes[-1] = np.vstack([word_strokes[-1], pieces.pop(0)])
            for index, piece in enumerate(pieces):
                if index > 0 and _is_delayable(piece) and rng.random() < variety.delay:
                    delayed.append(piece)
                else:
                    word_strokes.append(piece)
            x += glyph.advance * spacing + rng.normal(0, 0.04)
        strokes += word_strokes + delayed
        x += word_gap + rng.normal(0, 0.08)
    ink = Ink([s for s in strokes if len(s)])
    if writer is not None:
        ink = perturb(ink, writer, rng)
    return ink, {"styles": used, "main_style": main.name}


# ---------------------------------------------------------------- the pen clock and the device
def add_pen_clock(ink: Ink, rng: np.random.Generator) -> tuple[Ink, dict]:
    """Device units and time stamps: a pen moving at a writer's speed, sampled at a device's rate.

    Scale (device units per x-height), speed and sampling rate are drawn per line, so raw point
    counts and coordinates vary as much as real tablets make them vary."""
    units = float(rng.uniform(15, 80))
    speed = float(rng.uniform(3.0, 9.0))  # x-heights per second while the pen is down
    rate = float(rng.choice([60.0, 100.0, 133.0, 200.0]))
    origin = rng.uniform(0, 500, 2)
    clock = float(rng.uniform(0, 1000))
    strokes, times = [], []
    previous_end = None
    for stroke in ink.strokes:
        if previous_end is not None:
            clock += rng.uniform(0.05, 0.25) + np.hypot(*(stroke[0] - previous_end)) / (2 * speed)
        dense, _ = resample_stroke(stroke, speed / rate)
        arc = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(dense, axis=0).T))])
        local_speed = speed * np.exp(rng.normal(0, 0.15))
        strokes.append(np.rint(dense * units + origin))  # digitisers report integer units
        times.append(np.round(clock + arc / local_speed, 3))  # and milliseconds
        clock = times[-1][-1]
        previous_end = stroke[-1]
    return Ink(strokes, times), {"units_per_x_height": round(units, 2), "rate_hz": rate}
