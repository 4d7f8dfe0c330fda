"""Pen strokes -> (T, F) float32 frames: normalisation, arc-length resampling, per-point features, and
training-time "writer" perturbations.

Normalisation makes the frames independent of where and how large something was written: the
baseline is levelled, the slant removed, and the ink scaled so that the core (x-height) zone is one
unit tall with the baseline at y = 0 (y grows downwards, the top of the core is at y = -1).
Resampling at a fixed arc-length step then makes them independent of the pen's sampling rate.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from recog.ink import Ink, InkError

FEATURE_NAMES = ("dx", "dy", "y", "pen_up", "dir_cos", "dir_sin", "curv_cos", "curv_sin")

MAX_INK_FRAMES = 200_000
"""Most frames (points after arc-length resampling) one ink input may give: a handwritten line at the
default step gives a few thousand, a page some tens of thousands. Counted from the pen path's length
before anything is allocated, so a tiny file with a huge coordinate extent is refused, not resampled."""
MAX_DENSE_POINTS = 100_000
"""Most points normalisation spreads along the pen path for its statistics (skew, slant, core zone);
a real line needs ~400 per stroke-set width. Past this the spacing grows instead."""


@dataclass(frozen=True)
class StrokeFeatureConfig:
    """Feature parameters; saved with the model so reading uses exactly what training used."""

    step: float = 0.2  # resampling distance along the pen path, in x-heights
    deskew: bool = True  # level the baseline
    deslant: bool = True  # remove the slant of near-vertical strokes
    max_jump: float = 8.0  # clip pen-up jumps (dx, dy) to this many x-heights

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------- geometry helpers
def _dedupe(stroke: np.ndarray) -> np.ndarray:
    """Drop points that repeat the previous one (pens report them while resting)."""
    if len(stroke) < 2:
        return stroke
    moved = np.any(np.diff(stroke, axis=0) != 0, axis=1)
    return stroke[np.concatenate([[True], moved])]


def resample_stroke(stroke: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Points every `step` along the stroke's arc (ends kept), and for each the fractional index
    into the original points it was interpolated at."""
    stroke = np.asarray(stroke, dtype=np.float64)
    if len(stroke) < 2:
        return stroke.copy(), np.zeros(len(stroke))
    arc = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(stroke, axis=0).T))])
    if arc[-1] <= 0:
        return stroke[:1].copy(), np.zeros(1)
    count = max(2, int(np.ceil(arc[-1] / step)) + 1)
    targets = np.linspace(0.0, arc[-1], count)
    positions = np.interp(targets, arc, np.arange(len(stroke), dtype=np.float64))
    resampled = np.stack([np.interp(targets, arc, stroke[:, k]) for k in range(2)], axis=1)
    return resampled, positions


def _check_frames(arcs: np.ndarray, sizes: np.ndarray, step: float, name: str | None) -> None:
    """InkError when resampling strokes of these arc lengths every `step` would pass MAX_INK_FRAMES."""
    with np.errstate(over="ignore", invalid="ignore"):
        counts = np.where((sizes < 2) | (arcs <= 0), 1.0, np.maximum(2.0, np.ceil(arcs / step) + 1.0))
        total = float(counts.sum())
    if not total <= MAX_INK_FRAMES:  # also NaN and infinity (coordinates near the float limits)
        raise InkError(
            f"{name or '<ink>'}: {total:.0f} points after resampling every {step:g} x-heights "
            f"(a pen path {float(np.sum(arcs)):.3g} x-heights long), more than one input may give "
            f"(MAX_INK_FRAMES = {MAX_INK_FRAMES})"
        )


def resample(ink: Ink, step: float, name: str | None = None) -> tuple[Ink, np.ndarray]:
    """Arc-length resampling of every stroke; returns the new ink and, per new point, the index of
    the nearest original point (counted over the whole ink), for mapping frames back to input points.
    InkError (naming `name`) past MAX_INK_FRAMES points, checked before resampling."""
    arcs = np.array([np.hypot(*np.diff(s, axis=0).T).sum() if len(s) > 1 else 0.0 for s in ink.strokes])
    _check_frames(arcs, np.array([len(s) for s in ink.strokes]), step, name or ink.name)
    strokes, sources, offset = [], [], 0
    times = [] if ink.times is not None else None
    for index, stroke in enumerate(ink.strokes):
        points, positions = resample_stroke(stroke, step)
        strokes.append(points)
        sources.append(offset + np.rint(positions).astype(np.int64))
        if times is not None:
            times.append(np.interp(positions, np.arange(len(stroke)), ink.times[index]))
        offset += len(stroke)
    return Ink(strokes, times), np.concatenate(sources) if sources else np.zeros(0, np.int64)


