"""RHVoice: statistical-parametric (HMM) voices, the kind flite's `rms` is."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipelines.tts.base import synthesize_with_command

if TYPE_CHECKING:
    from pipelines.voices import Voice

# RHVoice's English voices: ARCTIC's bdl and clb, a Scottish man, and two Russian speakers' English (its
# `slt` is reserved). Optional (Debian non-free): the corpus uses those installed.
RHVOICE_VOICES = ("alan", "bdl", "clb", "evgeniy-eng", "lyubov")
RHVOICE_DATA = Path("/usr/share/RHVoice/voices")


def rhvoice_command(voice: Voice, wav_path: str, rng: np.random.Generator) -> list[str]:
    """RHVoice-test at a random rate and pitch (percent of normal); it reads the text from stdin."""
    rate = int(rng.uniform(*voice.params["rate_percent"]))
    pitch = int(rng.uniform(*voice.params["pitch_percent"]))
    return ["RHVoice-test", "-p", voice.name, "-r", str(rate), "-t", str(pitch), "-o", wav_path]


class RHVoiceEngine:
    """An RHVoice voice by its folder name under /usr/share/RHVoice/voices."""

    name = "rhvoice"
    default_params = {"rate_percent": (75.0, 130.0), "pitch_percent": (80.0, 120.0)}
    install_hint = "apt-get install rhvoice rhvoice-english (Debian non-free; make setup does this)"
    optional_voices = RHVOICE_VOICES

    def missing_reason(self, voice: Voice) -> str | None:
        """None when RHVoice-test and the voice's data are installed."""
        if shutil.which("RHVoice-test") is None:
            return f"RHVoice-test not found on PATH: {self.install_hint}"
        if not (RHVOICE_DATA / voice.name).is_dir():
            return f"RHVoice voice {voice.name!r} not installed ({RHVOICE_DATA / voice.name}): {self.install_hint}"
        return None

    def synthesize(self, voice: Voice, text: str, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """One RHVoice-test run into a temporary WAV, the text on its standard input."""
        return synthesize_with_command(voice.id, lambda wav_path: rhvoice_command(voice, wav_path, rng), text)


RHVOICE = RHVoiceEngine()
