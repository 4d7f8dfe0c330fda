"""flite: CMU's small synthesiser, with its voices compiled in (kal, kal16, rms)."""

from __future__ import annotations

import functools
import shutil
from typing import TYPE_CHECKING

import numpy as np

from pipelines.tts.base import command_output, synthesize_with_command

if TYPE_CHECKING:
    from pipelines.voices import Voice


@functools.cache
def installed_flite_voices() -> frozenset[str]:
    """Voices compiled into flite (`flite -lv`)."""
    text = command_output(["flite", "-lv"])
    return frozenset(text.split(":", 1)[1].split()) if ":" in text else frozenset()


def flite_command(voice: Voice, text: str, wav_path: str, rng: np.random.Generator) -> list[str]:
    """flite with a random duration stretch (slower or faster speech)."""
    stretch = float(rng.uniform(*voice.params["duration_stretch"]))
    return [
        "flite",
        "-voice",
        voice.name,
        "--setf",
        f"duration_stretch={stretch:.3f}",
        "-t",
        text,
        "-o",
        wav_path,
    ]


class FliteEngine:
    """A flite voice by the name `flite -lv` lists."""

    name = "flite"
    default_params = {"duration_stretch": (0.9, 1.15)}
    install_hint = "apt-get install flite"
    optional_voices: tuple[str, ...] = ()

    def missing_reason(self, voice: Voice) -> str | None:
        """None when flite is installed with this voice compiled in."""
        if shutil.which("flite") is None:
            return f"flite not found on PATH: {self.install_hint}"
        if voice.name not in installed_flite_voices():
            return f"flite voice {voice.name!r} not available: {self.install_hint}"
        return None

    def synthesize(self, voice: Voice, text: str, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """One flite run into a temporary WAV."""
        return synthesize_with_command(voice.id, lambda wav_path: flite_command(voice, text, wav_path, rng))


FLITE = FliteEngine()
