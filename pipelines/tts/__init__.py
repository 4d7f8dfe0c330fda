"""The TTS engines the speech corpus speaks with, one module each, behind the `Engine` protocol
(pipelines/tts/base.py); `ENGINES` maps an engine name (the ENGINE of a voice id ENGINE:NAME) to it."""

from __future__ import annotations

from pipelines.tts.base import Engine, SynthesisError, VoiceError
from pipelines.tts.espeak import ESPEAK, MBROLA
from pipelines.tts.festival import FESTIVAL
from pipelines.tts.flite import FLITE
from pipelines.tts.kokoro import KOKORO
from pipelines.tts.pico import PICO
from pipelines.tts.piper import PIPER
from pipelines.tts.rhvoice import RHVOICE

# The order is part of the corpus: installed optional voices join train in it (festival, MBROLA,
# RHVoice, Pico), and their order fixes which voice each random draw picks.
ENGINES: dict[str, Engine] = {
    engine.name: engine for engine in (ESPEAK, FESTIVAL, FLITE, MBROLA, RHVOICE, PICO, PIPER, KOKORO)
}


__all__ = ["ENGINES", "Engine", "SynthesisError", "VoiceError"]
