"""festival: diphone and MBROLA voices, spoken by one long-lived `festival --pipe` per process."""

from __future__ import annotations

import functools
import os
import select
import shutil
import subprocess
import time
from glob import glob
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipelines.tts.base import ENGINE_TIMEOUT_S, SynthesisError, synthesize_to_wav

if TYPE_CHECKING:
    from pipelines.voices import Voice

# Voices beyond kal and ked, used when installed: a British diphone voice and MBROLA's US men.
OPTIONAL_FESTIVAL_VOICES = ("rab_diphone", "us2_mbrola", "us3_mbrola")
# What installs each voice (the engine's own hint covers the rest).
VOICE_INSTALL_HINTS = {
    "kal_diphone": "apt-get install festival festvox-kallpc16k",
    "ked_diphone": "apt-get install festival festvox-kdlpc16k",
    "rab_diphone": "apt-get install festival festvox-rablpc16k",
    "us2_mbrola": "apt-get install festvox-us2 (Debian contrib/non-free; make setup does this)",
    "us3_mbrola": "apt-get install festvox-us3 (Debian contrib/non-free; make setup does this)",
}


@functools.cache
def installed_festival_voices() -> frozenset[str]:
    """Festival voice folders found under the standard Debian voice path."""
    return frozenset(
        Path(path).name for path in glob("/usr/share/festival/voices/*/*") if Path(path).is_dir()
    )


class FestivalSession:
    """One long-lived `festival --pipe` per process: starting festival costs ~0.25 s, an utterance ~0.03 s."""

    _MARKER = "RECOG-UTTERANCE-DONE"
    _current: FestivalSession | None = None

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.process = subprocess.Popen(
            ["festival", "--pipe"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )

    @classmethod
    def for_this_process(cls) -> FestivalSession:
        """The session of the calling process (a forked worker never reuses its parent's)."""
        session = cls._current
        if session is None or session.pid != os.getpid() or session.process.poll() is not None:
            session = cls._current = cls()
        return session

    def say(self, voice_name: str, text: str, stretch: float, wav_path: str) -> None:
        """Synthesise into wav_path; festival's error messages become a SynthesisError."""
        quoted = text.replace("\\", "\\\\").replace('"', '\\"')
        commands = (
            f"(voice_{voice_name})\n(Parameter.set 'Duration_Stretch {stretch:.3f})\n"
            f'(utt.save.wave (utt.synth (Utterance Text "{quoted}")) "{wav_path}" \'riff)\n'
            f'(format stderr "{self._MARKER}\\n")\n'
        )
        try:
            self.process.stdin.write(commands.encode())
            self.process.stdin.flush()
            messages = self._read_until_marker()
        except (OSError, SynthesisError):
            self.process.kill()
            raise
        if "ERROR" in messages:
            raise SynthesisError(f"festival:{voice_name}: {messages.strip()[:200]}")

    def _read_until_marker(self) -> str:
        output = b""
        deadline = time.monotonic() + ENGINE_TIMEOUT_S
        stderr = self.process.stderr.fileno()
        while self._MARKER.encode() not in output:
            ready, _, _ = select.select([stderr], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise SynthesisError(f"festival: no answer after {ENGINE_TIMEOUT_S} s")
            chunk = os.read(stderr, 65536)
            if not chunk:
                raise SynthesisError(f"festival exited: {output.decode(errors='replace').strip()[:200]}")
            output += chunk
        return output.decode(errors="replace").replace(self._MARKER, "")


class FestivalEngine:
    """A festival voice by its folder name (`kal_diphone`, `us3_mbrola`)."""

    name = "festival"
    default_params = {"duration_stretch": (0.9, 1.15)}
    install_hint = "apt-get install festival"
    optional_voices = OPTIONAL_FESTIVAL_VOICES

    def missing_reason(self, voice: Voice) -> str | None:
        """None when festival and the voice are installed."""
        hint = VOICE_INSTALL_HINTS.get(voice.name, self.install_hint)
        if shutil.which("festival") is None:
            return f"festival not found on PATH: {hint}"
        if voice.name not in installed_festival_voices():
            return f"festival voice {voice.name!r} not available: {hint}"
        return None

    def synthesize(self, voice: Voice, text: str, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """Speak through this process's festival session at a random duration stretch."""

        def write(wav_path: str) -> None:
            stretch = float(rng.uniform(*voice.params["duration_stretch"]))
            FestivalSession.for_this_process().say(voice.name, text, stretch, wav_path)

        return synthesize_to_wav(voice.id, write)


FESTIVAL = FestivalEngine()
