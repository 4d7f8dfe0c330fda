"""SVOX Pico (pico2wave): statistical-parametric (HMM) US and British women's voices."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipelines.tts.base import synthesize_with_command

if TYPE_CHECKING:
    from pipelines.voices import Voice

PICO_VOICES = ("en-US", "en-GB")  # optional (Debian non-free): the corpus uses those installed
PICO_DATA = Path("/usr/share/pico/lang")


def pico_command(voice: Voice, text: str, wav_path: str, rng: np.random.Generator) -> list[str]:
    """pico2wave with speed and pitch in Pico's own markup (percent of normal)."""
    speed = int(rng.uniform(*voice.params["speed_percent"]))
    pitch = int(rng.uniform(*voice.params["pitch_percent"]))
    plain = text.replace("<", " ").replace(">", " ")  # the text must not open a tag of its own
    markup = f'<speed level="{speed}"><pitch level="{pitch}">{plain}</pitch></speed>'
    return ["pico2wave", "-l", voice.name, "-w", wav_path, markup]


class PicoEngine:
    """A Pico language (`en-US`, `en-GB`): one voice each."""

    name = "pico"
    default_params = {"speed_percent": (80.0, 125.0), "pitch_percent": (80.0, 120.0)}
    install_hint = "apt-get install libttspico-utils (Debian non-free; make setup does this)"
    optional_voices = PICO_VOICES

    def missing_reason(self, voice: Voice) -> str | None:
        """None when pico2wave and the language's data are installed."""
        if shutil.which("pico2wave") is None:
            return f"pico2wave not found on PATH: {self.install_hint}"
        if not (PICO_DATA / f"{voice.name}_ta.bin").is_file():
            return f"SVOX Pico language {voice.name!r} not installed ({PICO_DATA}): {self.install_hint}"
        return None

    def synthesize(self, voice: Voice, text: str, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """One pico2wave run into a temporary WAV."""
        return synthesize_with_command(voice.id, lambda wav_path: pico_command(voice, text, wav_path, rng))


PICO = PicoEngine()