def _dense_step(points: np.ndarray, ids: np.ndarray) -> float:
    """Spacing of the dense points: 1/400 of the ink's larger extent, wider when the pen path is so
    long that this would give more than MAX_DENSE_POINTS (a stroke scribbling back and forth)."""
    step = (float(max(points.max(axis=0) - points.min(axis=0))) or 1.0) / 400.0
    same = ids[1:] == ids[:-1]
    path = float(np.where(same, np.hypot(*np.diff(points, axis=0).T), 0.0).sum())
    return max(step, path / MAX_DENSE_POINTS)


def _dense_points(ink: Ink) -> tuple[np.ndarray, np.ndarray]:
    """Points spread evenly along the pen path (statistics must not depend on pen speed)."""
    deduped = Ink([_dedupe(s) for s in ink.strokes])
    step = _dense_step(deduped.points(), deduped.stroke_ids())
    dense = [resample_stroke(s, step)[0] for s in deduped.strokes]
    ids = np.repeat(np.arange(len(dense)), [len(s) for s in dense])
    return np.concatenate(dense), ids


def estimate_skew(points: np.ndarray, limit: float = 0.35) -> float:
    """Angle (radians) of the least-squares line through the ink: the baseline's tilt."""
    x, y = points[:, 0] - points[:, 0].mean(), points[:, 1] - points[:, 1].mean()
    spread = float(x @ x)
    if spread <= 1e-12 or np.ptp(points[:, 0]) < 2 * np.ptp(points[:, 1]):
        return 0.0  # too short to have a meaningful baseline
    return float(np.clip(np.arctan((x @ y) / spread), -limit, limit))


def estimate_slant(points: np.ndarray, ids: np.ndarray, limit: float = 1.0) -> float:
    """Mean dx/dy of near-vertical pen movement, weighted by length (x' = x - slant * y undoes it)."""
    same = ids[1:] == ids[:-1]
    delta = np.diff(points, axis=0)[same]
    if len(delta) == 0:
        return 0.0
    length = np.hypot(delta[:, 0], delta[:, 1])
    steep = np.abs(delta[:, 1]) > np.abs(delta[:, 0]) * np.tan(np.radians(40))
    if length[steep].sum() <= 1e-12:
        return 0.0
    ratio = delta[steep, 0] / delta[steep, 1]
    return float(np.clip(np.average(ratio, weights=length[steep]), -limit, limit))


def estimate_core(y: np.ndarray) -> tuple[float, float]:
    """(top, bottom) of the core zone: the band where the ink's horizontal projection is dense.

    Ascenders and descenders are sparse, so the rows around the projection's peak holding at least
    40% of its density are the x-height band; the quartiles are a floor for odd inputs."""
    low, high = np.percentile(y, [1, 99])
    if high - low <= 1e-12:
        return float(low) - 0.5, float(low) + 0.5
    bins = 48
    counts, edges = np.histogram(y, bins=bins, range=(low, high))
    counts = np.convolve(counts.astype(np.float64), np.ones(3) / 3, mode="same")
    peak = int(np.argmax(counts))
    top = bottom = peak
    while top > 0 and counts[top - 1] >= 0.4 * counts[peak]:
        top -= 1
    while bottom < bins - 1 and counts[bottom + 1] >= 0.4 * counts[peak]:
        bottom += 1
    core_top, core_bottom = edges[top], edges[bottom + 1]
    q1, q3 = np.percentile(y, [25, 75])
    floor = 0.8 * (q3 - q1)
    if core_bottom - core_top < floor:
        middle = (core_bottom + core_top) / 2
        core_top, core_bottom = middle - floor / 2, middle + floor / 2
    return float(core_top), float(core_bottom)


