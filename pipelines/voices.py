"""The TTS voice catalogue (espeak-ng, festival, flite, MBROLA, RHVoice, SVOX Pico, Piper, Kokoro), its
train/dev/test split, and synthesis; each engine lives in its own module under pipelines/tts/.

Reserved voices (flite/festival/RHVoice `slt` and `awb`, MBROLA `us1` and `en1`) are held out for the
project's external evaluation: `Voice` refuses to represent them, so no code path can use them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import soxr

from pipelines.tts import ENGINES
from pipelines.tts.base import ENGINE_TIMEOUT_S, SynthesisError, VoiceError, is_reserved
from pipelines.tts.espeak import installed_espeak_accents, usable_espeak_variants

SAMPLE_RATE = 16_000
# Engines speak at most ~28 characters per second at their fastest settings here; festival's us3_mbrola
# sometimes stops early (an unknown diphone), leaving a transcript that the audio does not hold.
MAX_CHARS_PER_SECOND = 32.0

# espeak-ng English accents (voices in its `gmw/` folder), by the language code `-v` takes.
ESPEAK_ACCENTS = (
    "en-gb",
    "en-us",
    "en-gb-scotland",
    "en-gb-x-rp",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-029",
    "en-us-nyc",
)
# Variants held out of training completely, so dev and test voices are unseen speakers.
TEST_ESPEAK_VARIANTS = ("m3", "f3")
DEV_ESPEAK_VARIANTS = ("m5", "f4")
# Per-utterance random ranges of each engine's voices (a Voice made without params gets its engine's).
DEFAULT_PARAMS: dict[str, dict[str, tuple[float, float]]] = {
    name: dict(engine.default_params) for name, engine in ENGINES.items()
}

__all__ = [
    "DEFAULT_PARAMS",
    "ENGINE_TIMEOUT_S",
    "ESPEAK_ACCENTS",
    "SAMPLE_RATE",
    "SynthesisError",
    "Voice",
    "VoiceError",
    "VoiceSplit",
    "check_available",
    "default_voice_split",
    "espeak_voice",
    "installed_espeak_accents",
    "installed_optional_voices",
    "is_reserved",
    "missing_reason",
    "synthesize",
    "trim_silence",
    "usable_espeak_variants",
]


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker; `params` are the per-utterance random ranges (speed, pitch, stretch)."""

    engine: str
    name: str
    params: Mapping[str, tuple[float, float]] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if is_reserved(self.engine, self.name):
            raise VoiceError(f"voice {self.id} is reserved for external evaluation and must not be used")
        if self.engine not in ENGINES:
            raise VoiceError(
                f"unknown TTS engine {self.engine!r} in voice {self.id}: use one of {tuple(ENGINES)}"
            )
        if not self.params:
            object.__setattr__(self, "params", dict(ENGINES[self.engine].default_params))

    @property
    def id(self) -> str:
        """Stable string id, e.g. `espeak:en-us+m3`, `festival:kal_diphone`, `flite:kal16`."""
        return f"{self.engine}:{self.name}"

    @classmethod
    def from_id(cls, voice_id: str) -> Voice:
        """Inverse of `id`."""
        engine, sep, name = voice_id.partition(":")
        if not sep or not name:
            raise VoiceError(f"bad voice id {voice_id!r}: expected ENGINE:NAME, e.g. flite:kal16")
        return cls(engine, name)


def espeak_voice(accent: str, variant: str | None = None) -> Voice:
    """An espeak-ng accent, optionally with a variant: `espeak_voice('en-us', 'm3')` is `espeak:en-us+m3`."""
    return Voice("espeak", f"{accent}+{variant}" if variant else accent)


def missing_reason(voice: Voice) -> str | None:
    """None when `voice` can be synthesised here, else one line saying what to install."""
    return ENGINES[voice.engine].missing_reason(voice)


def installed_optional_voices() -> list[Voice]:
    """The optional voices (MBROLA, extra festival voices, RHVoice, Pico) that can be synthesised here."""
    candidates = [Voice(engine.name, name) for engine in ENGINES.values() for name in engine.optional_voices]
    return [voice for voice in candidates if missing_reason(voice) is None]


def check_available(voices: Sequence[Voice]) -> None:
    """Raise one VoiceError listing every voice that cannot be synthesised here."""
    problems = sorted({reason for voice in voices if (reason := missing_reason(voice))})
    if problems:
        raise VoiceError("; ".join(problems))


# ---------------------------------------------------------------- the split
@dataclass(frozen=True)
class VoiceSplit:
    """Which voices speak which split; dev and test voices are never heard in training."""

    train_espeak_accents: tuple[str, ...]
    train_espeak_variants: tuple[str, ...]  # "" is the accent's own default voice
    train_other: tuple[Voice, ...]
    train_other_share: float  # fraction of train utterances spoken by train_other
    dev: tuple[Voice, ...]
    test: tuple[Voice, ...]
    # Relative share of each train_other voice (uniform when empty): slow engines get less audio.
    train_other_weights: tuple[float, ...] = ()

    def train_voices(self) -> list[Voice]:
        """Every train voice: all accent x variant combos, then the non-espeak ones."""
        combos = [
            espeak_voice(a, v or None) for a in self.train_espeak_accents for v in self.train_espeak_variants
        ]
        return combos + list(self.train_other)

    def pick_train_voice(self, rng: np.random.Generator) -> Voice:
        """Draw one train voice: non-espeak with probability train_other_share, else a random combo."""
        if rng.random() < self.train_other_share:
            if not self.train_other_weights:
                return self.train_other[rng.integers(len(self.train_other))]
            weights = np.asarray(self.train_other_weights, dtype=float)
            return self.train_other[rng.choice(len(self.train_other), p=weights / weights.sum())]
        accent = self.train_espeak_accents[rng.integers(len(self.train_espeak_accents))]
        variant = self.train_espeak_variants[rng.integers(len(self.train_espeak_variants))]
        return espeak_voice(accent, variant or None)

    def as_dict(self) -> dict[str, object]:
        """Plain-data description for corpus.json."""
        return {
            "train": {
                "espeak_accents": list(self.train_espeak_accents),
                "espeak_variants": [v or "(default)" for v in self.train_espeak_variants],
                "other": [v.id for v in self.train_other],
                "other_share": self.train_other_share,
                "other_weights": list(self.train_other_weights) or "uniform",
            },
            "dev": [v.id for v in self.dev],
            "test": [v.id for v in self.test],
        }


