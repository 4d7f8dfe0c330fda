"""Speech features against librosa on real (espeak-ng) speech, CMVN, and the training-time perturbations."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import torch

from recog.config import AugmentConfig, FeatureConfig
from recog.features.speech import (
    CMVN,
    Perturbation,
    SpeechFeatures,
    add_reverb,
    smooth_over_time,
    spec_augment,
    warp_frequencies,
)

SENTENCE = "the quick brown fox jumps over the lazy dog"


@pytest.fixture
def speech(speak) -> np.ndarray:
    return speak(SENTENCE)


def librosa_log_mel(samples: np.ndarray) -> np.ndarray:
    """(frames, mels) log-mel in dB, exactly as the library documents its reference."""
    mel = librosa.feature.melspectrogram(
        y=samples,
        sr=16000,
        n_fft=512,
        hop_length=160,
        win_length=400,
        n_mels=40,
        fmin=20,
        fmax=7600,
        power=2.0,
        pad_mode="constant",
    )
    return librosa.power_to_db(mel, top_db=None).T


def test_mfcc_matches_librosa_on_real_speech(speech):
    frames = SpeechFeatures(FeatureConfig())(speech).numpy()
    reference = librosa.feature.mfcc(S=librosa_log_mel(speech).T, n_mfcc=40).T
    assert speech.shape[0] > 16000  # a real utterance, more than a second long
    assert frames.shape == reference.shape == (1 + speech.shape[0] // 160, 40)
    assert frames.dtype == np.float32
    # c0 is in the hundreds; every coefficient of every frame agrees to well under a hundredth.
    np.testing.assert_allclose(frames, reference, atol=2e-2, rtol=1e-4)


def test_mfcc_matches_librosa_when_speech_fills_the_edges(speech):
    # cut mid-utterance so the first and last frames see speech, not silence: edge padding matters
    middle = speech[len(speech) // 4 : -len(speech) // 4]
    assert np.abs(middle[:200]).max() > 1e-3 and np.abs(middle[-200:]).max() > 1e-3
    frames = SpeechFeatures(FeatureConfig())(middle).numpy()
    reference = librosa.feature.mfcc(S=librosa_log_mel(middle).T, n_mfcc=40).T
    np.testing.assert_allclose(frames, reference, atol=2e-2, rtol=1e-4)


def test_log_mel_matches_librosa_on_real_speech(speech):
    features = SpeechFeatures(FeatureConfig(kind="logmel"))
    frames = features(speech).numpy()
    reference = librosa_log_mel(speech)
    assert features.dim == 40
    assert frames.shape == reference.shape
    np.testing.assert_allclose(frames, reference, atol=2e-2)
    # the dynamic range is real speech, not silence: tens of dB between loud and quiet bins
    assert frames.max() - np.median(frames) > 20


def test_deltas_append_derivatives_of_the_static_features(speech):
    static = SpeechFeatures(FeatureConfig())(speech)
    features = SpeechFeatures(FeatureConfig(deltas=2))
    frames = features(speech)
    assert features.dim == 120 and frames.shape == (static.shape[0], 120)
    torch.testing.assert_close(frames[:, :40], static)
    # the delta block of a steady (constant) signal region is ~0, and it is not a copy of the statics
    assert not torch.allclose(frames[:, 40:80], static)
    constant = features(np.full(8000, 0.1, dtype=np.float32))
    assert constant[20:-20, 40:].abs().max() < 1e-3


def test_unknown_feature_kind_is_refused():
    with pytest.raises(ValueError, match="features.kind"):
        SpeechFeatures(FeatureConfig(kind="plp"))


def test_global_cmvn_statistics_match_numpy_and_normalise(speak):
    features = SpeechFeatures(FeatureConfig())
    utterances = [
        features(speak(text)) for text in ("one two three", "hello there", "a longer sentence of speech")
    ]
    cmvn = CMVN.fit("global", utterances)
    stacked = torch.cat(utterances).double().numpy()
    np.testing.assert_allclose(cmvn.mean.numpy(), stacked.mean(axis=0), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(cmvn.std.numpy(), stacked.std(axis=0), rtol=1e-4, atol=1e-3)

    normalised = torch.cat([cmvn(frames) for frames in utterances])
    assert normalised.shape == stacked.shape
    np.testing.assert_allclose(normalised.mean(0).numpy(), 0.0, atol=1e-3)
    np.testing.assert_allclose(normalised.std(0, unbiased=False).numpy(), 1.0, atol=1e-3)

    restored = CMVN.from_state(cmvn.state())
    torch.testing.assert_close(restored(utterances[0]), cmvn(utterances[0]))


def test_utterance_cmvn_normalises_each_utterance_on_its_own(speak):
    features = SpeechFeatures(FeatureConfig())
    utterances = [features(speak("one two three")), features(speak("good morning to you all", voice="en-gb"))]
    cmvn = CMVN.fit("utterance", utterances)
    assert cmvn.mode == "utterance"
    assert cmvn.mean is not None and cmvn.std is not None  # global stats are still saved with the model
    for frames in utterances:
        normalised = cmvn(frames)
        np.testing.assert_allclose(normalised.mean(0).numpy(), 0.0, atol=1e-4)
        np.testing.assert_allclose(normalised.std(0).numpy(), 1.0, atol=1e-4)
    # "none" leaves frames alone; an unknown mode is refused
    torch.testing.assert_close(CMVN("none")(utterances[0]), utterances[0])
    with pytest.raises(ValueError, match="features.cmvn"):
        CMVN("per-speaker")


def test_frequency_warp_of_one_is_identity_and_above_one_moves_energy_up():
    bins = torch.arange(257, dtype=torch.float32)
    power = torch.exp(-0.5 * ((bins - 60.0) / 3.0) ** 2).repeat(4, 1) + 1e-6  # (frames, bins), peak at bin 60
    torch.testing.assert_close(warp_frequencies(power, 1.0), power)

    up = warp_frequencies(power, 1.25)
    down = warp_frequencies(power, 0.8)
    assert up.shape == down.shape == power.shape
    assert int(up[0].argmax()) == 75  # 60 * 1.25
    assert int(down[0].argmax()) == 48  # 60 * 0.8
    # compressing down leaves the top of the spectrum empty (no energy folded or clamped in)
    assert torch.all(down[:, 206:] == 0) and torch.all(down[:, :200] > 0)


def test_spec_augment_zeroes_whole_bands_and_keeps_shape():
    augment = AugmentConfig(freq_masks=2, freq_mask_width=6, time_masks=2, time_mask_ratio=0.1)
    frames = torch.rand(200, 40) + 1.0  # (time, feat), no zeros anywhere
    any_freq_mask = any_time_mask = False
    for seed in range(10):
        masked = spec_augment(frames, augment, np.random.default_rng(seed))
        assert masked.shape == frames.shape
        assert torch.all(frames >= 1.0)  # the input is not modified in place
        zero = masked == 0
        kept = ~zero
        torch.testing.assert_close(masked[kept], frames[kept])  # anything not masked is untouched
        zero_columns = zero.all(dim=0)
        zero_rows = zero.all(dim=1)
        # every zero belongs to a whole masked frequency band or a whole masked time span
        assert torch.equal(zero, zero_columns.unsqueeze(0) | zero_rows.unsqueeze(1))
        assert int(zero_columns.sum()) <= 2 * 6
        assert int(zero_rows.sum()) <= 2 * 20
        any_freq_mask |= bool(zero_columns.any())
        any_time_mask |= bool(zero_rows.any())
    assert any_freq_mask and any_time_mask

    off = AugmentConfig(freq_masks=0, time_masks=0)
    torch.testing.assert_close(spec_augment(frames, off, np.random.default_rng(0)), frames)


def test_perturbations(speech):
    features = SpeechFeatures(FeatureConfig())
    rng = np.random.default_rng(0)
    plain = features(speech)
    # no perturbation drawn: exactly the evaluation-time features
    torch.testing.assert_close(features.perturbed(speech, Perturbation(), rng), plain)

    faster = features.perturbed(speech, Perturbation(speed=1.2), rng)
    slower = features.perturbed(speech, Perturbation(speed=0.85), rng)
    assert faster.shape[1] == slower.shape[1] == 40
    assert faster.shape[0] == 1 + speech.shape[0] // round(160 * 1.2)
    assert faster.shape[0] < plain.shape[0] < slower.shape[0]
    assert abs(plain.shape[0] / faster.shape[0] - 1.2) < 0.02

    noisy = features.perturbed(speech, Perturbation(snr_db=10.0), np.random.default_rng(1))
    assert noisy.shape == plain.shape and not torch.allclose(noisy, plain)


def test_drawn_perturbations_stay_in_the_configured_ranges():
    augment = AugmentConfig(speed=(0.9, 1.1), vtlp=(0.95, 1.05), noise_prob=0.0, reverb_prob=0.0, tilt_db=0.0)
    rng = np.random.default_rng(3)
    draws = [Perturbation.draw(augment, 257, rng) for _ in range(50)]
    assert all(0.9 <= d.speed <= 1.1 and 0.95 <= d.warp <= 1.05 for d in draws)
    assert all(d.snr_db is None and d.rt60 is None and d.tilt is None for d in draws)
    assert len({round(d.speed, 6) for d in draws}) > 40


def test_smoothing_blurs_trajectories_like_a_parametric_voice(speech):
    features = SpeechFeatures(FeatureConfig(kind="logmel"))
    plain = features(speech)
    smooth = features.perturbed(speech, Perturbation(smooth_frames=1.5), np.random.default_rng(0))
    assert smooth.shape == plain.shape

    def jumps(frames: torch.Tensor) -> float:  # how far the bands move from one frame to the next
        return float((frames[1:] - frames[:-1]).abs().mean())

    assert jumps(smooth) < 0.6 * jumps(plain)
    # a normalised kernel with repeated edges: a constant stays, a band's mean barely moves
    constant = torch.full((50, 3), 7.0)
    torch.testing.assert_close(smooth_over_time(constant, 2.0), constant)
    torch.testing.assert_close(smooth.mean(0), plain.mean(0), atol=0.5, rtol=0.0)
    # the blur of a single frame's impulse is the Gaussian itself
    impulse = torch.zeros(41, 1)
    impulse[20] = 1.0
    blurred = smooth_over_time(impulse, 1.0)[:, 0]
    expected = torch.exp(-0.5 * torch.arange(-3.0, 4.0) ** 2)
    torch.testing.assert_close(blurred[17:24], expected / expected.sum())
    assert blurred[:17].abs().max() == 0 and blurred[24:].abs().max() == 0


def test_smoothing_draws_leave_the_other_draws_alone():
    base = AugmentConfig(noise_prob=0.3, reverb_prob=0.3, lowpass_prob=0.2)
    smoothing = AugmentConfig(noise_prob=0.3, reverb_prob=0.3, lowpass_prob=0.2, smooth_prob=0.5)
    for seed in range(20):  # the smoothing draw comes last: everything before it is drawn as without it
        off = Perturbation.draw(base, 257, np.random.default_rng(seed))
        on = Perturbation.draw(smoothing, 257, np.random.default_rng(seed))
        assert off.smooth_frames is None
        assert (off.speed, off.warp, off.snr_db, off.rt60, off.lowpass_hz) == (
            on.speed,
            on.warp,
            on.snr_db,
            on.rt60,
            on.lowpass_hz,
        )
    rng = np.random.default_rng(6)
    draws = [Perturbation.draw(smoothing, 257, rng).smooth_frames for _ in range(400)]
    used = [d for d in draws if d is not None]
    assert 150 < len(used) < 250 and all(0.7 <= d <= 2.0 for d in used)


def test_folded_filterbank_equals_perturbing_every_frame(speech):
    """Warp, tilt and low-pass folded into the mel matrix give the features of the perturbed spectrum."""
    features = SpeechFeatures(FeatureConfig())
    power = features.power_spectrum(torch.as_tensor(speech))
    tilt = np.linspace(-4.0, 5.0, features.n_bins)
    for warp, lowpass in ((1.0, None), (1.13, None), (0.87, 4000.0), (1.05, 3400.0)):
        perturbation = Perturbation(warp=warp, tilt=tilt, lowpass_hz=lowpass)
        direct = warp_frequencies(power, warp) * torch.from_numpy(10.0 ** (tilt / 10.0)).float()
        if lowpass is not None:
            direct[:, int(lowpass / 16000 * 512) :] *= 1e-4
        torch.testing.assert_close(
            features.from_power(power, features.perturbed_fbank(perturbation)),
            features.from_power(direct),
            atol=2e-3,
            rtol=1e-4,
        )


def test_reverb_is_the_linear_convolution_with_the_room_response():
    samples = torch.randn(20011)
    wet = add_reverb(samples, 0.4, 16000, np.random.default_rng(5))
    # the same response, drawn again, convolved directly in the time domain
    rng = np.random.default_rng(5)
    length = int(16000 * 0.4)
    time = np.arange(length) / 16000
    response = rng.standard_normal(length) * np.exp(-6.9 * time / 0.4)
    response[0] = 1.0 / max(rng.uniform(0.3, 1.0), 1e-3)
    response = (response / np.abs(response).sum() ** 0.5).astype(np.float32)
    direct = np.convolve(samples.numpy().astype(np.float64), response.astype(np.float64))[: samples.shape[0]]
    direct = direct * (samples.abs().max().item() / np.abs(direct).max())
    np.testing.assert_allclose(wet.numpy(), direct, atol=1e-3)


def test_pink_noise_is_a_leaky_integral_of_white_noise_and_not_clipped():
    """The pink-ish noise is white noise through 1 / (1 - 0.95 z^-1): its low band carries most of the
    power and nothing is clipped (torchaudio's lfilter clamps to [-1, 1] by default)."""
    from recog.features.speech import add_noise

    for seed in range(20):
        rng = np.random.default_rng(seed)
        probe = np.random.default_rng(seed)
        probe.standard_normal(32000)
        if probe.random() < 0.5:
            break
    else:
        raise AssertionError("no seed drew the pink branch")
    loud = torch.full((32000,), 0.5)
    noise = add_noise(loud, 0.0, rng) - loud  # 0 dB: noise power equals the signal's 0.25
    assert abs(float(noise.pow(2).mean()) - 0.25) < 1e-3
    spectrum = torch.fft.rfft(noise).abs().pow(2)
    low, high = spectrum[: len(spectrum) // 8].mean(), spectrum[len(spectrum) // 2 :].mean()
    assert low > 20 * high  # white noise would give about 1
    peak = float(noise.abs().max())
    assert (noise.abs() > 0.999 * peak).sum() <= 2  # no flat, clipped stretches