def normalise(ink: Ink, deskew: bool = True, deslant: bool = True) -> Ink:
    """Level, deslant, scale to x-height 1, baseline at y = 0, leftmost ink at x = 0."""
    strokes = [_dedupe(s) for s in ink.strokes]
    times = None
    if ink.times is not None:
        times = [t[_dedupe_mask(s)] for s, t in zip(ink.strokes, ink.times, strict=True)]
    ink = Ink(strokes, times)
    dense, ids = _dense_points(ink)
    centre = dense.mean(axis=0)
    transform = np.eye(2)
    if deskew:
        angle = estimate_skew(dense)
        cos, sin = np.cos(-angle), np.sin(-angle)
        transform = np.array([[cos, -sin], [sin, cos]])
    if deslant:
        slant = estimate_slant((dense - centre) @ transform.T, ids)
        transform = np.array([[1.0, -slant], [0.0, 1.0]]) @ transform
    dense = (dense - centre) @ transform.T
    top, bottom = estimate_core(dense[:, 1])
    height = max(bottom - top, 1e-9)
    left = dense[:, 0].min()
    offset = np.array([left, bottom])
    return ink.map_points(lambda s: ((s - centre) @ transform.T - offset) / height)


def _dedupe_mask(stroke: np.ndarray) -> np.ndarray:
    if len(stroke) < 2:
        return np.ones(len(stroke), dtype=bool)
    return np.concatenate([[True], np.any(np.diff(stroke, axis=0) != 0, axis=1)])


def point_features(ink: Ink, max_jump: float = 8.0) -> np.ndarray:
    """(T, 8) float32: dx, dy, y, pen-up, direction cos/sin, curvature cos/sin (see FEATURE_NAMES)."""
    points = ink.points()
    ids = ink.stroke_ids()
    count = len(points)
    frames = np.zeros((count, len(FEATURE_NAMES)), dtype=np.float64)
    if count == 0:
        return frames.astype(np.float32)
    delta = np.zeros_like(points)
    delta[1:] = np.clip(np.diff(points, axis=0), -max_jump, max_jump)
    new_stroke = np.concatenate([[True], ids[1:] != ids[:-1]])
    frames[:, 0:2] = delta
    frames[:, 2] = np.clip(points[:, 1], -max_jump, max_jump)
    frames[:, 3] = new_stroke
    # Writing direction: the central difference within the stroke (one-sided at the ends).
    previous = np.where(new_stroke[:, None], points, np.roll(points, 1, axis=0))
    last = np.concatenate([ids[1:] != ids[:-1], [True]])
    following = np.where(last[:, None], points, np.roll(points, -1, axis=0))
    tangent = following - previous
    norm = np.hypot(tangent[:, 0], tangent[:, 1])
    moving = norm > 1e-12
    frames[moving, 4] = tangent[moving, 0] / norm[moving]
    frames[moving, 5] = tangent[moving, 1] / norm[moving]
    # Curvature: the turn between the incoming and outgoing segment, as cos and sin.
    incoming, outgoing = points - previous, following - points
    inner = np.einsum("ij,ij->i", incoming, outgoing)
    cross = incoming[:, 0] * outgoing[:, 1] - incoming[:, 1] * outgoing[:, 0]
    lengths = np.hypot(*incoming.T) * np.hypot(*outgoing.T)
    bending = lengths > 1e-12
    frames[:, 6] = 1.0
    frames[bending, 6] = inner[bending] / lengths[bending]
    frames[bending, 7] = cross[bending] / lengths[bending]
    return frames.astype(np.float32)