# Relative share of train utterances per optional voice, by engine (a required voice's is ~1).
OPTIONAL_VOICE_WEIGHTS = {"mbrola": 0.2, "festival": 0.7, "rhvoice": 1.4, "pico": 1.4}


def default_voice_split(train_other_share: float = 0.6) -> VoiceSplit:
    """The corpus's voice split; raises VoiceError naming what to install if a voice is missing.

    The optional voices (MBROLA, festival rab/us2/us3, RHVoice, Pico) join train when installed."""
    test = (Voice("flite", "rms"), espeak_voice("en-us", "m3"), espeak_voice("en-gb-x-rp", "f3"))
    # flite `kal` is the 8 kHz Kal diphone voice: same speaker as festival/flite kal16 in train, but
    # a narrow-band channel never seen in training, and dev's only non-espeak voice.
    dev = (Voice("flite", "kal"), espeak_voice("en-gb-scotland", "m5"), espeak_voice("en-029", "f4"))
    required = (
        Voice("festival", "kal_diphone"),
        Voice("festival", "ked_diphone"),
        Voice("flite", "kal16"),
        Voice("piper", "joe"),  # a neural (VITS) voice
        Voice("kokoro", "blend"),  # neural (StyleTTS2-like), new speaker mix every utterance
    )
    # Kokoro makes ~1.9 s of audio per second of one core (espeak ~100): a smaller share keeps the
    # corpus within its time budget. Each MBROLA speaker gets a fifth of a required voice's share, the
    # optional festival voices 0.7 each, and the HMM voices (RHVoice, Pico: the kind `rms` is) 1.4 each,
    # so training hears twice as many different utterances of them (corpus v7).
    weights = [1.0, 1.0, 1.0, 1.2, 0.55]
    check_available(list(test) + list(dev) + list(required) + [espeak_voice("en-us")])
    optional = installed_optional_voices()
    weights += [OPTIONAL_VOICE_WEIGHTS[voice.engine] for voice in optional]
    held_out = set(TEST_ESPEAK_VARIANTS) | set(DEV_ESPEAK_VARIANTS)
    variants = ("",) + tuple(v for v in usable_espeak_variants() if v not in held_out)
    accents = tuple(a for a in ESPEAK_ACCENTS if a in installed_espeak_accents())
    return VoiceSplit(
        accents, variants, required + tuple(optional), train_other_share, dev, test, tuple(weights)
    )


# ---------------------------------------------------------------- synthesis
def _run_engine(voice: Voice, text: str, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """The voice's engine speaks `text`: (float32 samples, the engine's sample rate)."""
    return ENGINES[voice.engine].synthesize(voice, text, rng)


def trim_silence(audio: np.ndarray, rng: np.random.Generator, threshold_db: float = -40.0) -> np.ndarray:
    """Leave 0.1-0.2 s before and after the speech (10 ms frames above threshold_db of the loudest).

    Engines that start speaking at once get the missing lead-in as digital silence, like their own pauses.
    """
    frame = SAMPLE_RATE // 100
    frames = len(audio) // frame
    if frames == 0:
        return audio
    energy = np.sqrt(np.mean(audio[: frames * frame].reshape(frames, frame) ** 2, axis=1)) + 1e-10
    loud = np.flatnonzero(20 * np.log10(energy / energy.max()) > threshold_db)
    first, last = loud[0] * frame, (loud[-1] + 1) * frame
    lead, tail = (int(rng.uniform(0.1, 0.2) * SAMPLE_RATE) for _ in range(2))
    speech = audio[max(0, first - lead) : last + tail]
    return np.pad(speech, (max(0, lead - first), max(0, last + tail - len(audio))))


def synthesize(voice: Voice, text: str, rng: np.random.Generator) -> np.ndarray:
    """Speak `text` with `voice`: float32 mono 16 kHz, silence trimmed, peak at a random gain."""
    audio, rate = _run_engine(voice, text, rng)
    if rate != SAMPLE_RATE:
        audio = soxr.resample(audio, rate, SAMPLE_RATE).astype(np.float32)
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    if peak < 1e-4 or len(audio) < SAMPLE_RATE // 10:
        raise SynthesisError(f"{voice.id}: engine produced silence for {text!r}")
    audio = trim_silence(audio, rng)
    seconds = len(audio) / SAMPLE_RATE
    if len(text) / seconds > MAX_CHARS_PER_SECOND:
        raise SynthesisError(f"{voice.id}: {seconds:.2f} s of audio for {len(text)} characters: truncated")
    return (audio * (rng.uniform(0.3, 0.95) / peak)).astype(np.float32)
