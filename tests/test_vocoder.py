"""The LPC vocoder that re-speaks train utterances like a statistical parametric voice."""

import numpy as np
import pytest
from scipy.signal import lfilter

from pipelines.vocoder import vocode

RATE = 16_000


def vowel(f0: float = 120.0, seconds: float = 1.0, formants=(700.0, 1200.0, 2600.0)) -> np.ndarray:
    """A pulse train through three formant resonators: a synthetic /a/."""
    pulses = np.zeros(int(seconds * RATE))
    pulses[:: int(RATE / f0)] = 1.0
    signal = pulses
    for frequency in formants:
        radius = np.exp(-np.pi * 80.0 / RATE)
        signal = lfilter([1.0], [1.0, -2 * radius * np.cos(2 * np.pi * frequency / RATE), radius**2], signal)
    return (0.5 * signal / np.abs(signal).max()).astype(np.float32)


def mean_log_spectrum(audio: np.ndarray) -> np.ndarray:
    frames = np.lib.stride_tricks.sliding_window_view(audio, 512)[::160] * np.hanning(512)
    spectrum = np.log(np.mean(np.abs(np.fft.rfft(frames, axis=1)) ** 2, axis=0) + 1e-10)
    return np.convolve(spectrum, np.ones(9) / 9, "same")  # the envelope, not the harmonics


@pytest.mark.parametrize("quality", [0.0, 1.0])
def test_vocoded_vowel_keeps_length_peak_and_spectral_envelope(quality):
    audio = vowel()
    out = vocode(audio, np.random.default_rng(0), RATE, quality=quality)
    assert out.dtype == np.float32 and out.shape == audio.shape and np.isfinite(out).all()
    assert np.abs(out).max() == pytest.approx(np.abs(audio).max(), rel=1e-4)
    original, vocoded = mean_log_spectrum(audio), mean_log_spectrum(out)
    band = slice(8, 160)  # 250 Hz - 5 kHz
    assert np.corrcoef(original[band], vocoded[band])[0, 1] > 0.85
    # the first formant is still where it was
    peak_hz = (np.argmax(vocoded[10:40]) + 10) * RATE / 512
    assert abs(peak_hz - 700.0) < 150.0


def test_vocoded_vowel_is_voiced_at_a_new_pitch_and_noise_stays_unvoiced():
    out = vocode(vowel(f0=120.0), np.random.default_rng(1), RATE, quality=0.5)
    middle = out[4000:12000].astype(np.float64)
    r = np.correlate(middle, middle, "full")[len(middle) - 1 :]
    lag = np.argmax(r[40:270]) + 40  # 60-400 Hz
    assert 0.85 * 120 - 5 < RATE / lag < 1.2 * 120 + 5
    assert r[lag] / r[0] > 0.5  # periodic
    noise = np.random.default_rng(2).standard_normal(RATE).astype(np.float32) * 0.1
    hiss = vocode(noise, np.random.default_rng(3), RATE).astype(np.float64)[2000:14000]
    r = np.correlate(hiss, hiss, "full")[len(hiss) - 1 :]
    assert np.max(r[40:270]) / r[0] < 0.3


def test_silence_and_very_short_input_pass_through_without_nans():
    silence = np.zeros(8000, dtype=np.float32)
    out = vocode(silence, np.random.default_rng(0), RATE)
    assert np.isfinite(out).all() and not out.any()
    short = np.ones(100, dtype=np.float32)
    assert np.array_equal(vocode(short, np.random.default_rng(0), RATE), short)


def test_the_corpus_vocodes_a_share_of_non_espeak_train_utterances_and_says_which(tiny_corpus):
    import json

    rows = [json.loads(line) for line in (tiny_corpus / "train.jsonl").open()]
    vocoded = [row for row in rows if row.get("vocoded")]
    assert vocoded and len(vocoded) < len(rows)
    assert all(row["engine"] != "espeak" for row in vocoded)
    summary = json.loads((tiny_corpus / "corpus.json").read_text())
    assert summary["splits"]["train"]["vocoded"] == len(vocoded)
    for split in ("dev", "test"):  # evaluation audio is never altered
        assert not any("vocoded" in line for line in (tiny_corpus / f"{split}.jsonl").open())
