"""Reading audio: resampling, mono mixing, and errors that name the file and the reason."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile

from recog.audio import AudioError, encode_flac, read_audio, to_mono_float


def test_espeak_audio_is_resampled_to_16_khz_keeping_its_duration(tmp_path, speak):
    samples = speak("resampling keeps the duration", name="native.wav")  # through read_audio
    native, rate = soundfile.read(tmp_path / "native.wav", dtype="float32")
    assert rate == 22050
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(samples.shape[0] - native.shape[0] * 16000 / 22050) <= 2
    # the same sound: the energy envelope is preserved through resampling
    assert np.sqrt(np.mean(samples**2)) == pytest.approx(np.sqrt(np.mean(native**2)), rel=0.05)


def test_flac_bytes_round_trip_and_stereo_is_mixed_to_mono(tmp_path):
    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(8000) / 16000)).astype(np.float32)
    decoded = read_audio(encode_flac(tone))
    np.testing.assert_allclose(decoded, tone, atol=1 / 32767)

    stereo = np.stack([tone, np.zeros_like(tone)], axis=1)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, stereo, 16000, subtype="PCM_16")
    np.testing.assert_allclose(read_audio(path), tone / 2, atol=2 / 32767)

    assert to_mono_float(np.array([32767, -32768], dtype=np.int16)).tolist() == pytest.approx(
        [1.0, -1.0], abs=1e-4
    )


def test_unusable_audio_is_refused_with_the_file_and_reason(tmp_path):
    garbage = tmp_path / "notes.flac"
    garbage.write_text("not audio at all")
    with pytest.raises(AudioError) as error:
        read_audio(garbage)
    assert str(error.value).startswith(f"{garbage}: not a readable audio file (soundfile: ")

    with pytest.raises(AudioError, match=r"^clip-7: not a readable audio file"):
        read_audio(b"\x00\x01garbage", name="clip-7")

    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioError, match=r"empty audio \(0 samples\)") as error:
        read_audio(empty)
    assert str(empty) in str(error.value)

    broken = tmp_path / "nan.wav"
    soundfile.write(broken, np.array([0.0, np.nan, 0.1], dtype=np.float32), 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN or infinite") as error:
        read_audio(broken)
    assert str(broken) in str(error.value)


def test_a_missing_file_says_file_not_found(tmp_path):
    missing = tmp_path / "missing.wav"
    with pytest.raises(AudioError) as error:
        read_audio(missing)
    assert str(error.value) == f"{missing}: file not found"
