"""An LPC source-filter vocoder: re-speak an utterance the way a statistical parametric TTS voice would.

Parametric voices (flite's clustergen voices such as `rms`, HTS voices) are not recordings: a smooth
spectral envelope, averaged over similar contexts, drives a filter excited by a pulse train for voiced
sounds and noise for the rest. None of the corpus engines sounds like that (espeak-ng is a formant
synthesiser, festival/flite kal and MBROLA concatenate recorded diphones, Piper and Kokoro are neural),
so a share of the training utterances is analysed and re-synthesised here: linear prediction on 25 ms
frames every 5 ms, the envelope smoothed over time, pitch and voicing from the autocorrelation, and a
buzzy mixed excitation. The words and their timing are unchanged, so the transcript still holds.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import lfilter, lfiltic, medfilt

HOP = 80  # 5 ms at 16 kHz
WINDOW = 400  # 25 ms
PITCH_WINDOW = 640  # 40 ms: two periods of a 60 Hz voice
FFT = 1024
F0_RANGE = (60.0, 400.0)
PRE_EMPHASIS = 0.97


def _frames(signal: np.ndarray, length: int, count: int) -> np.ndarray:
    """(count, length) frames centred every HOP samples (zero padded at both ends)."""
    padded = np.pad(signal, (length // 2, length + count * HOP))
    index = np.arange(count)[:, None] * HOP + np.arange(length)[None, :]
    return padded[index]


def _autocorrelation(frames: np.ndarray, lags: int) -> np.ndarray:
    spectrum = np.fft.rfft(frames, n=FFT, axis=1)
    return np.fft.irfft(np.abs(spectrum) ** 2, n=FFT, axis=1)[:, :lags]


def _levinson(r: np.ndarray, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Levinson-Durbin on every row of r: (frames, order + 1) predictors with a[:, 0] = 1, and the error power."""
    count = r.shape[0]
    a = np.zeros((count, order + 1))
    a[:, 0] = 1.0
    error = r[:, 0].copy()
    for i in range(1, order + 1):
        k = -(a[:, :i] * r[:, i:0:-1]).sum(axis=1) / error
        a[:, 1 : i + 1] = a[:, 1 : i + 1] + k[:, None] * a[:, i - 1 :: -1][:, :i]
        error = error * (1.0 - k * k)
    return a, np.maximum(error, 1e-12)


def _pitch(audio: np.ndarray, count: int, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame F0 (Hz) and voicing strength in [0, 1] from the normalised autocorrelation peak."""
    frames = _frames(audio, PITCH_WINDOW, count) * np.hanning(PITCH_WINDOW)
    r = _autocorrelation(frames, PITCH_WINDOW)
    # Undo the window's taper of long lags, so a periodic frame scores near 1 at its period.
    window_r = _autocorrelation(np.hanning(PITCH_WINDOW)[None, :], PITCH_WINDOW)[0]
    lo, hi = int(sample_rate / F0_RANGE[1]), int(sample_rate / F0_RANGE[0])
    normalised = r[:, lo:hi] / (r[:, :1] + 1e-9) / (window_r[lo:hi] / window_r[0])
    best = normalised.argmax(axis=1)
    strength = np.clip(normalised[np.arange(count), best], 0.0, 1.0)
    f0 = sample_rate / (best + lo)
    return medfilt(f0, 5), medfilt(strength, 5)


def vocode(
    audio: np.ndarray, rng: np.random.Generator, sample_rate: int = 16_000, quality: float | None = None
) -> np.ndarray:
    """Re-synthesise `audio` (float mono) through a randomised LPC vocoder; same length, peak kept.

    `quality` in [0, 1] (random when None) sets how much detail survives: envelope smoothing over time,
    prediction order, and the noise share of the voiced excitation.
    """
    audio = np.asarray(audio, dtype=np.float64)
    count = len(audio) // HOP + 1
    if len(audio) < WINDOW:
        return audio.astype(np.float32)
    quality = float(rng.uniform()) if quality is None else quality
    order = int(round(14 + 8 * quality))
    smooth = 1 + 2 * int(round(3 * (1 - quality)))  # 1..7 frames: parametric envelopes are smooth
    emphasised = lfilter([1.0, -PRE_EMPHASIS], [1.0], audio)
    frames = _frames(emphasised, WINDOW, count) * np.hanning(WINDOW)
    r = _autocorrelation(frames, order + 1)
    r *= np.exp(-0.5 * (2 * np.pi * 60.0 * np.arange(order + 1) / sample_rate) ** 2)  # 60 Hz bandwidth
    r[:, 0] = r[:, 0] * 1.0001 + 1e-9
    if smooth > 1:
        kernel = np.hanning(smooth + 2)[1:-1]
        r = np.apply_along_axis(lambda column: np.convolve(column, kernel / kernel.sum(), "same"), 0, r)
    a, error = _levinson(r, order)
    gain = np.sqrt(error / np.sum(np.hanning(WINDOW) ** 2))

    f0, strength = _pitch(audio, count, sample_rate)
    f0 = f0 * rng.uniform(0.85, 1.2)  # another speaker's pitch
    threshold = rng.uniform(0.35, 0.5)
    voiced = np.clip((strength - threshold) / 0.15, 0.0, 1.0)
    samples = count * HOP
    at = np.arange(samples) / HOP
    f0_samples = np.interp(at, np.arange(count), f0)
    voiced_samples = np.interp(at, np.arange(count), voiced)
    phase = np.cumsum(f0_samples / sample_rate)
    pulses = np.zeros(samples)
    starts = np.flatnonzero(np.diff(np.floor(phase), prepend=0.0) > 0)
    pulses[starts] = np.sqrt(sample_rate / f0_samples[starts])  # unit power per sample
    noise = rng.standard_normal(samples)
    breath = rng.uniform(0.05, 0.3) * (1.2 - quality)
    excitation = (
        voiced_samples * (np.sqrt(1 - breath**2) * pulses + breath * noise) + (1 - voiced_samples) * noise
    )

    output = np.zeros(samples)
    past = np.zeros(order)  # last outputs, newest first: the filter state whatever the coefficients
    for frame in range(count):
        segment = slice(frame * HOP, (frame + 1) * HOP)
        zi = lfiltic([gain[frame]], a[frame], past)
        output[segment], _ = lfilter([gain[frame]], a[frame], excitation[segment], zi=zi)
        past = output[segment][::-1][:order]  # HOP (80) > order (at most 22)
    output = lfilter([1.0], [1.0, -PRE_EMPHASIS], output)[: len(audio)]
    output -= output.mean()
    peak_in, peak_out = np.abs(audio).max(), np.abs(output).max()
    if not np.isfinite(peak_out) or peak_out < 1e-9:
        return audio.astype(np.float32)
    return (output * (peak_in / peak_out)).astype(np.float32)