# ---------------------------------------------------------------- writer perturbations
@dataclass
class WriterStyle:
    """One draw of a writer's habits, applied to normalised ink (units of x-height)."""

    slant: float = 0.0  # shear: positive leans right
    slant_drift: float = 0.0  # per-stroke slant variation (standard deviation)
    aspect: float = 1.0  # horizontal stretch
    rotation: float = 0.0  # baseline tilt in radians
    drift: float = 0.0  # amplitude of a smooth up-and-down baseline wander, x-heights
    drift_period: float = 10.0  # its wavelength, x-heights
    spacing: float = 1.0  # multiplies the gaps between strokes
    wobble: float = 0.0  # amplitude of a smooth displacement along the pen path, x-heights
    wobble_period: float = 1.5
    jitter: float = 0.0  # per-point noise, x-heights
    rate: float = 1.0  # multiplies the feature resampling step (pen sampling rate)
    phases: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0)

    @classmethod
    def draw(cls, rng: np.random.Generator, strength: float = 1.0) -> WriterStyle:
        """A random writer; `strength` 0 is the identity, 1 the training default, >1 harsher."""
        s = strength
        return cls(
            slant=float(rng.normal(0.15 * s, 0.25 * s)),
            slant_drift=float(rng.uniform(0, 0.08 * s)),
            aspect=float(np.exp(rng.normal(0, 0.12 * s))),
            rotation=float(rng.normal(0, 0.04 * s)),
            drift=float(rng.uniform(0, 0.25 * s)),
            drift_period=float(rng.uniform(6, 20)),
            spacing=float(np.clip(np.exp(rng.normal(0, 0.25 * s)), 0.6, 1.7)),
            wobble=float(rng.uniform(0, 0.06 * s)),
            wobble_period=float(rng.uniform(0.6, 3.0)),
            jitter=float(rng.uniform(0, 0.015 * s)),
            rate=float(np.exp(rng.uniform(-0.3, 0.3) * min(s, 1.5))),
            phases=tuple(float(p) for p in rng.uniform(0, 2 * np.pi, 4)),
        )


def respace(ink: Ink, factor: float) -> Ink:
    """Scale every horizontal gap between a stroke and all ink written before it."""
    if factor == 1.0 or len(ink.strokes) < 2:
        return ink
    shifted, offset, right = [], 0.0, -np.inf
    for stroke in ink.strokes:
        gap = stroke[:, 0].min() - right
        if gap > 0 and np.isfinite(right):
            offset += gap * (factor - 1.0)
        right = max(right, stroke[:, 0].max())
        shifted.append(stroke + np.array([offset, 0.0]))
    return Ink(shifted, ink.times)


def perturb(ink: Ink, style: WriterStyle, rng: np.random.Generator) -> Ink:
    """The same text as another writer might have written it (ink in x-height units)."""
    ink = respace(ink, style.spacing)
    strokes = []
    for stroke in ink.strokes:
        stroke = stroke.copy()
        slant = style.slant + (rng.normal(0, style.slant_drift) if style.slant_drift > 0 else 0.0)
        stroke[:, 0] = (stroke[:, 0] + slant * -stroke[:, 1]) * style.aspect
        strokes.append(stroke)
    phases = style.phases
    path = 0.0
    for index, stroke in enumerate(strokes):
        if style.wobble > 0:
            arc = path + np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(stroke, axis=0).T))])
            angle = 2 * np.pi * arc / style.wobble_period
            stroke[:, 0] += style.wobble * np.sin(angle + phases[0])
            stroke[:, 1] += style.wobble * np.sin(0.77 * angle + phases[1])
            path = arc[-1] + style.wobble_period / 3
        if style.drift > 0:
            stroke[:, 1] += style.drift * np.sin(2 * np.pi * stroke[:, 0] / style.drift_period + phases[2])
        if style.jitter > 0:
            stroke += rng.normal(0, style.jitter, stroke.shape)
        if style.rotation:
            cos, sin = np.cos(style.rotation), np.sin(style.rotation)
            stroke[:] = stroke @ np.array([[cos, sin], [-sin, cos]])
        strokes[index] = stroke
    return Ink(strokes, ink.times)


