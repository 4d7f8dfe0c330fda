"""espeak-ng, and the MBROLA diphone voices that espeak-ng drives (`espeak-ng -v mb-us2`)."""

from __future__ import annotations

import functools
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipelines.tts.base import command_output, is_reserved, synthesize_with_command

if TYPE_CHECKING:
    from pipelines.voices import Voice

ESPEAK_HINT = "apt-get install espeak-ng"
# espeak-ng variants left out of the catalogue: whispers are barely intelligible, `fast` is a
# speed-limit test rather than a voice, and names with spaces cannot be written as `accent+variant`.
UNUSABLE_ESPEAK_VARIANTS = frozenset({"whisper", "whisperf", "fast"})
# MBROLA diphone voices (recorded speakers, Debian non-free) that espeak-ng drives in English: the two US
# ones, and English read with the diphones of speakers of other languages (accented English). Optional:
# the corpus uses those installed. `us1` and `en1` are reserved and absent.
MBROLA_VOICES = (
    "mb-us2", "mb-us3", "mb-af1-en", "mb-nl2-en", "mb-fr1-en", "mb-fr4-en", "mb-de1-en", "mb-de2-en",
    "mb-de3-en", "mb-de4-en", "mb-de5-en", "mb-de6-en", "mb-gr2-en", "mb-hu1-en", "mb-pl1-en", "mb-ro1-en",
    "mb-sw1-en", "mb-sw2-en",
)  # fmt: skip


@functools.cache
def installed_espeak_accents() -> frozenset[str]:
    """Language codes of espeak-ng's own English voices (MBROLA ones excluded)."""
    rows = [line.split() for line in command_output(["espeak-ng", "--voices=en"]).splitlines()[1:]]
    return frozenset(row[1] for row in rows if len(row) >= 5 and row[4].startswith("gmw/"))


@functools.cache
def installed_espeak_variants() -> frozenset[str]:
    """File names of espeak-ng variants (what goes after `+`), e.g. m3, f2, klatt, Storm."""
    names = set()
    for line in command_output(["espeak-ng", "--voices=variant"]).splitlines()[1:]:
        match = re.search(r"!v/(\S+)\s*(\(|$)", line)
        if match:
            names.add(match.group(1))
    return frozenset(names)


def usable_espeak_variants() -> list[str]:
    """Installed espeak-ng variants worth training on (no whispers, no names with spaces), sorted."""
    return sorted(
        name
        for name in installed_espeak_variants()
        if name not in UNUSABLE_ESPEAK_VARIANTS and " " not in name and not is_reserved("espeak", name)
    )


def mbrola_database(name: str) -> Path:
    """Where Debian puts the diphone database of an espeak-ng MBROLA voice: mb-de4-en -> .../de4/de4."""
    database = name.removeprefix("mb-").split("-")[0]
    return Path("/usr/share/mbrola") / database / database


def espeak_command(voice: Voice, text: str, wav_path: str, rng: np.random.Generator) -> list[str]:
    """espeak-ng at a random speed (words per minute) and pitch; MBROLA voices take the same options."""
    speed = int(rng.uniform(*voice.params["speed_wpm"]))
    pitch = int(rng.uniform(*voice.params["pitch"]))
    return ["espeak-ng", "-v", voice.name, "-s", str(speed), "-p", str(pitch), "-w", wav_path, text]


class EspeakEngine:
    """espeak-ng's English accents (`en-us`), optionally with a variant (`en-us+m3`)."""

    name = "espeak"
    default_params = {"speed_wpm": (130.0, 200.0), "pitch": (20.0, 80.0)}
    install_hint = ESPEAK_HINT
    optional_voices: tuple[str, ...] = ()

    def missing_reason(self, voice: Voice) -> str | None:
        """None when the accent and variant are installed, else what to install."""
        if shutil.which("espeak-ng") is None:
            return f"espeak-ng not found on PATH: {self.install_hint}"
        accent, _, variant = voice.name.partition("+")
        if accent not in installed_espeak_accents():
            return f"espeak-ng accent {accent!r} not available (espeak-ng --voices=en): {self.install_hint}"
        if variant and variant not in installed_espeak_variants():
            return f"espeak-ng variant {variant!r} not available (espeak-ng --voices=variant): {self.install_hint}"
        return None

    def synthesize(self, voice: Voice, text: str, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """One espeak-ng run into a temporary WAV."""
        return synthesize_with_command(voice.id, lambda wav_path: espeak_command(voice, text, wav_path, rng))


class MbrolaEngine:
    """MBROLA diphone voices (`mb-us2`, `mb-de4-en`), spoken through espeak-ng."""

    name = "mbrola"
    default_params = {"speed_wpm": (130.0, 190.0), "pitch": (25.0, 75.0)}
    install_hint = "apt-get install mbrola mbrola-VOICE from Debian's non-free section (make setup does this)"
    optional_voices = MBROLA_VOICES

    def missing_reason(self, voice: Voice) -> str | None:
        """None when espeak-ng, mbrola and the voice's diphone database are installed."""
        if shutil.which("espeak-ng") is None:
            return f"espeak-ng not found on PATH (it drives the MBROLA voices): {ESPEAK_HINT}"
        if shutil.which("mbrola") is None:
            return f"mbrola not found on PATH: {self.install_hint}"
        if not mbrola_database(voice.name).is_file():
            return f"MBROLA voice {voice.name!r} not installed ({mbrola_database(voice.name)}): {self.install_hint}"
        return None

    def synthesize(self, voice: Voice, text: str, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """One espeak-ng run with the MBROLA voice into a temporary WAV."""
        return synthesize_with_command(voice.id, lambda wav_path: espeak_command(voice, text, wav_path, rng))


ESPEAK = EspeakEngine()
MBROLA = MbrolaEngine()
