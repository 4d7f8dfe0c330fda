"""Building the training, dev and evaluation sets from a corpus folder (JSONL manifests + shards), for
speech (audio) and handwriting (ink, line images) alike."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

from recog.config import Config, DataConfig
from recog.datasets.handwriting import HandwritingDataset, load_samples, preflight_samples
from recog.datasets.manifest import Utterance, read_manifest
from recog.datasets.preflight import Problem, preflight, write_report
from recog.datasets.shards import from_int16, load_audio
from recog.datasets.speech import SpeechDataset
from recog.features.speech import CMVN, SpeechFeatures
from recog.vocab import Vocab


class CorpusError(Exception):
    """The corpus a config names is missing and cannot be built."""


def prepare_corpus(data: DataConfig) -> Path:
    """Run `data.prepare`, which owns the corpus cache: it returns at once when the corpus is complete
    and was built with the same parameters and generator version, and rebuilds it otherwise.
    Without a prepare command the corpus must already exist."""
    root = Path(data.root)
    if not data.prepare and ((root / "DONE").exists() or (root / data.train).exists()):
        return root
    if not data.prepare:
        raise CorpusError(
            f"{root}: corpus not found and the config gives no data.prepare command to build it"
        )
    command = shlex.split(data.prepare.format(root=root))
    if command and command[0] in ("python", "python3"):
        command[0] = sys.executable
    print(f"[data] corpus: {' '.join(command)}", file=sys.stderr, flush=True)
    result = subprocess.run(command)
    if result.returncode != 0:
        raise CorpusError(f"{root}: corpus build failed (exit {result.returncode}): {' '.join(command)}")
    return root


def _output_frames(features: SpeechFeatures, stack: int):
    hop = features.config.hop_length
    return lambda samples: (1 + samples // hop) // stack


def _load_checked(
    config: Config, manifest: str, out_dir: Path, vocab: Vocab, features: SpeechFeatures, for_training: bool
) -> tuple[list[Utterance], dict[str, np.ndarray], dict]:
    root = Path(config.data.root)
    utterances = read_manifest(root / manifest)
    workers = max(1, min(os.cpu_count() or 1, 4))
    audio, errors = load_audio(utterances, features.config.sample_rate, workers)
    kept, problems = preflight(
        utterances,
        audio,
        errors,
        vocab,
        _output_frames(features, config.model.stack) if for_training else (lambda samples: 1 << 30),
        config.data.max_duration if for_training else 0.0,
        features.config.sample_rate,
    )
    summary = _report(problems, len(utterances), out_dir, Path(manifest).stem)
    kept_keys = {u.key for u in kept}
    audio = {key: samples for key, samples in audio.items() if key in kept_keys}
    return kept, audio, summary


def _report(problems: list[Problem], total: int, out_dir: Path, name: str) -> dict:
    """Write preflight-NAME.jsonl and tell the user what was skipped and why."""
    summary = write_report(problems, total, out_dir / f"preflight-{name}.jsonl", name)
    if problems:
        print(
            f"[preflight] {name}: skipped {len(problems)} of {total} samples "
            f"({', '.join(f'{n} {k}' for k, n in summary['by_reason'].items())}); "
            f"details in {out_dir / f'preflight-{name}.jsonl'}",
            file=sys.stderr,
        )
        for problem in problems[:5]:
            print(f"[preflight]   {problem.source}: {problem.reason}", file=sys.stderr)
    return summary


def _load_handwriting(
    config: Config, manifest: str, out_dir: Path, vocab: Vocab, features, for_training: bool
) -> tuple[list[Utterance], dict[str, bytes], dict, object]:
    """Ink or line-image samples of one manifest after preflight, and their loading results."""
    utterances = read_manifest(Path(config.data.root) / manifest)
    workers = max(1, min(os.cpu_count() or 1, 4))
    stats = 2000 if for_training else 0  # normalisation statistics from a random 2000 training lines
    loaded = load_samples(utterances, config.task, features.config, workers, stats, config.train.seed)
    kept, problems = preflight_samples(
        utterances,
        loaded,
        vocab,
        stack=config.model.stack if for_training else 0,
        max_frames=config.data.max_frames if for_training else 0,
    )
    summary = _report(problems, len(utterances), out_dir, Path(manifest).stem)
    stored = {u.key: loaded.stored[u.key] for u in kept}
    return kept, stored, summary, loaded


def _prepare_handwriting(config: Config, out_dir: Path, vocab: Vocab, features, context) -> dict:
    train, train_stored, train_summary, loaded = _load_handwriting(
        config, config.data.train, out_dir, vocab, features, True
    )
    dev, dev_stored, dev_summary, dev_loaded = _load_handwriting(
        config, config.data.dev, out_dir, vocab, features, False
    )
    if not train:
        raise CorpusError(
            f"{config.data.root}/{config.data.train}: no usable training samples (see preflight report)"
        )
    if context.main:
        (out_dir / "preflight.json").write_text(
            json.dumps({"train": train_summary, "dev": dev_summary}, indent=2)
        )
    cmvn = loaded.cmvn("global")
    augment = config.writer if config.task == "ink" else config.paper
    sentences = [u.text for u in train]
    if config.data.lm_text:
        extra = Path(config.data.root) / config.data.lm_text
        sentences += [line.strip() for line in extra.read_text().splitlines() if line.strip()]
    common = dict(vocab=vocab, features=features, cmvn=cmvn, stack=config.model.stack)
    return {
        "train": HandwritingDataset(
            config.task, train, train_stored, loaded.frames, augment=augment, seed=config.train.seed, **common
        ),
        "dev": HandwritingDataset(config.task, dev, dev_stored, dev_loaded.frames, **common),
        "cmvn": cmvn,
        "lm_sentences": sentences,
    }


def prepare_sets(config: Config, out_dir: Path, vocab: Vocab, features, context) -> dict:
    """Train and dev datasets after preflight, CMVN statistics from train, and the LM text."""
    if config.task != "speech":
        return _prepare_handwriting(config, out_dir, vocab, features, context)
    train, train_audio, train_summary = _load_checked(
        config, config.data.train, out_dir, vocab, features, True
    )
    dev, dev_audio, dev_summary = _load_checked(config, config.data.dev, out_dir, vocab, features, False)
    if not train:
        raise CorpusError(
            f"{config.data.root}/{config.data.train}: no usable training samples (see preflight report)"
        )
    if context.main:
        (out_dir / "preflight.json").write_text(
            json.dumps({"train": train_summary, "dev": dev_summary}, indent=2)
        )
    rng = np.random.default_rng(config.train.seed)
    sample = rng.permutation(len(train))[:2000]
    cmvn = CMVN.fit(config.features.cmvn, [features(from_int16(train_audio[train[i].key])) for i in sample])
    sentences = [u.text for u in train]
    if config.data.lm_text:
        extra = Path(config.data.root) / config.data.lm_text
        sentences += [line.strip() for line in extra.read_text().splitlines() if line.strip()]
    return {
        "train": SpeechDataset(train, train_audio, vocab, features, cmvn, config.augment, config.train.seed),
        "dev": SpeechDataset(dev, dev_audio, vocab, features, cmvn),
        "cmvn": cmvn,
        "lm_sentences": sentences,
    }


def load_eval_set(
    config: Config, manifest: str, out_dir: Path, vocab: Vocab, features
) -> tuple[list[Utterance], dict]:
    """(utterances, key -> stored input: int16 audio, or ink/png bytes) of one evaluation manifest."""
    if config.task != "speech":
        utterances, stored, _, _ = _load_handwriting(config, manifest, out_dir, vocab, features, False)
        return utterances, stored
    utterances, audio, _ = _load_checked(config, manifest, out_dir, vocab, features, False)
    return utterances, audio


def load_manifest_inputs(
    task: str, manifest: str | Path, vocab: Vocab, features, workers: int = 2
) -> tuple[list[Utterance], dict, list[Problem]]:
    """Any manifest for evaluation outside training (`recog eval`): usable utterances, their stored
    inputs, and what was skipped (unreadable, characters outside the vocabulary)."""
    utterances = read_manifest(manifest)
    if task == "speech":
        audio, errors = load_audio(utterances, features.config.sample_rate, workers=workers)
        kept, problems = preflight(utterances, audio, errors, vocab, lambda samples: 1 << 30)
        return kept, audio, problems
    loaded = load_samples(utterances, task, features.config, workers)
    kept, problems = preflight_samples(utterances, loaded, vocab, stack=0)
    return kept, {u.key: loaded.stored[u.key] for u in kept}, problems
