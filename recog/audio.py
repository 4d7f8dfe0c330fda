"""Reading one audio input into a clean mono float32 array at the model's sample rate."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile
import soxr


class AudioError(Exception):
    """An audio input that cannot be used; the message names the file and the reason."""


def to_mono_float(samples: np.ndarray) -> np.ndarray:
    samples = np.asarray(samples)
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    if np.issubdtype(samples.dtype, np.integer):
        samples = samples.astype(np.float32) / float(np.iinfo(samples.dtype).max)
    return samples.astype(np.float32, copy=False)


def resample(samples: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    """High-quality resampling with soxr (no torch: safe in forked worker processes)."""
    if rate == target_rate:
        return samples
    return soxr.resample(samples, rate, target_rate, quality="HQ").astype(np.float32)


def check_samples(samples: np.ndarray, name: str) -> np.ndarray:
    if samples.size == 0:
        raise AudioError(f"{name}: empty audio (0 samples)")
    if not np.all(np.isfinite(samples)):
        raise AudioError(f"{name}: audio contains NaN or infinite samples")
    return samples


def read_audio(source: str | Path | bytes, target_rate: int = 16000, name: str | None = None) -> np.ndarray:
    """Decode a file path or encoded bytes (anything libsndfile reads) to mono float32 at `target_rate`."""
    label = name or (str(source) if not isinstance(source, bytes) else "<bytes>")
    handle = io.BytesIO(source) if isinstance(source, bytes) else source
    if not isinstance(source, bytes) and not Path(source).exists():
        raise AudioError(f"{label}: file not found")
    try:
        samples, rate = soundfile.read(handle, dtype="float32", always_2d=True)
    except FileNotFoundError:
        raise AudioError(f"{label}: file not found") from None
    except PermissionError:
        raise AudioError(f"{label}: permission denied") from None
    except (soundfile.LibsndfileError, RuntimeError, ValueError, TypeError) as error:
        raise AudioError(f"{label}: not a readable audio file (soundfile: {error})") from None
    samples = check_samples(to_mono_float(samples), label)
    return resample(samples, rate, target_rate)


def encode_flac(samples: np.ndarray, rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()
