"""What every TTS engine module shares: the `Engine` protocol, the two error types, the reserved-voice
rule, and running a command-line engine into a temporary WAV file."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np
import soundfile

if TYPE_CHECKING:
    from pipelines.voices import Voice

ENGINE_TIMEOUT_S = 60

# Held out for external evaluation; substrings of a lowercased engine voice name.
RESERVED_NAME_PARTS = ("slt", "awb", "us1", "en1")
RESERVED_NAMES = frozenset({"en-uk"})  # espeak-ng's alias for MBROLA en1


class VoiceError(RuntimeError):
    """A voice is reserved, unknown, or its engine is not installed."""


class SynthesisError(RuntimeError):
    """An engine failed on one utterance (the corpus builder logs and skips these)."""


def is_reserved(engine: str, name: str) -> bool:
    """True for voices held out for external evaluation (slt, awb, MBROLA us1/en1), any engine."""
    lowered = name.lower()
    return lowered in RESERVED_NAMES or any(p in lowered for p in RESERVED_NAME_PARTS)


class Engine(Protocol):
    """One TTS engine: its per-utterance parameter ranges, what to install, and how it speaks."""

    name: str  # the ENGINE part of a voice id ENGINE:NAME
    default_params: Mapping[str, tuple[float, float]]  # per-utterance random ranges (speed, pitch, ...)
    install_hint: str  # the command that installs the engine
    optional_voices: tuple[str, ...]  # voices the corpus adds to train when installed

    def missing_reason(self, voice: Voice) -> str | None:
        """None when `voice` can be synthesised here, else one line saying what to install."""
        ...

    def synthesize(self, voice: Voice, text: str, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """Speak `text`, drawing the voice's parameters from rng: (float32 mono samples, sample rate)."""
        ...


def command_output(command: Sequence[str]) -> str:
    """Standard output of a listing command, or "" when it cannot run."""
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=ENGINE_TIMEOUT_S).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def synthesize_to_wav(voice_id: str, write: Callable[[str], None]) -> tuple[np.ndarray, int]:
    """Let `write(wav_path)` fill a temporary WAV and read it back: (float32 mono samples, sample rate)."""
    handle, wav_path = tempfile.mkstemp(prefix="recog-tts-", suffix=".wav")
    os.close(handle)
    try:
        write(wav_path)
        try:
            samples, rate = soundfile.read(wav_path, dtype="float32", always_2d=True)
        except (soundfile.LibsndfileError, RuntimeError) as error:
            raise SynthesisError(f"{voice_id}: unreadable output ({error})") from error
        return samples.mean(axis=1), rate
    finally:
        os.unlink(wav_path)


def run_engine_command(voice_id: str, command: Sequence[str], stdin: str | None = None) -> None:
    """Run one engine command line; a timeout or a non-zero exit becomes a SynthesisError."""
    try:
        result = subprocess.run(
            command, input=stdin, capture_output=True, text=True, timeout=ENGINE_TIMEOUT_S
        )
    except subprocess.TimeoutExpired as error:
        raise SynthesisError(f"{voice_id}: timed out after {ENGINE_TIMEOUT_S} s") from error
    if result.returncode != 0:
        raise SynthesisError(f"{voice_id}: exit {result.returncode}: {result.stderr.strip()[:200]}")


def synthesize_with_command(
    voice_id: str, command: Callable[[str], Sequence[str]], stdin: str | None = None
) -> tuple[np.ndarray, int]:
    """Run `command(wav_path)`, a command line that writes wav_path, and read its audio back."""
    return synthesize_to_wav(
        voice_id, lambda wav_path: run_engine_command(voice_id, command(wav_path), stdin)
    )
