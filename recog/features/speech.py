"""MFCC / log-mel frames from 16 kHz audio, with CMVN and training-time perturbations.

The perturbations work in the spectral domain so they cost almost nothing per batch: speed
perturbation is a change of hop length (tempo) plus a frequency warp (pitch and formants), vocal
tract length perturbation is a further warp, channel colouring is a smooth random gain curve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torchaudio.functional as AF
from scipy.fft import next_fast_len
from scipy.signal import lfilter

from recog.config import AugmentConfig, FeatureConfig
from recog.features.cmvn import CMVN  # noqa: F401  (its home before recog.features.cmvn)


@dataclass
class Perturbation:
    """One draw of training-time perturbations for an utterance."""

    speed: float = 1.0
    warp: float = 1.0
    snr_db: float | None = None
    rt60: float | None = None
    tilt: np.ndarray | None = None  # (n_fft // 2 + 1,) gain in dB
    lowpass_hz: float | None = None
    smooth_frames: float | None = None  # Gaussian sigma of the log-mel energies' blur over time

    @classmethod
    def draw(cls, augment: AugmentConfig, n_bins: int, rng: np.random.Generator) -> Perturbation:
        speed = rng.uniform(*augment.speed)
        warp = rng.uniform(*augment.vtlp)
        snr = rng.uniform(*augment.snr_db) if rng.random() < augment.noise_prob else None
        rt60 = rng.uniform(0.15, 0.6) if rng.random() < augment.reverb_prob else None
        tilt = None
        if augment.tilt_db > 0:
            position = np.linspace(0, 1, n_bins)
            curve = sum(
                rng.uniform(-1, 1) * np.cos(math.pi * k * position + rng.uniform(0, math.pi))
                for k in range(1, 4)
            )
            tilt = (augment.tilt_db / 3.0) * curve
        lowpass = rng.uniform(*augment.lowpass_hz) if rng.random() < augment.lowpass_prob else None
        smooth = None
        if augment.smooth_prob > 0 and rng.random() < augment.smooth_prob:  # off: the same draws as before
            smooth = rng.uniform(*augment.smooth_frames)
        return cls(
            speed=speed, warp=warp, snr_db=snr, rt60=rt60, tilt=tilt, lowpass_hz=lowpass, smooth_frames=smooth
        )


class SpeechFeatures:
    """Turns a waveform into (time, feat) frames; parameters are saved with the model."""

    def __init__(self, config: FeatureConfig):
        if config.kind not in ("mfcc", "logmel"):
            raise ValueError(f"features.kind: expected 'mfcc' or 'logmel', got {config.kind!r}")
        self.config = config
        self.window = torch.hann_window(config.win_length)
        self.n_bins = config.n_fft // 2 + 1
        self.mel_fbank = AF.melscale_fbanks(
            self.n_bins,
            config.f_min,
            config.f_max,
            config.n_mels,
            config.sample_rate,
            norm="slaney",
            mel_scale="slaney",
        )  # (bins, mels)
        self.dct = (
            AF.create_dct(config.n_mfcc, config.n_mels, norm="ortho") if config.kind == "mfcc" else None
        )

    @property
    def dim(self) -> int:
        base = self.config.n_mfcc if self.config.kind == "mfcc" else self.config.n_mels
        return base * (1 + self.config.deltas)

    def frame_rate(self) -> float:
        return self.config.sample_rate / self.config.hop_length

    def power_spectrum(self, samples: torch.Tensor, hop_length: int | None = None) -> torch.Tensor:
        """(samples,) -> (frames, bins) power spectrum, centred frames as librosa does."""
        config = self.config
        spectrum = torch.stft(
            samples,
            n_fft=config.n_fft,
            hop_length=hop_length or config.hop_length,
            win_length=config.win_length,
            window=self.window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )
        return (spectrum.real.square() + spectrum.imag.square()).T  # |X|^2 without abs's square root

    def from_power(
        self, power: torch.Tensor, mel_fbank: torch.Tensor | None = None, smooth_frames: float | None = None
    ) -> torch.Tensor:
        """(frames, bins) power -> (frames, feat) MFCC or log-mel, plus deltas if configured.

        `mel_fbank` replaces the plain (bins, mels) filterbank, e.g. one with a perturbation folded in;
        `smooth_frames` blurs the log-mel energies over time (a Gaussian of that sigma, in frames)."""
        mel = power @ (self.mel_fbank if mel_fbank is None else mel_fbank)
        frames = 10.0 * torch.log10(mel.clamp_min(1e-10))
        if smooth_frames:
            frames = smooth_over_time(frames, smooth_frames)
        if self.dct is not None:
            frames = frames @ self.dct
        if self.config.deltas:
            layers = [frames]
            for _ in range(self.config.deltas):
                layers.append(AF.compute_deltas(layers[-1].T.unsqueeze(0)).squeeze(0).T)
            frames = torch.cat(layers, dim=1)
        return frames

    def __call__(self, samples: np.ndarray | torch.Tensor) -> torch.Tensor:
        samples = torch.as_tensor(samples, dtype=torch.float32)
        return self.from_power(self.power_spectrum(samples))

    def perturbed(
        self, samples: np.ndarray, perturbation: Perturbation, rng: np.random.Generator
    ) -> torch.Tensor:
        """Features of one training utterance under a drawn perturbation."""
        samples = torch.as_tensor(samples, dtype=torch.float32)
        if perturbation.rt60 is not None:
            samples = add_reverb(samples, perturbation.rt60, self.config.sample_rate, rng)
        if perturbation.snr_db is not None:
            samples = add_noise(samples, perturbation.snr_db, rng)
        hop = max(1, round(self.config.hop_length * perturbation.speed))
        return self.from_power(
            self.power_spectrum(samples, hop), self.perturbed_fbank(perturbation), perturbation.smooth_frames
        )

    def perturbed_fbank(self, perturbation: Perturbation) -> torch.Tensor:
        """The mel filterbank with the perturbation's frequency warp, spectral tilt and low-pass folded in.

        All three are linear maps of the power spectrum's bins (warp: interpolation between neighbouring
        bins; tilt and low-pass: a gain per bin), so applying them to the (bins, mels) matrix once per
        utterance gives the same features as applying them to every frame, at a fraction of the cost."""
        gain = torch.ones(self.n_bins)
        if perturbation.tilt is not None:
            gain = gain * torch.from_numpy(10.0 ** (perturbation.tilt / 10.0)).float()
        if perturbation.lowpass_hz is not None:
            cutoff = int(perturbation.lowpass_hz / self.config.sample_rate * self.config.n_fft)
            gain[cutoff:] *= 1e-4  # -40 dB above the cut-off
        # warped[:, j] = sum_i power[:, i] * W[i, j]; then gain per output bin j; then the filterbank
        return warp_rows(gain.unsqueeze(1) * self.mel_fbank, perturbation.speed * perturbation.warp)


def smooth_over_time(frames: torch.Tensor, sigma: float) -> torch.Tensor:
    """(frames, feat) convolved along time with a normalised Gaussian of `sigma` frames, edges repeated.

    Statistical-parametric voices (HMM/clustergen: flite's rms, RHVoice, Pico) generate smooth parameter
    trajectories: the lag-1 autocorrelation of their cepstra is 0.76-0.80 here against 0.46-0.61 for
    espeak, diphone and MBROLA voices, and a blur of sigma 1-2 frames gives those voices the same."""
    radius = max(1, math.ceil(3.0 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=frames.dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).view(1, 1, -1)
    padded = torch.nn.functional.pad(frames.T.unsqueeze(1), (radius, radius), mode="replicate")
    return torch.nn.functional.conv1d(padded, kernel).squeeze(1).T


def warp_rows(matrix: torch.Tensor, factor: float) -> torch.Tensor:
    """`W @ matrix` for a (bins, k) matrix, where `power @ W == warp_frequencies(power, factor)`, without
    building the (bins, bins) W: each output bin's interpolation weights go onto its two source rows."""
    n_bins = matrix.shape[0]
    if abs(factor - 1.0) < 1e-6:
        return matrix
    source = torch.arange(n_bins, dtype=torch.float32) / factor
    low = source.floor().long().clamp(max=n_bins - 1)
    high = (low + 1).clamp(max=n_bins - 1)
    weight = ((source - low.float()).clamp(0, 1)).unsqueeze(1)
    inside = (source <= n_bins - 1).float().unsqueeze(1)
    warped = torch.zeros_like(matrix)
    warped.index_add_(0, low, (1 - weight) * inside * matrix)
    warped.index_add_(0, high, weight * inside * matrix)
    return warped


def warp_frequencies(power: torch.Tensor, factor: float) -> torch.Tensor:
    """Scale the frequency axis by `factor` (> 1 moves energy up) with linear interpolation."""
    if abs(factor - 1.0) < 1e-6:
        return power
    n_bins = power.shape[1]
    source = torch.arange(n_bins, dtype=torch.float32) / factor
    low = source.floor().long().clamp(max=n_bins - 1)
    high = (low + 1).clamp(max=n_bins - 1)
    weight = (source - low.float()).clamp(0, 1)
    warped = power[:, low] * (1 - weight) + power[:, high] * weight
    return warped * (source <= n_bins - 1).float()


def add_noise(samples: torch.Tensor, snr_db: float, rng: np.random.Generator) -> torch.Tensor:
    """Add white or pink-ish noise at a given signal-to-noise ratio."""
    noise = rng.standard_normal(samples.shape[0])
    if rng.random() < 0.5:  # pink-ish: integrate white noise lightly (a leaky integrator, not clipped)
        noise = lfilter([1.0], [1.0, -0.95], noise)
    noise = torch.from_numpy(noise.astype(np.float32))
    signal_power = samples.pow(2).mean().clamp_min(1e-10)
    noise_power = noise.pow(2).mean().clamp_min(1e-10)
    scale = torch.sqrt(signal_power / (noise_power * 10.0 ** (snr_db / 10.0)))
    return samples + scale * noise


def add_reverb(samples: torch.Tensor, rt60: float, rate: int, rng: np.random.Generator) -> torch.Tensor:
    """Convolve with a synthetic room response: a direct path plus exponentially decaying noise."""
    length = int(rate * min(rt60, 0.8))
    time = np.arange(length) / rate
    response = rng.standard_normal(length) * np.exp(-6.9 * time / rt60)  # -60 dB at rt60
    response[0] = 1.0 / max(rng.uniform(0.3, 1.0), 1e-3)
    response = torch.from_numpy((response / np.abs(response).sum() ** 0.5).astype(np.float32))
    # linear convolution through FFTs of a 5-smooth size: as exact as fftconvolve, several times faster
    size = next_fast_len(samples.shape[0] + length - 1, real=True)
    wet = torch.fft.irfft(torch.fft.rfft(samples, n=size) * torch.fft.rfft(response, n=size), n=size)
    wet = wet[: samples.shape[0]]
    return wet * (samples.abs().max() / wet.abs().max().clamp_min(1e-8))


def spec_augment(frames: torch.Tensor, augment: AugmentConfig, rng: np.random.Generator) -> torch.Tensor:
    """Frequency and time masking (set to 0, the normalised mean) on (time, feat) frames."""
    frames = frames.clone()
    n_frames, n_feat = frames.shape
    for _ in range(augment.freq_masks):
        width = int(rng.integers(0, augment.freq_mask_width + 1))
        start = int(rng.integers(0, max(1, n_feat - width)))
        frames[:, start : start + width] = 0
    max_width = int(augment.time_mask_ratio * n_frames)
    for _ in range(augment.time_masks):
        width = int(rng.integers(0, max_width + 1))
        start = int(rng.integers(0, max(1, n_frames - width)))
        frames[start : start + width] = 0
    return frames
