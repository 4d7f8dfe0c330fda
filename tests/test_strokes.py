"""Stroke features: normalisation invariants, baseline/slant/x-height estimates, resampling,
per-point features, and reproducible writer perturbations."""

from __future__ import annotations

import numpy as np
import pytest

from recog.features.strokes import (
    FEATURE_NAMES,
    StrokeFeatures,
    WriterStyle,
    estimate_core,
    normalise,
    resample,
    respace,
)
from recog.ink import Ink


def handwriting(words: int = 3, seed: int = 0) -> Ink:
    """A made-up cursive line, x-height 10 units: arches ('n'), loops ('e') and ascenders ('l'),
    with a dot after each word (an i-dot)."""
    rng = np.random.default_rng(seed)
    strokes, x = [], 0.0
    for _ in range(words):
        points = []
        for letter in rng.choice(["n", "e", "l"], size=5):
            t = np.linspace(0, 1, 20)
            if letter == "n":
                shape = np.stack([x + 6 * t, -10 * np.sin(np.pi * t)], axis=1)
            elif letter == "e":
                angle = np.linspace(0, 2 * np.pi, 20)
                shape = np.stack([x + 3 + 3 * np.cos(angle), -5 - 5 * np.sin(angle)], axis=1)
            else:
                shape = np.stack([x + 2 * t, -25 * np.sin(np.pi * t)], axis=1)
            points.append(shape)
            x += 7
        strokes.append(np.concatenate(points))
        strokes.append(np.array([[x - 10, -14.0]]))
        x += 8
    return Ink(strokes)


def test_features_are_invariant_to_translation_and_scale():
    ink = handwriting()
    features = StrokeFeatures()
    base = features(ink)
    moved = features(Ink([s + [513.0, -87.5] for s in ink.strokes]))
    scaled = features(Ink([s * 3.7 for s in ink.strokes]))
    assert base.shape == moved.shape == scaled.shape and base.dtype == np.float32
    np.testing.assert_allclose(moved, base, atol=1e-4)
    np.testing.assert_allclose(scaled, base, atol=1e-4)


def test_features_do_not_depend_on_the_pen_sampling_rate():
    ink = handwriting()
    dense = Ink([resample(ink, 0.3)[0].strokes[i] if len(s) > 1 else s for i, s in enumerate(ink.strokes)])
    a, b = StrokeFeatures()(ink), StrokeFeatures()(dense)
    assert abs(len(a) - len(b)) <= len(ink.strokes)
    # Same path: the summed displacement per stroke and the pen-up count agree.
    assert a[:, 3].sum() == b[:, 3].sum() == len(ink.strokes)
    np.testing.assert_allclose(a[:, 0].sum(), b[:, 0].sum(), atol=0.05)


def test_normalisation_levels_a_tilted_line_and_removes_slant():
    ink = handwriting(words=4)
    reference = normalise(ink)
    angle, shear = 0.12, 0.4
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    tilted = Ink([(s @ np.array([[1, 0], [-shear, 1]])) @ rotation.T for s in ink.strokes])
    # Tilted and slanted by a writer, normalised back: the same shape within a few % of an x-height.
    fixed = normalise(tilted)
    for a, b in zip(reference.strokes, fixed.strokes, strict=True):
        assert np.abs(a - b).max() < 0.25
    assert abs(np.median(np.abs(fixed.points()[:, 1] - reference.points()[:, 1]))) < 0.05


def test_x_height_estimate_ignores_ascenders_and_dots():
    ink = handwriting(words=4)
    normalised = normalise(ink, deskew=False, deslant=False)
    top, bottom = estimate_core(ink.points()[:, 1])
    assert 8.0 < bottom - top < 12.5  # the arches and loops are 10 units tall, ascenders 25
    ys = normalised.points()[:, 1]
    assert ys.max() == pytest.approx(0.0, abs=0.15)  # baseline at 0
    assert np.percentile(ys, 5) < -1.5  # ascenders reach well above the x-height


def test_resampling_spacing_endpoints_and_dots():
    stroke = np.array([[0.0, 0.0], [10.0, 0.0]])
    ink, sources = resample(Ink([stroke, [[20.0, 5.0]]]), 1.0)
    np.testing.assert_allclose(ink.strokes[0][:, 0], np.arange(11.0))
    assert ink.strokes[1].shape == (1, 2)
    assert sources[0] == 0 and sources[10] == 1 and sources[-1] == 2


def test_point_features_meaning():
    frames, sources = StrokeFeatures().frames_and_points(handwriting())
    assert frames.shape[1] == len(FEATURE_NAMES)
    assert frames[:, 3].sum() == 6  # one pen-up per stroke
    norms = np.hypot(frames[:, 4], frames[:, 5])
    moving = norms > 0
    np.testing.assert_allclose(norms[moving], 1.0, atol=1e-5)
    np.testing.assert_allclose(np.hypot(frames[:, 6], frames[:, 7]), 1.0, atol=1e-5)
    assert np.all(np.diff(sources) >= 0) and sources[-1] == handwriting().num_points - 1


def test_writer_perturbations_are_reproducible_and_zero_strength_is_identity():
    ink = handwriting()
    features = StrokeFeatures()

    def perturbed(seed: int, strength: float = 1.0) -> np.ndarray:
        rng = np.random.default_rng(seed)
        return features.perturbed(ink, WriterStyle.draw(rng, strength), rng)

    np.testing.assert_array_equal(perturbed(5), perturbed(5))
    assert perturbed(5).shape != perturbed(6).shape or not np.allclose(perturbed(5), perturbed(6))
    # Strength 0 changes nothing but a second normalisation pass (its estimates move by < 1%).
    np.testing.assert_allclose(perturbed(5, strength=0.0), features(ink), atol=0.01)


def test_respacing_widens_gaps_but_not_letters():
    ink = Ink([[[0, 0], [1, 0]], [[3, 0], [4, 0]]])
    wider = respace(ink, 2.0)
    np.testing.assert_allclose(wider.strokes[1][:, 0], [5, 6])
    np.testing.assert_allclose(wider.strokes[0], ink.strokes[0])
