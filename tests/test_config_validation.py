"""Config values are checked when the config is parsed, before any work starts (corpus, model): one
ConfigError naming the key for a value training or decoding could not use (issue 22)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time

import pytest
from conftest import REPO, subprocess_env

from recog import config as config_module
from recog.config import Config, ConfigError, ModelConfig, config_from_dict, load_config

# (override, key named in the error, what the error says is expected)
BAD_VALUES = [
    ("train.lr=-1", "train.lr", "a value > 0"),
    ("train.lr=0", "train.lr", "a value > 0"),
    ("train.lr=.nan", "train.lr", "a finite number"),
    ("train.lr=nan", "train.lr", "a finite number"),  # YAML reads it as a string, float() as NaN
    ("train.lr=.inf", "train.lr", "a finite number"),
    ("train.weight_decay=-0.1", "train.weight_decay", "a value >= 0"),
    ("train.max_epochs=0", "train.max_epochs", "a value >= 1"),
    ("train.checkpoint_every=0", "train.checkpoint_every", "a value >= 1"),
    ("train.log_every=0", "train.log_every", "a value >= 1"),
    ("train.patience=0", "train.patience", "a value >= 1"),
    ("train.warmup_steps=-5", "train.warmup_steps", "a value >= 0"),
    ("train.max_steps=-1", "train.max_steps", "a value >= 0"),
    ("train.max_minutes=-1", "train.max_minutes", "a value >= 0"),
    ("train.clip_norm=0", "train.clip_norm", "a value > 0"),
    ("train.ema_decay=1", "train.ema_decay", "a value in [0, 1)"),
    ("train.final_lr_ratio=1.5", "train.final_lr_ratio", "a value in [0, 1]"),
    ("train.sortagrad_share=-0.5", "train.sortagrad_share", "a value in [0, 1]"),
    ("train.seed=-1", "train.seed", "a value >= 0"),
    ("train.threads=-2", "train.threads", "a value >= 0"),
    ("model.hidden=0", "model.hidden", "a value >= 1"),
    ("model.layers=-2", "model.layers", "a value >= 1"),
    ("model.stack=0", "model.stack", "a value >= 1"),
    ("model.dropout=1", "model.dropout", "a value in [0, 1)"),
    ("model.dropout=-0.1", "model.dropout", "a value in [0, 1)"),
    ("model.cell=transformer", "model.cell", "one of lstm, gru, rnn"),
    ("model.conv_norm=batch", "model.conv_norm", "one of none, instance"),
    ("model.conv_channels=[8, 0]", "model.conv_channels", "a value >= 1"),
    ("data.batch_frames=0", "data.batch_frames", "a value >= 1"),
    ("data.max_batch=-1", "data.max_batch", "a value >= 1"),
    ("data.max_duration=-1", "data.max_duration", "a value >= 0"),
    ("data.workers=-1", "data.workers", "a value >= 0"),
    ("data.oversample={engine=flite: -1}", "data.oversample", "factors >= 0"),
    ("features.kind=plp", "features.kind", "one of mfcc, logmel"),
    ("features.sample_rate=0", "features.sample_rate", "a value >= 1"),
    ("features.hop_length=0", "features.hop_length", "a value >= 1"),
    ("features.deltas=3", "features.deltas", "a value in [0, 2]"),
    ("features.cmvn=batch", "features.cmvn", "one of global, utterance, none"),
    ("features.win_length=1024", "features.win_length", "at most features.n_fft"),
    ("features.f_max=9000", "features.f_max", "at most half of features.sample_rate"),
    ("features.n_mfcc=80", "features.n_mfcc", "at most features.n_mels"),
    ("augment.speed=[1.1, 0.9]", "augment.speed", "a pair low <= high"),
    ("augment.speed=[0, 1.1]", "augment.speed", "each a value > 0"),
    ("augment.noise_prob=2", "augment.noise_prob", "a value in [0, 1]"),
    ("augment.time_mask_ratio=1", "augment.time_mask_ratio", "a value in [0, 1)"),
    ("augment.freq_masks=-1", "augment.freq_masks", "a value >= 0"),
    ("writer.prob=1.5", "writer.prob", "a value in [0, 1]"),
    ("paper.strength=-1", "paper.strength", "a value >= 0"),
    ("strokes.step=0", "strokes.step", "a value > 0"),
    ("strokes.max_jump=-1", "strokes.max_jump", "a value > 0"),
    ("image.height=0", "image.height", "a value >= 2"),
    ("image.pad=-0.5", "image.pad", "a value >= 0"),
    ("decode.beam=0", "decode.beam", "a value >= 1"),
    ("decode.lm_order=0", "decode.lm_order", "a value >= 1"),
    ("decode.token_min_logp=3", "decode.token_min_logp", "a value <= 0"),
    ("decode.beam_prune=0", "decode.beam_prune", "a value > 0"),
    ("decode.tune_lm_weights=[1, .nan]", "decode.tune_lm_weights", "a finite number"),
    ("task=video", "task", "one of speech, ink, image"),
]


@pytest.mark.parametrize(("override", "key", "expected"), BAD_VALUES, ids=[row[0] for row in BAD_VALUES])
def test_a_bad_value_is_one_error_naming_the_key(override, key, expected):
    with pytest.raises(ConfigError) as error:
        load_config(None, [override])
    message = str(error.value)
    assert message.startswith(f"{key}: expected ") and expected in message, message
    assert len(message.splitlines()) == 1


# (override, the value it gives) at the edges of what is allowed
GOOD_VALUES = [
    ("train.lr=1e-6", ("train", "lr", 1e-6)),
    ("train.max_steps=0", ("train", "max_steps", 0)),
    ("train.eval_every=0", ("train", "eval_every", 0)),
    ("train.ema_decay=0", ("train", "ema_decay", 0.0)),
    ("model.dropout=0", ("model", "dropout", 0.0)),
    ("model.layers=1", ("model", "layers", 1)),
    ("model.conv_channels=[]", ("model", "conv_channels", ())),
    ("data.max_duration=0", ("data", "max_duration", 0.0)),
    ("data.workers=0", ("data", "workers", 0)),
    ("augment.speed=[1.0, 1.0]", ("augment", "speed", (1.0, 1.0))),
    ("augment.snr_db=[-5, 40]", ("augment", "snr_db", (-5.0, 40.0))),
    ("decode.word_score=-3", ("decode", "word_score", -3.0)),
    ("decode.blank_skip_threshold=1", ("decode", "blank_skip_threshold", 1.0)),
]


@pytest.mark.parametrize(("override", "expected"), GOOD_VALUES, ids=[row[0] for row in GOOD_VALUES])
def test_values_at_the_edge_of_the_allowed_range_load(override, expected):
    section, name, value = expected
    assert getattr(getattr(load_config(None, [override]), section), name) == value


def test_every_section_of_the_config_has_its_values_checked():
    sections = [type(getattr(Config(), f.name)) for f in dataclasses.fields(Config) if f.name != "task"]
    assert set(sections) <= set(config_module.RULES)
    numeric = {
        f"{cls.__name__}.{f.name}"
        for cls in sections
        for f in dataclasses.fields(cls)
        if f.type in ("int", "float") and f.name not in config_module.RULES[cls]
    }
    # numbers that may be anything finite: scores and weights of the beam search, and their grids
    assert numeric == {
        "DecodeConfig.lm_weight",
        "DecodeConfig.word_score",
        "DecodeConfig.unk_score",
    }


def test_sections_built_directly_or_from_a_checkpoint_are_checked_too():
    with pytest.raises(ConfigError, match=r"^model\.layers: expected a value >= 1, got -2$"):
        ModelConfig(layers=-2)
    with pytest.raises(ConfigError, match=r"^model\.hidden: "):
        config_from_dict(ModelConfig, {"hidden": 0})


def test_a_bad_value_fails_before_the_corpus_is_prepared(tmp_path):
    """`recog train` with model.cell=transformer used to build (or look for) the corpus first."""
    marker = tmp_path / "prepared"
    started = time.monotonic()
    result = subprocess.run(
        [
            sys.executable, "-m", "recog.cli", "train", "configs/speech-tiny.yaml", "--out", str(tmp_path / "run"),
            "--set", f"data.root={tmp_path / 'corpus'}",
            "--set", f"data.prepare=touch {marker}",
            "--set", "model.cell=transformer",
        ],
        cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode != 0
    assert "model.cell: expected one of lstm, gru, rnn, got 'transformer'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not marker.exists() and not (tmp_path / "run").exists()
    assert time.monotonic() - started < 120
