"""Bounded work per input file: a tiny hostile ink, image or audio file gets a clear per-file error that
names the file and the limit, instead of an allocation of gigabytes that aborts the whole batch.

The memory cases read the file in a subprocess whose address space is capped (RLIMIT_AS) at a little
above what it holds after importing the readers, the way `recog read` / `recog transcribe` read it
(reader, then features). Only numpy-level modules are imported there (no torch), so the cap is tight."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile
from conftest import REPO, subprocess_env
from PIL import Image

from recog import audio, image, ink
from recog.audio import AudioError, probe_audio, read_audio, read_region
from recog.features import image as image_features
from recog.features import strokes
from recog.features.image import ImageFeatureConfig, ImageFeatures
from recog.features.strokes import StrokeFeatureConfig, StrokeFeatures, frame_count
from recog.image import ImageError, read_image
from recog.ink import InkError, read_ink

# What the capped subprocess may allocate beyond its size after the imports: far more than a real line
# or a short recording needs, far less than the hostile files used to ask for.
HEADROOM = 1 << 30

READER = r"""
import resource, sys
sys.path.insert(0, sys.argv[1])
kind, path, headroom = sys.argv[2], sys.argv[3], int(sys.argv[4])
from recog.audio import AudioError, read_audio
from recog.features.image import ImageFeatures, column_sources
from recog.features.strokes import StrokeFeatures, input_point_indices
from recog.image import ImageError, read_image
from recog.ink import InkError, read_ink

status = open("/proc/self/status").read()
size = int(status.split("VmSize:")[1].split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + headroom, size + headroom))
try:
    if kind == "ink":  # as recog read does it
        sample = read_ink(path)
        frames, sources = StrokeFeatures().frames_and_points(sample)
        input_point_indices(sample, sources)
    elif kind == "image":
        ink_map = read_image(path)
        features = ImageFeatures()
        frames = features(ink_map)
        column_sources(ink_map, features.config)
    else:
        frames = read_audio(path, 16000)
    print("OK", frames.shape[0])
except (InkError, ImageError, AudioError) as error:
    print("ERROR", type(error).__name__, error)
except MemoryError:
    print("MEMORY")
