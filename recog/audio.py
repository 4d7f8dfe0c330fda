"""Reading one audio input into a clean mono float32 array at the model's sample rate."""

from __future__ import annotations

import io
import math
import os
import struct
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import numpy as np
import soundfile
import soxr

MAX_AUDIO_SECONDS = 24 * 3600.0
"""Longest recording `probe_audio` accepts: `recog transcribe` cuts recordings into pieces and reads
them one by one (`read_region`), so hours are fine; past a day the header is more likely a lie (a
tiny FLAC can declare a thousand hours)."""
MAX_READ_SECONDS = 3600.0
"""Most audio one read may load into memory: all of a file (`read_audio`: training samples, short
files in transcription) or one piece (`read_region`). An hour of 16 kHz audio is 230 MB of float32;
checked from the header before anything is decoded, so the resampled result is bounded too."""
_BLOCK = 1 << 18  # frames decoded at a time and mixed down to mono: channels never multiply the memory


AUDIO_SUFFIXES = frozenset(
    ".wav .wave .flac .ogg .oga .opus .mp3 .aif .aiff .aifc .au .snd .caf .w64 .rf64 .sph .voc".split()
)


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


def _read_mono(stream: soundfile.SoundFile, frames: int, label: str) -> np.ndarray:
    """`frames` frames from the stream's position as mono float32, refused (AudioError) past
    MAX_READ_SECONDS before any is decoded; decoded in blocks, so only the mono result is held."""
    seconds = frames / stream.samplerate if stream.samplerate > 0 else math.inf
    if not seconds <= MAX_READ_SECONDS:
        raise AudioError(
            f"{label}: {seconds:.0f} s of audio ({frames} samples at {stream.samplerate} Hz) is more than one "
            f"read may load (MAX_READ_SECONDS = {MAX_READ_SECONDS:g})"
        )
    mono = np.empty(max(0, frames), dtype=np.float32)
    filled = 0
    while filled < len(mono):
        block = stream.read(min(_BLOCK, len(mono) - filled), dtype="float32", always_2d=True)
        if len(block) == 0:
            break
        mono[filled : filled + len(block)] = block[:, 0] if block.shape[1] == 1 else block.mean(axis=1)
        filled += len(block)
    return mono[:filled]


def read_audio(source: str | Path | bytes, target_rate: int = 16000, name: str | None = None) -> np.ndarray:
    """Decode a file path or encoded bytes (anything libsndfile reads) to mono float32 at `target_rate`.
    Loads the whole file: AudioError past MAX_READ_SECONDS, checked from the header first."""
    label = name or (str(source) if not isinstance(source, bytes) else "<bytes>")
    handle = io.BytesIO(source) if isinstance(source, bytes) else source
    if not isinstance(source, bytes) and not Path(source).exists():
        raise AudioError(f"{label}: file not found")
    with _reading(label):
        with soundfile.SoundFile(handle) as stream:
            rate = stream.samplerate
            samples = _read_mono(stream, stream.frames, label)
    return resample(check_samples(samples, label), rate, target_rate)


