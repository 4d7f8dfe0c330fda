"""Typed configuration: frozen dataclasses with defaults, loaded from YAML, overridable with `--set a.b=c`."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from recog.features.image import ImageFeatureConfig
from recog.features.strokes import StrokeFeatureConfig
from recog.text import CASES, KEEP_OR_DROP, UNICODE_FORMS, VOCABS, TextConfig

TASKS = ("speech", "ink", "image")


class ConfigError(ValueError):
    """A config value that cannot be used; the message names the key."""


@dataclass(frozen=True)
class FeatureConfig:
    kind: str = "mfcc"  # mfcc | logmel
    sample_rate: int = 16000
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 40
    n_mfcc: int = 40
    f_min: float = 20.0
    f_max: float = 7600.0
    deltas: int = 0  # 0, 1 (deltas) or 2 (deltas + delta-deltas)
    cmvn: str = "global"  # global | utterance | none

    def __post_init__(self) -> None:
        check_values(self)


@dataclass(frozen=True)
class AugmentConfig:
    """Training-only perturbations; all off at evaluation time."""

    speed: tuple[float, float] = (0.9, 1.1)  # tempo and pitch together
    vtlp: tuple[float, float] = (0.9, 1.1)  # vocal tract length (frequency warp)
    noise_prob: float = 0.5
    snr_db: tuple[float, float] = (10.0, 40.0)
    reverb_prob: float = 0.3
    tilt_db: float = 6.0  # random smooth spectral colouring (channel), +- dB
    lowpass_prob: float = 0.0  # band-limit like narrow-band (8 kHz) audio
    lowpass_hz: tuple[float, float] = (3400.0, 7000.0)
    # over-smoothing like a statistical-parametric (HMM) voice's: the log-mel energies are blurred over
    # time by a Gaussian of this many frames (sigma), for this share of the utterances
    smooth_prob: float = 0.0
    smooth_frames: tuple[float, float] = (0.7, 2.0)
    freq_masks: int = 2
    freq_mask_width: int = 8
    time_masks: int = 2
    time_mask_ratio: float = 0.05

    def __post_init__(self) -> None:
        check_values(self)


@dataclass(frozen=True)
class WriterAugmentConfig:
    """Training-time writer variation for ink models: slant, size, spacing, wobble, jitter, rate."""

    prob: float = 0.9  # share of training samples rewritten by a randomly drawn writer
    strength: float = 1.0  # 0: as written, 1: the default spread, > 1 harsher

    def __post_init__(self) -> None:
        check_values(self)


@dataclass(frozen=True)
class PaperAugmentConfig:
    """Training-time pen, paper and scanner variation for line images (image models)."""

    prob: float = 0.9  # share of training samples degraded by a randomly drawn pen/paper/scan
    strength: float = 0.7  # 0: as stored, 1: the default spread (stored images are degraded already)
    stretch: float = 0.1  # horizontal scale exp(N(0, stretch)) of the normalised line (0: off)

    def __post_init__(self) -> None:
        check_values(self)


@dataclass(frozen=True)
class ModelConfig:
    cell: str = "lstm"  # lstm | gru | rnn
    hidden: int = 256
    layers: int = 3
    dropout: float = 0.2
    stack: int = 3  # frames stacked (and subsampled) before the recurrent layers
    # Convolutional front end (line images): 3x3 conv + ReLU + height pooling per entry, these many
    # channels; the frames are read as a one-channel (feat, time) image. Empty: no front end.
    conv_channels: tuple[int, ...] = ()
    # Normalisation in each conv block, between the convolution and the ReLU: "none" (as before) or
    # "instance" (per line and channel over its rows and its own columns; padding-independent).
    conv_norm: str = "none"

    def __post_init__(self) -> None:
        check_values(self)


@dataclass(frozen=True)
class DataConfig:
    root: str = "data/speech/default"
    prepare: str = ""  # command that builds `root` when root/DONE is missing
    train: str = "train.jsonl"
    dev: str = "dev.jsonl"
    eval_sets: tuple[str, ...] = ("dev.jsonl", "test.jsonl")
    lm_text: str = (
        ""  # extra text for the lexicon and word LM (relative to root); training transcripts always used
    )
    batch_frames: int = 24000  # feature frames per batch (before stacking)
    max_batch: int = 64
    max_duration: float = 25.0
    max_frames: int = 0  # handwriting: skip training lines longer than this many feature frames (0: no limit)
    group_by: str = ""  # manifest fields for per-group rows, first present wins ("": the task's default)
    workers: int = 1
    # Training items to draw more (or less) often per epoch: {"FIELD=VALUE": factor}, FIELD a manifest
    # field (engine, voice, style, font, ...). An item matching several entries takes the largest factor.
    oversample: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_values(self)


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    lr: float = 1.5e-3
    weight_decay: float = 1e-2
    warmup_steps: int = 300
    final_lr_ratio: float = 0.05
    max_epochs: int = 10
    max_minutes: float = 0.0  # 0 = no time budget; otherwise the schedule and stop follow the clock too
    max_steps: int = 0  # 0 = no step budget; otherwise the schedule ends and training stops at this step
    clip_norm: float = 5.0
    # Exponential moving average of the weights (0: off). Dev evaluation, best.pt and the report use the
    # average; last.pt keeps the raw weights too, so a resumed run goes on exactly.
    ema_decay: float = 0.0
    eval_every: int = 0  # steps; 0 = once per epoch
    checkpoint_every: int = 200
    patience: int = 6  # evaluations without dev CER improvement before stopping
    bf16: bool = True  # bf16 autocast on CPUs with AVX512-BF16/AMX, fp32 on others (logged); AMP fp16 on CUDA
    threads: int = 0  # torch threads; 0 = all cores
    log_every: int = 20
    sortagrad: bool = True  # first epoch shortest-first
    # share of the first epoch's batches taken shortest-first (the rest shuffled): below 1 for runs that
    # end within their first epoch, which would otherwise never meet the longest inputs
    sortagrad_share: float = 1.0

    def __post_init__(self) -> None:
        check_values(self)


@dataclass(frozen=True)
class DecodeConfig:
    """Beam search by recog's decoder (`recog.decode.ctc`): natural-log LM scores, a soft lexicon that
    spells words outside it. The pruning defaults are benchmarks/decoder.py's dev-tuned pick with a word
    LM for the beam widths without a pick of their own (OURS[True]; 10, 25 and 100 have their own)."""

    beam: int = 50
    lm_order: int = 3
    lm_weight: float = 1.0
    word_score: float = 0.5
    unk_score: float = -10.0  # per word outside the lexicon
    lexicon: bool = True
    # per-frame pruning (see recog.decode.ctc.SearchOptions)
    token_min_logp: float = -8.0  # tokens less likely than this in a frame are not tried there
    blank_skip_threshold: float = 0.999  # frames whose blank probability reaches this only extend blanks
    beam_prune: float = 10.0  # drop hypotheses this far (natural log) below the best
    # After training, lm_weight, word_score and unk_score (empty: keep it) are chosen by dev WER over
    # this grid (`recog train`, `recog.decode.tuning`).
    tune_lm_weights: tuple[float, ...] = (0.5, 1.0, 2.0)
    tune_word_scores: tuple[float, ...] = (-1.0, 0.5, 2.0)
    tune_unk_scores: tuple[float, ...] = (-14.0, -10.0, -6.0)

    def __post_init__(self) -> None:
        check_values(self)


@dataclass(frozen=True)
class Config:
    task: str = "speech"  # speech | ink | image: picks the vocabulary, front end and datasets
    data: DataConfig = field(default_factory=DataConfig)
    text: TextConfig = field(default_factory=TextConfig)  # what the model learns to write
    features: FeatureConfig = field(default_factory=FeatureConfig)  # speech models
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # speech models
    strokes: StrokeFeatureConfig = field(default_factory=StrokeFeatureConfig)  # ink models
    writer: WriterAugmentConfig = field(default_factory=WriterAugmentConfig)  # ink models
    image: ImageFeatureConfig = field(default_factory=ImageFeatureConfig)  # image models
    paper: PaperAugmentConfig = field(default_factory=PaperAugmentConfig)  # image models
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)

    def __post_init__(self) -> None:
        check_values(self)


# ---------------------------------------------------------------- value checks
@dataclass(frozen=True)
class Rule:
    """What one field's value must be: `test` on the value (on each item of a list; for a `pair`, on
    both ends, low <= high), described as `expected` in the error."""

    test: Callable[[Any], bool]
    expected: str
    pair: bool = False

    def check(self, value: Any, key: str) -> None:
        items = value if isinstance(value, tuple) else (value,)
        if not all(self.test(item) for item in items) or (self.pair and items[0] > items[1]):
            raise ConfigError(f"{key}: expected {self.expected}, got {_shown(value)}")


def _shown(value: Any) -> str:
    return repr(list(value)) if isinstance(value, tuple) else repr(value)


def at_least(low: float) -> Rule:
    return Rule(lambda v: v >= low, f"a value >= {low:g}")


def above(low: float) -> Rule:
    return Rule(lambda v: v > low, f"a value > {low:g}")


def at_most(high: float) -> Rule:
    return Rule(lambda v: v <= high, f"a value <= {high:g}")


def within(low: float, high: float, open_high: bool = False) -> Rule:
    test = (lambda v: low <= v < high) if open_high else (lambda v: low <= v <= high)
    return Rule(test, f"a value in [{low:g}, {high:g}{')' if open_high else ']'}")


def one_of(*choices: str) -> Rule:
    return Rule(lambda v: v in choices, f"one of {', '.join(choices)}")


def interval(rule: Rule) -> Rule:
    """A (low, high) pair whose ends each satisfy `rule`."""
    return Rule(rule.test, f"a pair low <= high, each {rule.expected}", pair=True)


PROBABILITY = within(0.0, 1.0)
ANY = Rule(lambda v: True, "a finite number")  # the finiteness check applies to every float anyway

# Per config class, per field: what its value must be. Every float (and every float in a list) must
# also be finite; "0 = off" fields allow 0. A class missing here has no checks beyond its types.
RULES: dict[type, dict[str, Rule]] = {
    FeatureConfig: {
        "kind": one_of("mfcc", "logmel"),
        "sample_rate": at_least(1),
        "n_fft": at_least(1),
        "win_length": at_least(1),
        "hop_length": at_least(1),
        "n_mels": at_least(1),
        "n_mfcc": at_least(1),
        "f_min": at_least(0.0),
        "f_max": above(0.0),
        "deltas": within(0, 2),
        "cmvn": one_of("global", "utterance", "none"),
    },
    AugmentConfig: {
        "speed": interval(above(0.0)),
        "vtlp": interval(above(0.0)),
        "noise_prob": PROBABILITY,
        "snr_db": interval(ANY),
        "reverb_prob": PROBABILITY,
        "tilt_db": at_least(0.0),
        "lowpass_prob": PROBABILITY,
        "lowpass_hz": interval(above(0.0)),
        "smooth_prob": PROBABILITY,
        "smooth_frames": interval(above(0.0)),
        "freq_masks": at_least(0),
        "freq_mask_width": at_least(0),
        "time_masks": at_least(0),
        "time_mask_ratio": within(0.0, 1.0, open_high=True),
    },
    WriterAugmentConfig: {"prob": PROBABILITY, "strength": at_least(0.0)},
    PaperAugmentConfig: {"prob": PROBABILITY, "strength": at_least(0.0), "stretch": at_least(0.0)},
    StrokeFeatureConfig: {"step": above(0.0), "max_jump": above(0.0)},
    TextConfig: {
        "unicode": one_of(*UNICODE_FORMS),
        "case": one_of(*CASES),
        "punctuation": one_of(*KEEP_OR_DROP),
        "digits": one_of(*KEEP_OR_DROP),
        "vocab": one_of(*VOCABS),
    },
    ImageFeatureConfig: {"height": at_least(2), "pad": at_least(0.0)},
    ModelConfig: {
        "cell": one_of("lstm", "gru", "rnn"),
        "hidden": at_least(1),
        "layers": at_least(1),
        "dropout": within(0.0, 1.0, open_high=True),
        "stack": at_least(1),
        "conv_channels": at_least(1),
        "conv_norm": one_of("none", "instance"),
    },
    DataConfig: {
        "batch_frames": at_least(1),
        "max_batch": at_least(1),
        "max_duration": at_least(0.0),
        "max_frames": at_least(0),
        "workers": at_least(0),
        "oversample": Rule(lambda factors: all(f >= 0 for f in factors.values()), "factors >= 0"),
    },
    TrainConfig: {
        "seed": at_least(0),
        "lr": above(0.0),
        "weight_decay": at_least(0.0),
        "warmup_steps": at_least(0),
        "final_lr_ratio": PROBABILITY,
        "max_epochs": at_least(1),
        "max_minutes": at_least(0.0),
        "max_steps": at_least(0),
        "clip_norm": above(0.0),
        "ema_decay": within(0.0, 1.0, open_high=True),
        "eval_every": at_least(0),
        "checkpoint_every": at_least(1),
        "patience": at_least(1),
        "threads": at_least(0),
        "log_every": at_least(1),
        "sortagrad_share": PROBABILITY,
    },
    DecodeConfig: {
        "beam": at_least(1),
        "lm_order": at_least(1),
        "token_min_logp": at_most(0.0),
        "blank_skip_threshold": PROBABILITY,
        "beam_prune": above(0.0),
    },
    Config: {"task": one_of(*TASKS)},
}

# Checks across fields: (class, field named in the error, test on the whole section, expected).
CROSS_RULES: list[tuple[type, str, Callable[[Any], bool], str]] = [
    (FeatureConfig, "win_length", lambda c: c.win_length <= c.n_fft, "at most features.n_fft"),
    (
        FeatureConfig,
        "f_max",
        lambda c: c.f_min < c.f_max <= c.sample_rate / 2,
        "above features.f_min and at most half of features.sample_rate",
    ),
    (FeatureConfig, "n_mfcc", lambda c: c.kind != "mfcc" or c.n_mfcc <= c.n_mels, "at most features.n_mels"),
]

SECTIONS = {
    FeatureConfig: "features.",
    AugmentConfig: "augment.",
    WriterAugmentConfig: "writer.",
    PaperAugmentConfig: "paper.",
    StrokeFeatureConfig: "strokes.",
    TextConfig: "text.",
    ImageFeatureConfig: "image.",
    ModelConfig: "model.",
    DataConfig: "data.",
    TrainConfig: "train.",
    DecodeConfig: "decode.",
    Config: "",
}


def _finite(value: Any) -> bool:
    items = value.values() if isinstance(value, dict) else value if isinstance(value, tuple) else (value,)
    return all(math.isfinite(item) for item in items if isinstance(item, float))


def check_values(section: Any, prefix: str | None = None) -> None:
    """ConfigError naming the key (`prefix` + field, by default the section's place in `Config`) for
    the first value of a config section that training or decoding could not use."""
    kind = type(section)
    prefix = SECTIONS.get(kind, "") if prefix is None else prefix
    rules = RULES.get(kind, {})
    for item in dataclasses.fields(section):
        value = getattr(section, item.name)
        if dataclasses.is_dataclass(value):
            continue  # checked when it was built
        if not _finite(value):
            raise ConfigError(f"{prefix}{item.name}: expected a finite number, got {_shown(value)}")
        if item.name in rules:
            rules[item.name].check(value, prefix + item.name)
    for owner, name, test, expected in CROSS_RULES:
        if owner is kind and not test(section):
            raise ConfigError(f"{prefix}{name}: expected {expected}, got {getattr(section, name)!r}")


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return _build(annotation, value, key + ".")
    if origin is dict:
        key_type, value_type = typing.get_args(annotation)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return {_coerce(k, key_type, key): _coerce(v, value_type, f"{key}.{k}") for k, v in value.items()}
    if origin is tuple:
        args = typing.get_args(annotation)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(item, args[0], key) for item in value)
        if len(value) != len(args):
            raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(item, arg, key) for item, arg in zip(value, args, strict=True))
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: {value!r} does not fit {annotation}")
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is str:
        if isinstance(value, str):
            return value
    elif annotation is type(None):
        if value is None:
            return None
    else:
        return value
    raise ConfigError(f"{key}: expected {annotation.__name__}, got {value!r}")


def _build(cls: type, values: dict, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in known:
            raise ConfigError(f"unknown config key '{prefix}{key}'")
    kwargs = {key: _coerce(value, hints[key], prefix + key) for key, value in values.items()}
    built = cls(**kwargs)
    if cls in RULES:  # again for the features' configs, which cannot import this module to check themselves
        check_values(built, prefix)
    return built


def _set_path(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: '{part}' is not a section")
    node[parts[-1]] = value


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML config, apply `key=value` overrides, and check every key and type."""
    tree: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            tree = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML ({error})") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
    for override in overrides:
        if "=" not in override:
            raise ConfigError(f"--set {override!r}: expected key=value")
        key, raw = override.split("=", 1)
        _set_path(tree, key.strip(), yaml.safe_load(raw) if raw.strip() else "")
    return _build(Config, tree)  # every value checked (`check_values`) before any work starts


def config_to_dict(config: Any) -> dict:
    return dataclasses.asdict(config)


def config_from_dict(cls: type, values: dict):
    return _build(cls, values)
