"""Typed config: YAML, --set overrides, and one clear error naming the key for every mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from recog.config import (
    Config,
    ConfigError,
    ModelConfig,
    config_from_dict,
    config_to_dict,
    load_config,
)

CONFIGS = sorted((Path(__file__).resolve().parent.parent / "configs").glob("*.yaml"))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_yaml_values_override_defaults(tmp_path):
    path = write(
        tmp_path,
        "data:\n  root: /corpus\n  eval_sets: [a.jsonl]\nmodel:\n  cell: gru\n  hidden: 32\ntrain:\n  lr: 1\n",
    )
    config = load_config(path)
    assert config.data.root == "/corpus"
    assert config.data.eval_sets == ("a.jsonl",)
    assert config.model == ModelConfig(cell="gru", hidden=32)  # everything else keeps its default
    assert config.train.lr == 1.0 and isinstance(config.train.lr, float)  # int accepted for a float
    assert config.train.max_epochs == Config().train.max_epochs
    with pytest.raises(AttributeError):
        config.model.hidden = 5  # frozen


def test_set_overrides_win_over_the_file_and_are_typed(tmp_path):
    path = write(tmp_path, "train:\n  lr: 0.1\n  max_epochs: 4\n")
    config = load_config(
        path,
        [
            "train.lr=0.002",
            "train.bf16=false",
            "model.layers=1",
            "augment.speed=[0.8, 1.2]",
            "data.eval_sets=[x.jsonl, y.jsonl]",
            "data.prepare=",
        ],
    )
    assert config.train.lr == pytest.approx(0.002)
    assert config.train.max_epochs == 4  # untouched value from the file
    assert config.train.bf16 is False
    assert config.model.layers == 1
    assert config.augment.speed == (0.8, 1.2)
    assert config.data.eval_sets == ("x.jsonl", "y.jsonl")
    assert config.data.prepare == ""
    # overrides without a file start from the defaults
    assert load_config(None, ["model.hidden=8"]).model.hidden == 8


def test_scientific_notation_without_a_dot_is_a_float(tmp_path):
    assert load_config(None, ["train.lr=1e-3"]).train.lr == pytest.approx(1e-3)
    assert load_config(write(tmp_path, "train:\n  weight_decay: 1e-2\n")).train.weight_decay == pytest.approx(
        0.01
    )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lrr=0.1", "unknown config key 'train.lrr'"),
        ("trian.lr=0.1", "unknown config key 'trian'"),
        ("model.hidden=big", "model.hidden: expected int"),
        ("model.hidden=1.5", "model.hidden: expected int"),
        ("model.hidden=true", "model.hidden: expected int"),  # a bool is not an int here
        ("train.lr=fast", "train.lr: expected float"),
        ("train.bf16=1", "train.bf16: expected bool"),
        ("augment.speed=[0.9]", "augment.speed: expected 2 values, got 1"),
        ("augment.speed=0.9", "augment.speed: expected a list"),
        ("augment.speed=[0.9, fast]", "augment.speed: expected float"),
        ("train=3", "train: expected a mapping"),
        ("train.lr", "expected key=value"),
        ("decode.engine=flashlight", "unknown config key 'decode.engine'"),  # flashlight was removed
        ("decode.beam_size_token=12", "unknown config key 'decode.beam_size_token'"),
    ],
)
def test_mistakes_name_the_key(override, message):
    with pytest.raises(ConfigError) as error:
        load_config(None, [override])
    assert message in str(error.value)
    assert len(str(error.value).splitlines()) == 1


def test_unknown_key_in_the_yaml_file_is_named(tmp_path):
    path = write(tmp_path, "train:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'train\.lrr'"):
        load_config(path)


def test_file_problems_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "train: [unclosed\n"))
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(write(tmp_path, "- a\n- b\n"))
    path = write(tmp_path, "train:\n  lr: 0.1\n")
    with pytest.raises(ConfigError, match="'lr' is not a section"):
        load_config(path, ["train.lr.value=3"])


def test_dict_round_trip():
    config = load_config(None, ["model.cell=rnn", "augment.vtlp=[1.0, 1.0]"])
    assert config_from_dict(Config, config_to_dict(config)) == config


@pytest.mark.parametrize("path", CONFIGS, ids=[path.name for path in CONFIGS])
def test_every_shipped_config_loads(path):
    config = load_config(path)
    assert config.task in ("speech", "ink", "image")
    assert config.model.cell in ("lstm", "gru", "rnn")


def test_configs_folder_is_not_empty():
    assert any(path.name == "speech-tiny.yaml" for path in CONFIGS)


def test_decode_defaults_carry_the_benchmark_tuned_pruning_and_tuning_can_keep_the_unk_score():
    # benchmarks/decoder.py's pick with a word LM for beams it tuned no pick for (its OURS[True])
    decode = load_config(None).decode
    assert (decode.token_min_logp, decode.blank_skip_threshold, decode.beam_prune) == (-8.0, 0.999, 10.0)
    assert load_config(None, ["decode.tune_unk_scores=[]"]).decode.tune_unk_scores == ()