# ---------------------------------------------------------------- the front end
class StrokeFeatures:
    """Ink -> (T, F) float32 frames; the config travels with the model."""

    def __init__(self, config: StrokeFeatureConfig | None = None):
        self.config = config or StrokeFeatureConfig()

    @property
    def dim(self) -> int:
        return len(FEATURE_NAMES)

    def frames_and_points(self, ink: Ink, rate: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """Frames and, per frame, the index of the input point it came from (for positions in output)."""
        config = self.config
        normalised = normalise(ink, config.deskew, config.deslant)
        resampled, sources = resample(normalised, config.step * rate, ink.name)
        return point_features(resampled, config.max_jump), sources

    def __call__(self, ink: Ink) -> np.ndarray:
        return self.frames_and_points(ink)[0]

    def perturbed(self, ink: Ink, style: WriterStyle, rng: np.random.Generator) -> np.ndarray:
        """Frames of one training sample as written by a drawn writer."""
        config = self.config
        base = normalise(ink, config.deskew, config.deslant)
        changed = perturb(base, style, rng)
        normalised = normalise(changed, config.deskew, config.deslant)
        resampled, _ = resample(normalised, config.step * style.rate, ink.name)
        return point_features(resampled, config.max_jump)


def input_point_indices(ink: Ink, sources: np.ndarray) -> np.ndarray:
    """Map `StrokeFeatures.frames_and_points` sources (indices into the de-duplicated points that
    normalisation keeps) to indices into `ink.points()` as it was given."""
    kept, offset = [], 0
    for stroke in ink.strokes:
        kept.append(offset + np.flatnonzero(_dedupe_mask(stroke)))
        offset += len(stroke)
    kept_points = np.concatenate(kept) if kept else np.zeros(0, np.int64)
    return kept_points[np.asarray(sources, dtype=np.int64)]


def _resample_counts(arc: np.ndarray, sizes: np.ndarray, step: float) -> np.ndarray:
    """Points `resample_stroke` gives each stroke, from its arc length and number of points."""
    counts = np.maximum(2, np.ceil(arc / step).astype(np.int64) + 1)
    return np.where((sizes < 2) | (arc <= 0), 1, counts)


def frame_count(ink: Ink, config: StrokeFeatureConfig) -> int:
    """The number of frames `StrokeFeatures(config)(ink)` gives, computed with whole-ink array operations
    instead of per-stroke ones (~10x faster): length bucketing and CTC checks for a large corpus.
    InkError where the features would refuse the ink (past MAX_INK_FRAMES)."""
    points, ids = ink.points(), ink.stroke_ids()
    same = ids[1:] == ids[:-1]
    keep = np.concatenate([[True], ~same | np.any(np.diff(points, axis=0) != 0, axis=1)])
    points, ids = points[keep], ids[keep]
    strokes = len(ink.strokes)
    sizes = np.bincount(ids, minlength=strokes)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    same = ids[1:] == ids[:-1]
    segment = np.where(same, np.hypot(*np.diff(points, axis=0).T), 0.0)
    # Dense points every size/400 along each stroke (as `_dense_points`): one interpolation over the
    # whole ink, strokes laid end to end with a unit gap so no target falls between two strokes.
    step = _dense_step(points, ids)
    arc = np.bincount(ids[1:][same], weights=segment[same], minlength=strokes)
    dense_counts = _resample_counts(arc, sizes, step)
    position = np.concatenate([[0.0], np.cumsum(np.where(same, segment, 1.0))])
    base = position[starts]
    dense_ids = np.repeat(np.arange(strokes), dense_counts)
    first = np.concatenate([[0], np.cumsum(dense_counts)[:-1]])
    rank = np.arange(len(dense_ids)) - first[dense_ids]
    fraction = rank / np.maximum(dense_counts[dense_ids] - 1, 1)
    targets = base[dense_ids] + np.where(dense_counts[dense_ids] > 1, fraction * arc[dense_ids], 0.0)
    dense = np.stack([np.interp(targets, position, points[:, k]) for k in range(2)], axis=1)
    centre = dense.mean(axis=0)
    transform = np.eye(2)
    if config.deskew:
        angle = estimate_skew(dense)
        cos, sin = np.cos(-angle), np.sin(-angle)
        transform = np.array([[cos, -sin], [sin, cos]])
    if config.deslant:
        slant = estimate_slant((dense - centre) @ transform.T, dense_ids)
        transform = np.array([[1.0, -slant], [0.0, 1.0]]) @ transform
    top, bottom = estimate_core(((dense - centre) @ transform.T)[:, 1])
    height = max(bottom - top, 1e-9)
    moved = np.diff(points, axis=0)[same] @ transform.T / height
    arc = np.bincount(ids[1:][same], weights=np.hypot(moved[:, 0], moved[:, 1]), minlength=strokes)
    _check_frames(arc, sizes, config.step, ink.name)
    return int(_resample_counts(arc, sizes, config.step).sum())