"""


def read_capped(kind: str, path) -> str:
    """The reading's one-line outcome: 'OK frames', 'ERROR Type message' or 'MEMORY'."""
    env = subprocess_env()
    env.update(OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-c", READER, str(REPO), kind, str(path), str(HEADROOM)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = result.stdout.strip().splitlines()
    return lines[-1] if lines else f"DIED (exit {result.returncode}): {result.stderr[-2000:]}"


def write_png(path, width: int, height: int, ink_rows: slice | None = None):
    """A white image with a black band (all columns) in `ink_rows`, default all rows."""
    pixels = np.full((height, width), 255, dtype=np.uint8)
    pixels[ink_rows if ink_rows is not None else slice(None)] = 0
    Image.fromarray(pixels).save(path)
    return path


# ---------------------------------------------------------------- ink
def test_a_39_byte_ink_that_resamples_to_millions_of_points_is_refused(tmp_path):
    path = tmp_path / "long.json"
    path.write_text("[[[0,0],[1e6,0]]]")
    assert len(path.read_bytes()) < 40
    outcome = read_capped("ink", path)
    assert outcome.startswith(f"ERROR InkError {path}: "), outcome
    assert "MAX_INK_FRAMES" in outcome
    with pytest.raises(InkError, match="MAX_INK_FRAMES"):
        frame_count(read_ink(path), StrokeFeatureConfig())  # what training's loader measures


def test_a_normal_ink_line_reads_under_the_same_cap(tmp_path):
    """The cap itself is not what refuses the hostile files: a real-sized line passes under it."""
    rng = np.random.default_rng(0)
    strokes_ = [np.cumsum(rng.normal(0, 3, (200, 2)), axis=0) + [40 * k, 0] for k in range(15)]
    path = tmp_path / "line.json"
    path.write_text(json.dumps({"strokes": [s.round(2).tolist() for s in strokes_]}))
    assert read_capped("ink", path).startswith("OK ")


def test_ink_with_too_many_points_in_the_file_is_refused(tmp_path):
    count = ink.MAX_INK_POINTS + 1
    points = np.stack([np.arange(count) % 1000, np.arange(count) // 1000], axis=1)
    path = tmp_path / "many.json"
    path.write_text(json.dumps([points.tolist()]))
    with pytest.raises(InkError, match=rf"^{path}: .*{count} points.*MAX_INK_POINTS"):
        read_ink(path)


def test_a_zigzag_stroke_keeps_the_dense_statistics_bounded():
    """Normalisation spreads points along the pen path for its statistics; a stroke that goes back and
    forth across its whole width thousands of times must not multiply them without bound."""
    zigzag = np.stack([np.tile([0.0, 1000.0], 20_000), np.linspace(0, 1, 40_000)], axis=1)
    sample = ink.Ink([zigzag])
    dense, _ = strokes._dense_points(sample)
    assert len(dense) <= strokes.MAX_DENSE_POINTS + len(sample.strokes)
    with pytest.raises(InkError, match="MAX_INK_FRAMES"):
        StrokeFeatures()(sample)


# ---------------------------------------------------------------- images
@pytest.mark.parametrize("width", [100_000, 20_000])
def test_a_one_pixel_high_png_is_refused_not_scaled_to_millions_of_columns(tmp_path, width):
    path = write_png(tmp_path / f"thin-{width}.png", width, 1)
    assert path.stat().st_size < 1000
    outcome = read_capped("image", path)
    assert outcome.startswith(f"ERROR ImageError {path}: {width}x1 pixels"), outcome
    assert "MAX_IMAGE_ASPECT" in outcome  # from the header, before decoding


def test_a_thin_ink_band_in_a_tall_enough_image_is_refused_after_cropping(tmp_path):
    """The header looks like a line (6000x60), but the ink is one pixel row: scaled to the feature
    height it would be 240000 columns."""
    path = write_png(tmp_path / "band.png", 6000, 60, slice(30, 31))
    with pytest.raises(ImageError, match=rf"^{path}: .* 240000 columns \(MAX_IMAGE_COLUMNS"):
        ImageFeatures(ImageFeatureConfig(height=40))(read_image(path), name=str(path))
    assert read_capped("image", path).startswith("ERROR ImageError line image: ")


def test_a_normal_line_image_reads_under_the_same_cap(tmp_path):
    path = write_png(tmp_path / "line.png", 2500, 120, slice(40, 90))
    assert read_capped("image", path).startswith("OK ")


def test_image_pixels_are_checked_from_the_header_before_decoding(tmp_path):
    side = int(np.sqrt(image.MAX_IMAGE_PIXELS)) + 10
    path = tmp_path / "big.png"
    Image.new("1", (side, side), 1).save(path)  # a 1-bit PNG: small file, many pixels
    with pytest.raises(ImageError, match=rf"^{path}: {side}x{side} pixels.*MAX_IMAGE_PIXELS"):
        read_image(path)


def test_deskew_refuses_a_rotation_that_would_need_too_many_pixels():
    long_line = np.zeros((40, image_features.MAX_IMAGE_COLUMNS - 10), dtype=np.float32)
    long_line[10:30] = 1.0
    with pytest.raises(ImageError, match="MAX_IMAGE_PIXELS"):
        image_features.rotate(long_line, 6.0)


# ---------------------------------------------------------------- audio
def test_a_tiny_flac_declaring_a_thousand_hours_is_refused_from_its_header(tmp_path):
    path = tmp_path / "declared.flac"
    soundfile.write(path, np.zeros(16000, np.float32), 16000, format="FLAC", subtype="PCM_16")
    data = bytearray(path.read_bytes())
    # STREAMINFO's 36-bit total sample count (after 'fLaC', the block header and 10 bytes of sizes)
    fields = int.from_bytes(data[18:26], "big") | ((1 << 36) - 1)
    data[18:26] = fields.to_bytes(8, "big")
    path.write_bytes(bytes(data))
    outcome = read_capped("audio", path)
    assert outcome.startswith(f"ERROR AudioError {path}: "), outcome
    assert "MAX_READ_SECONDS" in outcome
    # the chunked transcription path probes the header first: refused there too, by the longer limit
    with pytest.raises(AudioError, match=rf"^{path}: .*MAX_AUDIO_SECONDS"):
        probe_audio(path)


def test_a_one_hertz_wav_that_would_resample_to_gigabytes_is_refused(tmp_path):
    """40000 samples at 1 Hz: 11 hours, 640 million samples at 16 kHz."""
    path = tmp_path / "slow.wav"
    soundfile.write(path, np.zeros(40_000, np.int16), 1, subtype="PCM_16")
    outcome = read_capped("audio", path)
    assert outcome.startswith(f"ERROR AudioError {path}: "), outcome
    assert "MAX_READ_SECONDS" in outcome


def test_a_normal_recording_reads_under_the_same_cap(tmp_path):
    path = tmp_path / "speech.wav"
    soundfile.write(path, np.random.default_rng(0).normal(0, 0.1, (10 * 44100, 2)), 44100)
    assert read_capped("audio", path) == f"OK {10 * 16000}"


def test_a_region_longer_than_the_read_limit_is_refused(tmp_path):
    """read_region (the chunked path) reads pieces; a piece past the whole-read limit is refused too."""
    path = tmp_path / "slow.wav"
    soundfile.write(path, np.zeros(40_000, np.int16), 1, subtype="PCM_16")  # 11 hours at 1 Hz
    samples, rate, first = read_region(path, 100.0, 130.0)
    assert (len(samples), rate, first) == (30, 1, 100)
    with pytest.raises(AudioError, match=rf"^{path}: .*MAX_READ_SECONDS"):
        read_region(path, 0.0, 40_000.0)


def test_limits_are_documented_constants():
    assert ink.MAX_INK_POINTS >= 20_000 and strokes.MAX_INK_FRAMES >= 20_000
    assert image.MAX_IMAGE_PIXELS >= 10_000_000 and image_features.MAX_IMAGE_COLUMNS >= 10_000
    assert audio.MAX_READ_SECONDS >= 600 and audio.MAX_AUDIO_SECONDS >= 10 * 3600
    # read_audio's whole-file limit is what the in-memory paths can afford; chunked transcription
    # reads hours through read_region
    assert audio.MAX_READ_SECONDS < audio.MAX_AUDIO_SECONDS
    assert read_audio.__doc__ and "MAX_READ_SECONDS" in read_audio.__doc__