def encode_flac(samples: np.ndarray, rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


# ---------------------------------------------------------------- batch transcription: probe, regions, pauses
class AudioInfo(NamedTuple):
    rate: int
    frames: int  # per channel
    channels: int

    @property
    def duration(self) -> float:
        return self.frames / self.rate


@contextmanager
def _reading(label: str):
    """soundfile's many failure types -> one AudioError naming the file and the reason."""
    try:
        yield
    except FileNotFoundError:
        raise AudioError(f"{label}: file not found") from None
    except PermissionError:
        raise AudioError(f"{label}: permission denied") from None
    except IsADirectoryError:
        raise AudioError(f"{label}: is a folder, not an audio file") from None
    except (soundfile.LibsndfileError, RuntimeError, ValueError, TypeError) as error:
        raise AudioError(f"{label}: not a readable audio file (soundfile: {error})") from None


def wav_shortfall(path: str | Path) -> tuple[int, int] | None:
    """(declared, present) bytes of a RIFF/WAVE data chunk whose file ends early, else None.

    libsndfile silently shortens a truncated WAV to what is on disk; the header still says how long
    it should be. A streaming placeholder size (0 or 0xFFFFFFFF) is not a truncation."""
    try:
        with open(path, "rb") as stream:
            header = stream.read(12)
            if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
                return None
            size = os.fstat(stream.fileno()).st_size
            while True:
                chunk = stream.read(8)
                if len(chunk) < 8:
                    return None
                declared = struct.unpack("<I", chunk[4:])[0]
                if chunk[:4] == b"data":
                    present = size - stream.tell()
                    if declared in (0, 0xFFFFFFFF) or declared <= present:
                        return None
                    return declared, present
                stream.seek(declared + (declared & 1), os.SEEK_CUR)
    except OSError:
        return None


def probe_audio(path: str | Path, name: str | None = None) -> AudioInfo:
    """Rate, length and channels from the header only (cheap); refuses empty and truncated files, and
    recordings longer than MAX_AUDIO_SECONDS."""
    label = name or str(path)
    if not Path(path).exists():
        raise AudioError(f"{label}: file not found")
    with _reading(label):
        with open(path, "rb"):  # a permission problem is named as such, not as "not audio"
            pass
        if os.path.getsize(path) == 0:
            raise AudioError(f"{label}: empty file (0 bytes)")
        info = soundfile.info(str(path))
    if info.frames <= 0 or info.samplerate <= 0:
        raise AudioError(f"{label}: empty audio (0 samples)")
    if info.frames / info.samplerate > MAX_AUDIO_SECONDS:
        raise AudioError(
            f"{label}: the header declares {info.frames / info.samplerate / 3600:.1f} hours of audio "
            f"(MAX_AUDIO_SECONDS = {MAX_AUDIO_SECONDS:g})"
        )
    shortfall = wav_shortfall(path)
    if shortfall:
        declared, present = shortfall
        raise AudioError(
            f"{label}: truncated file (the header declares {declared} bytes of audio, {present} are present)"
        )
    return AudioInfo(int(info.samplerate), int(info.frames), int(info.channels))


def read_region(
    path: str | Path, start: float, stop: float, name: str | None = None
) -> tuple[np.ndarray, int, int]:
    """Mono float32 samples of [start, stop) seconds at the file's own rate: (samples, rate, first frame).
    AudioError for a piece longer than MAX_READ_SECONDS."""
    label = name or str(path)
    with _reading(label):
        with soundfile.SoundFile(str(path)) as handle:
            rate = handle.samplerate
            first = max(0, int(round(start * rate)))
            last = min(handle.frames, int(round(stop * rate)))
            handle.seek(first)
            samples = _read_mono(handle, max(0, last - first), label)
    return check_samples(samples, label), rate, first


def find_pause(
    samples: np.ndarray, rate: int, window: float = 0.2, depth_db: float = 30.0
) -> tuple[float, bool]:
    """Where to cut `samples`: the middle (seconds from the start) of the longest stretch of quiet
    `window`s, within 3 dB of the quietest; and whether it is a real pause, at least `depth_db` below
    the loudest window (or digital silence). The middle, not the first quiet window: a cut right
    after a word would give the next chunk the word's tail."""
    hop = max(1, int(rate * 0.01))
    usable = samples[: len(samples) // hop * hop]
    if usable.size < hop * 3:
        return len(samples) / rate / 2, False
    energy = (usable.reshape(-1, hop).astype(np.float64) ** 2).mean(axis=1)  # 10 ms frames
    width = min(max(1, int(round(window / 0.01))), len(energy))
    level = 10 * np.log10(np.convolve(energy, np.ones(width) / width, mode="valid") + 1e-12)
    quiet = np.concatenate([[False], level <= level.min() + 3.0, [False]])
    edges = np.flatnonzero(np.diff(quiet.astype(np.int8)))  # starts and ends of quiet runs
    starts, ends = edges[::2], edges[1::2]
    longest = int(np.argmax(ends - starts))
    middle = (starts[longest] + ends[longest] - 1) / 2  # a window index
    centre = (middle + width / 2) * hop / rate
    return float(centre), bool(level.min() <= max(level.max() - depth_db, -80.0))
